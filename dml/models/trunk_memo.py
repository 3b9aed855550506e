"""Features of a trunk that does not change, remembered by the pixels they came from.

While the whole trunk stays frozen (``train.freeze: all``), validation embeds the same images
through the same trunk every epoch; the model then remembers each batch's trunk features
under a digest of its pixels (and conditioning signal) and runs only its heads on a repeat.
Only passes without gradient use it, and the training loop removes it when training ends.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import torch


def _digest(images: torch.Tensor, condition: torch.Tensor | None) -> bytes:
    h = hashlib.blake2b(digest_size=16)
    for tensor in (images, condition):
        if tensor is not None:
            h.update(str((tuple(tensor.shape), tensor.dtype)).encode())
            h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.digest()


class TrunkMemo:
    """A bounded map from a batch's pixels to its trunk features (``max_bytes`` of them)."""

    def __init__(self, max_bytes: int = 1 << 30) -> None:
        self.max_bytes = max_bytes
        self._stored: dict[bytes, torch.Tensor] = {}
        self._bytes = 0

    def features(self, images: torch.Tensor, condition: torch.Tensor | None,
                 compute: Callable[[torch.Tensor, torch.Tensor | None], torch.Tensor]) -> torch.Tensor:
        """The remembered features of this batch, or ``compute``'s (remembered if room)."""
        key = _digest(images, condition)
        hit = self._stored.get(key)
        if hit is not None:
            return hit.to(images.device)
        out = compute(images, condition)
        size = out.numel() * out.element_size()
        if self._bytes + size <= self.max_bytes:
            self._stored[key] = out.detach().cpu()
            self._bytes += size
        return out
