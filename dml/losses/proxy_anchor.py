"""Proxy-anchor loss (Kim et al., CVPR 2020), following the authors' code."""

from __future__ import annotations

from typing import Annotated

import torch.nn.functional as F
from torch import Tensor, nn

from dml.registry import Knob
from dml.losses.base import LOSSES, ProxyLoss, log1p_sum_exp

__all__ = ["ProxyAnchorLoss"]


@LOSSES.register("proxy_anchor")
class ProxyAnchorLoss(ProxyLoss):
    """Each proxy is an anchor that pulls its class's samples and pushes all others.

    With ``s(x, p)`` the cosine between a sample and a proxy, ``P⁺`` the proxies of classes
    present in the batch, ``X_p⁺`` / ``X_p⁻`` the batch samples of / not of p's class::

        L = 1/|P⁺| Σ_{p ∈ P⁺} log(1 + Σ_{x ∈ X_p⁺} exp(−alpha (s(x, p) − margin)))
          + 1/C    Σ_{p}      log(1 + Σ_{x ∈ X_p⁻} exp( alpha (s(x, p) + margin)))

    Proxies (``self.proxies``, ``[num_classes, embed_dim]``) are initialised with
    ``kaiming_normal_(mode="fan_out")`` as in the paper's code.
    """

    def __init__(
        self,
        num_classes: int,
        embed_dim: int,
        margin: Annotated[float, Knob(ge=0)] = 0.1,
        alpha: Annotated[float, Knob(gt=0)] = 32.0,
    ) -> None:
        super().__init__(num_classes, embed_dim)
        self.margin = float(margin)
        self.alpha = float(alpha)

    def reset_parameters(self) -> None:
        """Kaiming-normal proxies, ``mode="fan_out"`` (std = sqrt(2 / num_classes))."""
        nn.init.kaiming_normal_(self.proxies, mode="fan_out")

    def compute_loss(self, embeddings: Tensor, labels: Tensor | None, similarity: Tensor) -> Tensor:
        """See the class docstring."""
        assert labels is not None
        cos = self.proxy_cosine(embeddings)  # [B, C]
        is_pos = F.one_hot(labels.long(), self.num_classes).bool()  # [B, C]
        pos_term = log1p_sum_exp(-self.alpha * (cos - self.margin), is_pos, dim=0)  # [C]
        neg_term = log1p_sum_exp(self.alpha * (cos + self.margin), ~is_pos, dim=0)  # [C]
        num_present = is_pos.any(dim=0).sum().to(cos.dtype)  # >= 1 since B >= 1
        return pos_term.sum() / num_present + neg_term.sum() / self.num_classes

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, margin={self.margin}, alpha={self.alpha}"
