"""Triplet margin loss with all / semi-hard / batch-hard triplet mining."""

from __future__ import annotations

from typing import Annotated

import torch
from torch import Tensor

from dml.registry import Knob
from dml.losses.base import (
    LOSSES,
    MetricLoss,
    distance_matrix,
    masked_mean,
    pair_masks,
)

__all__ = ["MINING", "TripletLoss"]

#: Valid values of ``TripletLoss(mining=...)``.
MINING = ("all", "semihard", "hard")


@LOSSES.register("triplet")
class TripletLoss(MetricLoss):
    """``relu(d_ap − d_an + margin)`` over the triplets of a batch (Schroff et al. 2015).

    Distances are euclidean on normalized embeddings. A triplet (a, p, n) has ``p`` a positive
    and ``n`` a negative of the anchor ``a`` (``pair_masks``). ``mining`` picks the triplets:

    - ``"all"``: every valid triplet; the loss is the mean over triplets with positive loss
      (pytorch-metric-learning's ``AvgNonZeroReducer``, so easy triplets do not dilute it).
    - ``"semihard"``: triplets with ``d_ap < d_an < d_ap + margin`` (FaceNet); mean over them
      (all of them have positive loss).
    - ``"hard"``: batch-hard (Hermans et al. 2017): per anchor the farthest positive and the
      nearest negative; mean over anchors that have both (zero-loss anchors included).

    ``all`` and ``semihard`` never build the ``B x B x B`` tensor of triplets. The loss is
    linear in the distances over the selected triplets, so it is, exactly,

        Σ_ap c_ap · (d_ap + margin) − Σ_an w_an · d_an,   divided by Σ_ap c_ap,

    where ``c_ap`` counts the negatives selected for the pair (a, p) and ``w_an`` the
    positives for which the pair (a, n) is selected. Both counts come from each anchor's
    negative and positive distances sorted once and two binary searches per pair:
    ``O(B² log B)`` time and ``O(B²)`` memory instead of ``O(B³)``. The counts are constants
    of the graph, so the gradient is the triplets' own (``c_ap`` on ``d_ap``, ``−w_an`` on
    ``d_an``, over the same count).
    """

    def __init__(self, margin: Annotated[float, Knob(ge=0)] = 0.2,
                 mining: Annotated[str, Knob(choices=MINING)] = "all") -> None:
        super().__init__()
        self.margin = float(margin)
        self.mining = mining

    def compute_loss(self, embeddings: Tensor, labels: Tensor | None, similarity: Tensor) -> Tensor:
        """See the class docstring."""
        distances = distance_matrix(embeddings)
        pos, neg = pair_masks(similarity)
        if self.mining == "hard":
            return self._batch_hard(distances, pos, neg)
        return self._counted(distances, pos, neg)

    def _counted(self, distances: Tensor, pos: Tensor, neg: Tensor) -> Tensor:
        """The mean loss over the selected triplets from per-pair counts (class docstring).

        A triplet is selected when its loss is positive, ``d_an < d_ap + margin``, and for
        ``semihard`` also ``d_an > d_ap``."""
        d = distances.detach()
        margin = self.margin
        # each anchor's negative (positive) distances, ascending; +inf (-inf) elsewhere
        negatives = torch.where(neg, d, torch.full_like(d, torch.inf)).sort(dim=1).values
        positives = torch.where(pos, d, torch.full_like(d, -torch.inf)).sort(dim=1).values
        # per (a, p): the negatives with d_ap [< d_an] < d_ap + margin
        per_pair = torch.searchsorted(negatives, d + margin, side="left")
        # per (a, n): the positives with d_an - margin < d_ap [< d_an]
        below = torch.searchsorted(positives, d - margin, side="right")
        if self.mining == "semihard":
            per_pair = per_pair - torch.searchsorted(negatives, d, side="right")
            per_negative = torch.searchsorted(positives, d, side="left") - below
        else:
            per_negative = positives.shape[1] - below
        per_pair = torch.where(pos, per_pair, torch.zeros_like(per_pair)).to(distances.dtype)
        per_negative = torch.where(neg, per_negative, torch.zeros_like(per_negative)).to(distances.dtype)
        total = (per_pair * (distances + margin)).sum() - (per_negative * distances).sum()
        return total / per_pair.sum().clamp_min(1)

    def _batch_hard(self, distances: Tensor, pos: Tensor, neg: Tensor) -> Tensor:
        """Mean over anchors of ``relu(max_p d_ap − min_n d_an + margin)``."""
        # Distances are >= 0, so 0 is a neutral fill for the max; +inf for the min.
        hardest_pos = torch.where(pos, distances, torch.zeros_like(distances)).amax(dim=1)
        hardest_neg = torch.where(neg, distances, torch.full_like(distances, torch.inf)).amin(dim=1)
        valid = pos.any(dim=1) & neg.any(dim=1)
        # Invalid anchors may hold +inf; replace before the subtraction to keep gradients clean.
        hardest_neg = torch.where(valid, hardest_neg, torch.zeros_like(hardest_neg))
        losses = torch.relu(hardest_pos - hardest_neg + self.margin)
        return masked_mean(losses, valid)

    def extra_repr(self) -> str:
        return f"margin={self.margin}, mining={self.mining!r}"
