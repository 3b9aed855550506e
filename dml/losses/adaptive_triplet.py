"""Triplet loss with a margin that adapts to the label-similarity gap (METHODS.md §2).

Multi-label, multi-object images have no classes to compare: how related two images are is
a graded label similarity ``S`` (multiset Jaccard of their object counts, or the count
cosine of the baseline). Triplets come from the batch's similarity matrix, not from class
equality: every (a, p, n) with ``S(a,p) > S(a,n)`` (a, p, n distinct), and

    L = reduce relu(d_ap − d_an + m0 + γ·(S(a,p) − S(a,n)))

so a pair that is much more similar than another must be that much closer. ``γ = 0`` is the
plain triplet loss on the same triplets; on single-label data (``S`` = class equality) the
triplets are the usual same-class / other-class ones, and with ``reduction="non_zero"`` the
loss equals ``triplet`` (``mining: all``) exactly.

Memory and speed: the B x B x B triplet cube is never materialised. The loss depends on the
distances only through, for each pair, how many active triplets use it as the anchor-positive
(``+``) or anchor-negative (``−``) edge, so :class:`_TripletHinge` mines in blocks of anchors
without autograd and its backward is one B x B matrix: ``∂L/∂d = (C⁺ − C⁻) / N``.
"""

from __future__ import annotations

from typing import Annotated

import torch
from torch import Tensor

from dml.batch import Batch, ModelOutput
from dml.errors import ConfigError
from dml.registry import Knob
from dml.losses.base import LOSSES, MetricLoss, distance_matrix
from dml.label_similarity import LABEL_SIMILARITIES

__all__ = ["AdaptiveTripletLoss", "triplet_hinge"]

MINING = ("all", "semihard")
REDUCTIONS = ("mean", "non_zero")
#: Largest number of entries of one ``anchors x B x B`` block of triplets.
DEFAULT_BLOCK_ELEMENTS = 1 << 18  # 1 MiB of float32: blocks stay in cache (fastest on 2 cores)


class _TripletHinge(torch.autograd.Function):
    """``reduce relu(d_ap − d_an + m0 + γ(S_ap − S_an))`` over the mined triplets; see
    :func:`triplet_hinge`. Differentiable in ``distances`` only (``S`` is a label quantity)."""

    @staticmethod
    def forward(ctx, distances: Tensor, similarity: Tensor, margin: float, gamma: float,
                semihard: bool, mean_over_all: bool, block_elements: int) -> Tensor:
        n = distances.shape[0]
        d = distances.detach()
        s = similarity.to(d.dtype)
        # The anchor itself is never its own positive or negative: similarities outside [0, 1]
        # on the diagonal make every gap through it <= -1, so no (a, a, n) or (a, p, a) is valid.
        eye = torch.eye(n, dtype=torch.bool, device=d.device)
        s_pos = torch.where(eye, -2.0, s)
        s_neg = torch.where(eye, 2.0, s)
        uses_as_positive = torch.zeros_like(d)  # C+[a, p]: active triplets with edge (a, p)
        uses_as_negative = torch.zeros_like(d)  # C-[a, n]
        total = d.new_zeros(())
        valid_count = d.new_zeros(())
        rows = max(1, block_elements // max(1, n * n))
        for lo in range(0, n, rows):
            hi = min(n, lo + rows)
            d_ap, d_an = d[lo:hi, :, None], d[lo:hi, None, :]  # [b, p, 1], [b, 1, n]
            gap = s_pos[lo:hi, :, None] - s_neg[lo:hi, None, :]  # S_ap − S_an, [b, p, n]
            valid = gap > 0
            if mean_over_all and not semihard:
                valid_count += valid.sum()
            hinge = (d_ap - d_an).add_(gap.mul_(gamma).add_(margin))
            if semihard:  # d_ap < d_an, and (below) a positive loss: d_an < d_ap + margin
                valid &= d_an > d_ap
            losses = hinge.mul_(valid).clamp_min_(0.0)
            total += losses.sum()
            active = (losses > 0).to(d.dtype)
            uses_as_positive[lo:hi] = active.sum(2)
            uses_as_negative[lo:hi] = active.sum(1)
        # Semi-hard triplets all have a positive loss: both reductions average over them.
        count = valid_count if mean_over_all and not semihard else uses_as_positive.sum()
        count = count.clamp_min(1)
        ctx.save_for_backward((uses_as_positive - uses_as_negative) / count)
        return total / count

    @staticmethod
    def backward(ctx, grad_output: Tensor):
        (grad_distances,) = ctx.saved_tensors
        return grad_output * grad_distances, None, None, None, None, None, None


def triplet_hinge(distances: Tensor, similarity: Tensor, *, margin: float, gamma: float = 0.0,
                  mining: str = "all", reduction: str = "mean",
                  block_elements: int = DEFAULT_BLOCK_ELEMENTS) -> Tensor:
    """The adaptive-margin triplet loss from a distance and a label-similarity matrix.

    Args:
        distances: ``Tensor[B, B]`` (differentiable), e.g. :func:`distance_matrix`.
        similarity: ``Tensor[B, B]`` label similarity; triplets are ``S(a,p) > S(a,n)``.
        margin: ``m0``; gamma: ``γ``, the margin's slope in the similarity gap.
        mining: ``"all"`` every triplet, ``"semihard"`` those with ``d_ap < d_an`` and a
            positive loss (FaceNet's semi-hard triplets, with the adaptive margin).
        reduction: ``"mean"`` over every mined triplet (METHODS.md), ``"non_zero"`` over
            those with a positive loss (pytorch-metric-learning's ``AvgNonZeroReducer``).
        block_elements: memory bound of one ``anchors x B x B`` block.

    Returns:
        A scalar; exactly 0 (still on the graph) when the batch has no triplet.
    """
    if mining not in MINING:
        raise ConfigError(f"loss.mining must be one of {', '.join(MINING)}; got {mining!r}")
    if reduction not in REDUCTIONS:
        raise ConfigError(f"loss.reduction must be one of {', '.join(REDUCTIONS)}; got {reduction!r}")
    return _TripletHinge.apply(distances, similarity, float(margin), float(gamma),
                               mining == "semihard", reduction == "mean", int(block_elements))


@LOSSES.register("adaptive_triplet")
class AdaptiveTripletLoss(MetricLoss):
    """Adaptive-margin triplets mined from a graded label similarity (module docstring).

    Knobs: ``margin`` (m0), ``gamma`` (γ; 0 gives the fixed-margin baseline), ``similarity``
    (``jaccard`` | ``binary_jaccard`` | ``cosine``: how object counts become ``S``; single-label
    rows use class equality), ``mining`` (``all`` | ``semihard``) and ``reduction``
    (``mean`` | ``non_zero``). Distances are euclidean on normalized embeddings.
    """

    def __init__(self, margin: Annotated[float, Knob(ge=0)] = 0.1, gamma: Annotated[float, Knob(ge=0)] = 0.5,
                 similarity: Annotated[str, Knob(choices=LABEL_SIMILARITIES.names)] = "jaccard",
                 mining: Annotated[str, Knob(choices=MINING)] = "all",
                 reduction: Annotated[str, Knob(choices=REDUCTIONS)] = "mean",
                 block_elements: Annotated[int, Knob(gt=0, integer=True)] = DEFAULT_BLOCK_ELEMENTS) -> None:
        super().__init__()
        self.similarity = similarity
        self.label_similarity = LABEL_SIMILARITIES.get(similarity, where="loss.similarity")
        self.margin, self.gamma = float(margin), float(gamma)
        self.mining, self.reduction = mining, reduction
        self.block_elements = int(block_elements)

    def forward_batch(self, output: ModelOutput, batch: Batch) -> Tensor:
        """The loss of a batch: ``S`` from the object counts where the rows have them, else
        from the class labels."""
        if batch.counts is None:
            return super().forward_batch(output, batch)
        embeddings = output.embeddings
        # float64 counts: equal similarity gaps stay exactly equal (ties decide the triplets).
        counts = batch.counts.to(embeddings.device, torch.float64)
        return self(embeddings, similarity=self.label_similarity(counts))

    def compute_loss(self, embeddings: Tensor, labels: Tensor | None, similarity: Tensor) -> Tensor:
        """See the class docstring."""
        return triplet_hinge(distance_matrix(embeddings), similarity, margin=self.margin,
                             gamma=self.gamma, mining=self.mining, reduction=self.reduction,
                             block_elements=self.block_elements)

    def extra_repr(self) -> str:
        return (f"margin={self.margin}, gamma={self.gamma}, similarity={self.similarity!r}, "
                f"mining={self.mining!r}, reduction={self.reduction!r}")
