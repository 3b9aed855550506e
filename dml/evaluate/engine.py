"""The evaluation engine: :func:`retrieval_metrics` checks its inputs, ranks (in full or only
each query's top) and averages the per-query metrics; :func:`per_query_metrics` is its core
on prepared tensors."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence

import numpy as np
import torch
from numpy.typing import ArrayLike

from dml.errors import ConfigError, DataError
from dml.evaluate.full_ranking import full_ranked_blocks
from dml.evaluate.geometry import GEOMETRIES, geometry, prepare_embeddings
from dml.evaluate.kernels import DEFAULT_BLOCK_BYTES
from dml.evaluate.metrics import MAP_DENOMINATORS, NDCG_GAINS, block_metrics, clustering_scores
from dml.evaluate.relevance import Grades, Relevance, label_relevance, matrix_callback
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
    shape = geometry(metric)
    ks, map_ks, precision_ks, ndcg_ks = (_cutoffs(k) for k in (ks, map_ks, precision_ks, ndcg_ks))
    for name, values in (("ks", ks), ("map_ks", map_ks), ("precision_ks", precision_ks),
                         ("ndcg_ks", ndcg_ks)):
        if (name == "ks" and not values) or (values and min(values) < 1):
            raise ConfigError(f"{name} must be positive integers, got {tuple(values)}")
    if ndcg_gain not in NDCG_GAINS:
        raise ConfigError(f"ndcg_gain must be one of: {', '.join(NDCG_GAINS)}; got {ndcg_gain!r}")
    if map_denominator not in MAP_DENOMINATORS:
        raise ConfigError(f"map_denominator must be one of: {', '.join(MAP_DENOMINATORS)}; got {map_denominator!r}")
    if int(block_bytes) < 1:
        raise ConfigError(f"block_bytes must be positive, got {block_bytes}")
    if gallery is None and gallery_labels is not None:
        raise DataError("gallery_labels were given without a gallery")
    if query_labels is None and relevance is None:
        raise DataError("give query_labels (relevance by class) or a relevance")
    if gallery is not None and relevance is None and gallery_labels is None:
        raise DataError("give gallery and gallery_labels together (or a relevance)")
    if nmi and query_labels is None:
        raise DataError("nmi=True needs query_labels")

    sets = _label_sets(query_labels, gallery_labels, gallery is not None)
    if len(sets) > 1 and (relevance is not None or grades is not None):
        raise DataError("several label sets rank by class: no relevance or grades of one's own")
    q = _embeddings(query, "query", metric)
    if q.shape[0] == 0:
        raise DataError("no query embeddings (query has 0 rows)")
    labelled = {}  # name -> (query labels, gallery labels) as tensors on the query's device
    for name, (q_given, g_given) in sets.items():
        q_ids, g_ids = _label_ids(q_given, g_given)
        where = f"{name} " if name else ""
        q_lab = None if q_ids is None else _labels(q_ids, f"{where}query_labels", q.shape[0], q.device)
        labelled[name] = (q_lab, g_ids)
    if gallery is None:
        if query_gallery_index is not None:
            raise DataError("query_gallery_index needs a separate gallery (each query is excluded already)")
        g = None
        labelled = {name: (q_lab, q_lab) for name, (q_lab, _) in labelled.items()}
        exclude = torch.arange(q.shape[0], device=q.device)
    else:
        g = _embeddings(gallery, "gallery", metric).to(q.device)
        if g.shape[-1] != q.shape[-1]:
            raise DataError(
                f"query and gallery dimensions differ: query shape {tuple(q.shape)}, "
                f"gallery shape {tuple(g.shape)}"
            )
        labelled = {
            name: (q_lab, None if g_ids is None else _labels(
                g_ids, f"{name + ' ' if name else ''}gallery_labels", g.shape[0], q.device))
            for name, (q_lab, g_ids) in labelled.items()
        }
        exclude = None
        if query_gallery_index is not None:
            exclude = _labels(query_gallery_index, "query_gallery_index", q.shape[0], q.device)
            if bool(((exclude < -1) | (exclude >= g.shape[0])).any()):
                raise DataError(f"query_gallery_index values must be in [-1, {g.shape[0]})")

    if shape.normalized:
        for name, t in (("query", q), ("gallery", g)):
            row = None if t is None else _first_row(t, lambda c: (c == 0).all(dim=-1).reshape(len(c), -1).any(dim=1))
            if row is not None:
                raise DataError(f"{name} row {row} is all zeros: cosine similarity is undefined")
    q = prepare_embeddings(q, metric)
    g = q if g is None else prepare_embeddings(g, metric)
    shape = (q.shape[0], g.shape[0])
    relevance = matrix_callback(relevance, "relevance", shape, q.device, torch.bool)
    relevances = ([relevance] if relevance is not None
                  else [label_relevance(q_lab, g_lab) for q_lab, g_lab in labelled.values()])
    grades = matrix_callback(grades, "grades", shape, q.device, torch.float64)

    per_set = per_query_metrics(
        q, g, relevances if len(relevances) > 1 else relevances[0], ks=ks, exclude=exclude, block_bytes=block_bytes, metric=metric,
        map_ks=map_ks, precision_ks=precision_ks, grades=grades, ndcg_ks=ndcg_ks, ndcg_gain=ndcg_gain,
        map_denominator=map_denominator, asi=asi, full_map=full_map,
    )
    if len(relevances) == 1:
        per_set = [per_set]
    result: dict[str, float] = {}
    for (name, (q_lab, _)), values_per_query in zip(labelled.items(), per_set, strict=True):
        prefix = f"{name}/" if name else ""
        valid = ~np.isnan(values_per_query["map@r"])
        if not valid.any():
            raise DataError(f"none of the {len(valid)} queries has a relevant item in the "
                            f"{'gallery' if gallery is not None else 'rest of the query set'}"
                            f"{' at ' + repr(name) if name else ''}: every retrieval metric is undefined "
                            "(check the labels, the relevance, or the query/gallery split)")
        result.update({prefix + k: float(np.nanmean(v[valid])) for k, v in values_per_query.items()})
        if per_query is not None:  # each query's value (NaN where it has no relevant item)
            per_query.update({prefix + k: np.where(valid, v, np.nan) for k, v in values_per_query.items()})
        if nmi and name == next(iter(labelled)):  # the first (finest) labels only
            plain = q if q.dim() == 2 else q[:, 0]  # views: the plain one
            clusters = clustering_scores(plain.cpu().numpy(), q_lab.cpu().numpy(), seed=seed)
            result.update({prefix + name: value for name, value in clusters.items()})
        result[prefix + "queries_without_relevant"] = float((~valid).sum())
    return result


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


def _embeddings(x: ArrayLike | torch.Tensor, name: str, metric: str) -> torch.Tensor:
    t = x if isinstance(x, torch.Tensor) else torch.from_numpy(np.asarray(x))
    if t.dim() not in (2, 3):
        raise DataError(f"{name} embeddings must be 2-D [rows, dim] (or 3-D [rows, views, dim]), "
                        f"got shape {tuple(t.shape)}")
    if GEOMETRIES[metric].binary:
        if not bool(((t == 0) | (t == 1)).all()):
            raise DataError(f"{name} codes must hold 0/1 bits (one column per bit) for hamming ranking")
    elif not t.is_floating_point():
        raise DataError(f"{name} embeddings must be floating point, got {t.dtype}")
    t = t.detach().to(torch.float32)
    row = _first_row(t, lambda chunk: ~torch.isfinite(chunk).flatten(1).all(dim=1))
    if row is not None:
        raise DataError(f"{name} embeddings contain non-finite values (NaN/inf in float32), first at row {row}")
    return t


def _first_row(t: torch.Tensor, where: Callable[[torch.Tensor], torch.Tensor], chunk: int = 1 << 14) -> int | None:
    """The first row for which ``where(rows) -> bool[rows]`` holds, checked a chunk of rows at
    a time (no temporary the size of the data)."""
    for start in range(0, t.shape[0], chunk):
        hit = where(t[start : start + chunk]).nonzero()
        if len(hit):
            return start + int(hit[0, 0])
    return None


def _cutoffs(ks: int | Sequence[int]) -> tuple[int, ...]:
    """``ks`` as a tuple of ints: one cutoff may be given as a bare int."""
    return (int(ks),) if isinstance(ks, (int, np.integer)) else tuple(int(k) for k in ks)


def _label_ids(query_labels: ArrayLike | torch.Tensor | None,
               gallery_labels: ArrayLike | torch.Tensor | None) -> tuple:
    """Labels that are not numbers (class names, any hashable objects) mapped to integer ids,
    one vocabulary for query and gallery so that equal names stay equal; numbers unchanged."""
    given = [y if isinstance(y, torch.Tensor) else np.asarray(y)  # a tensor always holds numbers
             for y in (query_labels, gallery_labels) if y is not None]
    named = [isinstance(y, np.ndarray) and y.dtype.kind in "OUS" for y in given]
    if not any(named):
        return query_labels, gallery_labels
    if not all(named):
        raise DataError("query_labels and gallery_labels must both be names or both be numbers")
    if any(y.ndim != 1 for y in given):
        raise DataError("labels must be 1-D [rows]")
    _, ids = np.unique(np.concatenate([y.astype(str) for y in given]), return_inverse=True)
    query_ids, gallery_ids = np.split(ids, [len(given[0])])
    return query_ids, (gallery_ids if gallery_labels is not None else None)


def _labels(y: ArrayLike | torch.Tensor, name: str, n_rows: int, device: torch.device) -> torch.Tensor:
    t = y if isinstance(y, torch.Tensor) else torch.from_numpy(np.asarray(y))
    if t.dim() != 1:
        raise DataError(f"{name} must be 1-D [rows], got shape {tuple(t.shape)}")
    if t.is_floating_point() or t.is_complex():
        raise DataError(f"{name} must be integers, got {t.dtype}")
    if t.shape[0] != n_rows:
        raise DataError(f"{name} has {t.shape[0]} entries but the embeddings have {n_rows} rows")
    return t.to(device=device, dtype=torch.long)


def _label_sets(query_labels, gallery_labels, has_gallery: bool) -> dict[str, tuple]:
    """``{name: (query labels, gallery labels)}``: one unnamed set (``""``), or the named sets
    of a mapping (each semantic scale's labels) with the same names on both sides."""
    if not isinstance(query_labels, Mapping):
        if isinstance(gallery_labels, Mapping):
            raise DataError("gallery_labels is a mapping of label sets but query_labels is not")
        return {"": (query_labels, gallery_labels)}
    if not query_labels:
        raise DataError("query_labels is an empty mapping: name one label set at least")
    if has_gallery and (not isinstance(gallery_labels, Mapping) or set(gallery_labels) != set(query_labels)):
        raise DataError(f"query_labels names the label sets {list(query_labels)}: gallery_labels must "
                        "be a mapping with the same names")
    return {str(name): (labels, gallery_labels[name] if has_gallery else None)
            for name, labels in query_labels.items()}
