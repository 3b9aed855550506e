"""Contrastive loss (Hadsell et al. 2006), with pytorch-metric-learning's semantics."""

from __future__ import annotations

import torch
from torch import Tensor

from dml.losses.base import (
    LOSSES,
    MetricLoss,
    avg_non_zero,
    check_positive,
    distance_matrix,
    pair_masks,
)

__all__ = ["ContrastiveLoss"]


@LOSSES.register("contrastive")
class ContrastiveLoss(MetricLoss):
    """Pull positives within ``pos_margin``, push negatives beyond ``neg_margin``.

    On euclidean distances of normalized embeddings, as pytorch-metric-learning's
    ``ContrastiveLoss`` (linear, not squared, hinges)::

        L = mean_{(i,j) ∈ P, l > 0} relu(d_ij − pos_margin)
          + mean_{(i,j) ∈ N, l > 0} relu(neg_margin − d_ij)

    Each term averages only its pairs with non-zero loss (pml's ``AvgNonZeroReducer``): pairs
    already satisfied do not dilute the gradient of the rest; a term with no such pair is 0.
    Pairs are ordered (i, j), i ≠ j, from ``pair_masks``; for a symmetric similarity this is the
    same mean as over unordered pairs.
    """

    def __init__(self, pos_margin: float = 0.0, neg_margin: float = 1.0) -> None:
        super().__init__()
        check_positive("pos_margin", pos_margin, allow_zero=True)
        check_positive("neg_margin", neg_margin, allow_zero=True)
        self.pos_margin = float(pos_margin)
        self.neg_margin = float(neg_margin)

    def compute_loss(self, embeddings: Tensor, labels: Tensor | None, similarity: Tensor) -> Tensor:
        """See the class docstring."""
        distances = distance_matrix(embeddings)
        pos, neg = pair_masks(similarity)
        pos_loss = torch.relu(distances - self.pos_margin)
        neg_loss = torch.relu(self.neg_margin - distances)
        return avg_non_zero(pos_loss, pos) + avg_non_zero(neg_loss, neg)

    def extra_repr(self) -> str:
        return f"pos_margin={self.pos_margin}, neg_margin={self.neg_margin}"
