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
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import nn

from dml.batch import Batch, ModelOutput
from dml.config import ModelConfig
from dml.context import BuildContext, build_with_context
from dml.errors import ConfigError, IntegrityError
from dml.models.backbones import BACKBONES
from dml.models.heads import HEADS
from dml.models import soft_pq  # noqa: F401  (registers the soft_pq head)

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

    def forward_features(self, images: torch.Tensor, condition: torch.Tensor | None = None) -> torch.Tensor:
        """Trunk features ``[B, trunk.out_dim]``."""
        if self.condition is None:
            return self.trunk(images)
        if condition is None:
            raise ValueError(f"this model is conditioned on {self.condition!r}; pass it")
        return self.trunk(images, condition=condition.to(images.dtype))

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        """Embeddings ``[B, embed_dim]`` from trunk features."""
        return self.head(features)

    def forward(self, images: torch.Tensor, condition: torch.Tensor | None = None) -> ModelOutput:
        features = self.forward_features(images, condition)
        embeddings = self.forward_head(features)
        heads = {name: head(features, embeddings) for name, head in self.heads.items()}
        return ModelOutput(embeddings=embeddings, features=features, heads=heads)

    def forward_batch(self, batch: Batch) -> ModelOutput:
        """The model on a batch's images, with the batch's conditioning signal if it has one."""
        condition = None
        if self.condition is not None:
            condition = batch.require(self.condition, "model.condition")
        assert batch.images is not None
        return self(batch.images, condition)


def load_trunk_weights(trunk: nn.Module, path: str | Path, *, strict: bool = True) -> None:
    """Load a local state dict (.safetensors, or .pt/.pth read with ``weights_only=True``)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"model.weights: {path} does not exist (weights are never downloaded)")
    try:
        if path.suffix == ".safetensors":
            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any parse failure is a bad file
        raise IntegrityError(f"model.weights: cannot read {path}: {err}") from None
    state = {k: v for k, v in state.items() if not k.startswith("fc.")}
    missing, unexpected = trunk.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.startswith("excitations.")]  # SE blocks start at random
    if strict and (missing or unexpected):
        raise IntegrityError(
            f"model.weights: {path} does not fit the trunk; missing {missing[:5]}, "
            f"unexpected {unexpected[:5]}"
        )


def build_trunk(cfg: ModelConfig) -> nn.Module:
    """The trunk named in ``cfg`` with its options (random, or local weights)."""
    trunk = build_with_context(BACKBONES, cfg.backbone, cfg.backbone_options,
                               BuildContext(image_size=cfg.image_size), where="model.backbone_options")
    if cfg.weights:
        load_trunk_weights(trunk, cfg.weights, strict=cfg.pretrained_strict)
    return trunk


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
