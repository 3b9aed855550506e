"""Normalized softmax loss (Zhai & Wu, "Classification is a strong baseline", BMVC 2019)."""

from __future__ import annotations

from typing import Annotated

import torch.nn.functional as F
from torch import Tensor

from dml.registry import Knob
from dml.losses.base import LOSSES, ProxyLoss

__all__ = ["NormalizedSoftmaxLoss"]


@LOSSES.register("normalized_softmax")
class NormalizedSoftmaxLoss(ProxyLoss):
    """Cross-entropy over temperature-scaled cosine logits to normalized class weights::

        L = mean_i CE(cos(x_i, W) / temperature, y_i)

    Normalizing both sides makes the classifier a set of proxies on the sphere; the low
    temperature sharpens the softmax. Class weights are ``self.proxies``
    (``[num_classes, embed_dim]``, standard-normal init as pytorch-metric-learning).
    ``CosFaceLoss(margin=0, scale=1/temperature)`` is the same loss.
    """

    def __init__(self, num_classes: int, embed_dim: int, temperature: Annotated[float, Knob(gt=0)] = 0.05) -> None:
        super().__init__(num_classes, embed_dim)
        self.temperature = float(temperature)

    def compute_loss(self, embeddings: Tensor, labels: Tensor | None, similarity: Tensor) -> Tensor:
        """See the class docstring."""
        assert labels is not None
        return F.cross_entropy(self.proxy_cosine(embeddings) / self.temperature, labels.long())

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, temperature={self.temperature}"
