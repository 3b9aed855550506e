"""Global batches for pair-based losses across data-parallel workers.

Each worker embeds its own images; a pair loss needs every pair of the global batch. The
all-gather below returns the global batch on every rank. Its backward sums the incoming
gradients over ranks (every rank computed the same global loss) and keeps this rank's slice,
so that after DDP averages parameter gradients over ranks the update equals single-process
training on the whole batch, for trunk parameters and for loss parameters (proxies) alike.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Iterator
from typing import Any

import torch
import torch.distributed as dist
import torch.distributed.nn.functional as dist_nn

from dml.batch import Batch, ModelOutput


def world_size() -> int:
    """Number of data-parallel ranks (1 when torch.distributed is not initialised)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


class _CommunicationClock:
    """Seconds spent in the global-batch collectives since last read (for the step-time share)."""

    seconds = 0.0

    @classmethod
    @contextlib.contextmanager
    def timing(cls, tensor: torch.Tensor) -> Iterator[None]:
        start = time.perf_counter()
        yield
        if tensor.is_cuda:  # NCCL is asynchronous; the loss waits for the result anyway
            torch.cuda.synchronize(tensor.device)
        cls.seconds += time.perf_counter() - start


def take_communication_seconds() -> float:
    """Seconds this process spent in the global-batch all-gather (forward and backward) since
    the last call; the training loop reports them as a share of epoch time."""
    seconds, _CommunicationClock.seconds = _CommunicationClock.seconds, 0.0
    return seconds


def _all_gather_keeping_grad(tensor: torch.Tensor) -> torch.Tensor:
    """Every rank's rows in rank order, through ``torch.distributed.nn``'s all-gather: its
    backward sums the gradient over ranks and keeps this rank's slice. The backward collective
    is timed too, between a hook on the output's gradient and one on the input's."""
    with _CommunicationClock.timing(tensor):
        gathered = torch.cat(dist_nn.all_gather(tensor))
    started: list[float] = []

    def finished(grad: torch.Tensor) -> None:
        if grad.is_cuda:
            torch.cuda.synchronize(grad.device)
        _CommunicationClock.seconds += time.perf_counter() - started.pop()

    gathered.register_hook(lambda grad: started.append(time.perf_counter()))
    tensor.register_hook(finished)
    return gathered


def gather_objects(obj: Any) -> list[Any]:
    """Every rank's ``obj`` in rank order (picklable values); ``[obj]`` on one process."""
    if world_size() == 1:
        return [obj]
    gathered: list[Any] = [None] * world_size()
    dist.all_gather_object(gathered, obj)
    return gathered


def _pack(tensors: dict[str, torch.Tensor]) -> tuple[torch.Tensor, list[tuple[str, torch.Size, torch.dtype]]]:
    """Concatenate ``[B, ...]`` tensors of one dtype into one ``[B, K]`` matrix (and a layout)."""
    layout = [(name, t.shape, t.dtype) for name, t in tensors.items()]
    flat = [t.reshape(t.shape[0], -1) for t in tensors.values()]
    return torch.cat(flat, dim=1), layout


def _unpack(packed: torch.Tensor, layout: list[tuple[str, torch.Size, torch.dtype]]) -> dict[str, torch.Tensor]:
    out, column = {}, 0
    for name, shape, dtype in layout:
        width = int(torch.Size(shape[1:]).numel())
        out[name] = packed[:, column:column + width].reshape(-1, *shape[1:]).to(dtype)
        column += width
    return out


def _gather_fields(fields: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """All-gather ``[B, ...]`` tensors in rank order, one collective per dtype group.

    Tensors that carry gradients go through the all-gather that keeps them (gradients flow
    back to this rank's slice); the rest through a plain all-gather (bool as uint8).
    """
    groups: dict[tuple[torch.dtype, bool], dict[str, torch.Tensor]] = {}
    for name, tensor in fields.items():
        grad = tensor.requires_grad
        wire = torch.uint8 if tensor.dtype == torch.bool else tensor.dtype
        groups.setdefault((wire, grad), {})[name] = tensor if wire == tensor.dtype else tensor.to(wire)
    out: dict[str, torch.Tensor] = {}
    for (_, grad), members in groups.items():
        packed, layout = _pack(members)
        if grad:
            gathered = _all_gather_keeping_grad(packed)
        else:
            parts = [torch.empty_like(packed) for _ in range(world_size())]
            with _CommunicationClock.timing(packed):
                dist.all_gather(parts, packed.contiguous())
            gathered = torch.cat(parts)
        out.update(_unpack(gathered, layout))
    return {name: out[name].to(fields[name].dtype) for name in fields}


def _flatten(record: Batch | ModelOutput, skip: tuple[str, ...] = ()) -> dict[str, torch.Tensor]:
    flat: dict[str, torch.Tensor] = {}
    for item in dataclasses.fields(record):
        value = getattr(record, item.name)
        if item.name in skip:
            continue
        if isinstance(value, torch.Tensor):
            flat[item.name] = value
        elif isinstance(value, dict):
            flat.update({f"{item.name}.{key}": t for key, t in value.items()})
    return flat


def _rebuild(record, flat: dict[str, torch.Tensor], **changes):
    for item in dataclasses.fields(record):
        value = getattr(record, item.name)
        if isinstance(value, torch.Tensor) and item.name in flat:
            changes[item.name] = flat[item.name]
        elif isinstance(value, dict):
            changes[item.name] = {key: flat[f"{item.name}.{key}"] for key in value}
    return dataclasses.replace(record, **changes)


def gather_global_batch(output: ModelOutput, batch: Batch) -> tuple[ModelOutput, Batch]:
    """Every rank's model outputs and batch annotations, concatenated in rank order.

    Identity on one process. Images and cached trunk features stay local (the loss never
    needs another rank's pixels; the gathered batch has ``images=None``, ``features=None``). Every other tensor of the batch and every output
    is gathered; outputs keep their gradient through :func:`_all_gather_keeping_grad`, so the
    update equals single-process training on the global batch. All ranks must pass the same
    batch size (every sampler guarantees it).
    """
    if world_size() == 1:
        return output, batch
    device = batch.index.device
    sizes = [torch.zeros(1, dtype=torch.long, device=device) for _ in range(world_size())]
    with _CommunicationClock.timing(batch.index):
        dist.all_gather(sizes, torch.tensor([len(batch)], dtype=torch.long, device=device))
    if len({int(s) for s in sizes}) != 1:
        raise RuntimeError(f"ranks have different batch sizes {[int(s) for s in sizes]}")
    gathered_output = _rebuild(output, _gather_fields(_flatten(output)))
    gathered_batch = _rebuild(batch, _gather_fields(_flatten(batch, skip=("images", "features"))),
                             images=None, features=None)
    return gathered_output, gathered_batch
