"""A loss on soft-quantized embeddings beside the float ones (METHODS.md §2, soft PQ).

With the ``soft_pq`` head (``dml.models.soft_pq``) the model also returns, for each code
length, the soft product-quantized reconstruction of its embedding. Training the base loss
on those as well teaches the trunk and the code words codes that keep the similarity, the
way Product Quantization Networks train their soft quantizer with the metric loss.
"""

from __future__ import annotations

from typing import Annotated

import dataclasses

import torch
from torch import Tensor

from dml.batch import Batch, ModelOutput
from dml.errors import ConfigError
from dml.registry import Knob
from dml.losses.base import LOSSES, MetricLoss, WrapperLoss, logged_terms

__all__ = ["QuantizedLoss"]


@LOSSES.register("quantized")
class QuantizedLoss(WrapperLoss):
    """``L = L_base(x) + weight · mean_l L_base(q_l(x))`` over the code lengths ``l`` of the
    head named ``head`` (output ``[B, L, D]``). ``weight = 0`` gives the base loss exactly.
    Logged terms: ``base`` and ``quantized``."""

    term_name = "quantized"

    def __init__(self, base: MetricLoss, weight: Annotated[float, Knob(ge=0)] = 1.0, head: str = "soft_pq") -> None:
        super().__init__(base, weight)
        if not isinstance(head, str) or not head:
            raise ConfigError(f"loss.head must name a model head, got {head!r}")
        self.head = head

    def term(self, output: ModelOutput, batch: Batch) -> Tensor:
        """The base loss on each code length's reconstructions, averaged."""
        quantized = output.head(self.head, "loss 'quantized'")
        if quantized.dim() != 3 or quantized.shape[0] != output.embeddings.shape[0]:
            raise ValueError(f"loss 'quantized': head {self.head!r} must return [B, L, D] "
                             f"reconstructions, got {tuple(quantized.shape)}")
        with logged_terms():  # the float pass's terms are the ones logged
            values = [self.base.forward_batch(dataclasses.replace(output, embeddings=quantized[:, i]), batch)
                      for i in range(quantized.shape[1])]
        return torch.stack(values).mean()

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, head={self.head!r}"
