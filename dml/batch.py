"""The batch record that travels from dataset to loss, and the model's named outputs.

``Batch`` carries the images and every annotation the manifest rows have, plus where training
stands (global step, epoch, progress in [0, 1]); ``ModelOutput`` carries the embeddings, the
trunk features and any extra head's output. A loss receives both (``forward_batch``), so a
method that needs attributes, per-scale labels, object counts, the domain flag or a schedule
reads them here instead of changing the training loop.

Absent annotations are ``None`` (or missing from ``scales`` / ``heads``), never fake values.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from dml.precision import at_least_float32

__all__ = ["DOMAIN_CODES", "Batch", "ModelOutput"]

#: The domain flag ``d`` of a row (METHODS.md §5): 0 for a sketch, 1 for a photo.
DOMAIN_CODES = {"sketch": 0, "photo": 1}


def _map_tensors(record: Any, fn) -> Any:
    """A copy of the dataclass ``record`` with ``fn`` applied to every tensor it holds."""
    changes: dict[str, Any] = {}
    for item in dataclasses.fields(record):
        value = getattr(record, item.name)
        if isinstance(value, Tensor):
            changes[item.name] = fn(value)
        elif isinstance(value, dict):
            changes[item.name] = {k: fn(v) for k, v in value.items()}
    return dataclasses.replace(record, **changes)


@dataclass
class Batch:
    """One (local or global) training or evaluation batch.

    Tensors, each with B rows:

    - ``images``: float ``[B, 3, H, W]`` (``None`` after the all-gather: only embeddings cross
      ranks, never pixels);
    - ``index``: int64 ``[B]``, row of each item in its dataset;
    - ``labels``: int64 ``[B]`` finest class ids (``None`` for multi-label scenes);
    - ``scales``: per coarser scale name, int64 ``[B]`` labels at that scale;
    - ``attributes``: float ``[B, A]`` of 0/1, with ``attribute_mask`` bool ``[B, A]`` False
      where a row has no attributes (a sketch): such entries hold 0 and must be masked out;
    - ``counts``: float ``[B, C]`` objects of each fine class in the image (multi-object);
    - ``domain``: int64 ``[B]``, :data:`DOMAIN_CODES` (0 sketch, 1 photo);
    - ``instance``: int64 ``[B]``, equal for a photo and its sketch (-1 when unknown);
    - ``features``: float ``[B, F]``, the frozen trunk's features computed once ahead
      (``images`` is then ``None``: the model runs its heads only; local like the images).

    Training progress: ``step`` (global optimizer step, from 0), ``epoch`` and ``progress``
    (fraction of the whole run done before this step, in [0, 1]), for losses with schedules.
    """

    images: Tensor | None
    index: Tensor
    labels: Tensor | None = None
    scales: dict[str, Tensor] = field(default_factory=dict)
    attributes: Tensor | None = None
    attribute_mask: Tensor | None = None
    counts: Tensor | None = None
    domain: Tensor | None = None
    instance: Tensor | None = None
    features: Tensor | None = None
    step: int = 0
    epoch: int = 0
    progress: float = 0.0

    def __len__(self) -> int:
        return int(self.index.shape[0])

    def to(self, device: torch.device | str, *, non_blocking: bool = False) -> Batch:
        """A copy with every tensor on ``device``."""
        return _map_tensors(self, lambda t: t.to(device, non_blocking=non_blocking))

    def pin_memory(self) -> Batch:
        """A copy in page-locked memory (what ``DataLoader(pin_memory=True)`` calls), so that
        ``to(cuda, non_blocking=True)`` overlaps the copy with compute."""
        return _map_tensors(self, lambda t: t.pin_memory())

    def replace(self, **changes: Any) -> Batch:
        """A copy with some fields changed (``dataclasses.replace``)."""
        return dataclasses.replace(self, **changes)

    def require(self, name: str, who: str) -> Tensor:
        """The annotation ``name`` (``labels``, ``attributes``, ``counts``, ``domain``, or a
        scale name); a clear error naming ``who`` needs it when the data lacks it."""
        value = self.scales.get(name) if name in self.scales else getattr(self, name, None)
        if not isinstance(value, Tensor):
            present = [f.name for f in dataclasses.fields(self)
                       if isinstance(getattr(self, f.name), Tensor)] + list(self.scales)
            raise ValueError(f"{who} needs the annotation {name!r}, which this dataset's rows do "
                             f"not have (present: {', '.join(present)})")
        return value


@dataclass
class ModelOutput:
    """What a model returns for a batch of images.

    - ``embeddings``: float ``[B, D]``, raw (losses normalize as their geometry needs);
    - ``features``: float ``[B, F]``, the trunk's pooled output, before the embedding head;
    - ``heads``: extra heads' outputs by head name (``attributes``: logits ``[B, A]``, ...).
    """

    embeddings: Tensor
    features: Tensor
    heads: dict[str, Tensor] = field(default_factory=dict)

    def float(self) -> ModelOutput:
        """A copy with half-precision tensors in float32 (losses' exponentials need the range
        after bf16 autocast); float32 and float64 stay as they are."""
        return _map_tensors(self, at_least_float32)

    def head(self, name: str, who: str) -> Tensor:
        """Output of head ``name``; a clear error naming ``who`` needs it when it is absent."""
        if name not in self.heads:
            raise ValueError(f"{who} needs the model head {name!r}; add it under model.heads "
                             f"(present: {', '.join(self.heads) or 'none'})")
        return self.heads[name]


def map_tensors(record: Any, fn) -> Any:
    """Apply ``fn`` to every tensor of a :class:`Batch` or :class:`ModelOutput` (a copy)."""
    return _map_tensors(record, fn)
