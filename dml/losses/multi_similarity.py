"""Multi-similarity loss with its pair mining (Wang et al., CVPR 2019)."""

from __future__ import annotations

from typing import Annotated

import torch
from torch import Tensor

from dml.registry import Knob
from dml.losses.base import (
    LOSSES,
    MetricLoss,
    cosine_matrix,
    log1p_sum_exp,
    pair_masks,
)

__all__ = ["MultiSimilarityLoss"]


@LOSSES.register("multi_similarity")
class MultiSimilarityLoss(MetricLoss):
    """Multi-similarity loss on cosine similarities, following the authors' code.

    Mining, per anchor i (thresholds from all of i's pairs)::

        keep negative n  if  s_in > min_{p ∈ P_i} s_ip − epsilon
        keep positive p  if  s_ip < max_{n ∈ N_i} s_in + epsilon

    Loss of anchor i over its kept pairs P̃_i, Ñ_i::

        L_i = 1/alpha · log(1 + Σ_{P̃_i} exp(−alpha (s_ip − base)))
            + 1/beta  · log(1 + Σ_{Ñ_i} exp( beta (s_in − base)))

    As in the official code (``research-ms-loss``), an anchor with no kept positive or no kept
    negative contributes 0, and the loss is the sum over anchors divided by B (mean over all
    anchors). ``epsilon=inf`` disables the mining (every pair of an anchor with both kinds kept).
    """

    def __init__(
        self,
        alpha: Annotated[float, Knob(gt=0)] = 2.0,
        beta: Annotated[float, Knob(gt=0)] = 50.0,
        base: float = 0.5,
        epsilon: Annotated[float, Knob(ge=0)] = 0.1,
    ) -> None:
        super().__init__()
        self.alpha = float(alpha)
        self.beta = float(beta)
        self.base = float(base)
        self.epsilon = float(epsilon)

    def compute_loss(self, embeddings: Tensor, labels: Tensor | None, similarity: Tensor) -> Tensor:
        """See the class docstring."""
        s = cosine_matrix(embeddings)
        pos, neg = pair_masks(similarity)
        with torch.no_grad():
            min_pos = torch.where(pos, s, torch.full_like(s, torch.inf)).amin(dim=1, keepdim=True)
            max_neg = torch.where(neg, s, torch.full_like(s, -torch.inf)).amax(dim=1, keepdim=True)
            # inf - inf is NaN and compares False: an anchor without positives keeps no negative
            # (and vice versa), also when epsilon is inf.
            kept_neg = neg & (s > min_pos - self.epsilon)
            kept_pos = pos & (s < max_neg + self.epsilon)
            valid = kept_pos.any(dim=1) & kept_neg.any(dim=1)
        pos_term = log1p_sum_exp(-self.alpha * (s - self.base), kept_pos, dim=1) / self.alpha
        neg_term = log1p_sum_exp(self.beta * (s - self.base), kept_neg, dim=1) / self.beta
        per_anchor = torch.where(valid, pos_term + neg_term, torch.zeros_like(pos_term))
        return per_anchor.sum() / s.shape[0]

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}, beta={self.beta}, base={self.base}, epsilon={self.epsilon}"
