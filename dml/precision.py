"""Numeric precision, decided in one place: the autocast dtype a run's ``train.precision``
asks for on a device, and the rule that losses compute in float32 or wider, outside autocast."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for ``train.precision`` on ``device`` (None: full float32)."""
    if precision == "bf16":
        return torch.bfloat16
    if precision == "auto" and device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return None


def at_least_float32(tensor: Tensor) -> Tensor:
    """``tensor`` in float32 if it is in a half precision (float64 stays float64): losses'
    exponentials need the range after bf16 autocast."""
    return tensor.float() if tensor.dtype in (torch.float16, torch.bfloat16) else tensor


def outside_autocast(compute: Callable[..., Tensor], tensor: Tensor, *args: Any) -> Tensor:
    """``compute(tensor, *args)`` with autocast off on ``tensor``'s device: exponentials with
    scales like 32 or 50 need at least float32."""
    device_type = tensor.device.type
    if not torch.amp.is_autocast_available(device_type):
        return compute(tensor, *args)
    with torch.autocast(device_type=device_type, enabled=False):
        return compute(tensor, *args)
