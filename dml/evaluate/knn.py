"""Exact ranking of every query against the whole gallery, streamed in blocks of queries.

No top-k cap: a query's R relevant items may be thousands (coarse DyML scales), and mAP needs
the position of every one of them. Memory stays flat as the gallery grows: one block's
``B x N`` similarity and relevance matrices are alive at a time, never the ``Q x N`` matrix.

How one block is ranked (``relevant_ranks``): the position of a relevant item only depends on
how many items score at least as high, so instead of an argsort of every row (indices, a
gather, a ``B x N`` int64 matrix) the block's scores are sorted *by value* in place and each
relevant item's position is found with a binary search (``torch.searchsorted``). On CPU the
value sort is numpy's SIMD sort, one thread per core (it releases the GIL): 256 rows of 10^5
scores take 0.16 s against 1.3 s for ``torch.sort`` and 0.84 s for ``np.argsort`` on the 2-core
AMD EPYC development machine. On a GPU it is ``torch.sort``. A row only needs its scores at or
above its lowest relevant one; where those are few (a well-trained embedding), only they are
sorted (:func:`ranks_in_block`).

Ties: each relevant item's position is the *last* of its tie group (the items with exactly
its score), and the group's size comes with it (``ties``), so that every metric is the
expectation over the orders of the tied items (:mod:`dml.evaluate.metrics`; McSherry and
Najork). The result is deterministic, independent of gallery order, and a collapsed embedding
or hash (all scores equal) scores the chance level, neither better nor worse.

Which items are relevant is a callback, ``relevance(rows) -> bool[B, N]`` for a block of query
row indices, so multi-label ("shares a label") and per-scale relevance reuse this code;
:func:`label_relevance` (same class) is the default. Graded relevance for NDCG is a second
callback of the same shape, ``grades(rows) -> float[B, N]``.

Ranking (``metric``): ``cosine`` (rows L2-normalized, inner product), ``dot`` (plain inner
product), ``euclidean`` (increasing distance: the score ``2 q·g − ‖g‖²`` orders a query's
gallery exactly as ``−‖q − g‖²`` does, and is one GEMM per block) and ``hamming`` (0/1 codes
mapped to ±1, whose inner product is ``bits − 2·hamming``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import numpy as np
import torch
import torch.nn.functional as F

from dml.evaluate.metrics import block_metrics, ndcg_at_k

__all__ = [
    "BYTES_PER_PAIR",
    "DEFAULT_BLOCK_BYTES",
    "METRICS",
    "Grades",
    "LabelRelevance",
    "Relevance",
    "label_relevance",
    "per_query_metrics",
    "prepare_embeddings",
    "ranked_blocks",
    "relevant_ranks",
    "ranks_among",
    "ranks_in_block",
    "relevant_scores",
    "rows_per_block",
    "sort_rows_",
]

T = TypeVar("T")
Relevance = Callable[[torch.Tensor], torch.Tensor]
"""``relevance(rows: int64[B]) -> bool[B, N]``: which gallery items are relevant to those queries.

Must return a new tensor (the caller clears the excluded self-matches in place)."""

Grades = Callable[[torch.Tensor], torch.Tensor]
"""``grades(rows: int64[B]) -> float[B, N]``: graded relevance (0 = not relevant), for NDCG."""

DEFAULT_BLOCK_BYTES = 256 << 20
BYTES_PER_PAIR = 5  # one float32 score + one bool relevance flag per (query, gallery) pair
METRICS = ("cosine", "dot", "euclidean", "hamming")
UNIT_TOLERANCE = 1e-6  # a vector this close to unit norm is not normalized again
SPARSE_ROW = 8  # a row keeping at most 1/8 of its scores (those at or above its lowest relevant one) sorts just those


class LabelRelevance:
    """Relevance by class equality: ``relevant[b, j] = query_labels[rows[b]] == gallery_labels[j]``.

    A :data:`Relevance` callback that also answers, without a ``B x N`` matrix, how many
    gallery items each query's class has (:meth:`counts`) and whether given pairs are
    relevant (:meth:`pairs`): what ranking only each query's top needs.

    >>> rel = label_relevance(torch.tensor([0, 1]), torch.tensor([1, 0, 1]))
    >>> rel(torch.tensor([1])).tolist()
    [[True, False, True]]
    >>> rel.counts(torch.tensor([0, 1])).tolist(), rel.pairs(torch.tensor([1, 1]), torch.tensor([0, 1])).tolist()
    ([1, 2], [True, False])
    """

    def __init__(self, query_labels: torch.Tensor, gallery_labels: torch.Tensor) -> None:
        self.query_labels, self.gallery_labels = query_labels, gallery_labels
        self._classes, self._sizes = torch.unique(gallery_labels, return_counts=True)

    def __call__(self, rows: torch.Tensor) -> torch.Tensor:
        return self.query_labels[rows, None] == self.gallery_labels[None, :]

    def counts(self, rows: torch.Tensor) -> torch.Tensor:
        """int64 ``[B]``: the gallery items of each query's class."""
        labels = self.query_labels[rows]
        if self._classes.numel() == 0:
            return torch.zeros_like(labels)
        at = torch.searchsorted(self._classes, labels).clamp(max=self._classes.numel() - 1)
        return torch.where(self._classes[at] == labels, self._sizes[at], 0)

    def pairs(self, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
        """bool ``[K]``: whether gallery item ``cols[i]`` is relevant to query ``rows[i]``."""
        return self.query_labels[rows] == self.gallery_labels[cols]


def label_relevance(query_labels: torch.Tensor, gallery_labels: torch.Tensor) -> LabelRelevance:
    """Relevance by class equality (:class:`LabelRelevance`)."""
    return LabelRelevance(query_labels, gallery_labels)


def prepare_embeddings(x: torch.Tensor, metric: str) -> torch.Tensor:
    """float32 copy of ``x: [N, D]`` (or ``[N, V, D]``, views) in the form :func:`block_scores` ranks.

    ``"cosine"`` L2-normalizes the rows (vectors already of unit norm, as the embed stage
    writes them, are used as they are: no copy the size of the data); ``"hamming"`` maps 0/1
    (or boolean) code bits to ±1; ``"dot"`` and ``"euclidean"`` leave the vectors as they are.
    """
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
    x = x.detach().to(torch.float32)
    if metric == "cosine":
        unit = all(bool(((chunk.norm(dim=-1) - 1).abs() <= UNIT_TOLERANCE).all()) for chunk in x.split(1 << 14))
        return x if unit else F.normalize(x, dim=-1)
    if metric == "hamming":
        return x * 2.0 - 1.0
    return x


def block_scores(query_rows: torch.Tensor, gallery: torch.Tensor, metric: str,
                 gallery_sq_norms: torch.Tensor | None = None, out: torch.Tensor | None = None) -> torch.Tensor:
    """``float32[B, N]`` scores, higher is nearer, from prepared vectors (one GEMM).

    For ``euclidean`` pass ``gallery_sq_norms = ‖g‖²``: the score ``2 q·g − ‖g‖²`` differs
    from ``−‖q − g‖²`` by ``‖q‖²``, a constant per query, so it ranks identically.

    Rows with several views (``[B, V, D]`` and/or ``[N, W, D]``, e.g. image and mirror)
    score as their nearest pair of views: the largest of the ``V·W`` scores, euclidean ones
    as ``−‖q − g‖²`` in full (the constant per query differs between views).
    ``out``: a contiguous ``[B, N]`` buffer to write single-view scores into (no allocation).
    """
    if query_rows.dim() == 3 or gallery.dim() == 3:
        return _nearest_views(query_rows, gallery, metric)
    scores = torch.mm(query_rows, gallery.T, out=out) if out is not None else query_rows @ gallery.T
    if metric == "euclidean":
        norms = gallery_sq_norms if gallery_sq_norms is not None else (gallery * gallery).sum(1)
        scores.mul_(2.0).sub_(norms[None, :])
    return scores


def _nearest_views(query_rows: torch.Tensor, gallery: torch.Tensor, metric: str) -> torch.Tensor:
    """``float32[B, N]``: for each pair the best score over its views (:func:`block_scores`)."""
    q = query_rows if query_rows.dim() == 3 else query_rows[:, None]
    g = gallery if gallery.dim() == 3 else gallery[:, None]
    best: torch.Tensor | None = None
    for v in range(q.shape[1]):
        for w in range(g.shape[1]):
            scores = q[:, v] @ g[:, w].T
            if metric == "euclidean":
                scores.mul_(2.0).sub_((g[:, w] * g[:, w]).sum(1)[None, :])
                scores.sub_((q[:, v] * q[:, v]).sum(1)[:, None])
            best = scores if best is None else torch.maximum(best, scores, out=best)
    assert best is not None
    return best


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
    relevance) against each row of ``scores`` (consumed: sorted in place).

    A relevant item's position needs only the items scoring at least as high, so a row needs
    only its scores at or above its lowest relevant one. A well-trained embedding puts its
    relevant items near the top: on CPU, a row keeping at most ``1/`` :data:`SPARSE_ROW` of its
    scores sorts just those; any other row (and every row on a GPU) is sorted whole, in place."""
    if scores.device.type != "cpu" or scores.numel() == 0:
        ascending = sort_rows_(scores)
        return [ranks_among(ascending, rel_scores, n_rel) for rel_scores, n_rel in found]
    lowest = torch.full((scores.shape[0],), torch.inf)
    for rel_scores, n_rel in found:
        if rel_scores.shape[1]:
            last = rel_scores.gather(1, (n_rel - 1).clamp(min=0)[:, None]).squeeze(1)
            lowest = torch.minimum(lowest, torch.where(n_rel > 0, last, torch.inf))
    a, bound = scores.numpy(), lowest.numpy()

    def sort_rows(start: int, stop: int) -> list[np.ndarray | None]:
        """Each row's kept scores, sorted; None for a row sorted whole, in place."""
        keep, tops = np.empty(a.shape[1], dtype=bool), []
        for r in range(start, stop):
            np.greater_equal(a[r], bound[r], out=keep)
            if np.count_nonzero(keep) * SPARSE_ROW <= a.shape[1]:
                tops.append(np.sort(a[r][keep]))
            else:
                a[r].sort()
                tops.append(None)
        return tops

    tops = [top for part in in_chunks(sort_rows, a.shape[0]) for top in part]
    ranks = [ranks_among(scores, rel_scores, n_rel) for rel_scores, n_rel in found]  # right for rows sorted whole
    rows = np.array([r for r, top in enumerate(tops) if top is not None], dtype=np.int64)
    if len(rows):
        width = max(len(tops[r]) for r in rows)
        ascending = np.full((len(rows), width), -np.inf, dtype=np.float32)  # padded on the left: still sorted
        for i, r in enumerate(rows):
            ascending[i, width - len(tops[r]) :] = tops[r]
        at = torch.from_numpy(rows)
        for rank, (rel_scores, n_rel) in zip(ranks, found, strict=True):
            rank[0][at], rank[1][at] = ranks_among(torch.from_numpy(ascending), rel_scores[at], n_rel[at])
    return ranks


def in_chunks(work: Callable[[int, int], T], n: int) -> list[T]:
    """``[work(start, stop) for each chunk]`` of ``range(n)``, in one thread per core
    (``torch.get_num_threads()``), several chunks each so that a core slowed by other processes
    does not hold up the rest; for work that releases the GIL (numpy sorts and comparisons)."""
    workers = max(1, min(torch.get_num_threads(), n))
    if workers == 1:
        return [work(0, n)]
    bounds = np.linspace(0, n, min(n, 8 * workers) + 1).astype(int)
    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(lambda c: work(bounds[c], bounds[c + 1]), range(len(bounds) - 1)))


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


def ranked_blocks(
    query: torch.Tensor,
    gallery: torch.Tensor,
    relevance: Relevance | Sequence[Relevance],
    *,
    exclude: torch.Tensor | None = None,
    block_bytes: int = DEFAULT_BLOCK_BYTES,
    metric: str = "cosine",
    grades: Grades | None = None,
    ndcg_ks: Sequence[int] = (),
    ndcg_gain: str = "linear",
    depth: int | None = None,
) -> Iterator[tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor], torch.Tensor, dict[int, torch.Tensor]]]:
    """Rank blocks of queries against the whole gallery; yield ``(rows, (ranks, ties), n_relevant, ndcg)``.

    ``query: float32[Q, D]`` and ``gallery: float32[N, D]`` are already prepared
    (:func:`prepare_embeddings` with the same ``metric``); either may hold views, ``[Q, V, D]``
    (:func:`block_scores`). ``exclude: int64[Q]`` names, per
    query, one gallery position to leave out of its ranking and its relevant set (-1: none);
    for a query set ranked against itself it is ``arange(Q)``. ``rows: int64[B]`` are the
    block's query indices; ``ranks``/``ties``/``n_relevant`` as in :func:`relevant_ranks`;
    ``ndcg`` maps each K of ``ndcg_ks`` to float64 ``[B]`` (needs ``grades``; ``ndcg_gain``:
    :data:`~dml.evaluate.metrics.NDCG_GAINS`). The block size comes from :func:`rows_per_block`.

    ``depth``: rank only each query's top ``max(R, depth)`` positions, exactly
    (:mod:`dml.evaluate.top_ranks`): ``ranks`` then lists the relevant items found there and
    ``n_relevant`` still counts all R, which is what every metric but the average precision
    over the whole ranking needs. ``None``: every relevant item's position (a full ranking).

    With several relevances (a sequence: each semantic scale's labels), the block is scored
    and sorted once for all of them, and ``(ranks, ties)``, ``n_relevant`` and ``ndcg`` are lists with
    one entry per relevance (graded relevance goes with a single one).
    """
    many = not callable(relevance)
    relevances = list(relevance) if many else [relevance]
    if many and ndcg_ks:
        raise ValueError("graded relevance (ndcg_ks) goes with a single relevance")
    if ndcg_ks and grades is None:
        raise ValueError("ndcg_ks needs graded relevance (grades)")
    if depth is not None and ndcg_ks:
        raise ValueError("ndcg_ks needs the full ranking (depth=None)")
    n_query, n_gallery = query.shape[0], gallery.shape[0]
    single = query.dim() == 2 and gallery.dim() == 2  # several views: scored in full
    sq_norms = (gallery * gallery).sum(1) if metric == "euclidean" and single else None

    def in_full(rows: torch.Tensor) -> tuple[list, list, list]:
        own = exclude[rows] if exclude is not None else None
        return rank_in_full(query[rows], rows, gallery, relevances, own=own, metric=metric,
                            sq_norms=sq_norms, grades=grades, ndcg_ks=ndcg_ks, ndcg_gain=ndcg_gain)

    if depth is None:
        blocks = ((rows, *in_full(rows)) for rows in _row_blocks(n_query, rows_per_block(n_gallery, block_bytes),
                                                                  query.device))
    else:
        from dml.evaluate.top_ranks import top_ranked_blocks

        blocks = top_ranked_blocks(query, gallery, relevances, depth=depth, exclude=exclude, metric=metric,
                                   sq_norms=sq_norms, block_bytes=block_bytes, in_full=in_full)
    for rows, ranks, counts, ndcgs in blocks:
        if many:
            yield rows, ranks, counts, ndcgs
        else:
            yield rows, ranks[0], counts[0], ndcgs[0]


def _row_blocks(n_rows: int, step: int, device: torch.device) -> Iterator[torch.Tensor]:
    for start in range(0, n_rows, step):
        yield torch.arange(start, min(start + step, n_rows), device=device)


def exclude_in_block(own: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor] | None:
    """``(block rows, gallery positions)`` of the excluded items of a block (``own``: -1 = none)."""
    if own is None:
        return None
    inside = (own >= 0).nonzero(as_tuple=True)[0]
    return inside, own[inside]


def rank_in_full(
    query_rows: torch.Tensor,
    rows: torch.Tensor,
    gallery: torch.Tensor,
    relevances: Sequence[Relevance],
    *,
    own: torch.Tensor | None,
    metric: str,
    sq_norms: torch.Tensor | None,
    grades: Grades | None = None,
    ndcg_ks: Sequence[int] = (),
    ndcg_gain: str = "linear",
) -> tuple[list[tuple[torch.Tensor, torch.Tensor]], list[torch.Tensor], list[dict[int, torch.Tensor]]]:
    """Every relevant item's position for one block of queries (rows ``rows``, vectors
    ``query_rows``), one entry per relevance: ``((ranks, ties), n_relevant, ndcg)`` lists.

    The block is scored and sorted once; ``own`` are the excluded gallery positions (-1: none)."""
    n_gallery = gallery.shape[0]
    scores = block_scores(query_rows, gallery, metric, sq_norms)
    excluded = exclude_in_block(own)
    if excluded is not None:
        scores[excluded] = -torch.inf
    found, ndcgs = [], []
    for rel in relevances:
        relevant = relevance_matrix(rel, rows, n_gallery)
        if excluded is not None:
            relevant[excluded] = False
        ndcg: dict[int, torch.Tensor] = {}
        if ndcg_ks:
            graded = grades(rows).to(torch.float64)
            if graded.shape != scores.shape:
                raise ValueError(f"grades must return [{len(rows)}, {n_gallery}], got {list(graded.shape)}")
            graded = torch.where(relevant, graded, torch.zeros_like(graded))
            ndcg = {k: ndcg_at_k(scores, graded, k, ndcg_gain) for k in ndcg_ks}
        found.append(relevant_scores(scores, relevant))
        ndcgs.append(ndcg)
        del relevant  # one B x N relevance matrix alive at a time
    return ranks_in_block(scores, found), [n_rel for _, n_rel in found], ndcgs


def relevance_matrix(rel: Relevance, rows: torch.Tensor, n_gallery: int) -> torch.Tensor:
    """``rel(rows)``, checked to be ``bool[len(rows), n_gallery]``."""
    relevant = rel(rows)
    if tuple(relevant.shape) != (len(rows), n_gallery) or relevant.dtype != torch.bool:
        raise ValueError(
            f"relevance must return bool[{len(rows)}, {n_gallery}], "
            f"got {relevant.dtype}{list(relevant.shape)}"
        )
    return relevant


def per_query_metrics(
    query: torch.Tensor,
    gallery: torch.Tensor,
    relevance: Relevance | Sequence[Relevance],
    *,
    ks: Sequence[int] = (1, 2, 4, 8),
    exclude: torch.Tensor | None = None,
    block_bytes: int = DEFAULT_BLOCK_BYTES,
    metric: str = "cosine",
    map_ks: Sequence[int] = (),
    precision_ks: Sequence[int] = (),
    grades: Grades | None = None,
    ndcg_ks: Sequence[int] = (),
    ndcg_gain: str = "linear",
    map_denominator: str = "found",
    asi: bool = False,
    full_map: bool = True,
) -> dict[str, np.ndarray] | list[dict[str, np.ndarray]]:
    """Every retrieval metric for every query: name -> float64 ``[Q]`` (NaN: no relevant item).

    Names: ``recall@K`` per K of ``ks``, ``precision@1``, ``r_precision``, ``map@r``, ``map``
    (only with ``full_map``: it needs every relevant item's position, so each query's full
    ranking; without it only each query's top ``max(R, K)`` is ranked, see ``depth`` in
    :func:`ranked_blocks`),
    plus ``map@K`` per K of ``map_ks``, ``precision@K`` per K of ``precision_ks``,
    ``ndcg@K`` per K of ``ndcg_ks`` (graded relevance ``grades``, gain ``ndcg_gain``) and ``asi``
    when asked (:func:`~dml.evaluate.metrics.average_set_intersection`); ``map@K`` divides by
    ``map_denominator`` (:data:`~dml.evaluate.metrics.MAP_DENOMINATORS`). Every value is the
    expectation over the orders of tied items. Arguments as in
    :func:`ranked_blocks`; with a sequence of relevances, a list of such dicts, one per
    relevance, from one ranking. Only O(Q) values are kept, so averages come out the same
    whatever the block size, and per-query values are there for confidence intervals.
    """
    many = not callable(relevance)
    count = len(relevance) if many else 1
    precision_ks = sorted({1, *precision_ks})
    options = {"ks": ks, "precision_ks": precision_ks, "full_map": full_map, "map_ks": map_ks,
               "map_denominator": map_denominator, "asi": asi}
    no_query = torch.zeros(0, 0, dtype=torch.long), torch.zeros(0, dtype=torch.long)
    names = list(block_metrics(*no_query, **options))  # the metrics' names, in their order
    outs = [{name: np.full(query.shape[0], np.nan) for name in names + [f"ndcg@{k}" for k in ndcg_ks]}
            for _ in range(count)]
    depth = None if full_map or ndcg_ks else max([*ks, *precision_ks, *map_ks])
    for rows, ranks, n_rels, ndcgs in ranked_blocks(
        query, gallery, relevance, exclude=exclude, block_bytes=block_bytes, metric=metric,
        grades=grades, ndcg_ks=ndcg_ks, ndcg_gain=ndcg_gain, depth=depth,
    ):
        idx = rows.cpu().numpy()
        if not many:
            ranks, n_rels, ndcgs = [ranks], [n_rels], [ndcgs]
        for out, (rank, ties), n_rel, ndcg in zip(outs, ranks, n_rels, ndcgs, strict=True):
            for name, value in block_metrics(rank, n_rel, ties, **options).items():
                out[name][idx] = value.cpu().numpy()
            for k, value in ndcg.items():
                out[f"ndcg@{k}"][idx] = value.cpu().numpy()
    return outs if many else outs[0]
