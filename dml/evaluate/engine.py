"""The evaluation engine: :func:`retrieval_metrics` checks its inputs, ranks (in full or only
each query's top) and averages the per-query metrics; :func:`per_query_metrics` is its core
on prepared tensors."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from numpy.typing import ArrayLike

from dml.errors import ConfigError, DataError
from dml.evaluate.candidates import Candidates, CandidateSearch
from dml.evaluate.catalog import metric_key
from dml.evaluate.full_ranking import full_ranked_blocks
from dml.evaluate.geometry import GEOMETRIES
from dml.evaluate.inputs import check_options, read_inputs
from dml.evaluate.kernels import DEFAULT_BLOCK_BYTES
from dml.evaluate.metrics import block_metrics, clustering_scores
from dml.evaluate.relevance import Grades, Relevance, matrix_callback
from dml.evaluate.top_ranking import top_ranked_blocks

__all__ = ["per_query_metrics", "ranked_blocks", "retrieval_metrics"]

def retrieval_metrics(
    query: ArrayLike | torch.Tensor,
    query_labels: ArrayLike | torch.Tensor | Mapping[str, ArrayLike | torch.Tensor] | None = None,
    gallery: ArrayLike | torch.Tensor | None = None,
    gallery_labels: ArrayLike | torch.Tensor | Mapping[str, ArrayLike | torch.Tensor] | None = None,
    *,
    relevance: Relevance | ArrayLike | torch.Tensor | None = None,
    grades: Grades | ArrayLike | torch.Tensor | None = None,
    ks: int | Sequence[int] = (1, 2, 4, 8),
    map_ks: int | Sequence[int] = (),
    precision_ks: int | Sequence[int] = (),
    ndcg_ks: int | Sequence[int] = (),
    ndcg_gain: str = "linear",
    map_denominator: str = "found",
    asi: bool = False,
    metric: str = "cosine",
    block_bytes: int = DEFAULT_BLOCK_BYTES,
    nmi: bool = True,
    full_map: bool = True,
    seed: int = 0,
    query_gallery_index: ArrayLike | torch.Tensor | None = None,
    per_query: dict[str, np.ndarray] | None = None,
    candidates: Candidates | None = None,
    ranking: dict[str, Any] | None = None,
) -> dict[str, float]:
    """Exact retrieval metrics of ``query`` against ``gallery`` (or against itself), plus NMI.

    Args:
        query: ``[Q, D]``, numpy or torch: float vectors, or 0/1 code bits for ``hamming``
            (computed in float32 on the tensor's device). ``[Q, V, D]``: several views of
            each query (image and mirror), a pair scoring as its nearest views; so may the
            gallery.
        query_labels: int ``[Q]`` class of each query; relevance is "same class" unless
            ``relevance`` is given (then labels are only needed for NMI). A mapping of label
            sets (``{"fine": ..., "coarse": ...}``, with ``gallery_labels`` a mapping of the
            same names) ranks once and reports each set's metrics under ``<name>/``, NMI for
            the first set only.
        gallery, gallery_labels: ``[N, D]`` and int ``[N]``. With no gallery, each query is
            ranked against the other queries, itself excluded.
        relevance: which gallery items are relevant to each query: a bool ``[Q, N]`` matrix
            or a callback ``rows int64[B] -> bool[B, N]`` (streamed; see
            ``dml.evaluate.relevance.Relevance``). Overrides the labels.
        grades: graded relevance for NDCG: float ``[Q, N]`` or a callback of the same shape
            (0 = not relevant; only items that ``relevance`` marks count).
        ks: the K of each ``recall@K``; ``map_ks``: of each ``map@K``; ``precision_ks``: of
            each ``precision@K``; ``ndcg_ks``: of each ``ndcg@K`` (needs ``grades``).
        ndcg_gain: ``linear`` (the grade) or ``exponential`` (``2^grade − 1``) gain in NDCG.
        map_denominator: what ``map@K`` divides by: ``found`` (the relevant items in the top
            K) or ``min_r_k`` (``min(R, K)``).
        asi: also report ``asi``, the average set intersection over the top R (DyML).
        metric: ``"cosine"`` (rows L2-normalized first), ``"dot"`` (plain inner product, e.g.
            a gallery decoded from quantization codes), ``"euclidean"`` (increasing L2
            distance) or ``"hamming"`` (0/1 codes, increasing Hamming distance).
        block_bytes: memory budget of one block of queries (its float32 scores and bool
            relevance: 5 bytes per query-gallery pair); the result does not depend on it.
        nmi: also cluster the query embeddings (L2-normalized under cosine; faiss k-means,
            K = number of distinct query labels, k-means++ seeding with ``seed``) and report
            NMI and AMI against the labels (scikit-learn's ``normalized_mutual_info_score``
            and ``adjusted_mutual_info_score``).
        full_map: also report ``map``, the average precision over the whole ranking. It
            needs every relevant item's position, so every query's full ranking; without it
            only each query's top ``max(R, K)`` is ranked (exactly: ``dml.evaluate.top_ranking``),
            several times faster on a large gallery, and every other metric is the same.
        seed: seed of that k-means.
        query_gallery_index: int ``[Q]``, only with a separate gallery: the gallery row that
            holds the same item as each query, or -1. That row is left out of the query's
            ranking, as the query itself is with no gallery (roles "both", see
            ``dml.evaluate.protocols``).
        per_query: a dict to fill with each query's value of each metric (NaN for a query
            without a relevant item), for intervals over queries.
        candidates: rank only each query's candidates from a faiss index, re-ranked exactly
            (approximate: :mod:`dml.evaluate.candidates`); needs ``full_map=False`` and no
            ``ndcg_ks`` (whole-ranking figures are refused). None: exact.
        ranking: a dict to fill with how the ranking was made (``{"kind": "exact"}``, or the
            candidates' description and their measured ``recall@<d>``).

    Returns:
        ``recall@K`` for each K (DML sense: a relevant item among the top K; K beyond the
        gallery size means "any"), ``precision@K`` (K=1 and ``precision_ks``),
        ``r_precision``, ``map@r`` (Musgrave et al. 2020, ``1/R sum_{i<=R} P@i rel(i)``),
        ``map`` (average precision over the whole ranking; with ``full_map``), ``map@K``, ``ndcg@K``, ``asi``, ``nmi``
        and ``ami`` (only when ``nmi=True``) and ``queries_without_relevant``. Every ranking
        metric is the expectation over the orders of tied items (``dml.evaluate.metrics``).

    Queries with no relevant item in the gallery (a class seen once when ranking a set
    against itself, a query class absent from the gallery) have no defined retrieval score:
    they are left out of every retrieval average and counted in
    ``queries_without_relevant`` (a float, like every value). With none left, nothing is
    defined: that is an error. Labels may be integers or names (strings, any objects: mapped
    to ids over query and gallery together); ``ks`` may be a single int. Ranking is exact
    over the whole gallery (no top-k cap); a non-relevant item with exactly the same score as
    a relevant one ranks ahead of it.

    Raises:
        DataError: embeddings not 2-D or not float, non-finite values, a zero row under
            cosine similarity, query and gallery dims differing (the message gives both
            shapes), labels not 1-D or of the wrong length, float labels, no query, neither
            labels nor a relevance, no query with a relevant item.
        ConfigError: unknown ``metric``, non-positive ``ks`` or ``block_bytes``.

    >>> x = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.2, 0.8], [0.6, 0.6]])
    >>> m = retrieval_metrics(x, [0, 0, 1, 1, 2], ks=(1,), nmi=False)
    >>> m["recall@1"], m["map@r"], m["queries_without_relevant"]   # class 2 has one item
    (1.0, 1.0, 1.0)
    >>> g = np.array([[0.0, 1.0], [1.0, 0.1], [1.0, 0.0]])         # ranks for query 0: 2, 1, 0
    >>> retrieval_metrics(x[:1], [0], g, [0, 1, 0], ks=(1, 2), nmi=False)["map"]   # (1 + 2/3) / 2
    0.8333333333333333
    >>> rel = np.array([[False, True, False]])                       # a relevance of one's own
    >>> retrieval_metrics(x[:1], gallery=g, relevance=rel, ks=(1,), nmi=False)["recall@1"]
    0.0
    >>> retrieval_metrics(x[:1], [0], g, [0, 1, 0], ks=(1,), metric="euclidean", nmi=False)["recall@1"]
    1.0
    """
    ks, map_ks, precision_ks, ndcg_ks = check_options(ks, map_ks, precision_ks, ndcg_ks, ndcg_gain=ndcg_gain,
                                                      map_denominator=map_denominator, block_bytes=block_bytes)
    data = read_inputs(query, query_labels, gallery, gallery_labels, relevance=relevance, grades=grades, nmi=nmi,
                       metric=metric, query_gallery_index=query_gallery_index)
    relevances = data.relevances(relevance)
    per_set = per_query_metrics(
        data.query, data.gallery, relevances if len(relevances) > 1 else relevances[0], ks=ks, exclude=data.exclude,
        block_bytes=block_bytes, metric=metric, map_ks=map_ks, precision_ks=precision_ks,
        grades=matrix_callback(grades, "grades", (len(data.query), len(data.gallery)), data.query.device, torch.float64),
        ndcg_ks=ndcg_ks, ndcg_gain=ndcg_gain, map_denominator=map_denominator, asi=asi, full_map=full_map,
        candidates=candidates, ranking=ranking,
    )
    result: dict[str, float] = {}
    for (name, (q_lab, _)), values in zip(data.labels.items(), per_set if len(relevances) > 1 else [per_set],
                                          strict=True):
        prefix = f"{name}/" if name else ""
        result.update({prefix + k: v for k, v in _averages(values, name, data.against_itself, per_query, prefix).items()})
        if nmi and name == next(iter(data.labels)):  # the first (finest) labels only
            plain = data.query if data.query.dim() == 2 else data.query[:, 0]  # views: the plain one
            clusters = clustering_scores(plain.cpu().numpy(), q_lab.cpu().numpy(), seed=seed)
            result.update({prefix + k: value for k, value in clusters.items()})
    return result


def _averages(values: dict[str, np.ndarray], name: str, against_itself: bool,
              per_query: dict[str, np.ndarray] | None, prefix: str) -> dict[str, float]:
    """The mean of each metric over the queries with a relevant item, and how many have none;
    each query's values into ``per_query`` (NaN where it has no relevant item)."""
    valid = ~np.isnan(values["map@r"])
    if not valid.any():
        raise DataError(f"none of the {len(valid)} queries has a relevant item in the "
                        f"{'rest of the query set' if against_itself else 'gallery'}"
                        f"{' at ' + repr(name) if name else ''}: every retrieval metric is undefined "
                        "(check the labels, the relevance, or the query/gallery split)")
    if per_query is not None:
        per_query.update({prefix + k: np.where(valid, v, np.nan) for k, v in values.items()})
    return {**{k: float(np.nanmean(v[valid])) for k, v in values.items()},
            "queries_without_relevant": float((~valid).sum())}


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
    candidates: Candidates | None = None,
    ranking: dict[str, Any] | None = None,
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

    With ``candidates``, each query is ranked among its candidates from a faiss index only
    (:class:`~dml.evaluate.candidates.CandidateSearch`), and ``ranking`` gets their measured
    recall; a metric that needs the full ranking (``map``, ``ndcg@K``) or a cutoff deeper than
    the candidates is a :class:`~dml.errors.ConfigError` naming ``evaluate.candidates``.
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
    asked = [metric_key(name).needs for name in outs[0]]  # what the asked metrics read: the catalogue's declarations
    whole = any(needs & {"full ranking", "scores"} for needs in asked)  # every position, or every score
    depth = None if whole else max([*ks, *precision_ks, *map_ks])
    if candidates is None:
        if ranking is not None:
            ranking.update(kind="exact")
        blocks = ranked_blocks(query, gallery, relevance, exclude=exclude, block_bytes=block_bytes, metric=metric,
                               grades=grades, ndcg_ks=ndcg_ks, ndcg_gain=ndcg_gain, depth=depth)
    else:
        blocks = _candidate_blocks(query, gallery, relevance, candidates, exclude=exclude, metric=metric,
                                   block_bytes=block_bytes, depth=depth, ranking=ranking,
                                   whole=[name for name, needs in zip(outs[0], asked)
                                          if needs & {"full ranking", "scores"}])
    for rows, ranks, n_rels, ndcgs in blocks:
        idx = rows.cpu().numpy()
        if not many and candidates is None:
            ranks, n_rels, ndcgs = [ranks], [n_rels], [ndcgs]
        for out, (rank, ties), n_rel, ndcg in zip(outs, ranks, n_rels, ndcgs, strict=True):
            for name, value in block_metrics(rank, n_rel, ties, **options).items():
                out[name][idx] = value.cpu().numpy()
            for k, value in ndcg.items():
                out[f"ndcg@{k}"][idx] = value.cpu().numpy()
    return outs if many else outs[0]


def _candidate_blocks(query: torch.Tensor, gallery: torch.Tensor, relevance: Relevance | Sequence[Relevance],
                      candidates: Candidates, *, exclude: torch.Tensor | None, metric: str, block_bytes: int,
                      depth: int | None, ranking: dict[str, Any] | None, whole: list[str]) -> Iterator:
    """The blocks of :meth:`CandidateSearch.blocks` (lists, one entry per relevance), after
    refusing what candidates cannot rank; ``ranking`` gets their description and recall."""
    if whole or depth is None:
        raise ConfigError(f"{candidates.where}: {', '.join(whole)} need(s) every query's full ranking, which "
                          f"{candidates.k} candidates per query cannot give; leave it out or set "
                          f"{candidates.where}: null (exact)")
    if depth > candidates.k:
        raise ConfigError(f"{candidates.where}.k: {candidates.k} candidates per query cannot rank the top "
                          f"{depth} (the deepest cutoff asked); raise it to at least {depth}")
    search = CandidateSearch(candidates, gallery, metric)
    if ranking is not None:
        ranking.update(candidates.describe())
        ranking.update(search.recall(query, exclude=exclude, depths=(depth, candidates.k), block_bytes=block_bytes))
    relevances = list(relevance) if not callable(relevance) else [relevance]
    return search.blocks(query, relevances, exclude=exclude, block_bytes=block_bytes)


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
    (:func:`~dml.evaluate.geometry.prepare_embeddings` with the same ``metric``); either may hold views, ``[Q, V, D]``
    (:func:`~dml.evaluate.geometry.block_scores`). ``exclude: int64[Q]`` names, per
    query, one gallery position to leave out of its ranking and its relevant set (-1: none);
    for a query set ranked against itself it is ``arange(Q)``. ``rows: int64[B]`` are the
    block's query indices; ``ranks``/``ties``/``n_relevant`` as in :func:`~dml.evaluate.kernels.relevant_ranks`;
    ``ndcg`` maps each K of ``ndcg_ks`` to float64 ``[B]`` (needs ``grades``; ``ndcg_gain``:
    :data:`~dml.evaluate.metrics.NDCG_GAINS`). The block size comes from :func:`~dml.evaluate.kernels.rows_per_block`.

    ``depth``: rank only each query's top ``max(R, depth)`` positions, exactly
    (:mod:`dml.evaluate.top_ranking`): ``ranks`` then lists the relevant items found there and
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
    single = query.dim() == 2 and gallery.dim() == 2  # several views: scored in full
    sq_norms = (gallery * gallery).sum(1) if GEOMETRIES[metric].euclidean and single else None
    if depth is None:
        blocks = full_ranked_blocks(query, gallery, relevances, exclude=exclude, block_bytes=block_bytes, metric=metric,
                                    sq_norms=sq_norms, grades=grades, ndcg_ks=ndcg_ks, ndcg_gain=ndcg_gain)
    else:
        blocks = top_ranked_blocks(query, gallery, relevances, depth=depth, exclude=exclude, metric=metric,
                                   sq_norms=sq_norms, block_bytes=block_bytes)
    for rows, ranks, counts, ndcgs in blocks:
        if many:
            yield rows, ranks, counts, ndcgs
        else:
            yield rows, ranks[0], counts[0], ndcgs[0]
