"""Embedding models: a trunk (backbone) followed by an embedding head."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import nn

from dml.config import ModelConfig
from dml.errors import IntegrityError
from dml.models.backbones import BACKBONES


class EmbeddingModel(nn.Module):
    """``trunk -> linear embedding head``; returns raw (unnormalized) embeddings.

    Losses normalize as their geometry requires; extraction stores L2-normalized vectors.
    """

    def __init__(self, trunk: nn.Module, embed_dim: int) -> None:
        super().__init__()
        self.trunk = trunk
        self.head = nn.Linear(trunk.out_dim, embed_dim)
        self.embed_dim = embed_dim

    def forward_features(self, images: torch.Tensor) -> torch.Tensor:
        """Trunk features ``[B, trunk.out_dim]``."""
        return self.trunk(images)

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        """Embeddings ``[B, embed_dim]`` from trunk features."""
        return self.head(features)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(images))


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
    if strict and (missing or unexpected):
        raise IntegrityError(
            f"model.weights: {path} does not fit the trunk; missing {missing[:5]}, "
            f"unexpected {unexpected[:5]}"
        )


def build_model(cfg: ModelConfig) -> EmbeddingModel:
    """Build the trunk named in ``cfg`` (random or local weights) with its embedding head."""
    trunk = BACKBONES.build(cfg.backbone, where="model")
    if cfg.weights:
        load_trunk_weights(trunk, cfg.weights, strict=cfg.pretrained_strict)
    return EmbeddingModel(trunk, cfg.embed_dim)
