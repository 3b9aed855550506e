"""Triplet margin loss with all / semi-hard / batch-hard triplet mining."""

from __future__ import annotations

import torch
from torch import Tensor

from dml.errors import ConfigError
from dml.losses.base import (
    LOSSES,
    MetricLoss,
    avg_non_zero,
    check_positive,
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

    ``all`` and ``semihard`` build a B x B x B tensor: fine for training batch sizes (B=256 is
    16.7M entries).
    """

    def __init__(self, margin: float = 0.2, mining: str = "all") -> None:
        super().__init__()
        check_positive("margin", margin, allow_zero=True)
        if mining not in MINING:
            raise ConfigError(f"loss.mining must be one of {', '.join(MINING)}; got {mining!r}")
        self.margin = float(margin)
        self.mining = mining

    def compute_loss(self, embeddings: Tensor, labels: Tensor | None, similarity: Tensor) -> Tensor:
        """See the class docstring."""
        distances = distance_matrix(embeddings)
        pos, neg = pair_masks(similarity)
        if self.mining == "hard":
            return self._batch_hard(distances, pos, neg)
        d_ap = distances[:, :, None]  # [a, p, 1]
        d_an = distances[:, None, :]  # [a, 1, n]
        losses = torch.relu(d_ap - d_an + self.margin)  # [a, p, n]
        valid = pos[:, :, None] & neg[:, None, :]
        if self.mining == "semihard":
            valid = valid & (d_an > d_ap) & (d_an < d_ap + self.margin)
        return avg_non_zero(losses, valid)

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
