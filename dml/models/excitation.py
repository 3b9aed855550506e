"""Squeeze-and-excitation, plain and domain-aware (DASE, METHODS.md §5).

``z = GAP(x); u = σ(W1 z); s = σ(W2 [u; d]); out = x ⊙ s`` with reduction 16: the DASE
block's excitation also sees the domain scalar ``d`` (0 sketch, 1 photo), so one set of
weights re-weights its channels differently for a sketch and a photo. Without the domain
it is the plain SE block (Hu et al., 2018) with the same sigmoid inner activation as the
authors' code.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["SqueezeExcitation"]


class SqueezeExcitation(nn.Module):
    """SE (``domain_aware=False``) or DASE (``True``) over ``channels``; see the module doc.

    Called as ``block(x)`` or ``block(x, domain)`` with ``domain`` float ``[B]``; a DASE
    block without a domain is an error, a plain one ignores it.
    """

    def __init__(self, channels: int, reduction: int = 16, domain_aware: bool = False) -> None:
        super().__init__()
        hidden = max(1, channels // reduction)
        self.domain_aware = domain_aware
        self.squeeze = nn.Linear(channels, hidden)
        self.excite = nn.Linear(hidden + int(domain_aware), channels)

    def forward(self, x: Tensor, domain: Tensor | None = None) -> Tensor:
        u = torch.sigmoid(self.squeeze(x.mean(dim=(2, 3))))
        if self.domain_aware:
            if domain is None:
                raise ValueError("a domain-aware SE block needs the domain flag of each sample")
            u = torch.cat([u, domain.to(u.dtype).reshape(-1, 1)], dim=1)
        return x * torch.sigmoid(self.excite(u))[:, :, None, None]

    def extra_repr(self) -> str:
        return f"domain_aware={self.domain_aware}"
