"""The kernels of exact ranking: rank counting, block sizes, the one thread pool.

A block's scores come from its geometry (:mod:`dml.evaluate.geometry`), float32, higher is nearer.

Ranks: the position of a relevant item only depends on how many items score at least as high,
so no row is ever argsorted. On CPU the positions are *counted* (:func:`ranks_in_block`): each
row's scores fall into buckets spanning its relevant scores, a histogram counts the buckets
whole, and only the few scores sharing a bucket with a relevant one are compared exactly; a few
passes over the row instead of a sort (about 7x less work at 10^5 items a row). On a GPU each
row is sorted by value (``torch.sort``). Either way :func:`ranks_among` reads each relevant
item's position off a sorted set with a binary search (``torch.searchsorted``).

Ties: each relevant item's position is the *last* of its tie group (the items with exactly
its score), and the group's size comes with it (``ties``), so that every metric is the
expectation over the orders of the tied items (:mod:`dml.evaluate.metrics`; McSherry and
Najork). The result is deterministic, independent of gallery order, and a collapsed embedding
or hash (all scores equal) scores the chance level, neither better nor worse.

Threads: :func:`in_threads` is the package's one pool, one thread per core with torch
single-threaded meanwhile, for numpy work that releases the GIL and for GEMM tiles each read
back while in cache.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache
from typing import TypeVar

import numpy as np
import torch

__all__ = [
    "BYTES_PER_PAIR",
    "DEFAULT_BLOCK_BYTES",
    "at_or_above",
    "in_chunks",
    "in_threads",
    "ranks_among",
    "ranks_in_block",
    "relevant_ranks",
    "relevant_scores",
    "rows_per_block",
    "sort_rows_",
    "tile_buffer",
]

T = TypeVar("T")

DEFAULT_BLOCK_BYTES = 256 << 20
BYTES_PER_PAIR = 5  # one float32 score + one bool relevance flag per (query, gallery) pair
BUCKETS = 4096  # buckets of a row's relevant score range when ranks are counted (:func:`_count_rows`)
COUNT_BYTES = 4 << 20  # one thread counts this many bytes of scores at a time (its temporaries: about 3x)


def rows_per_block(n_gallery: int, block_bytes: int = DEFAULT_BLOCK_BYTES) -> int:
    """Queries per block so that the block's scores and relevance flags fit in ``block_bytes``.

    >>> rows_per_block(100_000)      # 256 MiB / (5 bytes * 100k items)
    536
    >>> rows_per_block(10**9, 1)     # never fewer than one query
    1
    """
    return max(1, int(block_bytes) // (BYTES_PER_PAIR * max(1, n_gallery)))


def sort_rows_(scores: torch.Tensor) -> torch.Tensor:
    """Sort each row ascending by value; in place on CPU (numpy SIMD sort, one thread per core)."""
    if scores.device.type != "cpu":
        return torch.sort(scores, dim=1).values
    a = scores.numpy()  # shares memory with ``scores``
    in_chunks(lambda start, stop: a[start:stop].sort(axis=1), a.shape[0])
    return scores


def ranks_in_block(scores: torch.Tensor,
                   found: Sequence[tuple[torch.Tensor, torch.Tensor]]) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """:func:`ranks_among` for each ``(rel_scores, n_relevant)`` of ``found`` (one per
    relevance) against each row of ``scores`` (on a GPU consumed: sorted in place).

    On CPU no row is sorted: the positions are counted (:func:`_count_rows`), one thread per
    core on its own rows. On a GPU each row is sorted whole (``torch.sort``)."""
    if scores.device.type != "cpu" or scores.numel() == 0:
        ascending = sort_rows_(scores)
        return [ranks_among(ascending, rel_scores, n_rel) for rel_scores, n_rel in found]
    a = scores.numpy()
    rel = [(r.numpy(), n.numpy()) for r, n in found]
    out = [(np.zeros(r.shape, np.int64), np.zeros(r.shape, np.int64)) for r, _ in rel]
    scale, offset = _bucket_maps(rel, a.shape[0])
    rows = max(1, COUNT_BYTES // (4 * max(1, a.shape[1])))  # memory flat in the gallery's size
    in_chunks(lambda start, stop: _count_rows(a, rel, scale, offset, out, start, stop), a.shape[0], rows)
    return [(torch.from_numpy(ranks), torch.from_numpy(ties)) for ranks, ties in out]


def _bucket_maps(rel: Sequence[tuple[np.ndarray, np.ndarray]], n_rows: int) -> tuple[np.ndarray, np.ndarray]:
    """Each row's ``(scale, offset)``: a score ``s`` falls in bucket ``s * scale + offset``, the
    row's relevant scores spread over :data:`BUCKETS` buckets from 1 (its lowest) to
    ``BUCKETS`` (its highest); lower scores fall in bucket 0, higher ones in ``BUCKETS + 1``.
    A row without a relevant item puts everything in bucket 0. Both are finite, so no score
    (``-inf`` included) maps to NaN."""
    lo = np.full(n_rows, np.inf, np.float32)
    hi = np.full(n_rows, -np.inf, np.float32)
    for rel_scores, n_rel in rel:
        if rel_scores.shape[1]:
            has = n_rel > 0
            lo = np.where(has, np.minimum(lo, rel_scores[np.arange(n_rows), np.maximum(n_rel - 1, 0)]), lo)
            hi = np.where(has, np.maximum(hi, rel_scores[:, 0]), hi)
    empty = ~np.isfinite(lo)
    lo, hi = np.where(empty, 0, lo), np.where(empty, 1, hi)
    spread = np.maximum.reduce([hi - lo, np.float32(1e-6) * np.maximum(np.abs(lo), np.abs(hi)),
                                np.full(n_rows, 1e-30, np.float32)])
    scale = np.where(empty, 1, (BUCKETS - 1) / spread).astype(np.float32)
    offset = np.where(empty, -np.inf, 1.5 - lo * scale).astype(np.float32)
    return scale, offset


def _count_rows(a: np.ndarray, rel: Sequence[tuple[np.ndarray, np.ndarray]], scale: np.ndarray,
                offset: np.ndarray, out: list[tuple[np.ndarray, np.ndarray]], start: int, stop: int) -> None:
    """Ranks and ties of rows ``start:stop`` into ``out``, by counting instead of sorting.

    Each score falls in a bucket of its row (:func:`_bucket_maps`) by a float multiply and
    add, a clip and a floor, each monotone in the score: a score in a higher bucket than a
    relevant score's is higher than it, one in a lower bucket lower. So a histogram counts
    every bucket whole except those holding a relevant score, whose few scores are compared
    exactly (sorted; two binary searches per relevant item, as :func:`ranks_among`): exact
    ranks and tie groups in a few passes over the row."""
    width = BUCKETS + 2
    n, n_cols = stop - start, a.shape[1]
    first = np.arange(n, dtype=np.intp)[:, None] * width  # each row's buckets in one histogram
    scale, shift = scale[start:stop, None], offset[start:stop, None]

    def bucket(x: np.ndarray) -> np.ndarray:
        """Each score's bucket in the histogram, its row's first bucket added as an integer."""
        t = np.multiply(x, scale)
        t += shift
        index = np.clip(t, 0, width - 1, out=t).astype(np.intp)
        index += first
        return index

    flat = bucket(a[start:stop]).ravel()
    hist = torch.bincount(torch.from_numpy(flat), minlength=n * width).view(n, width).numpy()
    tied = np.zeros(n * width, dtype=bool)  # the buckets holding a relevant score
    where = []
    for rel_scores, n_rel in rel:
        listed = np.arange(rel_scores.shape[1]) < n_rel[start:stop, None]
        at = bucket(np.where(listed, rel_scores[start:stop], 0))
        tied[at[listed]] = True
        where.append((at, listed))
    pos = np.flatnonzero(tied[flat])  # the scores to compare exactly: those sharing a bucket with a relevant one
    rows, values = pos // n_cols, a[start:stop].ravel()[pos]
    count = np.bincount(rows, minlength=n)
    candidates = np.full((n, int(count.max()) if len(pos) else 0), -np.inf, dtype=np.float32)
    candidates[rows, np.arange(len(pos)) - (np.cumsum(count) - count)[rows]] = values
    candidates.sort(axis=1)
    hist = hist.ravel() * ~tied  # the other buckets count whole
    above = np.cumsum(hist.reshape(n, width)[:, ::-1], axis=1)[:, ::-1].ravel() - hist  # strictly above each bucket
    for (rel_scores, n_rel), (at, listed), (ranks, ties) in zip(rel, where, out, strict=True):
        ranked, group = ranks_among(torch.from_numpy(candidates), torch.from_numpy(rel_scores[start:stop]),
                                    torch.from_numpy(n_rel[start:stop]))
        ranks[start:stop] = np.where(listed, above[at] + ranked.numpy(), 0)
        ties[start:stop] = group.numpy()


def relevant_ranks(scores: torch.Tensor, relevant: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Positions of the relevant items in each row's ranking by decreasing score.

    ``scores: float32[B, N]`` (consumed: sorted in place; ``-inf`` marks an excluded item,
    which must not be relevant), ``relevant: bool[B, N]``. Returns ``(ranks int64[B, M],
    ties int64[B, M], n_relevant int64[B])`` in the format of :mod:`dml.evaluate.metrics`:
    a tied item's rank is the last position of its tie group, ``ties`` the group's size.

    The m-th relevant item, of score ``r_m``, is listed at ``#{items scoring >= r_m}`` with
    ``#{items scoring == r_m}`` tied: two binary searches in the row sorted by value.

    >>> s = torch.tensor([[0.9, 0.1, 0.5, 0.7]])          # ranking: items 0, 3, 2, 1
    >>> relevant_ranks(s, torch.tensor([[True, True, False, False]]))[0].tolist()
    [[1, 4]]
    >>> s = torch.tensor([[0.5, 0.5, 0.2]])               # a tie between relevant and not
    >>> [t.tolist() for t in relevant_ranks(s, torch.tensor([[True, False, False]]))]
    [[[2]], [[2]], [1]]
    """
    rel_scores, n_relevant = relevant_scores(scores, relevant)
    return (*ranks_among(sort_rows_(scores), rel_scores, n_relevant), n_relevant)


def relevant_scores(scores: torch.Tensor, relevant: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The scores of each row's relevant items in decreasing order, padded with ``-inf``
    (``float[B, M]``), and their count (``int64[B]``); ``scores`` is left as it is."""
    rows, cols = relevant.nonzero(as_tuple=True)  # row-major
    n_relevant = torch.bincount(rows, minlength=relevant.shape[0])  # (a bool .sum() would make an int64 copy)
    width = int(n_relevant.max()) if rows.numel() else 0
    row_start = torch.cumsum(n_relevant, 0) - n_relevant
    within = torch.arange(rows.numel(), device=scores.device) - row_start[rows]
    rel_scores = torch.full((scores.shape[0], width), -torch.inf, dtype=scores.dtype, device=scores.device)
    rel_scores[rows, within] = scores[rows, cols]
    return torch.sort(rel_scores, dim=1, descending=True).values, n_relevant  # padding last


def ranks_among(ascending: torch.Tensor, rel_scores: torch.Tensor,
                n_relevant: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Ranks (``int64[B, M]``, 0-padded) of the relevant items whose decreasing scores are
    ``rel_scores`` among all the row's scores, ``ascending`` (each row sorted by value), each
    the last position of its tie group; and the size of that group (``int64[B, M]``)."""
    below = torch.searchsorted(ascending, rel_scores, side="left")
    ranks = ascending.shape[1] - below  # the items scoring at least as high: the group's last position
    ties = torch.searchsorted(ascending, rel_scores, side="right") - below
    padding = torch.arange(1, rel_scores.shape[1] + 1, device=rel_scores.device) > n_relevant[:, None]
    return ranks.masked_fill(padding, 0), ties.masked_fill(padding, 0)


def in_chunks(work: Callable[[int, int], T], n: int, size: int | None = None) -> list[T]:
    """``[work(start, stop) for each chunk]`` of ``range(n)`` in the pool (:func:`in_threads`),
    several chunks per thread so that a core slowed by other processes does not hold up the
    rest, each at most ``size`` long."""
    workers = max(1, min(torch.get_num_threads(), n))
    chunks = max(min(n, 8 * workers), -(-n // size) if size else 0)
    bounds = np.linspace(0, n, chunks + 1).astype(int)
    return in_threads([(bounds[c], bounds[c + 1]) for c in range(chunks)], lambda span: work(*span))


def in_threads(tasks: list, work: Callable, device: torch.device | str = "cpu") -> list:
    """``[work(task) for task in tasks]``, on CPU in one thread per core with torch single-threaded
    meanwhile: each thread runs its own tile's GEMM and reads the scores back while they are in
    cache, instead of every core joining one large GEMM and then one large comparison; numpy
    work releases the GIL. In order, in this thread, on a GPU or with one core."""
    workers = torch.get_num_threads()
    if torch.device(device).type != "cpu" or workers <= 1 or len(tasks) <= 1:
        return [work(task) for task in tasks]
    torch.set_num_threads(1)
    try:
        return list(_pool(workers).map(work, tasks))
    finally:
        torch.set_num_threads(workers)


@lru_cache(maxsize=4)
def _pool(workers: int) -> ThreadPoolExecutor:
    return ThreadPoolExecutor(workers, thread_name_prefix="dml-evaluate")


_local = threading.local()


def tile_buffer(n_rows: int, n_cols: int, device: torch.device) -> torch.Tensor:
    """This thread's reusable ``[n_rows, n_cols]`` float32 score tile: a view of one flat
    buffer that only grows. Tiles of another shape (a shorter last span) reuse it: freeing and
    allocating megabytes per tile would raise glibc's mmap threshold and fragment the heap
    under the small candidate arrays kept meanwhile (hundreds of MiB on a 10^6 gallery)."""
    flat = _local.__dict__.get("tile")
    if flat is None or flat.numel() < n_rows * n_cols or flat.device != device:
        flat = _local.tile = torch.empty(n_rows * n_cols, device=device)
    return flat[: n_rows * n_cols].view(n_rows, n_cols)


def at_or_above(scores: torch.Tensor, bound: torch.Tensor,
                 by_column: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(rows, cols, values)`` where ``scores[rows, cols] >= bound[rows]`` (``bound[cols]``
    with ``by_column``; a 0-d ``bound`` for every score), row-major, as compact numpy arrays
    (int32, int32, float32). On CPU numpy's comparison, ``flatnonzero`` and gather: several
    times faster than ``torch.nonzero`` and indexing on a sparse mask."""
    b = bound if bound.dim() == 0 else bound[None, :] if by_column else bound[:, None]
    if scores.device.type != "cpu":
        rows, cols = (scores >= b).nonzero(as_tuple=True)
        values = scores[rows, cols]
        return rows.int().cpu().numpy(), cols.int().cpu().numpy(), values.cpu().numpy()
    a = scores.numpy()
    flat_mask = _local.__dict__.get("mask")
    if flat_mask is None or flat_mask.size < a.size:  # one reused mask per thread (as :func:`_buffer`)
        flat_mask = _local.mask = np.empty(a.size, dtype=bool)
    mask = flat_mask[: a.size].reshape(a.shape)
    flat = np.flatnonzero(np.greater_equal(a, b.item() if b.dim() == 0 else b.numpy(), out=mask))
    rows, cols = np.divmod(flat, a.shape[1])
    return rows.astype(np.int32), cols.astype(np.int32), a.ravel()[flat]
