"""Embedding-norm regularization over any loss (pytorch-metric-learning's ``LpRegularizer``
used as an ``embedding_regularizer``)."""

from __future__ import annotations

from typing import Annotated

from torch import Tensor

from dml.batch import Batch, ModelOutput
from dml.registry import Knob
from dml.losses.base import LOSSES, MetricLoss, WrapperLoss

__all__ = ["EmbeddingNormLoss"]


@LOSSES.register("embedding_norm")
class EmbeddingNormLoss(WrapperLoss):
    """``L = L_base + weight · 1/B Σ_i ‖f_i‖_p`` over the raw (unnormalized) embeddings ``f``.

    Losses that work on normalized embeddings leave the raw norm free to drift; this keeps it
    bounded. ``weight = 0`` gives the base loss exactly.
    """

    term_name = "embedding_norm"

    def __init__(self, base: MetricLoss, weight: Annotated[float, Knob(ge=0)] = 0.0,
                 p: Annotated[float, Knob(ge=1)] = 2.0) -> None:
        super().__init__(base, weight)
        self.p = float(p)

    def term(self, output: ModelOutput, batch: Batch) -> Tensor:
        """Mean Lp norm of the raw embeddings."""
        return output.embeddings.norm(p=self.p, dim=1).mean()

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, p={self.p}"
