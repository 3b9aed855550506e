"""Cross-Scale Learning (CSL; Sun et al., "Dynamic Metric Learning", CVPR 2021): one proxy per
fine class, negatives at every semantic scale, a larger margin at coarser scales."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from dml.errors import ConfigError
from dml.losses.base import LOSSES, ProxyLoss, check_positive

__all__ = ["PUBLISHED_MARGINS", "CrossScaleLoss"]

#: The paper's margins for DyML's three scales.
PUBLISHED_MARGINS = {"fine": 0.25, "middle": 0.35, "coarse": 0.45}


@LOSSES.register("csl")
class CrossScaleLoss(ProxyLoss):
    """CSL over the scales named in ``margins`` (METHODS.md §3)::

        s(x, c) = x̂ · P_c / ‖P_c‖                        (one proxy per fine class)
        L_k = softplus( logsumexp_{c: y_k(c) ≠ y_k(x)} γ s(x, c) − γ s(x, y_fine(x)) + γ m_k )
        L   = Σ_k mean_batch L_k

    The positive is always the sample's own fine proxy; the negatives at scale k are the
    proxies of the fine classes outside the sample's class at that scale, so a coarser scale
    asks a wider gap (larger m_k) from fewer, more different classes. A sample with no
    negative at a scale (one coarse class only) adds 0 there.

    ``margins`` maps scale names to m_k (default: the paper's 0.25 / 0.35 / 0.45 for fine /
    middle / coarse); with the finest scale alone this is CosFace with scale γ and margin
    m_fine, the fine-scale-only baseline. ``hierarchy`` (each fine class's parent per coarser
    scale) and ``scale_classes`` (the scale names, finest first) come from the data.
    Logs each scale's term as ``<scale>``.
    """

    def __init__(
        self,
        num_classes: int,
        embed_dim: int,
        margins: Mapping[str, float] | None = None,
        scale: float = 32.0,
        hierarchy: Mapping[str, Sequence[int]] | None = None,
        scale_classes: Mapping[str, int] | None = None,
    ) -> None:
        check_positive("scale", scale)
        super().__init__(num_classes, embed_dim)
        hierarchy = dict(hierarchy or {})
        names = list(scale_classes) if scale_classes else ["fine", *hierarchy]
        margins = dict(PUBLISHED_MARGINS if margins is None else margins)
        if not margins:
            raise ConfigError("loss.margins: name at least one scale, e.g. {fine: 0.25}")
        unknown = [s for s in margins if s not in names]
        if unknown:
            raise ConfigError(f"loss.margins.{unknown[0]}: not a scale of the data; its scales, "
                              f"finest first: {', '.join(names)}")
        self.scale = float(scale)
        self.margins = {s: float(margins[s]) for s in names if s in margins}  # finest first
        for s, m in self.margins.items():
            check_positive(f"margins.{s}", m, allow_zero=True)
        for s in self.margins:
            if s == names[0]:
                parents = torch.arange(self.num_classes)
            else:
                parents = torch.as_tensor(list(hierarchy.get(s, ())), dtype=torch.long)
                if parents.shape != (self.num_classes,):
                    raise ConfigError(f"loss.margins.{s}: the hierarchy gives {len(parents)} "
                                      f"parents at scale {s!r} for {self.num_classes} fine classes")
            self.register_buffer(f"parents_{s}", parents, persistent=False)

    def compute_loss(self, embeddings: Tensor, labels: Tensor | None, similarity: Tensor) -> Tensor:
        """See the class docstring."""
        assert labels is not None
        labels = labels.long()
        logits = self.scale * self.proxy_cosine(embeddings)  # [B, C]
        positive = logits.gather(1, labels[:, None]).squeeze(1)
        total = logits.new_zeros(())
        for name, margin in self.margins.items():
            parents = getattr(self, f"parents_{name}")
            negative = parents[None, :] != parents[labels][:, None]  # [B, C]
            has = negative.any(dim=1)
            # rows without a negative take every logit (finite), and are zeroed below
            masked = torch.where(negative | ~has[:, None], logits, -torch.inf)
            term = F.softplus(torch.logsumexp(masked, dim=1) - positive + self.scale * margin)
            value = torch.where(has, term, 0.0).mean()
            self.log_term(name, value)
            total = total + value
        return total

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, scale={self.scale}, margins={self.margins}"
