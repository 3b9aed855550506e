"""An optional approximate candidate stage: each query's ``k`` candidates from a faiss index
over the gallery, re-ranked exactly.

Exact ranking scores every query-gallery pair: at 10^7 images (10^14 pairs) it no longer fits
a day. With ``evaluate.candidates`` set, a faiss index over the gallery (any
``faiss.index_factory`` string: ``IVF{nlist},Flat``, ``HNSW32``, ``Flat``) gives each query its
``k`` nearest items; those are scored again exactly with the protocol's own geometry
(:func:`~dml.evaluate.geometry.gathered_scores`, the formulas of
:func:`~dml.evaluate.geometry.block_scores`) and ranked as the exact top-ranking path ranks its
candidates (:func:`~dml.evaluate.top_ranking.candidate_ranks`), so every top-k metric (recall@K,
precision@K, R-precision, MAP@R, mAP@K, ASI) runs unchanged; a relevant item the index did not
return counts as ranked beyond the candidates. A query's own item is never a candidate; with
views (flip) every view is indexed and searched and an item scores as its nearest pair of
views; any relevance (classes, scales, a multi-label callback) flags the candidates.

What it refuses: figures over the whole ranking (mAP over every item, NDCG) need every relevant
item's position, so they raise a :class:`~dml.errors.ConfigError` naming
``evaluate.candidates``; they are never computed from a truncated ranking.

What it reports: how good the candidates were is measured, not assumed (:meth:`CandidateSearch.recall`):
on a seeded sample of queries the exact top ranks are computed over the whole gallery, and the
share of them among the candidates is ``recall@<d>`` (1.0 for an exhaustive index: ``Flat``, or
IVF with ``nprobe`` equal to its ``nlist``).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import faiss
import numpy as np
import torch

from dml.errors import ConfigError
from dml.evaluate.geometry import GEOMETRIES, block_scores, gathered_scores
from dml.evaluate.kernels import rows_per_block
from dml.evaluate.relevance import LabelRelevance, Relevance, relevance_in_block
from dml.evaluate.top_ranking import candidate_ranks

__all__ = ["CandidateSearch", "Candidates", "check_index", "fits", "merge_rankings"]

BLOCK = 4096  # queries searched and re-ranked at a time (fewer where a relevance needs a B x N matrix)


@dataclass(frozen=True)
class Candidates:
    """How candidates are fetched: params.yaml ``evaluate.candidates`` (errors name ``where``).

    ``index``: a ``faiss.index_factory`` string over the gallery's vectors (inner product, or
    L2 under a euclidean geometry); ``k``: candidates per query, re-ranked exactly; ``nprobe``:
    inverted lists an IVF index visits; ``ef_search``: an HNSW index's search breadth;
    ``recall_sample``: queries whose exact top ranks measure the candidates' recall;
    ``seed``: of that sample and of the index's k-means."""

    index: str = "IVF64,Flat"
    k: int = 100
    nprobe: int | None = None
    ef_search: int | None = None
    recall_sample: int = 1000
    seed: int = 0
    where: str = "evaluate.candidates"

    def describe(self) -> dict[str, Any]:
        """The ranking block of a metrics file, before its measured recall."""
        return {"kind": "approximate", "index": self.index, "nprobe": self.nprobe,
                **({"ef_search": self.ef_search} if self.ef_search is not None else {}), "candidates": self.k}


class CandidateSearch:
    """A faiss index over one prepared gallery (``[N, D]``, or ``[N, W, D]`` with views: every
    view a vector of its item), searched for candidates and re-ranked exactly."""

    def __init__(self, spec: Candidates, gallery: torch.Tensor, metric: str) -> None:
        self.spec, self.gallery, self.metric = spec, gallery, metric
        self.views = gallery.shape[1] if gallery.dim() == 3 else 1
        self.index = _build(spec, gallery, metric)

    def fetch(self, query_rows: torch.Tensor, own: torch.Tensor | None) -> torch.Tensor:
        """int64 ``[B, k]``: each query's candidate gallery positions, nearest first by the
        index, each item once (its nearest view pair), ``own`` (-1: none) left out, -1 padded."""
        k, d = self.spec.k, query_rows.shape[-1]
        n_views = query_rows.shape[1] if query_rows.dim() == 3 else 1
        depth = min(self.index.ntotal, (k + (own is not None)) * self.views)  # an item holds up to W slots
        flat = np.ascontiguousarray(query_rows.reshape(-1, d).detach().cpu().numpy(), dtype=np.float32)
        dist, ids = self.index.search(flat, depth)
        scores = torch.from_numpy(-dist if GEOMETRIES[self.metric].euclidean else dist)
        items = torch.from_numpy(ids)
        missing = items < 0
        items = torch.where(missing, -1, items // self.views).reshape(len(query_rows), n_views * depth)
        scores = scores.masked_fill(missing, -torch.inf).reshape(items.shape)
        if own is not None:
            scores = scores.masked_fill(items == own.cpu()[:, None], -torch.inf)
        order = torch.argsort(scores, dim=1, descending=True, stable=True)  # best first ...
        items, scores = items.gather(1, order), scores.gather(1, order)
        order = torch.argsort(items, dim=1, stable=True)  # ... so each item's first copy is its best
        items, scores = items.gather(1, order), scores.gather(1, order)
        repeated = torch.zeros_like(items, dtype=torch.bool)
        repeated[:, 1:] = items[:, 1:] == items[:, :-1]
        top = torch.topk(scores.masked_fill(repeated, -torch.inf), min(k, items.shape[1]), dim=1)
        return torch.where(torch.isfinite(top.values), items.gather(1, top.indices), -1).to(self.gallery.device)

    def rerank(self, query_rows: torch.Tensor, candidates: torch.Tensor, block_bytes: int) -> torch.Tensor:
        """float32 ``[B, k]``: each candidate's exact score (``-inf`` at padding), in chunks
        of queries whose gathered candidates fit ``block_bytes``."""
        per_query = 4 * candidates.shape[1] * self.views * self.gallery.shape[-1] * 2  # gathered + products
        step = max(1, block_bytes // max(1, per_query))
        out = torch.empty(candidates.shape, dtype=torch.float32, device=candidates.device)
        for start in range(0, len(candidates), step):
            part = candidates[start : start + step]
            scores = gathered_scores(query_rows[start : start + step], self.gallery[part.clamp(min=0)], self.metric)
            out[start : start + step] = scores.masked_fill(part < 0, -torch.inf)
        return out

    def blocks(self, query: torch.Tensor, relevances: Sequence[Relevance], *, exclude: torch.Tensor | None,
               block_bytes: int) -> Iterator[tuple[torch.Tensor, list, list[torch.Tensor], list[dict]]]:
        """Blocks ``(rows, (ranks, ties), n_relevant, ndcg)`` of
        :func:`dml.evaluate.engine.ranked_blocks`, one list entry per relevance, ranked from
        the candidates: ``ranks`` lists the relevant candidates, ``n_relevant`` counts all R."""
        n_query, n_gallery = query.shape[0], self.gallery.shape[0]
        matrix = not all(isinstance(rel, LabelRelevance) for rel in relevances)  # a B x N relevance per block
        step = min(BLOCK, rows_per_block(n_gallery, block_bytes)) if matrix else BLOCK
        for start in range(0, n_query, step):
            rows = torch.arange(start, min(start + step, n_query), device=query.device)
            own = exclude[rows] if exclude is not None else None
            found = self.fetch(query[rows], own)
            scores = self.rerank(query[rows], found, block_bytes)
            at, slot = torch.isfinite(scores).nonzero(as_tuple=True)  # row-major: rows nondecreasing
            cand_rows = at.cpu().numpy()
            cols, values = found[at, slot].cpu().numpy(), scores[at, slot].cpu().numpy()
            counted = [relevance_in_block(rel, rows, own, n_gallery) for rel in relevances]
            ranks = [candidate_ranks(cand_rows, values, flags(cand_rows, cols), len(rows), query.device)
                     for _, flags in counted]
            yield rows, ranks, [n for n, _ in counted], [{} for _ in counted]

    def recall(self, query: torch.Tensor, *, exclude: torch.Tensor | None, depths: Sequence[int],
               block_bytes: int) -> dict[str, float]:
        """``{"recall_queries": S, "recall@<d>": ...}``: on ``recall_sample`` seeded queries,
        the mean share of each query's exact top ``d`` found among its candidates.

        The exact top ranks come from scoring the sampled queries against the whole gallery
        (:func:`~dml.evaluate.geometry.block_scores`, in column chunks), and each candidate's
        score is read off the same products, so ties count right: a candidate tied with the
        ``d``-th best score is one of the top ``d``. A query with fewer than ``d`` other items
        counts against all of them."""
        n_query, n_gallery = query.shape[0], self.gallery.shape[0]
        n = min(self.spec.recall_sample, n_query)
        rng = np.random.default_rng(np.random.SeedSequence([int(self.spec.seed), 3]))
        rows = torch.from_numpy(np.sort(rng.choice(n_query, size=n, replace=False))).to(query.device)
        own = exclude[rows] if exclude is not None else None
        found = self.fetch(query[rows], own)
        width = min(max(depths), n_gallery)
        best = torch.full((n, width), -torch.inf, device=query.device)
        found_scores = torch.full(found.shape, -torch.inf, device=query.device)
        single = query.dim() == 2 and self.gallery.dim() == 2
        sq_norms = (self.gallery * self.gallery).sum(1) if GEOMETRIES[self.metric].euclidean and single else None
        chunk = max(width, block_bytes // (4 * max(1, n) * self.views))
        for c0 in range(0, n_gallery, chunk):
            c1 = min(c0 + chunk, n_gallery)
            scores = block_scores(query[rows], self.gallery[c0:c1], self.metric,
                                  sq_norms[c0:c1] if sq_norms is not None else None)
            if own is not None:
                hit = ((own >= c0) & (own < c1)).nonzero(as_tuple=True)[0]
                scores[hit, own[hit] - c0] = -torch.inf
            inside = (found >= c0) & (found < c1)
            picked = scores.gather(1, (found - c0).clamp(0, c1 - c0 - 1))
            found_scores = torch.where(inside, picked, found_scores)
            top = torch.topk(scores, min(width, c1 - c0), dim=1).values
            best = torch.topk(torch.cat([best, top], dim=1), width, dim=1).values
        n_valid = torch.full((n,), n_gallery, device=query.device) - (own >= 0).long() if own is not None \
            else torch.full((n,), n_gallery, device=query.device)
        out: dict[str, float] = {"recall_queries": n}
        for d in sorted(set(depths)):
            top_d = n_valid.clamp(max=d, min=1)
            bound = best.gather(1, (top_d - 1).clamp(max=width - 1)[:, None])
            hits = (found_scores >= bound).sum(1).minimum(top_d)
            out[f"recall@{d}"] = float((hits.double() / top_d.double()).mean())
        return out


def check_index(spec: Candidates, dim: int, metric: str = "cosine") -> None:
    """Make (not train) the index of ``spec`` over ``dim``-d vectors: a bad factory string,
    or a knob the index lacks (``nprobe`` of a graph), fails before any compute."""
    _make(spec, dim, metric)


def fits(spec: Candidates, n_vectors: int, dim: int, metric: str = "cosine") -> bool:
    """Whether ``n_vectors`` gallery vectors can train the index of ``spec`` (no more inverted
    lists than vectors): a small sample (the seen/unseen gap's) is ranked exactly instead."""
    ivf = _ivf(_make(spec, dim, metric))
    return ivf is None or ivf.nlist <= n_vectors


def _build(spec: Candidates, gallery: torch.Tensor, metric: str) -> faiss.Index:
    """The trained, filled faiss index of ``spec`` over every view of ``gallery``."""
    vectors = np.ascontiguousarray(gallery.reshape(-1, gallery.shape[-1]).detach().cpu().numpy(), dtype=np.float32)
    index = _make(spec, vectors.shape[1], metric)
    ivf = _ivf(index)
    if ivf is not None and ivf.nlist > len(vectors):
        raise ConfigError(f"{spec.where}.index: {spec.index!r} has {ivf.nlist} inverted lists, more than "
                          f"the {len(vectors)} gallery vectors")
    if not index.is_trained:
        index.train(vectors)  # faiss samples its own k-means points, seeded
    index.add(vectors)
    return index


def _make(spec: Candidates, dim: int, metric: str) -> faiss.Index:
    """The empty index of ``spec`` (inner product, or L2 under a euclidean geometry), seeded,
    with its search knobs set; a :class:`ConfigError` naming the key that does not fit."""
    kind = faiss.METRIC_L2 if GEOMETRIES[metric].euclidean else faiss.METRIC_INNER_PRODUCT
    try:
        index = faiss.index_factory(dim, spec.index, kind)
    except RuntimeError as err:
        problem = str(err).strip().splitlines()[-1] if str(err).strip() else type(err).__name__
        raise ConfigError(f"{spec.where}.index: faiss cannot build {spec.index!r} ({problem})") from None
    ivf = _ivf(index)
    if ivf is not None:
        ivf.cp.seed = int(spec.seed)
        ivf.cp.min_points_per_centroid = 1  # a small gallery: no warning per k-means
    if spec.nprobe is not None:
        if ivf is None:
            raise ConfigError(f"{spec.where}.nprobe: index {spec.index!r} has no inverted lists to probe")
        ivf.nprobe = int(spec.nprobe)
    if spec.ef_search is not None:
        hnsw = faiss.downcast_index(index)
        if not isinstance(hnsw, faiss.IndexHNSW):
            raise ConfigError(f"{spec.where}.ef_search: index {spec.index!r} is not an HNSW graph")
        hnsw.hnsw.efSearch = int(spec.ef_search)
    return index


def _ivf(index: faiss.Index) -> Any:
    """The inverted-file index inside ``index``, or None."""
    try:
        return faiss.extract_index_ivf(index)
    except RuntimeError:
        return None


def merge_rankings(parts: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """One ranking block from those of several rankings (a protocol's tasks): the same
    description, each ``recall@<d>`` the mean over all their sampled queries."""
    if not parts:
        return {}
    merged = dict(parts[0])
    total = sum(p["recall_queries"] for p in parts)
    for key in [k for k in merged if k.startswith("recall@")]:
        merged[key] = sum(p[key] * p["recall_queries"] for p in parts if key in p) / max(1, total)
    merged["recall_queries"] = total
    return merged
