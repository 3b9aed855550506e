"""Cross-Scale Learning (CSL; Sun et al., "Dynamic Metric Learning", CVPR 2021): one proxy per
fine class, negatives at every semantic scale, a larger margin at coarser scales; and DyML's own
per-scale baseline, whose positive moves to the sample's class at each scale."""

from __future__ import annotations

from typing import Annotated

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from dml.errors import ConfigError
from dml.registry import Knob
from dml.losses.base import LOSSES, check_positive
from dml.losses.warmup import AnnealedMarginLoss

__all__ = ["POSITIVES", "PUBLISHED_MARGINS", "CrossScaleLoss"]

#: The paper's margins for DyML's three scales.
PUBLISHED_MARGINS = {"fine": 0.25, "middle": 0.35, "coarse": 0.45}

#: Where the positive of scale k's term is taken: ``fine`` (CSL) or ``scale`` (the baseline).
POSITIVES = ("fine", "scale")


@LOSSES.register("csl")
class CrossScaleLoss(AnnealedMarginLoss):
    """CSL over the scales named in ``margins`` (METHODS.md §3)::

        s(x, c) = x̂ · P_c / ‖P_c‖                        (one proxy per fine class)
        L_k = softplus( logsumexp_{c: y_k(c) ≠ y_k(x)} γ s(x, c) − γ s⁺_k(x) + γ α m_k )
        L   = Σ_k mean_batch L_k

    ``positive: fine`` (CSL, the default): ``s⁺_k(x) = s(x, y_fine(x))``, the sample's own
    fine proxy at every scale; the negatives at scale k are the proxies of the fine classes
    outside the sample's class at that scale, so a coarser scale asks a wider gap (larger m_k)
    from fewer, more different classes.

    ``positive: scale`` (DyML's per-scale baseline): the positive is taken at scale k, the
    sample's class at that scale. With one proxy per fine class that class is the set ``P_k``
    of fine proxies inside it (``N_k``: those outside), pooled by the same logsumexp that
    METHODS.md's form already applies to the (one-element) fine positive set::

        −γ s⁺_k(x) = logsumexp_{c ∈ P_k} (−γ s(x, c)),   so that
        L_k = log(1 + Σ_{c⁺ ∈ P_k} Σ_{c⁻ ∈ N_k} exp(γ (s(x, c⁻) − s(x, c⁺) + α m_k)))

    Each scale is then an independent proxy loss of its own classes: every proxy of the
    sample's scale-k class must beat every proxy outside it by m_k. The proxies stay one per
    fine class (not a set per scale) so that CSL and its baseline have the same parameters and
    differ in this one knob. At the finest scale, and wherever the sample's class at scale k
    holds a single fine class, the two positives coincide.

    ``margins`` maps scale names to m_k (default: the paper's 0.25 / 0.35 / 0.45 for fine /
    middle / coarse); with the finest scale alone either positive gives CosFace with scale γ
    and margin m_fine, the fine-scale-only baseline. ``anneal`` warms every margin up
    (``α``: :class:`~dml.losses.cosface.AnnealedMarginLoss`; 0, the default: ``α = 1``).
    ``hierarchy`` (each fine class's parent per coarser scale) and ``scale_classes`` (the
    scale names, finest first) come from the data. A sample with no negative at a scale (one
    coarse class only) adds 0 there. Logs each scale's term as ``<scale>``, and while a
    warm-up is configured its current margin as ``margin/<scale>``.
    """

    def __init__(
        self,
        num_classes: int,
        embed_dim: int,
        margins: Mapping[str, float] | None = None,
        scale: Annotated[float, Knob(gt=0)] = 32.0,
        hierarchy: Mapping[str, Sequence[int]] | None = None,
        scale_classes: Mapping[str, int] | None = None,
        positive: Annotated[str, Knob(choices=POSITIVES)] = "fine",  # fine: CSL; scale: the per-scale baseline
        anneal: int | float = 0,
    ) -> None:
        super().__init__(num_classes, embed_dim, anneal)
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
        self.positive = positive
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
        fine_positive = logits.gather(1, labels[:, None]).squeeze(1)
        total = logits.new_zeros(())
        for name, margin in self.margins.items():
            parents = getattr(self, f"parents_{name}")
            same = parents[None, :] == parents[labels][:, None]  # [B, C], the own class included
            negative = ~same
            has = negative.any(dim=1)
            if self.positive == "fine":
                positive = fine_positive
            else:  # a soft minimum over the fine proxies of the sample's class at this scale
                positive = -torch.logsumexp(torch.where(same, -logits, -torch.inf), dim=1)
            # rows without a negative take every logit (finite), and are zeroed below
            masked = torch.where(negative | ~has[:, None], logits, -torch.inf)
            shift = self.scale * self.current_margin(margin, f"margin/{name}")
            term = F.softplus(torch.logsumexp(masked, dim=1) - positive + shift)
            value = torch.where(has, term, 0.0).mean()
            self.log_term(name, value)
            total = total + value
        return total

    def extra_repr(self) -> str:
        return (f"{super().extra_repr()}, scale={self.scale}, margins={self.margins}, "
                f"positive={self.positive!r}")
