"""A pretrained trunk's own input normalization, applied inside the model.

Every image reaches a trunk normalized with mean = std = 0.5 (:mod:`dml.data.transforms`); a
network trained with other statistics (its weights' config) maps them to its own inside its
forward, so the data pipeline keeps one convention and an exported model carries its
preprocessing in its state dict.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from dml.data.transforms import MEAN, STD


class InputNormalization(nn.Module):
    """``x -> x * scale + shift``: the identity until :meth:`set` gives the weights' mean and std."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("scale", torch.ones(1, 3, 1, 1))
        self.register_buffer("shift", torch.zeros(1, 3, 1, 1))

    def set(self, mean: Sequence[float], std: Sequence[float]) -> None:
        """Feed the network images normalized with ``mean`` and ``std``:
        ``(x * STD + MEAN - mean) / std``, folded into one scale and shift."""
        mean_t, std_t = torch.tensor(mean, dtype=torch.float32), torch.tensor(std, dtype=torch.float32)
        self.scale.copy_((torch.tensor(STD) / std_t).view(1, 3, 1, 1))
        self.shift.copy_(((torch.tensor(MEAN) - mean_t) / std_t).view(1, 3, 1, 1))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return images * self.scale + self.shift
