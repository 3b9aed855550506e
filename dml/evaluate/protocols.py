"""Evaluation protocols by name, and the query/gallery role helpers they are built from.

A protocol decides, for a set of rows (the test split, or validation folds), which rows are
queries, which form the gallery, what makes a gallery item relevant to a query, and how to
rank (cosine or euclidean). The evaluate stage, the quantized indexes (their gallery is the
protocol's gallery) and Tune's validation all call the same protocol, so tuning optimises
what the test reports. Registered protocols (``PROTOCOLS``; params.yaml
``datasets.<name>.protocol`` or ``experiments.<name>.protocol``):

- ``self_retrieval``: every row is a query ranked against all the others (CUB, Cars196, SOP);
- ``query_gallery``: query rows against gallery rows, by the ``role`` column (In-Shop, DyML);
- ``cross_domain``: queries of one domain against a gallery of another (sketch -> photo);
- ``per_scale``: each semantic scale's labelled queries against its labelled gallery (by
  role; self-retrieval where every row is "both"), mAP, Recall@K and ASI, and their average;
- ``multilabel``: relevance "shares at least one object class", NDCG graded by the
  multiset Jaccard similarity of the object counts.

Each writes its metrics under its own keys (``recall@1``; ``middle/map``, ``avg/map``; ...).

Roles (query / gallery / both): an item with role "both" is in the query set and in the
gallery set.

An item with role "both" is in the query set and in the gallery set. Two cases for the caller:

- every item is "both" (CUB, Cars196, SOP: each test image is ranked against all the others):
  the query set equals the gallery set, so call ``retrieval_metrics(x, y)`` with no gallery,
  which leaves each query out of its own ranking;
- separate sets (In-Shop, DyML, Sketchy): ``retrieval_metrics(x[q], y[q], x[g], y[g])``; where
  some items are "both", pass ``query_gallery_index=query_gallery_index(q, g)`` so that such a
  query does not find itself in the gallery.

:func:`split_query_gallery` gives the masks, and ``same_set`` tells which case applies.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any

import numpy as np
import torch
from numpy.typing import ArrayLike

from dml.data.manifest import DOMAINS
from dml.errors import ConfigError, DataError
from dml.evaluate.candidates import Candidates, merge_rankings
from dml.evaluate.catalog import metric_key
from dml.evaluate.engine import retrieval_metrics
from dml.evaluate.geometry import Geometry, block_scores, geometry, prepare_embeddings, protocol_geometries
from dml.evaluate.metrics import MAP_DENOMINATORS, NDCG_GAINS
from dml.registry import Knob, Registry

__all__ = [
    "PROTOCOLS",
    "ROLES",
    "EvalRows",
    "Protocol",
    "build_protocol",
    "query_gallery_index",
    "same_set",
    "split_query_gallery",
]

ROLES = ("query", "gallery", "both")


def split_query_gallery(roles: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Boolean masks ``(query_mask, gallery_mask)``, each ``[N]``, from ``roles: str[N]``.

    Raises DataError naming the first row whose role is not one of ``ROLES``.

    >>> q, g = split_query_gallery(["query", "gallery", "both"])
    >>> q.tolist(), g.tolist()
    ([True, False, True], [False, True, True])
    """
    r = np.asarray(roles, dtype=object)
    if r.ndim != 1:
        raise DataError(f"roles must be 1-D, got shape {r.shape}")
    query = (r == "query") | (r == "both")
    gallery = (r == "gallery") | (r == "both")
    unknown = ~(query | gallery)
    if unknown.any():
        row = int(np.flatnonzero(unknown)[0])
        raise DataError(f"unknown role {r[row]!r} at row {row}; expected one of {ROLES}")
    return query.astype(bool), gallery.astype(bool)


def same_set(query_mask: ArrayLike, gallery_mask: ArrayLike) -> bool:
    """True when the query set equals the gallery set: evaluate with ``gallery=None``.

    >>> same_set(*split_query_gallery(["both", "both"])), same_set(*split_query_gallery(["query", "both"]))
    (True, False)
    """
    return bool(np.array_equal(np.asarray(query_mask, bool), np.asarray(gallery_mask, bool)))


def query_gallery_index(query_mask: ArrayLike, gallery_mask: ArrayLike) -> np.ndarray:
    """For each query item, its row in the gallery subset (``x[gallery_mask]``), or -1. int64 ``[Q]``.

    >>> query_gallery_index(*split_query_gallery(["query", "gallery", "both", "both"])).tolist()
    [-1, 1, 2]
    """
    q = np.asarray(query_mask, bool)
    g = np.asarray(gallery_mask, bool)
    gallery_row = np.cumsum(g) - 1  # row of each item within the gallery subset
    return np.where(g, gallery_row, -1)[q].astype(np.int64)


# ----------------------------------------------------------------------------- rows


@dataclass(frozen=True)
class EvalRows:
    """The annotations of the rows being evaluated, aligned with their embeddings.

    ``labels`` maps each scale present (finest first) to int64 ``[N]``; ``counts`` is float
    ``[N, C]`` for multi-object rows; ``attributes`` float ``[N, A]`` of 0/1 with
    ``attribute_known`` bool ``[N, A]`` where the rows have attributes. ``split``, ``role``,
    ``domain`` are str ``[N]``; ``fold`` int64 ``[N]``, each training row's validation fold
    (-1 on test rows; None when unknown).
    """

    ids: np.ndarray
    split: np.ndarray
    role: np.ndarray
    domain: np.ndarray
    labels: dict[str, np.ndarray] = field(default_factory=dict)
    counts: np.ndarray | None = None
    attributes: np.ndarray | None = None
    attribute_known: np.ndarray | None = None
    fold: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def fine(self) -> np.ndarray:
        """The finest labels; a clear error for rows without class labels, or with rows
        unlabelled at the finest scale."""
        if not self.labels:
            raise DataError("this protocol needs class labels, but the rows have none "
                            "(multi-label scenes: use the 'multilabel' protocol)")
        scale, labels = next(iter(self.labels.items()))
        unknown = np.flatnonzero(labels < 0)
        if len(unknown):
            raise DataError(f"{len(unknown)} row(s) have no {scale!r} label, e.g. image_id "
                            f"{self.ids[unknown[0]]!r}: evaluate them with the 'per_scale' "
                            "protocol, which ranks each scale's labelled rows")
        return labels

    def subset(self, mask: np.ndarray) -> EvalRows:
        """The rows where ``mask`` is True."""
        def rows(values: np.ndarray | None) -> np.ndarray | None:
            return None if values is None else values[mask]

        return EvalRows(
            ids=self.ids[mask], split=self.split[mask], role=self.role[mask],
            domain=self.domain[mask], labels={k: v[mask] for k, v in self.labels.items()},
            counts=rows(self.counts), attributes=rows(self.attributes),
            attribute_known=rows(self.attribute_known), fold=rows(self.fold),
        )

    def with_roles(self, role: str) -> EvalRows:
        """The same rows, every one with ``role`` ("both": each ranked against the others)."""
        return dataclasses.replace(self, role=np.full(len(self), role, dtype=object))

    @classmethod
    def from_rows(cls, rows: Any) -> EvalRows:
        """From a manifest's rows selected with a splits file (:class:`~dml.data.rows.ManifestRows`)."""
        table = rows.table
        labels = {}
        if rows.labels is not None:
            labels[rows.info.fine] = rows.labels
        labels.update(rows.scale_labels)
        return cls(
            ids=np.asarray(rows.image_ids, dtype=object),
            split=np.asarray(table.column("split").to_pylist(), dtype=object),
            role=np.asarray(table.column("role").to_pylist(), dtype=object),
            domain=np.asarray(rows.domains, dtype=object),
            labels=labels,
            counts=rows.counts,
            attributes=rows.attributes,
            attribute_known=rows.attribute_mask,
            fold=(table.column("fold").to_numpy(zero_copy_only=False).astype(np.int64)
                  if "fold" in table.column_names else None),
        )


# ----------------------------------------------------------------------------- protocols


@dataclass
class Task:
    """One ranking of the protocol's queries against its gallery: metrics under ``prefix``.

    Relevance comes from ``query_labels``/``gallery_labels`` (same class) or from the
    ``relevance`` callback over query positions (``rows -> bool[B, N]``); ``grades`` gives
    graded relevance for NDCG.
    """

    prefix: str = ""
    query_labels: np.ndarray | None = None
    gallery_labels: np.ndarray | None = None
    relevance: Callable[[torch.Tensor], torch.Tensor] | None = None
    grades: Callable[[torch.Tensor], torch.Tensor] | None = None
    nmi: bool = True
    query_select: np.ndarray | None = None
    gallery_select: np.ndarray | None = None

    def restrict(self, queries: np.ndarray, gallery: np.ndarray,
                 own: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The task's own queries and gallery, ``query_select`` and ``gallery_select`` (positions
        among the protocol's; None: all of them), and each query's own row in that gallery."""
        q_sel = np.arange(len(queries)) if self.query_select is None else self.query_select
        g_sel = np.arange(len(gallery)) if self.gallery_select is None else self.gallery_select
        position = np.full(len(gallery) + 1, -1, dtype=np.int64)  # index -1 (no own row) -> -1
        position[g_sel] = np.arange(len(g_sel))
        return q_sel, g_sel, position[own[q_sel]]

    def relevant(self, rows: np.ndarray) -> np.ndarray:
        """bool ``[len(rows), N]`` for query positions ``rows``."""
        if self.relevance is not None:
            return self.relevance(torch.as_tensor(rows)).cpu().numpy()
        assert self.query_labels is not None and self.gallery_labels is not None
        return self.query_labels[rows][:, None] == self.gallery_labels[None, :]


class Protocol:
    """Base: queries and gallery from masks, one or more ranking tasks, metrics per task.

    Subclasses choose ``query_mask``/``gallery_mask`` (default: every row is both) and
    ``tasks``; ``metric`` is how it ranks (``cosine`` or ``euclidean``); ``asi`` adds the
    average set intersection to the metrics; ``flip`` ranks each pair by its nearest views
    (image or mirror, on both sides).
    """

    metric: str = "cosine"
    map_ks: tuple[int, ...] = ()
    precision_ks: tuple[int, ...] = ()
    ndcg_ks: tuple[int, ...] = ()
    ndcg_gain: str = "linear"
    map_denominator: str = "found"
    asi: bool = False
    flip: bool = False

    @property
    def geometry(self) -> Geometry:
        """How this protocol compares embeddings (:mod:`dml.evaluate.geometry`)."""
        return geometry(self.metric, where="protocol.metric", protocol=True)

    @property
    def headline(self) -> tuple[str, ...]:
        """The keys of the figures that head this protocol's results (beside each quantized
        index, in the comparison chart, in the summary file `dvc exp show` lists)."""
        return ("recall@1", "map@r")

    def conventions(self) -> dict[str, str]:
        """The metric conventions this protocol's figures follow, for captions and metric
        files: ``ndcg_gain`` where it reports NDCG, ``map_denominator`` where it reports mAP@K."""
        return ({"ndcg_gain": self.ndcg_gain} if self.ndcg_ks else {}) | (
            {"map_denominator": self.map_denominator} if self.map_ks else {})

    @property
    def views(self) -> tuple[str, ...]:
        """The other views of each image its ranking uses (``"flip"``: the mirrored image;
        the embed stage stores them, ``evaluate`` takes them stacked as ``[N, V, D]``)."""
        return ("flip",) if self.flip else ()

    def query_mask(self, rows: EvalRows) -> np.ndarray:
        return np.ones(len(rows), dtype=bool)

    def gallery_mask(self, rows: EvalRows) -> np.ndarray:
        return np.ones(len(rows), dtype=bool)

    def tasks(self, rows: EvalRows, queries: np.ndarray, gallery: np.ndarray) -> list[Task]:
        """Ranking tasks over query positions ``queries`` and gallery positions ``gallery``."""
        labels = rows.fine
        return [Task(query_labels=labels[queries], gallery_labels=labels[gallery])]

    def split(self, rows: EvalRows) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Row positions of the queries and of the gallery, and each query's own gallery row
        (or -1), which its ranking leaves out."""
        q_mask, g_mask = self.query_mask(rows), self.gallery_mask(rows)
        name = type(self).__name__
        if not q_mask.any():
            raise DataError(f"protocol {name}: no query among the {len(rows)} rows evaluated")
        if not g_mask.any():
            raise DataError(f"protocol {name}: no gallery item among the {len(rows)} rows evaluated")
        return np.flatnonzero(q_mask), np.flatnonzero(g_mask), query_gallery_index(q_mask, g_mask)

    def check_candidates(self, candidates: Candidates) -> None:
        """Refuse an approximate candidate ranking for a protocol whose own figures (its
        headline, NDCG) need every query's full ranking: a :class:`ConfigError` naming
        ``evaluate.candidates``. Other protocols lose only ``map`` (over the whole ranking)."""
        whole = [key for key in (*self.headline, *(f"ndcg@{k}" for k in self.ndcg_ks))
                 if metric_key(key).needs & {"full ranking", "scores"}]
        if whole:
            raise ConfigError(f"{candidates.where}: protocol {type(self).__name__} reports "
                              f"{', '.join(metric_key(k).title for k in whole)} over the whole ranking, which "
                              f"{candidates.k} candidates per query cannot give; set {candidates.where}: null (exact)")

    def evaluate(self, rows: EvalRows, vectors: np.ndarray, *, ks: Sequence[int] = (1, 2, 4, 8),
                 gallery: np.ndarray | None = None, metric: str | None = None, nmi: bool = True,
                 seed: int = 0, per_query: dict[str, np.ndarray] | None = None,
                 candidates: Candidates | None = None, ranking: dict[str, Any] | None = None) -> dict[str, float]:
        """Metrics of ``vectors`` (aligned with ``rows``) under this protocol.

        ``vectors`` may hold several views of each row, ``[N, V, D]`` (``views``: the plain
        view first), a pair then scoring as its nearest views. ``gallery`` replaces the
        gallery rows' vectors (a gallery decoded from quantization codes, ranked with
        ``metric``, e.g. ``"dot"``); NMI is computed on the float queries.
        ``per_query`` is filled with each task's per-query values, under the same keys.

        ``candidates``: rank each query among its candidates from a faiss index, re-ranked
        exactly (:mod:`dml.evaluate.candidates`): every figure but ``map`` (the average
        precision over the whole ranking, left out and listed under ``omitted``); refused
        where the protocol's own figures need the full ranking (:meth:`check_candidates`).
        ``ranking`` is filled with how the ranking was made (``kind``; for candidates the
        index, their count and the measured ``recall@<d>`` over all tasks).
        """
        if candidates is not None:
            self.check_candidates(candidates)
        parts: list[dict[str, Any]] = []
        if len(vectors) != len(rows):
            raise DataError(f"{len(vectors)} vectors for {len(rows)} rows")
        queries, gallery_rows, own = self.split(rows)
        gallery_vectors = vectors[gallery_rows] if gallery is None else gallery
        if len(gallery_vectors) != len(gallery_rows):
            raise DataError(f"the gallery holds {len(gallery_vectors)} vectors, the protocol's "
                            f"gallery has {len(gallery_rows)} rows")
        out: dict[str, float] = {}
        for group in _shared_rankings(self.tasks(rows, queries, gallery_rows)):
            task = group[0]
            values: dict[str, np.ndarray] = {}
            q_sel, g_sel, task_own = task.restrict(queries, gallery_rows, own)
            if len(group) > 1:  # one ranking, each task's labels: metrics under their prefixes
                query_labels = {t.prefix.rstrip("/"): t.query_labels for t in group}
                gallery_labels = {t.prefix.rstrip("/"): t.gallery_labels for t in group}
                prefix = ""
            else:
                query_labels, prefix = task.query_labels, task.prefix
                gallery_labels = None if task.relevance is not None else task.gallery_labels
            part: dict[str, Any] = {}
            parts.append(part)
            metrics = retrieval_metrics(
                vectors[queries[q_sel]], query_labels, gallery_vectors[g_sel], gallery_labels,
                relevance=task.relevance, grades=task.grades, ks=ks, map_ks=self.map_ks,
                precision_ks=self.precision_ks, ndcg_ks=self.ndcg_ks if task.grades else (),
                ndcg_gain=self.ndcg_gain, map_denominator=self.map_denominator, asi=self.asi, metric=metric or self.metric,
                nmi=nmi and task.nmi and task.query_labels is not None,
                seed=seed, query_gallery_index=task_own, per_query=values,
                full_map=candidates is None, candidates=candidates, ranking=part,
            )
            out.update({prefix + key: value for key, value in metrics.items()})
            if per_query is not None:
                per_query.update({prefix + key: v for key, v in values.items()})
        if per_query is not None:
            per_query.update(self.summarize_per_query(per_query))
        if ranking is not None:
            ranking.update(merge_rankings(parts) if candidates is not None else {"kind": "exact"})
            if candidates is not None:
                ranking["omitted"] = ["map"]
        return self.summarize(out)

    def summarize(self, metrics: dict[str, float]) -> dict[str, float]:
        """Hook for protocol-level summaries (averages over tasks)."""
        return metrics

    def summarize_per_query(self, per_query: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Hook: per-query values of those summaries (their bootstrap intervals need them)."""
        return {}

    def top_results(self, rows: EvalRows, vectors: np.ndarray, n_queries: int,
                    top_k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """For a retrieval grid: ``n_queries`` query rows (one per class where the rows have
        labels), their ``top_k`` gallery rows, and whether each result is relevant."""
        queries, gallery_rows, own = self.split(rows)
        task = self.tasks(rows, queries, gallery_rows)[0]
        q_sel, g_sel, own = task.restrict(queries, gallery_rows, own)
        queries, gallery_rows = queries[q_sel], gallery_rows[g_sel]
        if task.query_labels is not None:
            _, first = np.unique(task.query_labels, return_index=True)
            chosen = np.sort(first)[:n_queries]
        else:
            chosen = np.arange(min(n_queries, len(queries)))
        q = prepare_embeddings(torch.as_tensor(vectors[queries[chosen]]), self.metric)
        g = prepare_embeddings(torch.as_tensor(vectors[gallery_rows]), self.metric)
        scores = block_scores(q, g, self.metric).numpy()
        inside = np.flatnonzero(own[chosen] >= 0)
        scores[inside, own[chosen][inside]] = -np.inf
        top = np.argsort(-scores, axis=1, kind="stable")[:, :top_k]
        correct = np.take_along_axis(task.relevant(chosen), top, axis=1)
        return queries[chosen], gallery_rows[top], correct


def _shared_rankings(tasks: list[Task]) -> list[list[Task]]:
    """The tasks in groups that one ranking serves: consecutive tasks that rank the same
    queries against the same gallery by class (each semantic scale of self-retrieval), so
    that the scores are computed and sorted once for all of them."""
    def same_rows(a: Task, b: Task) -> bool:
        return all((x is None and y is None) or (x is not None and y is not None and np.array_equal(x, y))
                   for x, y in ((a.query_select, b.query_select), (a.gallery_select, b.gallery_select)))

    groups: list[list[Task]] = []
    for task in tasks:
        by_class = task.relevance is None and task.grades is None and bool(task.prefix)
        last = groups[-1][-1] if groups else None
        if last is not None and by_class and last.relevance is None and last.grades is None \
                and bool(last.prefix) and same_rows(last, task):
            groups[-1].append(task)
        else:
            groups.append([task])
    return groups


PROTOCOLS: Registry[Protocol] = Registry("protocol", knob_prefix="protocol.")


class SelfRetrieval(Protocol):
    """Every row is a query ranked against all the other rows (leave-one-out)."""


class QueryGallery(Protocol):
    """Query rows against gallery rows, by role ("both" rows are in both sets)."""

    def query_mask(self, rows: EvalRows) -> np.ndarray:
        return split_query_gallery(rows.role)[0]

    def gallery_mask(self, rows: EvalRows) -> np.ndarray:
        return split_query_gallery(rows.role)[1]


class CrossDomain(Protocol):
    """Queries of ``query_domain`` against a gallery of ``gallery_domain`` (same class is
    relevant), ranked by ``metric``; P@K for each of ``precision_ks`` besides the usual
    (the report heads it with mAP@all and that P@K, sketch-based retrieval's figures); with ``flip``,
    a pair's distance is the smallest over image and mirror on both sides (the DASE/MEMS
    authors' tester)."""

    def __init__(self, query_domain: str, gallery_domain: str, metric: str,
                 precision_ks: Sequence[int], map_ks: Sequence[int], flip: bool = False,
                 map_denominator: str = "found") -> None:
        self.query_domain, self.gallery_domain = query_domain, gallery_domain
        self.metric = metric
        self.precision_ks = tuple(int(k) for k in precision_ks)
        self.map_ks = tuple(int(k) for k in map_ks)
        self.flip = bool(flip)
        self.map_denominator = map_denominator

    def query_mask(self, rows: EvalRows) -> np.ndarray:
        return rows.domain == self.query_domain

    def gallery_mask(self, rows: EvalRows) -> np.ndarray:
        return rows.domain == self.gallery_domain

    @property
    def headline(self) -> tuple[str, ...]:
        """mAP and the first P@K beyond K = 1 where the protocol asks for one (sketch-based
        retrieval's P@200), else R@1 and MAP@R."""
        cutoffs = sorted(k for k in self.precision_ks if k != 1)
        return ("map", f"precision@{cutoffs[0]}") if cutoffs else super().headline


class PerScale(QueryGallery):
    """Retrieval once per semantic scale with that scale's labels (``<scale>/<metric>``, ASI
    included), and the average over scales (``avg/<metric>``) of every metric all scales
    report.

    Queries and gallery come from the roles ("both" everywhere: self-retrieval). At each
    scale only the rows labelled at that scale take part: DyML's Vehicle and Animal test sets
    hold one query/gallery benchmark per scale, each labelled at its own scale only.
    """

    asi = True

    def __init__(self, scales: Sequence[str] | None) -> None:
        self.scales = None if scales is None else tuple(scales)

    def tasks(self, rows: EvalRows, queries: np.ndarray, gallery: np.ndarray) -> list[Task]:
        scales = self.scales or tuple(rows.labels)
        missing = [s for s in scales if s not in rows.labels]
        if missing:
            raise DataError(f"protocol per_scale: the rows have no labels at scale(s) {missing}; "
                            f"scales present: {', '.join(rows.labels) or 'none'}")
        tasks = []
        for i, scale in enumerate(scales):
            labels = rows.labels[scale]
            q_sel = np.flatnonzero(labels[queries] >= 0)
            g_sel = np.flatnonzero(labels[gallery] >= 0)
            if not len(q_sel) or not len(g_sel):
                raise DataError(f"protocol per_scale: no {'query' if not len(q_sel) else 'gallery'} "
                                f"row is labelled at scale {scale!r}")
            tasks.append(Task(prefix=f"{scale}/", query_labels=labels[queries[q_sel]],
                              gallery_labels=labels[gallery[g_sel]], nmi=i == 0,
                              query_select=q_sel, gallery_select=g_sel))
        return tasks

    def summarize(self, metrics: dict[str, float]) -> dict[str, float]:
        per_scale: dict[str, list[float]] = {}
        for key, value in metrics.items():
            per_scale.setdefault(key.split("/", 1)[1], []).append(value)
        n = max(len(v) for v in per_scale.values())
        averages = {f"avg/{name}": float(np.mean(values)) for name, values in per_scale.items()
                    if len(values) == n and name not in ("nmi", "ami", "queries_without_relevant")}
        return {**metrics, **averages}

    def summarize_per_query(self, per_query: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """A query's average over the scales, where every scale ranked the same queries."""
        per_scale: dict[str, list[np.ndarray]] = {}
        for key, values in per_query.items():
            if "/" in key and not key.startswith("avg/"):
                per_scale.setdefault(key.split("/", 1)[1], []).append(values)
        n = max((len(v) for v in per_scale.values()), default=0)
        return {f"avg/{name}": np.mean(np.stack(values), axis=0) for name, values in per_scale.items()
                if len(values) == n and len({len(v) for v in values}) == 1}

    @property
    def headline(self) -> tuple[str, ...]:
        """R@1 and mAP averaged over the scales."""
        return ("avg/recall@1", "avg/map")


class MultiLabel(Protocol):
    """Multi-object rows by role: relevant = shares at least one object class; NDCG@K graded
    by the multiset Jaccard similarity of the object counts; mAP@all and mAP@K."""

    def __init__(self, map_ks: Sequence[int], ndcg_ks: Sequence[int], ndcg_gain: str = "linear",
                 map_denominator: str = "found") -> None:
        self.map_ks = tuple(int(k) for k in map_ks)
        self.ndcg_ks = tuple(int(k) for k in ndcg_ks)
        self.ndcg_gain, self.map_denominator = ndcg_gain, map_denominator

    def query_mask(self, rows: EvalRows) -> np.ndarray:
        return split_query_gallery(rows.role)[0]

    def gallery_mask(self, rows: EvalRows) -> np.ndarray:
        return split_query_gallery(rows.role)[1]

    def tasks(self, rows: EvalRows, queries: np.ndarray, gallery: np.ndarray) -> list[Task]:
        from dml.label_similarity import multiset_jaccard

        if rows.counts is None:
            raise DataError("protocol multilabel needs object counts per image "
                            "(an 'object_counts' column)")
        q_counts = torch.as_tensor(rows.counts[queries], dtype=torch.float32)
        g_counts = torch.as_tensor(rows.counts[gallery], dtype=torch.float32)
        g_present = (g_counts > 0).float()
        return [Task(
            relevance=lambda r: ((q_counts[r] > 0).float() @ g_present.T) > 0,
            grades=lambda r: multiset_jaccard(q_counts[r], g_counts),
            nmi=False,
        )]

    @property
    def headline(self) -> tuple[str, ...]:
        """mAP and the first NDCG@K (graded relevance), else R@1 and MAP@R."""
        return ("map", f"ndcg@{min(self.ndcg_ks)}") if self.ndcg_ks else super().headline


def _ks(name: str, values: Sequence[int]) -> tuple[int, ...]:
    values = tuple(int(k) for k in values)
    if any(k < 1 for k in values):
        raise ConfigError(f"protocol.{name} must be positive integers, got {list(values)}")
    return values


@PROTOCOLS.register("self_retrieval")
def self_retrieval() -> Protocol:
    """Each row against every other row (the zero-shot DML protocol)."""
    return SelfRetrieval()


@PROTOCOLS.register("query_gallery")
def query_gallery() -> Protocol:
    """Query rows against gallery rows by the ``role`` column."""
    return QueryGallery()


@PROTOCOLS.register("cross_domain")
def cross_domain(query_domain: Annotated[str, Knob(choices=DOMAINS)] = "sketch",
                 gallery_domain: Annotated[str, Knob(choices=DOMAINS)] = "photo",
                 metric: Annotated[str, Knob(choices=protocol_geometries)] = "euclidean",
                 precision_ks: Sequence[int] = (200,), map_ks: Sequence[int] = (), flip: bool = False,
                 map_denominator: Annotated[str, Knob(choices=MAP_DENOMINATORS)] = "found") -> Protocol:
    """Sketch queries against photos (or any two domains); ``flip``: flip test-time
    augmentation (nearest of image and mirror); ``map_denominator``: what mAP@K divides by,
    ``found`` (relevant items in the top K) or ``min_r_k`` (``min(R, K)``)."""
    if not isinstance(flip, bool):
        raise ConfigError(f"protocol.flip: {flip!r} must be true or false")
    return CrossDomain(query_domain, gallery_domain, metric, _ks("precision_ks", precision_ks),
                       _ks("map_ks", map_ks), flip, map_denominator)


@PROTOCOLS.register("per_scale")
def per_scale(scales: Sequence[str] | None = None) -> Protocol:
    """Retrieval at each semantic scale (default: every scale the data has), with ASI."""
    return PerScale(scales)


@PROTOCOLS.register("multilabel")
def multilabel(map_ks: Sequence[int] = (100,), ndcg_ks: Sequence[int] = (10, 100),
               ndcg_gain: Annotated[str, Knob(choices=NDCG_GAINS)] = "linear",
               map_denominator: Annotated[str, Knob(choices=MAP_DENOMINATORS)] = "found") -> Protocol:
    """Multi-object retrieval: shares-a-label relevance, Jaccard-graded NDCG; ``ndcg_gain``:
    ``linear`` (the grade) or ``exponential`` (``2^grade − 1``, HAPPIER and the multi-label
    hashing papers); ``map_denominator``: ``found`` (relevant items in the top K:
    pytorch-metric-learning, the hashing papers) or ``min_r_k`` (TREC, open-metric-learning)."""
    return MultiLabel(_ks("map_ks", map_ks), _ks("ndcg_ks", ndcg_ks), ndcg_gain, map_denominator)


def build_protocol(spec: dict[str, Any], *, where: str = "protocol") -> Protocol:
    """A protocol from its ``{name: ..., <knob>: ...}`` spec."""
    knobs = dict(spec)
    name = knobs.pop("name")
    return PROTOCOLS.build(name, where=where, **knobs)
