"""Binomial deviance loss (Yi et al. 2014), as in ECAML's code (METHODS.md §1, L_BD)."""

from __future__ import annotations

from typing import Annotated

import torch.nn.functional as F
from torch import Tensor

from dml.registry import Knob
from dml.losses.base import (
    LOSSES,
    MetricLoss,
    cosine_matrix,
    masked_mean,
    pair_masks,
)

__all__ = ["BinomialDevianceLoss"]


@LOSSES.register("binomial_deviance")
class BinomialDevianceLoss(MetricLoss):
    """Soft (log-logistic) penalties on cosine similarity, averaged separately over P and N::

        L_BD = 1/|P| Σ_P softplus(−alpha (s_ij − beta))
             + 1/|N| Σ_N softplus(alpha · neg_weight · (s_ij − beta))

    ``neg_weight`` is C_n, which balances the many negatives against the few positives.
    ``softplus(x) = log(1 + exp(x))`` is evaluated stably. An empty P or N contributes 0.
    Pairs are ordered (i, j), i ≠ j (``pair_masks``).
    """

    def __init__(self, alpha: Annotated[float, Knob(gt=0)] = 2.0, beta: float = 0.5, neg_weight: Annotated[float, Knob(gt=0)] = 25.0) -> None:
        super().__init__()
        self.alpha = float(alpha)
        self.beta = float(beta)
        self.neg_weight = float(neg_weight)

    def positive_penalty(self, s: Tensor) -> Tensor:
        """``softplus(−alpha (s_ij − beta))`` for every pair."""
        return F.softplus(-self.alpha * (s - self.beta))

    def positive_term(self, s: Tensor, pos: Tensor) -> Tensor:
        """``1/|P| Σ_P softplus(−alpha (s_ij − beta))``."""
        return masked_mean(self.positive_penalty(s), pos)

    def negative_penalty(self, s: Tensor, shift: Tensor | None = None) -> Tensor:
        """``softplus(alpha · neg_weight · (s_ij − beta − shift_ij))`` for every pair."""
        x = s - self.beta
        if shift is not None:
            x = x - shift
        return F.softplus(self.alpha * self.neg_weight * x)

    def compute_loss(self, embeddings: Tensor, labels: Tensor | None, similarity: Tensor) -> Tensor:
        """See the class docstring."""
        s = cosine_matrix(embeddings)
        pos, neg = pair_masks(similarity)
        return self.positive_term(s, pos) + masked_mean(self.negative_penalty(s), neg)

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}, beta={self.beta}, neg_weight={self.neg_weight}"
