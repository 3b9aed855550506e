"""CosFace / large-margin cosine loss (Wang et al., CVPR 2018)."""

from __future__ import annotations

from typing import Annotated

import torch.nn.functional as F
from torch import Tensor

from dml.registry import Knob
from dml.losses.base import LOSSES
from dml.losses.warmup import AnnealedMarginLoss

__all__ = ["CosFaceLoss"]


@LOSSES.register("cosface")
class CosFaceLoss(AnnealedMarginLoss):
    """Cross-entropy over scaled cosine logits with an additive margin on the true class::

        logit_ic = scale · (cos(x_i, W_c) − α·margin · [c = y_i]),   L = mean_i CE(logit_i, y_i)

    The margin makes the true class win by at least ``margin`` in cosine. Class weights are
    ``self.proxies`` (``[num_classes, embed_dim]``, standard-normal init). With ``margin=0`` and
    ``scale=1/temperature`` this is ``NormalizedSoftmaxLoss``. ``α`` warms the margin up over
    ``anneal`` (:class:`AnnealedMarginLoss`; default 0: ``α = 1`` throughout); the current
    margin is then logged as ``margin``.
    """

    def __init__(
        self,
        num_classes: int,
        embed_dim: int,
        scale: Annotated[float, Knob(gt=0)] = 32.0,
        margin: Annotated[float, Knob(ge=0)] = 0.35,
        anneal: int | float = 0,
    ) -> None:
        super().__init__(num_classes, embed_dim, anneal)
        self.scale = float(scale)
        self.margin = float(margin)

    def compute_loss(self, embeddings: Tensor, labels: Tensor | None, similarity: Tensor) -> Tensor:
        """See the class docstring."""
        assert labels is not None
        targets = labels.long()
        cos = self.proxy_cosine(embeddings)
        logits = self.scale * (
            cos - self.current_margin(self.margin) * F.one_hot(targets, self.num_classes).to(cos.dtype)
        )
        return F.cross_entropy(logits, targets)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, scale={self.scale}, margin={self.margin}"
