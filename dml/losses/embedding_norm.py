"""Embedding-norm regularization over any loss (pytorch-metric-learning's ``LpRegularizer``
used as an ``embedding_regularizer``)."""

from __future__ import annotations

from torch import Tensor

from dml.batch import Batch, ModelOutput
from dml.errors import ConfigError
from dml.losses.base import LOSSES, MetricLoss, WrapperLoss

__all__ = ["EmbeddingNormLoss"]


@LOSSES.register("embedding_norm")
class EmbeddingNormLoss(WrapperLoss):
    """``L = L_base + weight · 1/B Σ_i ‖f_i‖_p`` over the raw (unnormalized) embeddings ``f``.

    Losses that work on normalized embeddings leave the raw norm free to drift; this keeps it
    bounded. ``weight = 0`` gives the base loss exactly.
    """

    term_name = "embedding_norm"

    def __init__(self, base: MetricLoss, weight: float = 0.0, p: float = 2.0) -> None:
        super().__init__(base, weight)
        if not p >= 1:
            raise ConfigError(f"loss.p must be >= 1, got {p!r}")
        self.p = float(p)

    def term(self, output: ModelOutput, batch: Batch) -> Tensor:
        """Mean Lp norm of the raw embeddings."""
        return output.embeddings.norm(p=self.p, dim=1).mean()

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, p={self.p}"
