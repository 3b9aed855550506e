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

from dml.errors import ConfigError

__all__ = ["EXCITATIONS", "SqueezeExcitation", "check_excitation"]

#: ``backbone_options.excitation``: no squeeze-and-excitation, plain SE in every block, or
#: DASE (domain-aware SE) in every block of all stages but the last, which keeps plain SE.
EXCITATIONS = ("none", "se", "dase")


def check_excitation(excitation: str) -> None:
    """A ConfigError naming the key unless ``excitation`` is one of :data:`EXCITATIONS`."""
    if excitation not in EXCITATIONS:
        raise ConfigError(f"model.backbone_options.excitation: {excitation!r} is not one of: "
                          f"{', '.join(EXCITATIONS)}")


class SqueezeExcitation(nn.Module):
    """SE (``domain_aware=False``) or DASE (``True``) over ``channels``; see the module doc.

    Called as ``block(x)`` or ``block(x, domain)`` with ``domain`` float ``[B]``; a DASE
    block without a domain is an error, a plain one ignores it.
    """

    def __init__(self, channels: int, reduction: int = 16, domain_aware: bool = False,
                 identity_init: bool = False) -> None:
        super().__init__()
        hidden = max(1, channels // reduction)
        self.domain_aware = domain_aware
        self.squeeze = nn.Linear(channels, hidden)
        self.excite = nn.Linear(hidden + int(domain_aware), channels)
        # Inserted into a pretrained network, the block starts as the identity (a departure
        # from the authors' random start): the excitation 2·σ(0) = 1 leaves the features as
        # the pretrained stages computed them, and training moves it from there.
        self.gain = 2.0 if identity_init else 1.0
        if identity_init:
            nn.init.zeros_(self.excite.weight)
            nn.init.zeros_(self.excite.bias)

    def forward(self, x: Tensor, domain: Tensor | None = None) -> Tensor:
        u = torch.sigmoid(self.squeeze(x.mean(dim=(2, 3))))
        if self.domain_aware:
            if domain is None:
                raise ValueError("a domain-aware SE block needs the domain flag of each sample")
            u = torch.cat([u, domain.to(u.dtype).reshape(-1, 1)], dim=1)
        return x * (self.gain * torch.sigmoid(self.excite(u)))[:, :, None, None]

    def extra_repr(self) -> str:
        return f"domain_aware={self.domain_aware}, gain={self.gain}"
