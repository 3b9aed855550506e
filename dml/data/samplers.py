"""Batch samplers by name (``train.sampler`` in params.yaml), deterministic, per rank, resumable.

Every sampler computes the GLOBAL batches of an epoch from ``(seed, epoch)`` alone, as an int64
``[num_batches, batch_size * world_size]`` array; worker ``rank`` takes the contiguous slice
``[rank * batch_size, (rank + 1) * batch_size)`` of each. So the union of the workers' batches
is the 1-worker global batch, and resuming needs only ``(epoch, batches_done, seed)``.

A sampler factory in ``SAMPLERS`` takes the training rows (:class:`~dml.data.rows.ManifestRows`:
labels per scale, domains, object counts), the fixed ``batch_size, rank, world_size, seed`` from the loop, and
its own knobs from params.yaml.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, Any

import numpy as np
from torch.utils.data import Sampler

from dml.errors import ConfigError
from dml.registry import Knob, Registry

SAMPLERS: Registry[Sampler] = Registry("sampler")

#: Sampler arguments supplied by the training loop, never by params.yaml.
LOOP_ARGUMENTS = ("rows", "batch_size", "rank", "world_size", "seed")


def class_slots(rng: np.random.Generator, num_classes: int, num_batches: int,
                per_batch: int) -> np.ndarray:
    """int64 ``[num_batches, per_batch]`` class indices, drawn uniformly: the class list is
    shuffled again and again and each shuffle is cut into as many whole batches as it holds
    (its last partial chunk is dropped, so no batch straddles two shuffles and repeats a
    class). With fewer classes than ``per_batch``, each batch holds every class as evenly as
    possible (some twice or more), in a shuffled order."""
    if num_classes >= per_batch:
        per_shuffle = num_classes // per_batch
        shuffles = -(-num_batches // per_shuffle)
        keys = rng.random((shuffles, num_classes))
        order = np.argsort(keys, axis=1)[:, : per_shuffle * per_batch]
        return order.reshape(-1, per_batch)[:num_batches]
    repeats = -(-per_batch // num_classes)
    keys = rng.random((num_batches, repeats, num_classes))
    return np.argsort(keys, axis=2).reshape(num_batches, -1)[:, :per_batch]


def images_of_slots(rng: np.random.Generator, inverse: np.ndarray, counts: np.ndarray,
                    slots: np.ndarray, m: int) -> np.ndarray:
    """int64 ``[*slots.shape, m]``: ``m`` image indices for each class slot.

    A class's images (``inverse``: the class index of every image, ``counts`` per class) are
    taken in a per-epoch shuffled order: its k-th slot of the epoch takes images
    ``k*m .. k*m+m-1``, cycling when exhausted, so a class with fewer than ``m`` images
    repeats some of them in the same slot (sampling with replacement)."""
    shuffled = rng.permutation(len(inverse))
    by_class = shuffled[np.argsort(inverse[shuffled], kind="stable")]
    start = np.concatenate([[0], np.cumsum(counts)[:-1]])
    flat = slots.reshape(-1)
    appearance = np.empty(len(flat), dtype=np.int64)
    sort = np.argsort(flat, kind="stable")
    sorted_classes = flat[sort]
    first = np.concatenate([[0], np.flatnonzero(np.diff(sorted_classes)) + 1])
    group_start = np.repeat(first, np.diff(np.concatenate([first, [len(flat)]])))
    appearance[sort] = np.arange(len(flat)) - group_start
    offsets = appearance[:, None] * m + np.arange(m)[None, :]  # [slots, m]
    within = offsets % counts[flat][:, None]
    return by_class[start[flat][:, None] + within].reshape(*slots.shape, m).astype(np.int64)


def m_per_class_epoch(labels: np.ndarray, *, m: int, global_batch: int, num_batches: int,
                      seed: int, epoch: int) -> np.ndarray:
    """Global batches of one epoch, int64 [num_batches, global_batch], from (seed, epoch) alone.

    Each batch holds ``global_batch // m`` distinct classes (:func:`class_slots`), ``m``
    consecutive indices per class (:func:`images_of_slots`).
    """
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), int(epoch)]))
    _, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
    slots = class_slots(rng, len(counts), num_batches, global_batch // m)
    return images_of_slots(rng, inverse, counts, slots, m).reshape(num_batches, global_batch)


def hierarchical_epoch(scale_labels: list[np.ndarray], *, k: int, global_batch: int,
                       num_batches: int, seed: int, epoch: int) -> np.ndarray:
    """Global batches of one epoch for several semantic scales, int64 ``[num_batches,
    global_batch]``, from (seed, epoch) alone.

    A batch is made of groups of ``k * len(scale_labels)`` consecutive indices: ``k`` images of
    one fine class, then ``k`` images of one class of the next scale (any of its fine
    classes), and so on to the coarsest. At each scale a batch's groups take distinct classes
    where the scale has enough of them (:func:`class_slots`).
    """
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), int(epoch)]))
    groups = global_batch // (k * len(scale_labels))
    parts = []
    for labels in scale_labels:
        _, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
        slots = class_slots(rng, len(counts), num_batches, groups)
        parts.append(images_of_slots(rng, inverse, counts, slots, k))  # [batches, groups, k]
    return np.stack(parts, axis=2).reshape(num_batches, global_batch)


def multilabel_epoch(counts: np.ndarray, *, k: int, global_batch: int, num_batches: int,
                     seed: int, epoch: int) -> np.ndarray:
    """Global batches of one epoch for multi-label rows, int64 ``[num_batches, global_batch]``,
    from (seed, epoch) alone.

    A batch is made of groups of ``k`` consecutive images that all show one class (drawn per
    group, distinct within a batch where there are enough classes, :func:`class_slots`);
    since an image usually shows other classes too, its partners overlap it partially, so the
    graded similarity has pairs between 0 and 1 to order (not only identical label sets).
    ``counts``: ``[N, C]`` objects of each class per image.
    """
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), int(epoch)]))
    image, label = np.nonzero(np.asarray(counts) > 0)  # one (image, class) pair per class shown
    present, inverse, per_class = np.unique(label, return_inverse=True, return_counts=True)
    slots = class_slots(rng, len(present), num_batches, global_batch // k)
    pairs = images_of_slots(rng, inverse, per_class, slots, k)  # [batches, groups, k] pair ids
    return image[pairs].reshape(num_batches, global_batch).astype(np.int64)


def classes_in_both(labels: np.ndarray, domains: np.ndarray,
                    pair: tuple[str, str] = ("sketch", "photo")) -> np.ndarray:
    """The classes that have images in both domains of ``pair``, sorted."""
    labels, domains = np.asarray(labels), np.asarray(domains, dtype=object)
    return np.intersect1d(labels[domains == pair[0]], labels[domains == pair[1]])


def cross_domain_epoch(labels: np.ndarray, domains: np.ndarray, *, m: int, global_batch: int,
                       num_batches: int, seed: int, epoch: int,
                       pair: tuple[str, str] = ("sketch", "photo")) -> np.ndarray:
    """Global batches of one epoch over two domains, int64 ``[num_batches, global_batch]``,
    from (seed, epoch) alone.

    Each batch holds ``global_batch // m`` distinct classes among those both domains show
    (:func:`class_slots`), and for each, ``m / 2`` images of the first domain of ``pair``
    followed by ``m / 2`` of the second: every sketch in a batch has photos of its class
    beside it, and every photo sketches.
    """
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), int(epoch)]))
    classes = classes_in_both(labels, domains, pair).astype(labels.dtype)
    slots = class_slots(rng, len(classes), num_batches, global_batch // m)
    parts = []
    for domain in pair:
        rows = np.flatnonzero((domains == domain) & np.isin(labels, classes))
        inverse = np.searchsorted(classes, labels[rows])
        counts = np.bincount(inverse, minlength=len(classes))
        parts.append(rows[images_of_slots(rng, inverse, counts, slots, m // 2)])
    return np.concatenate(parts, axis=2).reshape(num_batches, global_batch).astype(np.int64)


class GlobalBatchSampler(Sampler[list[int]]):
    """Base of every sampler: rank slicing of global batches, epochs and resumable state.

    Subclasses write ``make_epoch(epoch) -> int64[len(self), global_batch]``.

    Resumable: ``state_dict()`` gives ``{"epoch", "batches_done", "seed"}``;
    ``load_state_dict`` continues with the next batch of that epoch (the sequence is recomputed,
    nothing else is stored). ``batches_done`` counts batches handed out by ``__iter__``: with a
    prefetching DataLoader (num_workers > 0) that is ahead of the batches trained on, so a
    trainer that checkpoints mid-epoch should store its own step count as ``batches_done``.
    ``set_epoch(e)`` with a new epoch starts it from its first batch; calling it with the
    current epoch keeps the position (so resume, then ``set_epoch``, still resumes); iterating
    an epoch that was finished starts it again.
    """

    def __init__(self, num_items: int, *, batch_size: int, rank: int = 0, world_size: int = 1,
                 seed: int = 0) -> None:
        if num_items < 1:
            raise ConfigError(f"{type(self).__name__} needs at least one item to sample")
        if batch_size < 1:
            raise ConfigError(f"train.batch_size: {batch_size} must be at least 1")
        if world_size < 1 or not 0 <= rank < world_size:
            raise ConfigError(f"rank {rank} is not in 0..world_size-1 (world_size {world_size})")
        self.num_items = int(num_items)
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
        return max(1, self.num_items // self.global_batch)

    def rng(self, epoch: int) -> np.random.Generator:
        """The epoch's generator, from (seed, epoch) alone."""
        return np.random.default_rng(np.random.SeedSequence([self.seed, int(epoch)]))

    def make_epoch(self, epoch: int) -> np.ndarray:
        """All global batches of ``epoch``, int64 ``[len(self), global_batch]``."""
        raise NotImplementedError

    def global_batches(self, epoch: int | None = None) -> np.ndarray:
        """All global batches of ``epoch`` (default: the current one)."""
        return self.make_epoch(self.epoch if epoch is None else int(epoch))

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose batches ``__iter__`` yields (a new epoch starts at batch 0)."""
        if int(epoch) != self.epoch:
            self.epoch = int(epoch)
            self.batches_done = 0

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


class MPerClassBatchSampler(GlobalBatchSampler):
    """Class-balanced batches: ``m`` images from each of ``global_batch // m`` classes.

    Each global batch holds distinct classes, ``m`` per class, and each rank's slice is itself
    ``m`` per class. Classes with fewer than ``m`` images are sampled with replacement (their
    images repeat inside a batch); see :func:`m_per_class_epoch`.
    """

    def __init__(self, labels: np.ndarray, *, m: int, batch_size: int, rank: int = 0,
                 world_size: int = 1, seed: int = 0) -> None:
        labels = np.asarray(labels)
        if labels.ndim != 1 or len(labels) == 0:
            raise ConfigError("MPerClassBatchSampler needs a non-empty 1-d array of labels")
        if m < 1:
            raise ConfigError(f"train.sampler.m: {m} must be at least 1")
        super().__init__(len(labels), batch_size=batch_size, rank=rank, world_size=world_size,
                         seed=seed)
        if batch_size % m:
            raise ConfigError(f"train.batch_size ({batch_size}) must be divisible by "
                              f"train.sampler.m ({m})")
        num_classes = len(np.unique(labels))
        needed = batch_size * world_size // m
        if num_classes < needed:
            raise ConfigError(
                f"train.batch_size ({batch_size}) x {world_size} worker(s) / "
                f"train.sampler.m ({m}) needs {needed} distinct classes per global batch, "
                f"but the labels have only {num_classes}; lower train.batch_size or raise "
                "train.sampler.m"
            )
        self.labels = labels
        self.m = int(m)

    def make_epoch(self, epoch: int) -> np.ndarray:
        return m_per_class_epoch(self.labels, m=self.m, global_batch=self.global_batch,
                                 num_batches=len(self), seed=self.seed, epoch=epoch)


class HierarchicalBatchSampler(GlobalBatchSampler):
    """Batches for several semantic scales (DyML's CSL): groups of ``k`` images of one fine
    class, ``k`` of one middle class, ``k`` of one coarse class (one part per scale, finest
    first); see :func:`hierarchical_epoch`. Each rank's slice is whole groups."""

    def __init__(self, scale_labels: dict[str, np.ndarray], *, k: int, batch_size: int,
                 rank: int = 0, world_size: int = 1, seed: int = 0) -> None:
        if not scale_labels or any(len(v) == 0 for v in scale_labels.values()):
            raise ConfigError("HierarchicalBatchSampler needs labels at one scale at least")
        if k < 1:
            raise ConfigError(f"train.sampler.k: {k} must be at least 1")
        group = k * len(scale_labels)
        if batch_size % group:
            raise ConfigError(f"train.batch_size ({batch_size}) must be a multiple of "
                              f"train.sampler.k ({k}) x {len(scale_labels)} scale(s) "
                              f"({', '.join(scale_labels)}) = {group}: one group of k images "
                              "per scale")
        super().__init__(len(next(iter(scale_labels.values()))), batch_size=batch_size,
                         rank=rank, world_size=world_size, seed=seed)
        self.scale_labels = {s: np.asarray(v) for s, v in scale_labels.items()}
        self.k = int(k)

    def make_epoch(self, epoch: int) -> np.ndarray:
        return hierarchical_epoch(list(self.scale_labels.values()), k=self.k,
                                  global_batch=self.global_batch, num_batches=len(self),
                                  seed=self.seed, epoch=epoch)


class MultiLabelBatchSampler(GlobalBatchSampler):
    """Batches of multi-label rows in groups of ``k`` images sharing a class; see
    :func:`multilabel_epoch`. Each rank's slice is whole groups."""

    def __init__(self, counts: np.ndarray, *, k: int, batch_size: int, rank: int = 0,
                 world_size: int = 1, seed: int = 0) -> None:
        counts = np.asarray(counts)
        if counts.ndim != 2 or len(counts) == 0:
            raise ConfigError("MultiLabelBatchSampler needs a non-empty [N, C] count matrix")
        empty = np.flatnonzero(~(counts > 0).any(axis=1))
        if len(empty):
            raise ConfigError(f"MultiLabelBatchSampler: {len(empty)} row(s) show no class, "
                              f"first at row {int(empty[0])}")
        if k < 1:
            raise ConfigError(f"train.sampler.k: {k} must be at least 1")
        if batch_size % k:
            raise ConfigError(f"train.batch_size ({batch_size}) must be divisible by "
                              f"train.sampler.k ({k})")
        super().__init__(len(counts), batch_size=batch_size, rank=rank, world_size=world_size,
                         seed=seed)
        self.counts = counts
        self.k = int(k)

    def make_epoch(self, epoch: int) -> np.ndarray:
        return multilabel_epoch(self.counts, k=self.k, global_batch=self.global_batch,
                                num_batches=len(self), seed=self.seed, epoch=epoch)


class CrossDomainBatchSampler(GlobalBatchSampler):
    """Batches over two domains: ``m`` images of each of ``global_batch // m`` classes, half
    from each domain; see :func:`cross_domain_epoch`. Each rank's slice is whole groups."""

    def __init__(self, labels: np.ndarray, domains: np.ndarray, *, m: int, batch_size: int,
                 rank: int = 0, world_size: int = 1, seed: int = 0,
                 pair: tuple[str, str] = ("sketch", "photo")) -> None:
        labels, domains = np.asarray(labels), np.asarray(domains, dtype=object)
        if m < 2 or m % 2:
            raise ConfigError(f"train.sampler.m: {m} must be even and at least 2 (half of each domain)")
        if batch_size % m:
            raise ConfigError(f"train.batch_size ({batch_size}) must be divisible by train.sampler.m ({m})")
        super().__init__(len(labels), batch_size=batch_size, rank=rank, world_size=world_size, seed=seed)
        both = classes_in_both(labels, domains, pair)
        needed = batch_size * world_size // m
        if len(both) < needed:
            raise ConfigError(
                f"sampler 'cross_domain': {len(both)} class(es) have both {pair[0]} and {pair[1]} "
                f"images; a global batch of {batch_size} x {world_size} with m={m} needs {needed}")
        self.labels, self.domains, self.pair, self.m = labels, domains, pair, int(m)

    def make_epoch(self, epoch: int) -> np.ndarray:
        return cross_domain_epoch(self.labels, self.domains, m=self.m, global_batch=self.global_batch,
                                  num_batches=len(self), seed=self.seed, epoch=epoch, pair=self.pair)


class RandomBatchSampler(GlobalBatchSampler):
    """Plain shuffled batches, a new permutation per epoch; the last partial batch is dropped.

    For losses that need no pairs inside the batch (proxy and classifier losses).
    """

    def make_epoch(self, epoch: int) -> np.ndarray:
        order = self.rng(epoch).permutation(self.num_items)
        if self.num_items < self.global_batch:  # fewer items than one batch: repeat them
            order = np.resize(order, self.global_batch)
        return order[: len(self) * self.global_batch].reshape(len(self), -1).astype(np.int64)


#: Images per class in an m_per_class batch, unless ``train.sampler.m`` says otherwise.
DEFAULT_M = 4


@SAMPLERS.register("m_per_class")
def m_per_class(rows: Any, *, batch_size: int, rank: int, world_size: int, seed: int,
                m: Annotated[int, Knob(ge=1, integer=True)] = DEFAULT_M) -> MPerClassBatchSampler:
    """``m`` images of each of ``batch_size // m`` fine classes per batch (the default)."""
    return MPerClassBatchSampler(rows.require_labels("sampler 'm_per_class'"), m=m,
                                 batch_size=batch_size, rank=rank, world_size=world_size, seed=seed)


@SAMPLERS.register("hierarchical")
def hierarchical(rows: Any, *, batch_size: int, rank: int, world_size: int, seed: int,
                 k: Annotated[int, Knob(ge=1, integer=True)] = DEFAULT_M, scales: list[str] | None = None) -> HierarchicalBatchSampler:
    """Groups of ``k`` images of one class at each semantic scale, finest first (default:
    every scale the data has); ``batch_size`` a multiple of ``k`` x the number of scales."""
    labels = {rows.info.fine: rows.require_labels("sampler 'hierarchical'"),
              **rows.scale_labels}
    chosen = list(labels) if scales is None else list(scales)
    unknown = [s for s in chosen if s not in labels]
    if unknown or not chosen:
        raise ConfigError(f"train.sampler.scales: {unknown or chosen} not among the data's "
                          f"scales: {', '.join(labels)}")
    return HierarchicalBatchSampler({s: labels[s] for s in chosen}, k=k, batch_size=batch_size,
                                    rank=rank, world_size=world_size, seed=seed)


@SAMPLERS.register("multilabel")
def multilabel(rows: Any, *, batch_size: int, rank: int, world_size: int, seed: int,
               k: Annotated[int, Knob(ge=1, integer=True)] = DEFAULT_M) -> MultiLabelBatchSampler:
    """Groups of ``k`` images sharing one object class (multi-label, multi-object rows)."""
    if rows.counts is None:
        raise ConfigError("sampler 'multilabel' needs object counts per image (an "
                          "'object_counts' column); single-label data uses m_per_class")
    return MultiLabelBatchSampler(rows.counts, k=k, batch_size=batch_size, rank=rank,
                                  world_size=world_size, seed=seed)


@SAMPLERS.register("cross_domain")
def cross_domain(rows: Any, *, batch_size: int, rank: int, world_size: int, seed: int,
                 m: Annotated[int, Knob(ge=1, integer=True)] = DEFAULT_M) -> CrossDomainBatchSampler:
    """``m`` images of each of ``batch_size // m`` classes, ``m / 2`` sketches then ``m / 2``
    photos: a sketch in a batch always has photos of its class beside it."""
    return CrossDomainBatchSampler(rows.require_labels("sampler 'cross_domain'"), rows.domains,
                                   m=m, batch_size=batch_size, rank=rank, world_size=world_size, seed=seed)


@SAMPLERS.register("random")
def random(rows: Any, *, batch_size: int, rank: int, world_size: int,
           seed: int) -> RandomBatchSampler:
    """Uniformly shuffled batches, without regard to classes."""
    return RandomBatchSampler(len(rows), batch_size=batch_size, rank=rank,
                              world_size=world_size, seed=seed)


def fitting_batch_size(name: str, knobs: dict[str, Any], rows: Any, *, batch_size: int,
                       world_size: int, where: str = "train") -> tuple[int, str]:
    """The largest per-worker batch, at most ``batch_size``, that sampler ``name`` can fill
    from ``rows``, and why it is smaller (empty when it is not).

    ``m_per_class`` and ``cross_domain`` have such a limit: ``batch_size x world_size / m``
    distinct classes per global batch (for ``cross_domain``, classes with images in both
    domains). A ConfigError when not even one class per worker is available. (The
    hierarchical sampler repeats a scale's classes in a batch when it has too few.)
    """
    if name not in ("m_per_class", "cross_domain"):
        return batch_size, ""
    m = int(knobs.get("m", DEFAULT_M))
    labels = rows.require_labels(f"sampler {name!r}")
    classes = len(classes_in_both(labels, rows.domains) if name == "cross_domain"
                  else np.unique(labels))
    needed = batch_size * world_size // max(m, 1)
    if needed <= classes:
        return batch_size, ""
    which = " classes with sketches and photos" if name == "cross_domain" else ""
    reason = (f"{name} with m={m} needs {needed} classes per global batch of {batch_size} x "
              f"{world_size} worker(s), the training rows have {classes}{which}")
    fitting = (classes // world_size) * m
    if fitting < m:
        raise ConfigError(f"{where}: {reason}: fewer classes than workers; lower "
                          f"{where}.num_workers or use more classes")
    return fitting, reason
