"""Exact ranks within each query's top ``max(R, depth)`` without ranking its whole row.

Every retrieval metric but the average precision over the whole ranking (P@K, recall@K,
R-Precision, MAP@R, mAP@K, ASI) reads only the top ``D = max(R, K)`` positions of a query's
ranking (R: its number of relevant items). Those positions hold the items scoring at least
the query's D-th best score, so they are ranked exactly from any set of *candidates* that
contains every item scoring at least that high:

1. **A lower bound per query.** The queries are scored against a seeded sample of the gallery
   (one item in each run of :data:`SAMPLE_EVERY`), and the bound is the
   sample's k-th best score, k chosen so that about :data:`OVERSHOOT` x D gallery items score
   above it.
2. **Candidates.** Queries and gallery are scored in tiles of :data:`ROW_TILE` x
   :data:`COLUMN_TILE`, one thread per core each scoring its own tile (a GEMM into a reused
   buffer) and keeping only the items at or above the bound while the tile is in cache (a
   numpy comparison and compaction). No query's full row is ever held or sorted. A set ranked
   against itself scores each pair once: a tile's columns are also its rows' queries
   (:func:`_self_blocks`).
3. **Exactness never rests on the sample.** A query with fewer than D candidates (the sample
   put its bound too high) is bounded again by its exact (D + :data:`SAMPLE_MARGIN`)-th best
   score, streamed over the whole gallery (:func:`kth_best`), and its candidates gathered
   again at that bound. A query
   whose D is a large share of the gallery (coarse labels: pruning would not pay) is ranked
   in full (``in_full``).
4. **Ranks.** Each query's candidates are ranked as the full path ranks its row (each tied
   item at the last position of its tie group, with the group's size: every item tied with a
   candidate scores at least the bound, so it is a candidate too). A relevant item outside the candidates scores below the D-th best,
   so its position is beyond D: it is left out of ``ranks`` and counted in ``n_relevant``
   (the format of :mod:`dml.evaluate.metrics` for a truncated ranking).

The work is then the GEMM plus a cheap pass over each tile, instead of a sort of every row;
``benchmarks/bench_evaluate.py`` measures it against pytorch-metric-learning.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import partial

import numpy as np
import torch

from dml.evaluate.full_ranking import rank_in_full
from dml.evaluate.geometry import GEOMETRIES, block_scores
from dml.evaluate.kernels import (
    at_or_above,
    in_threads,
    ranks_among,
    rows_per_block,
    sort_rows_,
    tile_buffer,
)
from dml.evaluate.relevance import LabelRelevance, Relevance, relevance_in_block

__all__ = ["MIN_SAMPLE", "OVERSHOOT", "SAMPLE_EVERY", "candidate_ranks", "kth_best", "sample_columns", "sample_k",
           "top_ranked_blocks"]

SAMPLE_EVERY = 16
MIN_SAMPLE = 1024
SAMPLE_CHUNK = 8192  # sampled items gathered and scored at a time
OVERSHOOT = 1.5
SAMPLE_MARGIN = 4  # sampled items beyond OVERSHOOT x D: a query with a small D still gets a safe bound
BLOCK = 2048  # queries whose candidates are gathered and ranked at a time (< 2^16: rows fit uint16)
ROW_TILE, COLUMN_TILE = 1024, 512  # one thread's GEMM tile: 2 MiB of float32 scores
SAMPLE_TILE_BYTES = 8 << 20  # queries scored against a chunk of the sample at a time, per thread
DEEP = 8  # a query whose D exceeds 1/DEEP of the gallery is ranked in full
FALLBACK_BYTES = 32 << 20  # queries ranked in full are few: a smaller block of them at a time
PENDING_BYTES = 10  # a candidate waiting for a later block: row (uint16), position (int32), score (float32)
LOWEST = torch.finfo(torch.float32).min  # a bound that keeps every item but the excluded (-inf)

InFull = Callable[[torch.Tensor], tuple[list, list, list]]


def top_ranked_blocks(
    query: torch.Tensor,
    gallery: torch.Tensor,
    relevances: Sequence[Relevance],
    *,
    depth: int,
    exclude: torch.Tensor | None,
    metric: str,
    sq_norms: torch.Tensor | None,
    block_bytes: int,
) -> Iterator[tuple[torch.Tensor, list[tuple[torch.Tensor, torch.Tensor]], list[torch.Tensor], list[dict]]]:
    """Blocks ``(rows, (ranks, ties), n_relevant, ndcg)`` of :func:`dml.evaluate.engine.ranked_blocks`
    with ``depth``, one list entry per relevance; the few queries that need it are ranked in
    full (:func:`dml.evaluate.full_ranking.rank_in_full`).

    A set ranked against itself by inner products with class relevance is scored one
    triangle of tiles only (:func:`_self_blocks`), when the candidates kept for later blocks
    fit in ``block_bytes``."""
    n_query, n_gallery = query.shape[0], gallery.shape[0]
    sample = sample_columns(n_gallery, query.device)

    def in_full(rows: torch.Tensor) -> tuple[list, list, list]:
        own = exclude[rows] if exclude is not None else None
        return rank_in_full(query[rows], rows, gallery, relevances, own=own, metric=metric, sq_norms=sq_norms)

    def again(rows: torch.Tensor, want: torch.Tensor) -> Found:
        """Candidates of queries ``rows`` at their exact ``want + SAMPLE_MARGIN``-th best score
        (the margin: scores of the same pair from GEMMs of other shapes may differ in the
        last bits)."""
        own = exclude[rows] if exclude is not None else None
        bound = kth_best(query, rows, gallery, None, want + SAMPLE_MARGIN, metric=metric, sq_norms=sq_norms, own=own)
        return _tiles_above(query[rows], gallery, bound, metric=metric, sq_norms=sq_norms, own=own)

    finish = partial(_finish, again=again, in_full=in_full,
                     full_step=rows_per_block(n_gallery, min(block_bytes, FALLBACK_BYTES)))

    def needs(rows: torch.Tensor) -> tuple[list, torch.Tensor]:
        own = exclude[rows] if exclude is not None else None
        counted = [relevance_in_block(rel, rows, own, n_gallery) for rel in relevances]
        n_valid = n_gallery - (own >= 0).long() if own is not None else torch.full_like(rows, n_gallery)
        return counted, torch.stack([n for n, _ in counted]).amax(0).clamp(min=depth).minimum(n_valid)

    def bounds(rows: torch.Tensor, want: torch.Tensor) -> torch.Tensor:
        """Each query's lower bound; +inf (no candidate: ranked in full) where D is deep."""
        pruned = (want * DEEP <= n_gallery).nonzero(as_tuple=True)[0]
        bound = torch.full((len(rows),), torch.inf, device=rows.device)
        bound[pruned] = kth_best(query, rows[pruned], gallery, sample, sample_k(want[pruned], len(sample), n_gallery),
                                 metric=metric, sq_norms=sq_norms,
                                 own=exclude[rows[pruned]] if exclude is not None else None)
        return bound

    if (query is gallery and query.dim() == 2 and not GEOMETRIES[metric].euclidean and exclude is not None
            and all(isinstance(rel, LabelRelevance) for rel in relevances)
            and bool((exclude == torch.arange(n_query, device=exclude.device)).all())):
        everything = torch.arange(n_query, device=query.device)
        want = needs(everything)[1]
        if float(_expected_candidates(want, n_gallery, len(sample)).sum()) / 2 * PENDING_BYTES <= block_bytes:
            bound = bounds(everything, want)
            order = torch.argsort(bound, stable=True)  # queries with similar bounds share tiles
            plans = []
            for start in range(0, n_query, BLOCK):
                rows = order[start : start + BLOCK]
                plans.append(_Plan(needs(rows)[0], want[rows], bound[rows]))
            yield from (finish(rows, p, found) for rows, p, found in _self_blocks(query[order], order, plans, metric))
            return
    for start in range(0, n_query, BLOCK):
        rows = torch.arange(start, min(start + BLOCK, n_query), device=query.device)
        counted, want = needs(rows)
        p = _Plan(counted, want, bounds(rows, want))
        own = exclude[rows] if exclude is not None else None
        found = _tiles_above(query[rows], gallery, p.bound, metric=metric, sq_norms=sq_norms, own=own)
        yield finish(rows, p, found)


@dataclass
class _Plan:
    """One block's relevance counts and lookups, the depth each query needs, and its bound."""

    counted: list[tuple[torch.Tensor, Callable[[np.ndarray, np.ndarray], np.ndarray]]]  # (R, flags) per relevance
    want: torch.Tensor
    bound: torch.Tensor


Found = list[tuple[np.ndarray, np.ndarray, np.ndarray]]
"""Candidates of a block, in parts ``(block rows, gallery positions, scores)``: int32, int32,
float32 numpy arrays (on the host: compact, whatever the device)."""


def _finish(rows: torch.Tensor, plan: _Plan, found: Found, *, again: Callable[[torch.Tensor, torch.Tensor], Found],
            in_full: InFull, full_step: int):
    """``(rows, (ranks, ties), n_relevant, ndcg)`` of a block from its candidates. Queries with fewer
    candidates than they need have them gathered ``again`` at their exact bound; deep ones
    (no bound, no candidate) are ranked in full, as is any query still short (none should be)."""
    device = rows.device
    cand_rows, cand_cols, values = _by_row(found, len(rows))
    want = plan.want.cpu().numpy()
    enough = np.bincount(cand_rows, minlength=len(rows)) >= want
    short = np.flatnonzero(~enough & np.isfinite(plan.bound.cpu().numpy()))
    if len(short):
        is_short = np.zeros(len(rows), dtype=bool)
        is_short[short] = True
        kept = ~is_short[cand_rows]
        at = torch.from_numpy(short).to(device)
        redone = [(short[r].astype(np.int32), c, v) for r, c, v in again(rows[at], plan.want[at])]
        cand_rows, cand_cols, values = _by_row([(cand_rows[kept], cand_cols[kept], values[kept]), *redone], len(rows))
        enough = np.bincount(cand_rows, minlength=len(rows)) >= want
    keep = enough[cand_rows]
    cand_rows, cand_cols, values = cand_rows[keep], cand_cols[keep], values[keep]
    within = (np.cumsum(enough) - 1)[cand_rows]  # row among the queries ranked from candidates
    index = torch.from_numpy(np.flatnonzero(enough)).to(device)
    empty = (torch.zeros(len(rows), 0, dtype=torch.long, device=device),) * 2
    ranks = [_merge(empty, index, candidate_ranks(within, values, flags(cand_rows, cand_cols), len(index), device))
             for _, flags in plan.counted]
    for part in torch.from_numpy(np.flatnonzero(~enough)).to(device).split(full_step):
        part_ranks, _, _ = in_full(rows[part])
        ranks = [_merge(r, part, pr) for r, pr in zip(ranks, part_ranks, strict=True)]
    return rows, ranks, [n for n, _ in plan.counted], [{} for _ in plan.counted]


def _self_blocks(x: torch.Tensor, order: torch.Tensor, plans: list[_Plan],
                 metric: str) -> Iterator[tuple[torch.Tensor, _Plan, Found]]:
    """Candidates of a set ranked against itself, scoring each pair of blocks once.

    ``x`` holds the vectors in ``order`` (by increasing bound, so that a tile's queries have
    similar bounds), blocks of :data:`BLOCK` consecutive ones. Inner-product scores are
    symmetric, so a tile of blocks ``(I, J)`` with ``J > I`` gives block I's candidates among
    J (bounds of I, by row) and block J's among I (bounds of J, by column), both from one pass
    over the tile at the lower of its bounds; the latter wait in ``pending`` until block J is
    finished."""
    n = x.shape[0]
    spans = _spans(range(n), BLOCK)
    original = order.cpu().numpy().astype(np.int32)  # gallery position of each ordered item
    pending: list[Found] = [[] for _ in spans]
    for i, (first, stop) in enumerate(spans):
        found = pending[i]
        tasks = [(r0, r1, c0, c1, j) for j in range(i, len(spans)) for c0, c1 in _spans(range(*spans[j]), COLUMN_TILE)
                 for r0, r1 in _spans(range(first, stop), ROW_TILE)]

        def work(task: tuple[int, int, int, int, int], i: int = i, first: int = first) -> tuple[int, tuple, tuple | None]:
            r0, r1, c0, c1, j = task
            scores = block_scores(x[r0:r1], x[c0:c1], metric, out=tile_buffer(r1 - r0, c1 - c0, x.device))
            row_bound = plans[i].bound[r0 - first : r1 - first]
            if j == i:
                if max(r0, c0) < min(r1, c1):  # each query itself
                    own = torch.arange(max(r0, c0), min(r1, c1), device=x.device)
                    scores[own - r0, own - c0] = -torch.inf
                r, c, v = at_or_above(scores, row_bound)
                return j, (r + (r0 - first), original[c + c0], v), None
            start_j = spans[j][0]
            (r, c, v), (cr, cc, cv) = _at_or_above_either(scores, row_bound, plans[j].bound[c0 - start_j : c1 - start_j])
            return j, (r + (r0 - first), original[c + c0], v), (cc + (c0 - start_j), original[cr + r0], cv)

        waiting: dict[int, Found] = {}
        for j, here, there in in_threads(tasks, work, x.device):
            found.append(here)
            if there is not None:
                waiting.setdefault(j, []).append(there)
        for j, parts in waiting.items():  # one compact part per later block: few, small arrays
            rows, cols, values = (np.concatenate(part) for part in zip(*parts, strict=True))
            pending[j].append((rows.astype(np.uint16), cols, values))
        pending[i] = []
        yield order[first:stop], plans[i], found


def sample_columns(n_gallery: int, device: torch.device) -> torch.Tensor:
    """Sorted gallery positions of the bound's sample: one seeded item in each run of
    :data:`SAMPLE_EVERY` (shorter runs where that gives under :data:`MIN_SAMPLE` items; the
    whole gallery when it is smaller than that). Stratified, so sorted by construction and
    no permutation of the gallery is drawn; a fixed share, not a capped size, so that the
    margin of :data:`SAMPLE_MARGIN` sampled items stays ``SAMPLE_MARGIN x SAMPLE_EVERY``
    gallery items, and so do the candidates, however large the gallery."""
    stride = max(1, min(SAMPLE_EVERY, n_gallery // MIN_SAMPLE))
    if stride == 1:
        return torch.arange(n_gallery, device=device)
    runs = n_gallery // stride
    offsets = torch.randint(stride, (runs,), generator=torch.Generator().manual_seed(0))
    return (torch.arange(runs) * stride + offsets).to(device)


def sample_k(want: torch.Tensor, n_sample: int, n_gallery: int) -> torch.Tensor:
    """int64: the rank in the sample whose score about ``OVERSHOOT x want`` gallery items
    reach, ``OVERSHOOT * want * |sample| / N + SAMPLE_MARGIN``."""
    return (want.double() * (OVERSHOOT * n_sample / n_gallery)).ceil().long() + SAMPLE_MARGIN


def kth_best(query: torch.Tensor, rows: torch.Tensor, gallery: torch.Tensor, columns: torch.Tensor | None,
             k: torch.Tensor, *, metric: str, sq_norms: torch.Tensor | None,
             own: torch.Tensor | None) -> torch.Tensor:
    """float32 ``[B]``: each query ``query[rows]``'s ``k``-th best score among the gallery
    items ``columns`` (sorted positions: the sample; None: the whole gallery), its excluded
    item ``own`` left out; :data:`LOWEST` (keep everything) where fewer than ``k`` items score.

    The columns are gathered :data:`SAMPLE_CHUNK` at a time and each query keeps a running
    top ``k``, the queries grouped by ``k``: memory follows the queries' ``k``, not the
    gallery's size."""
    n_rows, n_columns = len(rows), len(columns) if columns is not None else gallery.shape[0]
    device = gallery.device
    n_finite = torch.full((n_rows,), n_columns, device=device)
    if own is not None:  # the excluded item, where listed, is no score
        if columns is None:
            at, listed = own, own >= 0
        else:
            at = torch.searchsorted(columns, own).clamp(max=max(n_columns - 1, 0))
            listed = (own >= 0) & (columns[at] == own)
        n_finite -= listed.long()
    by_k = torch.argsort(k, stable=True)  # a tile's queries keep about as many scores as they need
    kept = k.clamp(min=1, max=n_columns)[by_k]
    spans = _spans(range(n_rows), max(16, SAMPLE_TILE_BYTES // (4 * min(n_columns, SAMPLE_CHUNK))))
    best = [torch.full((r1 - r0, int(kept[r1 - 1])), -torch.inf, device=device) for r0, r1 in spans]
    single = query.dim() == 2 and gallery.dim() == 2
    for c0, c1 in _spans(range(n_columns), SAMPLE_CHUNK):
        chunk = slice(c0, c1) if columns is None else columns[c0:c1]  # a slice is a view: no copy
        picked = gallery[chunk]
        picked_norms = sq_norms[chunk] if sq_norms is not None else None

        def work(i: int, c0: int = c0, c1: int = c1, picked: torch.Tensor = picked,
                 picked_norms: torch.Tensor | None = picked_norms) -> None:
            r0, r1 = spans[i]
            mine = by_k[r0:r1]
            scores = block_scores(query[rows[mine]], picked, metric, picked_norms,
                                  out=tile_buffer(r1 - r0, c1 - c0, device) if single else None)
            if own is not None:
                hit = (listed[mine] & (at[mine] >= c0) & (at[mine] < c1)).nonzero(as_tuple=True)[0]
                scores[hit, at[mine[hit]] - c0] = -torch.inf
            width = best[i].shape[1]
            top = torch.topk(scores, min(width, c1 - c0), dim=1).values
            best[i] = torch.topk(torch.cat([best[i], top], dim=1), width, dim=1).values

        in_threads(list(range(len(spans))), work, device)
    bound = torch.empty(n_rows, device=device)
    for (r0, r1), top in zip(spans, best, strict=True):
        bound[by_k[r0:r1]] = top.gather(1, (kept[r0:r1] - 1)[:, None]).squeeze(1)
    return torch.where(k > n_finite, torch.full_like(bound, LOWEST), bound)


def _tiles_above(query_rows: torch.Tensor, gallery: torch.Tensor, bound: torch.Tensor, *, metric: str,
                 sq_norms: torch.Tensor | None, own: torch.Tensor | None) -> Found:
    """The items scoring at or above each query's ``bound``, one tile at a time.

    ``own``: each query's excluded gallery position (-1: none), never a candidate."""
    n_rows, n_gallery = query_rows.shape[0], gallery.shape[0]
    single = query_rows.dim() == 2 and gallery.dim() == 2
    tasks = [(r0, r1, c0, c1) for c0, c1 in _spans(range(n_gallery), COLUMN_TILE)
             for r0, r1 in _spans(range(n_rows), ROW_TILE)]

    def work(task: tuple[int, int, int, int]) -> tuple:
        r0, r1, c0, c1 = task
        scores = block_scores(query_rows[r0:r1], gallery[c0:c1], metric,
                              sq_norms[c0:c1] if sq_norms is not None else None,
                              out=tile_buffer(r1 - r0, c1 - c0, gallery.device) if single else None)
        if own is not None:
            mine = own[r0:r1]
            here = ((mine >= c0) & (mine < c1)).nonzero(as_tuple=True)[0]
            scores[here, mine[here] - c0] = -torch.inf
        r, c, v = at_or_above(scores, bound[r0:r1])
        return r + r0, c + c0, v

    return in_threads(tasks, work, gallery.device)


def _spans(positions: Sequence[int] | torch.Tensor, size: int) -> list[tuple[int, int]]:
    """``(start, stop)`` of consecutive runs of at most ``size`` over contiguous ``positions``."""
    if len(positions) == 0:
        return []
    first, end = int(positions[0]), int(positions[-1]) + 1
    return [(start, min(start + size, end)) for start in range(first, end, size)]


def _by_row(found: Found, n_rows: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The parts of ``found`` as one ``(rows, cols, values)``, sorted by row (stable)."""
    if not found:
        return np.zeros(0, np.int32), np.zeros(0, np.int32), np.zeros(0, np.float32)
    rows, cols, values = (np.concatenate(parts) for parts in zip(*found, strict=True))
    order = np.argsort(rows.astype(np.uint16) if n_rows <= 1 << 16 else rows, kind="stable")  # radix sort
    return rows[order], cols[order], values[order]


def candidate_ranks(rows: np.ndarray, values: np.ndarray, relevant: np.ndarray, n_rows: int,
                    device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """int64 ``[n_rows, M]`` (0-padded): positions of the relevant candidates among their
    query's candidates, by decreasing score, each the last of its tie group; and the size of
    that group (:func:`dml.evaluate.kernels.ranks_among`).

    ``rows`` (nondecreasing), ``values`` and ``relevant``: each candidate's query, score and
    relevance, flat."""
    ascending, _ = _pad_rows(rows, values, n_rows)
    rel_scores, n_found = _pad_rows(rows[relevant], values[relevant], n_rows)
    rel_scores = np.ascontiguousarray(np.sort(rel_scores, axis=1)[:, ::-1])  # decreasing, padding last
    to = partial(torch.as_tensor, device=device)
    return ranks_among(sort_rows_(to(ascending)), to(rel_scores), to(n_found))


def _pad_rows(rows: np.ndarray, values: np.ndarray, n_rows: int) -> tuple[np.ndarray, np.ndarray]:
    """``([n_rows, max count] values, count int64[n_rows])``: each row's values (``rows``
    nondecreasing) in their order, padded with ``-inf``."""
    count = np.bincount(rows, minlength=n_rows)
    width = int(count.max()) if len(rows) else 0
    flat = rows.astype(np.int64) * width + np.arange(len(rows)) - (np.cumsum(count) - count)[rows]
    out = np.full(n_rows * width, -np.inf, dtype=np.float32)
    out[flat] = values
    return out.reshape(n_rows, width), count


def _merge(ranked: tuple[torch.Tensor, ...], rows: torch.Tensor,
           part: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
    """``ranked`` (``(ranks, ties)``) with rows ``rows`` replaced by ``part`` (all 0-padded on the right)."""
    width = max(ranked[0].shape[1], part[0].shape[1])
    merged = []
    for whole, piece in zip(ranked, part, strict=True):
        out = torch.nn.functional.pad(whole, (0, width - whole.shape[1]))
        out[rows] = torch.nn.functional.pad(piece, (0, width - piece.shape[1]))
        merged.append(out)
    return tuple(merged)


def _at_or_above_either(scores: torch.Tensor, row_bound: torch.Tensor, col_bound: torch.Tensor) -> tuple[tuple, tuple]:
    """:func:`_at_or_above` by row and by column, from one pass at the lower of the two
    bounds' minima (the tile's queries have similar bounds), the few hits then sorted out."""
    r, c, v = at_or_above(scores, torch.minimum(row_bound.min(), col_bound.min()))
    by_row = v >= row_bound.cpu().numpy()[r]
    by_col = v >= col_bound.cpu().numpy()[c]
    return (r[by_row], c[by_row], v[by_row]), (r[by_col], c[by_col], v[by_col])


def _expected_candidates(want: torch.Tensor, n_gallery: int, n_sample: int) -> torch.Tensor:
    """About how many candidates queries needing the top ``want`` keep (:func:`sample_k`)."""
    return (sample_k(want, n_sample, n_gallery).double() * (n_gallery / n_sample)).clamp(max=n_gallery)
