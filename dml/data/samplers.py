"""Batch samplers: m images per class, global batches split across distributed workers."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
from torch.utils.data import Sampler

from dml.errors import ConfigError


def m_per_class_epoch(labels: np.ndarray, *, m: int, global_batch: int, num_batches: int,
                      seed: int, epoch: int) -> np.ndarray:
    """Global batches of one epoch, int64 [num_batches, global_batch], from (seed, epoch) alone.

    Each batch holds ``global_batch // m`` distinct classes, ``m`` consecutive indices per
    class. Classes are drawn uniformly: the class list is shuffled again and again and each
    shuffle is cut into as many whole batches as it holds (its last partial chunk is dropped,
    so no batch straddles two shuffles and repeats a class). A class's images are taken in a
    per-epoch shuffled order, cycling when exhausted; a class with fewer than ``m`` images
    repeats some of them in the same batch (sampling with replacement).
    """
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), int(epoch)]))
    classes, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
    num_classes = len(classes)
    per_batch = global_batch // m

    # Class slots: num_batches x per_batch distinct classes per row.
    per_shuffle = num_classes // per_batch
    shuffles = -(-num_batches // per_shuffle)
    keys = rng.random((shuffles, num_classes))
    order = np.argsort(keys, axis=1)[:, : per_shuffle * per_batch]
    slots = order.reshape(-1, per_batch)[:num_batches]  # [num_batches, per_batch] class indices

    # Images of each class in a shuffled order: class c owns by_class[start[c]:start[c]+n_c].
    shuffled = rng.permutation(len(labels))
    by_class = shuffled[np.argsort(inverse[shuffled], kind="stable")]
    start = np.concatenate([[0], np.cumsum(counts)[:-1]])

    # k-th appearance of a class this epoch takes its images k*m .. k*m+m-1 (cyclically).
    flat = slots.reshape(-1)
    appearance = np.empty(len(flat), dtype=np.int64)
    sort = np.argsort(flat, kind="stable")
    sorted_classes = flat[sort]
    first = np.concatenate([[0], np.flatnonzero(np.diff(sorted_classes)) + 1])
    group_start = np.repeat(first, np.diff(np.concatenate([first, [len(flat)]])))
    appearance[sort] = np.arange(len(flat)) - group_start
    offsets = appearance[:, None] * m + np.arange(m)[None, :]  # [slots, m]
    within = offsets % counts[flat][:, None]
    indices = by_class[start[flat][:, None] + within]
    return indices.reshape(num_batches, global_batch).astype(np.int64)


class MPerClassBatchSampler(Sampler[list[int]]):
    """Class-balanced batches: ``m`` images from each of ``batch_size // m`` classes.

    With ``world_size`` workers, each epoch is a sequence of GLOBAL batches of
    ``batch_size * world_size`` indices (``m`` per class, distinct classes), computed from
    ``seed`` and the epoch alone; worker ``rank`` gets the contiguous slice
    ``[rank * batch_size, (rank + 1) * batch_size)`` of each, itself ``m`` per class. The union
    of the workers' batches is the 1-worker global batch for the same seed and epoch.

    ``len()`` is ``max(1, len(labels) // (batch_size * world_size))``. Classes with fewer than
    ``m`` images are sampled with replacement (their images repeat inside a batch); see
    :func:`m_per_class_epoch`.

    Resumable: ``state_dict()`` gives ``{"epoch", "batches_done", "seed"}``;
    ``load_state_dict`` continues with the next batch of that epoch (the sequence is recomputed,
    nothing else is stored). ``batches_done`` counts batches handed out by ``__iter__``: with a
    prefetching DataLoader (num_workers > 0) that is ahead of the batches trained on, so a
    trainer that checkpoints mid-epoch should store its own step count as ``batches_done``.
    ``set_epoch(e)`` with a new epoch starts it from its first batch; calling it with the
    current epoch keeps the position (so resume, then ``set_epoch``, still resumes); iterating
    an epoch that was finished starts it again.
    """

    def __init__(self, labels: np.ndarray, *, m: int, batch_size: int, rank: int = 0,
                 world_size: int = 1, seed: int = 0) -> None:
        labels = np.asarray(labels)
        if labels.ndim != 1 or len(labels) == 0:
            raise ConfigError("MPerClassBatchSampler needs a non-empty 1-d array of labels")
        if m < 1:
            raise ConfigError(f"train.m_per_class: {m} must be at least 1")
        if batch_size < 1:
            raise ConfigError(f"train.batch_size: {batch_size} must be at least 1")
        if batch_size % m:
            raise ConfigError(f"train.batch_size ({batch_size}) must be divisible by "
                              f"train.m_per_class ({m})")
        if world_size < 1 or not 0 <= rank < world_size:
            raise ConfigError(f"rank {rank} is not in 0..world_size-1 (world_size {world_size})")
        num_classes = len(np.unique(labels))
        needed = batch_size * world_size // m
        if num_classes < needed:
            raise ConfigError(
                f"train.batch_size ({batch_size}) x {world_size} worker(s) / "
                f"train.m_per_class ({m}) needs {needed} distinct classes per global batch, "
                f"but the labels have only {num_classes}; lower train.batch_size or raise "
                "train.m_per_class"
            )
        self.labels = labels
        self.m = int(m)
        self.batch_size = int(batch_size)
        self.rank = int(rank)
        self.world_size = int(world_size)
        self.seed = int(seed)
        self.epoch = 0
        self.batches_done = 0

    @property
    def global_batch(self) -> int:
        return self.batch_size * self.world_size

    def __len__(self) -> int:
        return max(1, len(self.labels) // self.global_batch)

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose batches ``__iter__`` yields (a new epoch starts at batch 0)."""
        if int(epoch) != self.epoch:
            self.epoch = int(epoch)
            self.batches_done = 0

    def global_batches(self, epoch: int | None = None) -> np.ndarray:
        """All global batches of ``epoch`` (default: the current one), [len, global_batch]."""
        return m_per_class_epoch(
            self.labels,
            m=self.m,
            global_batch=self.global_batch,
            num_batches=len(self),
            seed=self.seed,
            epoch=self.epoch if epoch is None else epoch,
        )

    def __iter__(self) -> Iterator[list[int]]:
        if self.batches_done >= len(self):
            self.batches_done = 0
        batches = self.global_batches()
        lo, hi = self.rank * self.batch_size, (self.rank + 1) * self.batch_size
        while self.batches_done < len(self):
            batch = batches[self.batches_done, lo:hi]
            self.batches_done += 1
            yield batch.tolist()

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "batches_done": self.batches_done, "seed": self.seed}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        missing = {"epoch", "batches_done", "seed"} - set(state)
        if missing:
            raise ConfigError(f"sampler state lacks {sorted(missing)}")
        self.seed = int(state["seed"])
        self.epoch = int(state["epoch"])
        self.batches_done = int(state["batches_done"])
