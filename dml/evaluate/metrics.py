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

``ties``: int64 ``[Q, M]`` (optional)
    For each listed item, how many gallery items share its score (itself included; 1: no
    tie); its ``ranks`` entry is then the *last* position of that tie group. Without it no
    item is tied.

Storing only the relevant items' positions keeps a block small (``Q x R`` instead of
``Q x N``) while every metric below stays exact over the whole ranking.

Ties: a metric of a ranking with tied scores is its expectation over every order of the tied
items (METHODS.md, "Metrics"; the closed forms of McSherry and Najork, "Computing Information
Retrieval Performance Measures Efficiently in the Presence of Tied Scores", ECIR 2008). Within
a tie group of ``n`` items, ``r`` of them relevant, that starts after position ``c`` with ``a − 1``
relevant items above it, a relevant item sits at each of ``c + 1 .. c + n`` with probability
``1/n``, and at position ``c + j`` the expected number of relevant items at or above it is
``a + (j − 1)(r − 1)/(n − 1)``. Sums of ``1/(c + j)`` are differences of harmonic numbers,
so a group of thousands (Hamming distances tie constantly) costs one term. An untied item
(``n = 1``) takes the same arithmetic as without ties, to the last bit.
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

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import torch
from numpy.typing import ArrayLike
from sklearn.metrics import (adjusted_mutual_info_score, average_precision_score,
                             normalized_mutual_info_score)

__all__ = [
    "MAP_DENOMINATORS",
    "NDCG_GAINS",
    "attribute_average_precision",
    "average_precision",
    "average_precision_at_k",
    "average_set_intersection",
    "block_metrics",
    "ndcg_at_k",
    "clustering_scores",
    "kmeans_assign",
    "map_at_r",
    "precision_at_k",
    "r_precision",
    "ranks_from_relevance",
    "recall_at_k",
]

#: How NDCG turns a grade into a gain: ``rel`` (linear) or ``2^rel − 1`` (exponential: HAPPIER
#: and the multi-label hashing papers).
NDCG_GAINS = ("linear", "exponential")
#: What mAP@K divides by: the relevant items found in the top K (pytorch-metric-learning,
#: the hashing papers) or ``min(R, K)`` (TREC, open-metric-learning).
MAP_DENOMINATORS = ("found", "min_r_k")


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


class _Ranked(NamedTuple):
    """A block of rankings (module doc) with each listed item's tie group spelled out."""

    last: torch.Tensor  # int64 [Q, M]: the item's position, the last of its tie group; 0 pads
    n: torch.Tensor  # int64 [Q]: R
    found: torch.Tensor  # bool [Q, M]: a listed item, not padding
    m: torch.Tensor  # float64 [Q, M]: 1, 2, ...: relevant items at or above, ties aside
    tied: torch.Tensor  # int64 [Q, M]: items in the tie group (1: none; 1 on padding)
    above: torch.Tensor  # int64 [Q, M]: items scoring strictly higher (c)
    rel_above: torch.Tensor  # int64 [Q, M]: relevant items scoring strictly higher (a - 1)
    rel_tied: torch.Tensor  # int64 [Q, M]: relevant items in the tie group (r)
    any_tie: bool


def _prepare(ranks: ArrayLike | torch.Tensor, n_relevant: ArrayLike | torch.Tensor,
             ties: ArrayLike | torch.Tensor | None = None) -> _Ranked:
    r = _as_long(ranks)
    n = _as_long(n_relevant).to(r.device)
    if r.dim() != 2 or n.dim() != 1 or r.shape[0] != n.shape[0]:
        raise ValueError(
            f"ranks must be [Q, M] and n_relevant [Q]; got {tuple(r.shape)} and {tuple(n.shape)}"
        )
    found = r > 0
    # m: how many relevant items are at or above each listed one (ranks ascend along a row).
    m = torch.arange(1, r.shape[1] + 1, device=r.device, dtype=torch.float64).expand(r.shape)
    tied = torch.ones_like(r)
    if ties is not None:
        t = _as_long(ties).to(r.device)
        if t.shape != r.shape:
            raise ValueError(f"ties must have the shape of ranks {tuple(r.shape)}, got {tuple(t.shape)}")
        tied = torch.where(found, t.clamp(min=1), 1)
    any_tie = bool((tied > 1).any())
    above = (r - tied).clamp(min=0)
    if any_tie:
        key = torch.where(found, r, torch.iinfo(torch.int64).max)  # ascending along each row
        rel_above = torch.searchsorted(key, above, right=True)
        rel_tied = torch.searchsorted(key, r, right=True) - rel_above
    else:
        rel_above, rel_tied = m.long() - 1, torch.ones_like(r)
    return _Ranked(r, n, found, m, tied, above, rel_above, rel_tied, any_tie)


def _per_query(total: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
    """``total / n`` as float64, NaN where the query has no relevant item."""
    out = total.double() / n.clamp(min=1).double()
    return out.masked_fill(n == 0, float("nan"))


def _in_top(g: _Ranked, limit: torch.Tensor | float) -> torch.Tensor:
    """float64 ``[Q, M]``: the probability that each listed item is within the top ``limit``
    (1 or 0 for an untied item)."""
    share = ((limit - g.above.double()) / g.tied.double()).clamp(0.0, 1.0)
    return torch.where(g.found, share, 0.0)


def _precision_terms(g: _Ranked, limit: torch.Tensor | float) -> torch.Tensor:
    """float64 ``[Q, M]``: each listed item's expected ``P@i · [i <= limit]`` at its position i.

    Untied: ``m / i``. In a tie group (n items, r relevant, after c items, a − 1 relevant
    above): ``1/n Σ_{j<=J} (a + (j − 1) b) / (c + j)`` with ``b = (r − 1)/(n − 1)`` and
    ``J = min(n, limit − c)``, which is ``((a − b(c + 1)) (H_{c+J} − H_c) + b J) / n``."""
    exact = torch.where(g.found & (g.last <= limit), g.m / g.last.clamp(min=1).double(), 0.0)
    if not g.any_tie:
        return exact
    n, c = g.tied.double(), g.above.double()
    a = g.rel_above.double() + 1
    b = (g.rel_tied.double() - 1) / (n - 1).clamp(min=1)
    steps = (limit - c).clamp(min=0.0).minimum(n)
    harmonic = torch.special.digamma(c + steps + 1) - torch.special.digamma(c + 1)
    tied = ((a - b * (c + 1)) * harmonic + b * steps) / n
    return torch.where(g.found & (g.tied > 1), tied, exact)


def _log_choose(n: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """``log C(n, k)`` in float64 (``k`` within ``[0, n]``)."""
    n, k = n.double(), k.double()
    return torch.lgamma(n + 1) - torch.lgamma(k + 1) - torch.lgamma(n - k + 1)


def _hypergeometric(total: torch.Tensor, good: torch.Tensor, draws: torch.Tensor, hits: torch.Tensor) -> torch.Tensor:
    """float64: the probability of ``hits`` relevant items among ``draws`` positions of a tie
    group of ``total`` items, ``good`` of them relevant; 0 where impossible."""
    possible = (hits >= 0) & (hits <= good) & (draws - hits >= 0) & (draws - hits <= total - good)
    log_p = (_log_choose(good, hits.clamp(min=0).minimum(good))
             + _log_choose(total - good, (draws - hits).clamp(min=0).minimum(total - good))
             - _log_choose(total, draws))
    return torch.where(possible, log_p.exp(), 0.0)


def _none_drawn(total: torch.Tensor, good: torch.Tensor, draws: torch.Tensor) -> torch.Tensor:
    """float64: the chance that ``draws`` positions of a tie group of ``total`` items, ``good``
    of them relevant, hold none of them: ``prod_{i < draws} (total − good − i) / (total − i)``."""
    i = torch.arange(int(draws.max()) if draws.numel() else 0, device=draws.device, dtype=torch.float64)
    total, good = total.double()[:, None], good.double()[:, None]
    factors = torch.where(i < draws[:, None], (total - good - i).clamp(min=0) / (total - i).clamp(min=1), 1.0)
    return factors.prod(dim=1)


def recall_at_k(ranks: ArrayLike | torch.Tensor, n_relevant: ArrayLike | torch.Tensor, k: int,
                ties: ArrayLike | torch.Tensor | None = None) -> torch.Tensor:
    """Recall@K in the DML sense: 1.0 if a relevant item is among the top ``k``, else 0.0. ``[Q]``.

    Equals P@1 for ``k = 1``. A ``k`` larger than the gallery simply asks for any relevant
    item at all. With ties, the probability over the tied orders: where the first relevant
    item's tie group straddles K, one minus the hypergeometric chance that none of its ``r``
    relevant items falls in the group's ``K − c`` positions within the top K.

    >>> ranks, n = ranks_from_relevance([[False, True, True], [False, False, True], [False] * 3])
    >>> recall_at_k(ranks, n, 2).tolist()
    [1.0, 0.0, nan]
    >>> recall_at_k(ranks, n, 100).tolist()   # K larger than the gallery
    [1.0, 1.0, nan]
    >>> recall_at_k([[4]], [1], 1, ties=[[4]]).tolist()   # one relevant among 4 tied items
    [0.25]
    """
    return _recall_at_k(_prepare(ranks, n_relevant, ties), k)


def _recall_at_k(g: _Ranked, k: int) -> torch.Tensor:
    """:func:`recall_at_k` of a described block."""
    hit = (g.found & (g.last <= k)).any(dim=1).double()
    if g.any_tie and g.last.shape[1]:
        first_tied, total, good = g.found[:, 0] & (g.tied[:, 0] > 1), g.tied[:, 0], g.rel_tied[:, 0]
        draws = (k - g.above[:, 0]).clamp(min=0).minimum(total)
        hit = torch.where(first_tied, 1.0 - _none_drawn(total, good, draws), hit)
    return _per_query(hit, g.n.clamp(max=1))


def precision_at_k(ranks: ArrayLike | torch.Tensor, n_relevant: ArrayLike | torch.Tensor, k: int,
                   ties: ArrayLike | torch.Tensor | None = None) -> torch.Tensor:
    """P@K: the fraction of the top ``k`` positions that hold a relevant item. ``[Q]``.

    The denominator is always ``k``, also when the gallery has fewer than ``k`` items.

    >>> ranks, n = ranks_from_relevance([[True, False, True, True]])
    >>> precision_at_k(ranks, n, 1).tolist(), precision_at_k(ranks, n, 4).tolist()
    ([1.0], [0.75])
    """
    return _precision_at_k(_prepare(ranks, n_relevant, ties), k)


def _precision_at_k(g: _Ranked, k: int) -> torch.Tensor:
    """:func:`precision_at_k` of a described block."""
    hits = _in_top(g, float(k)).sum(dim=1) / k
    return hits.masked_fill(g.n == 0, float("nan"))


def r_precision(ranks: ArrayLike | torch.Tensor, n_relevant: ArrayLike | torch.Tensor,
                ties: ArrayLike | torch.Tensor | None = None) -> torch.Tensor:
    """R-Precision: P@R with R the query's number of relevant items. ``[Q]``.

    >>> ranks, n = ranks_from_relevance([[True, False, True, False]])   # R = 2, 1 in top 2
    >>> r_precision(ranks, n).tolist()
    [0.5]
    """
    return _r_precision(_prepare(ranks, n_relevant, ties))


def _r_precision(g: _Ranked) -> torch.Tensor:
    """:func:`r_precision` of a described block."""
    return _per_query(_in_top(g, g.n[:, None].double()).sum(dim=1), g.n)


def map_at_r(ranks: ArrayLike | torch.Tensor, n_relevant: ArrayLike | torch.Tensor,
             ties: ArrayLike | torch.Tensor | None = None) -> torch.Tensor:
    """MAP@R (Musgrave et al. 2020): ``1/R * sum_{i <= R} P@i * rel(i)``. ``[Q]``.

    >>> ranks, n = ranks_from_relevance([[True, True, False, True]])    # R = 3
    >>> map_at_r(ranks, n).tolist()                                      # (1/1 + 2/2 + 0) / 3
    [0.6666666666666666]
    """
    return _map_at_r(_prepare(ranks, n_relevant, ties))


def _map_at_r(g: _Ranked) -> torch.Tensor:
    """:func:`map_at_r` of a described block."""
    return _per_query(_precision_terms(g, g.n[:, None].double()).sum(dim=1), g.n)


def average_precision(ranks: ArrayLike | torch.Tensor, n_relevant: ArrayLike | torch.Tensor,
                      ties: ArrayLike | torch.Tensor | None = None) -> torch.Tensor:
    """Average precision over the whole ranking: ``1/R * sum_i P@i * rel(i)``. ``[Q]``.

    Relevant items missing from ``ranks`` (a truncated ranking, ``n_relevant`` larger than
    the row's count) contribute 0, so on a top-K list this is AP@K normalized by R.

    >>> ranks, n = ranks_from_relevance([[True, False, True]])           # (1/1 + 2/3) / 2
    >>> round(average_precision(ranks, n).item(), 6)
    0.833333
    >>> average_precision([[1, 0]], [2]).tolist()     # second relevant item never retrieved
    [0.5]
    >>> average_precision([[3]], [1], ties=[[3]]).tolist()   # (1/1 + 1/2 + 1/3) / 3
    [0.611111111111111]
    """
    return _average_precision(_prepare(ranks, n_relevant, ties))


def _average_precision(g: _Ranked) -> torch.Tensor:
    """:func:`average_precision` of a described block."""
    return _per_query(_precision_terms(g, torch.inf).sum(dim=1), g.n)


def average_set_intersection(ranks: ArrayLike | torch.Tensor, n_relevant: ArrayLike | torch.Tensor,
                             ties: ArrayLike | torch.Tensor | None = None) -> torch.Tensor:
    """ASI (Average Set Intersection, as DyML and HAPPIER report it) with binary relevance:
    ``1/R * sum_{n=1..R} |top_n(ranking) ∩ top_n(ideal)| / n``, which is ``1/R * sum_{n<=R} P@n``.
    ``[Q]``.

    Computed per relevant item instead of per depth: an item at rank ``r <= R`` counts in
    ``P@n`` for every ``n`` from ``r`` to ``R``, adding ``H_R - H_{r-1}`` (harmonic numbers),
    so R may be in the thousands at no cost. A tied item is at each of its group's positions
    ``c + 1 .. c + n`` with probability ``1/n``: ``1/n Σ_{p} (H_R − H_{p−1})``, the sum of
    harmonic numbers in closed form (``Σ_{q<=N} H_q = (N + 1) H_N − N``).

    >>> ranks, n = ranks_from_relevance([[True, False, True, False]])   # R = 2: (P@1 + P@2) / 2
    >>> average_set_intersection(ranks, n).tolist()
    [0.75]
    """
    return _average_set_intersection(_prepare(ranks, n_relevant, ties))


def _average_set_intersection(g: _Ranked) -> torch.Tensor:
    """:func:`average_set_intersection` of a described block."""
    top = int(g.n.max()) if g.n.numel() else 0
    harmonic = torch.zeros(top + 1, dtype=torch.float64, device=g.last.device)
    harmonic[1:] = torch.cumsum(1.0 / torch.arange(1, top + 1, dtype=torch.float64, device=g.last.device), 0)
    inside = g.found & (g.last <= g.n[:, None])
    terms = harmonic[g.n][:, None] - harmonic[(g.last - 1).clamp(min=0, max=top)]
    terms = torch.where(inside, terms, 0.0)
    if g.any_tie:
        def sum_to(last: torch.Tensor) -> torch.Tensor:  # Σ_{q=0}^{last} H_q, 0 for last < 0
            at = last.clamp(min=0, max=top)
            return torch.where(last >= 0, (at + 1).double() * harmonic[at] - at.double(), 0.0)

        steps = (g.n[:, None] - g.above).clamp(min=0).minimum(g.tied)
        tied = (steps.double() * harmonic[g.n][:, None]
                - (sum_to(g.above + steps - 1) - sum_to(g.above - 1))) / g.tied.double()
        terms = torch.where(g.found & (g.tied > 1), tied, terms)
    return _per_query(terms.sum(dim=1), g.n)


def average_precision_at_k(
    ranks: ArrayLike | torch.Tensor, n_relevant: ArrayLike | torch.Tensor, k: int,
    ties: ArrayLike | torch.Tensor | None = None, denominator: str = "found",
) -> torch.Tensor:
    """AP@K: ``sum_{i<=k} P@i rel(i)`` divided by ``denominator`` (:data:`MAP_DENOMINATORS`),
    ``[Q]``:

    - ``found``: the relevant items within the top ``k`` (0 when none is there), as the
      multi-label retrieval literature and pytorch-metric-learning report mAP@K. With ties
      the denominator is random too: the expectation is taken over the number of relevant
      items the tie group straddling K puts in the top K (hypergeometric);
    - ``min_r_k``: ``min(R, k)`` (TREC, open-metric-learning).

    >>> ranks, n = ranks_from_relevance([[True, False, True, True], [False, False, True, True]])
    >>> average_precision_at_k(ranks, n, 3).tolist()     # row 0: (1/1 + 2/3) / 2; row 1: none
    [0.8333333333333333, 0.3333333333333333]
    >>> average_precision_at_k(ranks, n, 3, denominator="min_r_k").tolist()   # / min(R, 3): 3 and 2
    [0.5555555555555555, 0.16666666666666666]
    >>> average_precision_at_k(*ranks_from_relevance([[False, True]]), 1).tolist()
    [0.0]
    """
    return _average_precision_at_k(_prepare(ranks, n_relevant, ties), k, denominator)


def _average_precision_at_k(g: _Ranked, k: int, denominator: str = "found") -> torch.Tensor:
    """:func:`average_precision_at_k` of a described block."""
    if denominator not in MAP_DENOMINATORS:
        raise ValueError(f"denominator must be one of {MAP_DENOMINATORS}, got {denominator!r}")
    terms = _precision_terms(g, float(k))
    if denominator == "min_r_k":
        return _per_query(terms.sum(dim=1), g.n.clamp(max=k)).masked_fill(g.n == 0, float("nan"))
    inside = g.found & (g.last <= k)
    out = torch.where(inside, terms, 0.0).sum(dim=1) / inside.sum(dim=1).clamp(min=1).double()
    straddling = g.found & (g.above < k) & (g.last > k)
    rows = straddling.any(dim=1).nonzero(as_tuple=True)[0]
    if len(rows):
        out[rows] = _found_denominator_straddling(g, rows, straddling[rows], terms[rows], inside[rows], k)
    return out.masked_fill(g.n == 0, float("nan"))


def _found_denominator_straddling(g: _Ranked, rows: torch.Tensor, straddling: torch.Tensor,
                                  terms: torch.Tensor, inside: torch.Tensor, k: int) -> torch.Tensor:
    """Expected AP@K over the found items for the ``rows`` whose tie group straddles K: given
    that ``x`` of its r relevant items fall in its ``s = K − c`` positions within the top K
    (each at any of them alike), the group adds ``x/s Σ_{j<=s} (a + (j − 1)(x − 1)/(s − 1)) /
    (c + j)`` to the groups above's sum, and the denominator is their count plus x."""
    at = straddling.long().argmax(dim=1, keepdim=True)  # the first item of the straddling group
    pick = lambda t: t[rows].gather(1, at).squeeze(1).double()  # noqa: E731
    c, n, r, a = pick(g.above), pick(g.tied), pick(g.rel_tied), pick(g.rel_above) + 1
    s = k - c
    above_sum = torch.where(inside, terms, 0.0).sum(dim=1)
    above_count = inside.sum(dim=1).double()
    harmonic = torch.special.digamma(c + s + 1) - torch.special.digamma(c + 1)
    out = torch.zeros(len(rows), dtype=torch.float64, device=terms.device)
    for x in range(int(torch.minimum(r, s).max()) + 1):
        hits = torch.full_like(c, float(x))
        b = (hits - 1) / (s - 1).clamp(min=1)
        group = torch.where(hits > 0, hits / s * ((a - b * (c + 1)) * harmonic + b * s), 0.0)
        count = above_count + hits
        value = torch.where(count > 0, (above_sum + group) / count.clamp(min=1), 0.0)
        out += _hypergeometric(n, r, s, hits) * value
    return out


def block_metrics(ranks: ArrayLike | torch.Tensor, n_relevant: ArrayLike | torch.Tensor,
                  ties: ArrayLike | torch.Tensor | None = None, *, ks: Sequence[int] = (1, 2, 4, 8),
                  precision_ks: Sequence[int] = (1,), full_map: bool = True, map_ks: Sequence[int] = (),
                  map_denominator: str = "found", asi: bool = False) -> dict[str, torch.Tensor]:
    """Every rank-based metric of one block, by name (``recall@K``, ``precision@K``,
    ``r_precision``, ``map@r``, ``map`` with ``full_map``, ``map@K``, ``asi`` when asked), the
    block described once for all of them.

    >>> ranks, n = ranks_from_relevance([[True, False, True]])
    >>> {k: v.tolist() for k, v in block_metrics(ranks, n, ks=(1,), map_ks=(2,)).items()}
    {'recall@1': [1.0], 'precision@1': [1.0], 'r_precision': [0.5], 'map@r': [0.5], 'map': [0.8333333333333333], 'map@2': [1.0]}
    """
    g = _prepare(ranks, n_relevant, ties)
    out = {f"recall@{k}": _recall_at_k(g, k) for k in ks}
    out |= {f"precision@{k}": _precision_at_k(g, k) for k in precision_ks}
    out |= {"r_precision": _r_precision(g), "map@r": _map_at_r(g)}
    if full_map:
        out["map"] = _average_precision(g)
    out |= {f"map@{k}": _average_precision_at_k(g, k, map_denominator) for k in map_ks}
    if asi:
        out["asi"] = _average_set_intersection(g)
    return out


def ndcg_at_k(scores: torch.Tensor, grades: torch.Tensor, k: int, gain: str = "linear") -> torch.Tensor:
    """NDCG@K with graded relevance. float64 ``[Q]``, NaN where no item is relevant (every
    grade 0).

    ``scores: float[Q, N]`` (higher first; ``-inf`` for excluded items), ``grades: float[Q, N]``
    (0 = not relevant). ``gain`` (:data:`NDCG_GAINS`): ``linear`` takes the grade itself,
    ``exponential`` ``2^grade − 1``. ``DCG@K = sum_{i<=K} gain_(i) / log2(i + 1)`` over the
    ranking, divided by the same sum over the gains sorted decreasingly. Tied scores: each
    position of a tie group takes the mean gain of the group, the expectation over its orders
    (McSherry and Najork).

    >>> s = torch.tensor([[0.9, 0.8, 0.1]]); g = torch.tensor([[0.5, 1.0, 0.0]], dtype=torch.float64)
    >>> round(ndcg_at_k(s, g, 2).item(), 6)          # (0.5 + 1/log2(3)) / (1 + 0.5/log2(3))
    0.859719
    >>> round(ndcg_at_k(s, g, 2, gain="exponential").item(), 6)   # gains 2^0.5 - 1 and 1
    0.828598
    >>> ndcg_at_k(torch.tensor([[0.5, 0.5]]), torch.tensor([[1.0, 0.0]], dtype=torch.float64), 1).tolist()
    [0.5]
    """
    if gain not in NDCG_GAINS:
        raise ValueError(f"gain must be one of {NDCG_GAINS}, got {gain!r}")
    gains = grades.to(torch.float64)
    if gain == "exponential":
        gains = torch.exp2(gains) - 1.0
    k = min(int(k), gains.shape[1])
    order = torch.argsort(scores, dim=1, descending=True, stable=True)
    ranked = gains.gather(1, order)
    top = ranked[:, :k]
    if k:
        ascending = scores.gather(1, order).neg()  # increasing: where each top score's tie group starts and ends
        start = torch.searchsorted(ascending, ascending[:, :k].contiguous(), side="left")
        stop = torch.searchsorted(ascending, ascending[:, :k].contiguous(), side="right")
        if bool((stop - start > 1).any()):
            total = torch.nn.functional.pad(torch.cumsum(ranked, dim=1), (1, 0))
            mean = (total.gather(1, stop) - total.gather(1, start)) / (stop - start).double()
            top = torch.where(stop - start > 1, mean, top)
    discount = 1.0 / torch.log2(torch.arange(2, k + 2, device=gains.device, dtype=torch.float64))
    dcg = (top * discount).sum(dim=1)
    idcg = (torch.topk(gains, k, dim=1).values * discount).sum(dim=1)
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
