"""Global batches for pair-based losses across data-parallel workers.

Each worker embeds its own images; a pair loss needs every pair of the global batch. The
all-gather below returns the global batch on every rank. Its backward sums the incoming
gradients over ranks (every rank computed the same global loss) and keeps this rank's slice,
so that after DDP averages parameter gradients over ranks the update equals single-process
training on the whole batch, for trunk parameters and for loss parameters (proxies) alike.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from typing import Any

import torch
import torch.distributed as dist


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


class _AllGatherSumGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        ctx.rank, ctx.size = dist.get_rank(), tensor.shape[0]
        parts = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
        with _CommunicationClock.timing(tensor):
            dist.all_gather(parts, tensor.contiguous())
        return torch.cat(parts)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        grad = grad.contiguous()
        with _CommunicationClock.timing(grad):
            dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad[ctx.rank * ctx.size : (ctx.rank + 1) * ctx.size]


def gather_objects(obj: Any) -> list[Any]:
    """Every rank's ``obj`` in rank order (picklable values); ``[obj]`` on one process."""
    if world_size() == 1:
        return [obj]
    gathered: list[Any] = [None] * world_size()
    dist.all_gather_object(gathered, obj)
    return gathered


def gather_global_batch(
    embeddings: torch.Tensor, labels: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Concatenate every rank's (embeddings, labels) in rank order; identity on one process.

    All ranks must pass the same batch size (the m-per-class sampler guarantees it).
    """
    if world_size() == 1:
        return embeddings, labels
    sizes = torch.tensor([embeddings.shape[0]], device=embeddings.device)
    all_sizes = [torch.empty_like(sizes) for _ in range(world_size())]
    gathered_labels = [torch.empty_like(labels) for _ in range(world_size())]
    with _CommunicationClock.timing(labels):
        dist.all_gather(all_sizes, sizes)
        dist.all_gather(gathered_labels, labels.contiguous())
    if len({int(s) for s in all_sizes}) != 1:
        raise RuntimeError(f"ranks have different batch sizes {[int(s) for s in all_sizes]}")
    return _AllGatherSumGrad.apply(embeddings), torch.cat(gathered_labels)
