"""Contrastive loss (Hadsell et al. 2006), with pytorch-metric-learning's semantics."""

from __future__ import annotations

from typing import Annotated

import torch
from torch import Tensor

from dml.registry import Knob
from dml.losses.base import LOSSES, MetricLoss, distance_matrix

__all__ = ["ContrastiveLoss"]


def _hinge_avg_non_zero(margins: Tensor, mask: Tensor) -> Tensor:
    """Mean of the strictly positive ``relu(margins)`` where the 0/1 float ``mask`` is 1; 0 if none.

    ``dml.losses.base.avg_non_zero(relu(margins), mask.bool())`` with the same values and
    gradient, in one B x B buffer: ``margins`` (a temporary of the caller) is masked and
    clamped in place, and a product stands for ``where`` over a bool mask (several times
    slower on CPU). The non-zero entries left are exactly the pairs that it averages. A NaN
    margin (from NaN embeddings) makes the result NaN instead of being left out.
    """
    hinge = margins.mul_(mask).relu_()
    count = torch.count_nonzero(hinge).clamp_min(1).to(hinge.dtype)
    return hinge.sum() / count


@LOSSES.register("contrastive")
class ContrastiveLoss(MetricLoss):
    """Pull positives within ``pos_margin``, push negatives beyond ``neg_margin``.

    On euclidean distances of normalized embeddings, as pytorch-metric-learning's
    ``ContrastiveLoss`` (linear, not squared, hinges)::

        L = mean_{(i,j) ∈ P, l > 0} relu(d_ij − pos_margin)
          + mean_{(i,j) ∈ N, l > 0} relu(neg_margin − d_ij)

    Each term averages only its pairs with non-zero loss (pml's ``AvgNonZeroReducer``): pairs
    already satisfied do not dilute the gradient of the rest; a term with no such pair is 0.
    Pairs are ordered (i, j), i ≠ j, as from ``pair_masks``; for a symmetric similarity this is
    the same mean as over unordered pairs.
    """

    def __init__(self, pos_margin: Annotated[float, Knob(ge=0)] = 0.0, neg_margin: Annotated[float, Knob(ge=0)] = 1.0) -> None:
        super().__init__()
        self.pos_margin = float(pos_margin)
        self.neg_margin = float(neg_margin)

    def compute_loss(self, embeddings: Tensor, labels: Tensor | None, similarity: Tensor) -> Tensor:
        """See the class docstring.

        One pass over the B x B distances with 0/1 float pair masks: ``sign(similarity)`` is
        1 exactly where ``similarity > 0`` (it lies in [0, 1]), the diagonal is cleared.
        """
        distances = distance_matrix(embeddings)
        with torch.no_grad():
            pos = similarity.sign()
            neg = 1.0 - pos
            pos.fill_diagonal_(0.0)
            neg.fill_diagonal_(0.0)
        return (_hinge_avg_non_zero(distances - self.pos_margin, pos)
                + _hinge_avg_non_zero(self.neg_margin - distances, neg))

    def extra_repr(self) -> str:
        return f"pos_margin={self.pos_margin}, neg_margin={self.neg_margin}"
