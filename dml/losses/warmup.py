"""Margins that warm up: a linear ramp from 0 to the full margin over the first steps or share
of training, as the DASE / MEMS authors' code runs its CosFace baseline (and MEMS its own
multiplicative margin, :mod:`dml.losses.mems`)."""

from __future__ import annotations

import numbers

import torch
from torch import Tensor

from dml.batch import Batch, ModelOutput
from dml.errors import ConfigError
from dml.losses.base import ProxyLoss

__all__ = ["AnnealedMarginLoss", "check_anneal", "warmup_factor", "warmup_fraction"]


def warmup_fraction(position: float, length: float) -> float:
    """A linear warm-up at ``position``: ``position / length`` clipped to [0, 1]; 1 (no warm-up)
    when ``length <= 0``. ``position`` and ``length`` share a unit (steps, or shares of training)."""
    if length <= 0:
        return 1.0
    return min(max(position / length, 0.0), 1.0)


def check_anneal(value: object) -> int | float:
    """``loss.anneal`` validated: 0 (no warm-up), an int >= 1 (steps) or a float in (0, 1] (a
    share of training); ConfigError otherwise. An int stays an int: ``1`` is one step, ``1.0``
    the whole run."""
    if isinstance(value, numbers.Integral) and not isinstance(value, bool) and value >= 0:
        return int(value)
    if isinstance(value, numbers.Real) and not isinstance(value, (bool, numbers.Integral)) \
            and 0 <= value <= 1:
        return float(value)
    raise ConfigError(f"loss.anneal must be 0 (no warm-up), steps (an int >= 1) or a share of "
                      f"training (a float in (0, 1]), got {value!r}")


def warmup_factor(anneal: int | float, batch: Batch | None) -> float:
    """The warm-up ``α`` in [0, 1] at ``batch``'s place in training: ``batch.step / anneal`` for
    steps (an int), ``batch.progress / anneal`` for a share (a float), clipped to [0, 1].
    1 when ``anneal`` is 0 or there is no batch (a bare call)."""
    if batch is None or anneal == 0:
        return 1.0
    position = batch.step if isinstance(anneal, int) else batch.progress
    return warmup_fraction(position, anneal)


class AnnealedMarginLoss(ProxyLoss):
    """A proxy loss whose additive margins warm up: each margin ``m`` is applied as ``α · m``,
    ``α`` rising linearly from 0 to 1 over ``anneal`` (steps, or a share of training; 0: the
    full margin from the first step), read from the batch in :meth:`forward_batch`.

    On the margin-shifted target logit this is the authors' CosFace schedule of the DASE / MEMS
    paper: ``cos·(1 − α) + (cos − m)·α = cos − α·m``. A bare call (no batch) uses ``α = 1``.
    """

    def __init__(self, num_classes: int, embed_dim: int, anneal: int | float = 0) -> None:
        super().__init__(num_classes, embed_dim)
        self.anneal = check_anneal(anneal)
        self._alpha = 1.0

    def forward_batch(self, output: ModelOutput, batch: Batch) -> Tensor:
        """The loss with the margins at the batch's step or progress."""
        self._alpha = warmup_factor(self.anneal, batch)
        try:
            return super().forward_batch(output, batch)
        finally:
            self._alpha = 1.0

    def current_margin(self, margin: float, name: str = "margin") -> float:
        """``α · margin``, logged as the term ``name`` while a warm-up is configured."""
        value = self._alpha * margin
        if self.anneal:
            self.log_term(name, torch.tensor(value, dtype=torch.float64))
        return value

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, anneal={self.anneal}"
