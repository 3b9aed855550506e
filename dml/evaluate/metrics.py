"""Retrieval and clustering metrics as pure functions (definitions: METHODS.md, "Metrics").

Every retrieval metric here is a function of one compact description of a block of rankings:

``ranks``: int64 ``[Q, M]``
    For each query, the 1-based positions in its ranking of its relevant gallery items, in
    increasing order, padded on the right with 0. ``M`` is at least the largest number of
    relevant items retrieved for a query of the block.
``n_relevant``: int64 ``[Q]``
    R, the number of relevant items the query has in the gallery. Normally the number of
    non-zero ranks in the row; larger when the ranking was truncated (a top-k list from
    faiss), in which case the relevant items that were not retrieved count as never found.

Storing only the relevant items' positions keeps a block small (``Q x R`` instead of
``Q x N``) while every metric below stays exact over the whole ranking.
:func:`ranks_from_relevance` builds the pair from a dense ``bool[Q, N]`` relevance matrix in
ranked order, the form used in the examples.

Each metric returns float64 ``[Q]``: one value per query, NaN for a query without any relevant
item (R = 0), which callers leave out of their averages. Everything is vectorized over the
whole block; no Python loop over queries or pairs.

>>> ranks, n_rel = ranks_from_relevance([[True, False, True],    # R = 2
...                                      [False, False, False]])  # no relevant item
>>> ranks.tolist(), n_rel.tolist()
([[1, 3], [0, 0]], [2, 0])
>>> map_at_r(ranks, n_rel).tolist()      # row 0: (1/1 + 0) / 2; row 1: NaN
[0.5, nan]
"""

from __future__ import annotations

import numpy as np
import torch
from numpy.typing import ArrayLike
from sklearn.metrics import (adjusted_mutual_info_score, average_precision_score,
                             normalized_mutual_info_score)

__all__ = [
    "attribute_average_precision",
    "average_precision",
    "average_precision_at_k",
    "average_set_intersection",
    "ndcg_at_k",
    "clustering_scores",
    "kmeans_assign",
    "map_at_r",
    "precision_at_k",
    "r_precision",
    "ranks_from_relevance",
    "recall_at_k",
]


def _as_long(x: ArrayLike | torch.Tensor) -> torch.Tensor:
    return torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x).long()


def ranks_from_relevance(relevance: ArrayLike | torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Turn ``relevance: bool[Q, N]`` (relevance of each ranked position) into ``(ranks, n_relevant)``.

    ``relevance[q, i]`` is True when the item at position ``i + 1`` of query ``q``'s ranking is
    relevant. Returns ``ranks: int64[Q, M]`` (``M`` = the largest row count, at least 0) and
    ``n_relevant: int64[Q]`` as described in the module docstring.

    >>> ranks, n = ranks_from_relevance([[False, True, True, False]])
    >>> ranks.tolist(), n.tolist()
    ([[2, 3]], [2])
    >>> [t.shape for t in ranks_from_relevance(torch.zeros(1, 0, dtype=torch.bool))]  # lone query
    [torch.Size([1, 0]), torch.Size([1])]
    """
    rel = torch.as_tensor(np.asarray(relevance) if not isinstance(relevance, torch.Tensor) else relevance)
    rel = rel.bool()
    if rel.dim() != 2:
        raise ValueError(f"relevance must be 2-D [Q, N], got shape {tuple(rel.shape)}")
    rows, cols = rel.nonzero(as_tuple=True)  # row-major: each row's hits in ranking order
    n_relevant = torch.bincount(rows, minlength=rel.shape[0])
    width = int(n_relevant.max()) if rel.shape[0] else 0
    ranks = torch.zeros(rel.shape[0], width, dtype=torch.long, device=rel.device)
    row_start = torch.cumsum(n_relevant, 0) - n_relevant
    within = torch.arange(rows.numel(), device=rel.device) - row_start[rows]
    ranks[rows, within] = cols + 1
    return ranks, n_relevant


def _prepare(ranks: ArrayLike | torch.Tensor, n_relevant: ArrayLike | torch.Tensor):
    r = _as_long(ranks)
    n = _as_long(n_relevant).to(r.device)
    if r.dim() != 2 or n.dim() != 1 or r.shape[0] != n.shape[0]:
        raise ValueError(
            f"ranks must be [Q, M] and n_relevant [Q]; got {tuple(r.shape)} and {tuple(n.shape)}"
        )
    found = r > 0
    # m: how many relevant items are at or above each listed one (ranks ascend along a row).
    m = torch.arange(1, r.shape[1] + 1, device=r.device, dtype=torch.float64).expand(r.shape)
    return r, n, found, m


def _per_query(total: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
    """``total / n`` as float64, NaN where the query has no relevant item."""
    out = total.double() / n.clamp(min=1).double()
    return out.masked_fill(n == 0, float("nan"))


def recall_at_k(ranks: ArrayLike | torch.Tensor, n_relevant: ArrayLike | torch.Tensor, k: int) -> torch.Tensor:
    """Recall@K in the DML sense: 1.0 if a relevant item is among the top ``k``, else 0.0. ``[Q]``.

    Equals P@1 for ``k = 1``. A ``k`` larger than the gallery simply asks for any relevant
    item at all.

    >>> ranks, n = ranks_from_relevance([[False, True, True], [False, False, True], [False] * 3])
    >>> recall_at_k(ranks, n, 2).tolist()
    [1.0, 0.0, nan]
    >>> recall_at_k(ranks, n, 100).tolist()   # K larger than the gallery
    [1.0, 1.0, nan]
    """
    r, n, found, _ = _prepare(ranks, n_relevant)
    hit = (found & (r <= k)).any(dim=1)
    return _per_query(hit.long(), n.clamp(max=1))


def precision_at_k(ranks: ArrayLike | torch.Tensor, n_relevant: ArrayLike | torch.Tensor, k: int) -> torch.Tensor:
    """P@K: the fraction of the top ``k`` positions that hold a relevant item. ``[Q]``.

    The denominator is always ``k``, also when the gallery has fewer than ``k`` items.

    >>> ranks, n = ranks_from_relevance([[True, False, True, True]])
    >>> precision_at_k(ranks, n, 1).tolist(), precision_at_k(ranks, n, 4).tolist()
    ([1.0], [0.75])
    """
    r, n, found, _ = _prepare(ranks, n_relevant)
    hits = (found & (r <= k)).sum(dim=1).double() / k
    return hits.masked_fill(n == 0, float("nan"))


def r_precision(ranks: ArrayLike | torch.Tensor, n_relevant: ArrayLike | torch.Tensor) -> torch.Tensor:
    """R-Precision: P@R with R the query's number of relevant items. ``[Q]``.

    >>> ranks, n = ranks_from_relevance([[True, False, True, False]])   # R = 2, 1 in top 2
    >>> r_precision(ranks, n).tolist()
    [0.5]
    """
    r, n, found, _ = _prepare(ranks, n_relevant)
    hits = (found & (r <= n[:, None])).sum(dim=1)
    return _per_query(hits, n)


def map_at_r(ranks: ArrayLike | torch.Tensor, n_relevant: ArrayLike | torch.Tensor) -> torch.Tensor:
    """MAP@R (Musgrave et al. 2020): ``1/R * sum_{i <= R} P@i * rel(i)``. ``[Q]``.

    >>> ranks, n = ranks_from_relevance([[True, True, False, True]])    # R = 3
    >>> map_at_r(ranks, n).tolist()                                      # (1/1 + 2/2 + 0) / 3
    [0.6666666666666666]
    """
    r, n, found, m = _prepare(ranks, n_relevant)
    inside = found & (r <= n[:, None])
    terms = torch.where(inside, m / r.clamp(min=1).double(), 0.0)
    return _per_query(terms.sum(dim=1), n)


def average_precision(ranks: ArrayLike | torch.Tensor, n_relevant: ArrayLike | torch.Tensor) -> torch.Tensor:
    """Average precision over the whole ranking: ``1/R * sum_i P@i * rel(i)``. ``[Q]``.

    Relevant items missing from ``ranks`` (a truncated ranking, ``n_relevant`` larger than
    the row's count) contribute 0, so on a top-K list this is AP@K normalized by R.

    >>> ranks, n = ranks_from_relevance([[True, False, True]])           # (1/1 + 2/3) / 2
    >>> round(average_precision(ranks, n).item(), 6)
    0.833333
    >>> average_precision([[1, 0]], [2]).tolist()     # second relevant item never retrieved
    [0.5]
    """
    r, n, found, m = _prepare(ranks, n_relevant)
    terms = torch.where(found, m / r.clamp(min=1).double(), 0.0)
    return _per_query(terms.sum(dim=1), n)


def average_set_intersection(ranks: ArrayLike | torch.Tensor,
                             n_relevant: ArrayLike | torch.Tensor) -> torch.Tensor:
    """ASI (Average Set Intersection, as DyML and HAPPIER report it) with binary relevance:
    ``1/R * sum_{n=1..R} |top_n(ranking) ∩ top_n(ideal)| / n``, which is ``1/R * sum_{n<=R} P@n``.
    ``[Q]``.

    Computed per relevant item instead of per depth: an item at rank ``r <= R`` counts in
    ``P@n`` for every ``n`` from ``r`` to ``R``, adding ``H_R - H_{r-1}`` (harmonic numbers),
    so R may be in the thousands at no cost.

    >>> ranks, n = ranks_from_relevance([[True, False, True, False]])   # R = 2: (P@1 + P@2) / 2
    >>> average_set_intersection(ranks, n).tolist()
    [0.75]
    """
    r, n, found, _ = _prepare(ranks, n_relevant)
    top = int(n.max()) if n.numel() else 0
    harmonic = torch.zeros(top + 1, dtype=torch.float64, device=r.device)
    harmonic[1:] = torch.cumsum(1.0 / torch.arange(1, top + 1, dtype=torch.float64, device=r.device), 0)
    inside = found & (r <= n[:, None])
    terms = harmonic[n][:, None] - harmonic[(r - 1).clamp(min=0, max=top)]
    return _per_query(torch.where(inside, terms, 0.0).sum(dim=1), n)


def average_precision_at_k(
    ranks: ArrayLike | torch.Tensor, n_relevant: ArrayLike | torch.Tensor, k: int
) -> torch.Tensor:
    """AP@K as the multi-label retrieval literature reports mAP@K: the mean of P@i over the
    relevant items within the top ``k`` (``sum_{i<=k} P@i rel(i) / #{relevant in top k}``),
    0 when none is there. ``[Q]``.

    >>> ranks, n = ranks_from_relevance([[True, False, True, True], [False, False, True, True]])
    >>> average_precision_at_k(ranks, n, 3).tolist()     # row 0: (1/1 + 2/3) / 2; row 1: none
    [0.8333333333333333, 0.3333333333333333]
    >>> average_precision_at_k(*ranks_from_relevance([[False, True]]), 1).tolist()
    [0.0]
    """
    r, n, found, m = _prepare(ranks, n_relevant)
    inside = found & (r <= k)
    terms = torch.where(inside, m / r.clamp(min=1).double(), 0.0)
    out = terms.sum(dim=1) / inside.sum(dim=1).clamp(min=1).double()
    return out.masked_fill(n == 0, float("nan"))


def ndcg_at_k(scores: torch.Tensor, grades: torch.Tensor, k: int) -> torch.Tensor:
    """NDCG@K with graded relevance and linear gain. float64 ``[Q]``, NaN where no item is
    relevant (every grade 0).

    ``scores: float[Q, N]`` (higher first; ``-inf`` for excluded items), ``grades: float[Q, N]``
    (0 = not relevant). ``DCG@K = sum_{i<=K} g_(i) / log2(i + 1)`` over the ranking, divided
    by the same sum over the grades sorted decreasingly. Ties in score count against the
    query: among equal scores the lower grade ranks first.

    >>> s = torch.tensor([[0.9, 0.8, 0.1]]); g = torch.tensor([[0.5, 1.0, 0.0]], dtype=torch.float64)
    >>> round(ndcg_at_k(s, g, 2).item(), 6)          # (0.5 + 1/log2(3)) / (1 + 0.5/log2(3))
    0.859719
    >>> ndcg_at_k(torch.tensor([[0.5, 0.5]]), torch.tensor([[1.0, 0.0]], dtype=torch.float64), 1).tolist()
    [0.0]
    """
    grades = grades.to(torch.float64)
    k = min(int(k), grades.shape[1])
    by_grade = torch.argsort(grades, dim=1, stable=True)  # lower grade first among equal scores
    by_score = torch.argsort(scores.gather(1, by_grade), dim=1, descending=True, stable=True)
    top = by_grade.gather(1, by_score[:, :k])
    discount = 1.0 / torch.log2(torch.arange(2, k + 2, device=grades.device, dtype=torch.float64))
    dcg = (grades.gather(1, top) * discount).sum(dim=1)
    idcg = (torch.topk(grades, k, dim=1).values * discount).sum(dim=1)
    return (dcg / idcg.clamp(min=torch.finfo(torch.float64).tiny)).masked_fill(idcg == 0, float("nan"))


def kmeans_assign(embeddings: np.ndarray, k: int, *, seed: int = 0, niter: int = 20) -> np.ndarray:
    """Cluster ``embeddings: float[N, D]`` into ``k`` groups with faiss k-means; int64 ``[N]``.

    k-means++ seeding (as in scikit-learn's KMeans) and every point used for training (faiss
    would otherwise subsample to 256 points per centroid); the result depends only on
    ``seed``.
    """
    import faiss

    x = np.ascontiguousarray(embeddings, dtype=np.float32)
    if not 1 <= k <= x.shape[0]:
        raise ValueError(f"k must be in [1, {x.shape[0]}] for {x.shape[0]} points, got {k}")
    if k == 1:
        return np.zeros(x.shape[0], dtype=np.int64)
    km = faiss.Kmeans(
        x.shape[1],
        k,
        niter=niter,
        seed=seed,
        max_points_per_centroid=1 << 30,
        min_points_per_centroid=1,
        init_method=faiss.ClusteringInitMethod_KMEANS_PLUS_PLUS,
    )
    km.train(x)
    _, assign = km.index.search(x, 1)
    return assign[:, 0].astype(np.int64)


def clustering_scores(embeddings: np.ndarray, labels: ArrayLike, *, seed: int = 0) -> dict[str, float]:
    """NMI and AMI between the labels and one k-means clustering with K = number of distinct
    labels: ``{"nmi": ..., "ami": ...}``.

    ``embeddings: float[N, D]``, ``labels: int[N]``. Uses :func:`kmeans_assign` (seeded) and
    scikit-learn's ``normalized_mutual_info_score`` and ``adjusted_mutual_info_score``
    (arithmetic normalization): AMI is NMI corrected for chance, 0 for a random clustering
    whatever the number of classes, where NMI grows with it.

    >>> x = np.array([[0.0, 0.0], [0.0, 0.1], [10.0, 10.0], [10.0, 10.1]], dtype=np.float32)
    >>> clustering_scores(x, [3, 3, 7, 7])
    {'nmi': 1.0, 'ami': 1.0}
    >>> clustering_scores(x[:1], [5])        # a lone point: one cluster, one class
    {'nmi': 1.0, 'ami': 1.0}
    """
    y = np.asarray(labels)
    k = int(np.unique(y).size)
    assign = kmeans_assign(embeddings, k, seed=seed)
    return {"nmi": float(normalized_mutual_info_score(y, assign)),
            "ami": float(adjusted_mutual_info_score(y, assign))}


def attribute_average_precision(scores: ArrayLike, targets: ArrayLike, known: ArrayLike | None = None) -> np.ndarray:
    """Average precision of each attribute of a multi-label classifier, float64 ``[A]``.

    For attribute ``a``, the rows whose label is known are ranked by ``scores[:, a]`` (a logit
    or a probability: only the order matters) and AP is computed against ``targets[:, a]``,
    ties counted as one threshold (scikit-learn's ``average_precision_score``). NaN where
    the rows hold no known positive of the attribute (AP is undefined there).

    Args:
        scores: ``[N, A]`` predicted scores; targets: ``[N, A]`` of 0/1; known: bool ``[N, A]``
            (every label known when None).

    >>> attribute_average_precision([[0.9, 0.1], [0.2, 0.8], [0.6, 0.3]],
    ...                             [[1, 0], [0, 0], [0, 0]]).tolist()
    [1.0, nan]
    """
    s = np.asarray(scores, dtype=np.float64)
    t = np.asarray(targets)
    k = np.ones(t.shape, dtype=bool) if known is None else np.asarray(known, dtype=bool)
    if s.ndim != 2 or s.shape != t.shape or s.shape != k.shape:
        raise ValueError(f"scores {s.shape}, targets {t.shape} and known {k.shape} must all be [N, A]")
    out = np.full(s.shape[1], np.nan)
    for a in range(s.shape[1]):
        rows = k[:, a]
        labels = t[rows, a] > 0
        if labels.any():
            out[a] = average_precision_score(labels, s[rows, a])
    return out
