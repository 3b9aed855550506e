"""An experiment's evaluation: its protocol on the test rows, for the float embeddings and for
every quantized index's decoded gallery."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import faiss
import numpy as np
import pyarrow as pa

from dml.config import RunSpec
from dml.data.dataset import ManifestDataset
from dml.data.rows import ManifestRows
from dml.data.splits import evaluated_rows
from dml.errors import DataError
from dml.evaluate.candidates import Candidates, fits
from dml.evaluate.geometry import GEOMETRIES
from dml.evaluate.metrics import attribute_average_precision
from dml.evaluate.protocols import EvalRows, Protocol
from dml.binary_codes import encode, index_codes
from dml.index import (
    code_collapse,
    code_vectors,
    decode_gallery,
    describe_index,
    index_order,
    stored_codes,
)
from dml.pipeline.stage import print_notices
from dml.stats import bootstrap_interval

#: A quantized gallery whose most common code holds more than this share of the items is
#: named in a notice: its ranking is mostly ties.
COLLAPSED_SHARE = 0.5


def experiment_rows(spec: RunSpec, manifest: str, splits: str,
                    image_size: int = 32) -> tuple[ManifestDataset, EvalRows]:
    """Every row of the experiment's dataset in its domains (all splits), as a dataset for
    embedding and as annotations for evaluation."""
    dataset = ManifestDataset(manifest, splits, domains=spec.domains, image_size=image_size)
    return dataset, EvalRows.from_rows(dataset.rows)


def aligned_rows(spec: RunSpec, manifest: str, splits: str, embeddings: pa.Table) -> EvalRows:
    """The annotations of the rows of an embeddings file, which must be the experiment's rows
    in the same order (as the embed stage writes them)."""
    rows = EvalRows.from_rows(ManifestRows(manifest, splits, domains=spec.domains))  # no pixels, no transforms
    ids = embeddings.column("image_id").to_pylist()
    if ids != list(rows.ids):
        raise DataError(f"the embeddings of {spec.experiment!r} do not hold the rows of "
                        f"{manifest} (domains {spec.domains or 'all'}) in order; re-run embed")
    return rows


def test_rows(rows: EvalRows) -> np.ndarray:
    """Mask of the rows the test ranks: the test split's, and a shared gallery of training
    rows (:func:`dml.data.splits.evaluated_rows`); a clear error when there are none."""
    if not (rows.split == "test").any():
        raise DataError("the embeddings hold no test-split rows")
    return evaluated_rows(rows.split, rows.role)


def gallery_indices(rows: EvalRows, protocol: Protocol) -> np.ndarray:
    """Positions in ``rows`` of the test gallery, in the order the quantize stage adds them
    to its indexes: an index's id ``i`` is row ``gallery_indices(rows, protocol)[i]``."""
    tested = np.flatnonzero(test_rows(rows))
    _, gallery, _ = protocol.split(rows.subset(tested))
    return tested[gallery]


def gap_samples(rows: EvalRows, held_out_folds: Sequence[int] = (), *,
                seed: int = 0) -> tuple[np.ndarray, np.ndarray] | None:
    """Masks of the two samples that measure the gap between seen and unseen classes: the
    training images of K classes the model trained on (the validation folds
    ``held_out_folds`` were not trained on), and the test images of K test classes, K the
    smaller of the two class counts, each sample drawn from ``seed``: both sides rank among
    as many classes.

    None where a split has no such gap: rows without class labels (multi-label scenes, split
    by image), test classes that are also training classes, or test rows that are not
    labelled at every scale (DyML's per-scale benchmarks, each labelled at its own scale).
    """
    if not rows.labels:
        return None
    fine = next(iter(rows.labels.values()))
    tested = rows.split == "test"
    if any((labels[tested] < 0).any() for labels in rows.labels.values()):
        return None
    trained = (rows.split == "train") & (fine >= 0)
    if held_out_folds and rows.fold is not None:
        trained &= ~np.isin(rows.fold, np.asarray(list(held_out_folds), dtype=np.int64))
    seen, unseen = np.unique(fine[trained]), np.unique(fine[tested])
    if not len(seen) or not len(unseen) or np.isin(unseen, seen).any():
        return None
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 2]))
    k = min(len(seen), len(unseen))
    return (trained & np.isin(fine, rng.choice(seen, size=k, replace=False)),
            tested & np.isin(fine, rng.choice(unseen, size=k, replace=False)))


def evaluate_gap(rows: EvalRows, vectors: np.ndarray, protocol: Protocol, *,
                 held_out_folds: Sequence[int] = (), ks: Sequence[int] = (1, 2, 4, 8),
                 seed: int = 0, candidates: Candidates | None = None) -> dict[str, Any] | None:
    """The protocol's float metrics on each sample of :func:`gap_samples`, every row ranked
    against the others of its sample (role "both"): ``{"classes": K, "seen": {"images": n,
    "float": {...}}, "unseen": {...}}``; None where there are no such samples. With
    ``candidates`` each side is ranked approximately and says so (its ``ranking``; exact
    where the sample is too small to train the index)."""
    samples = gap_samples(rows, held_out_folds, seed=seed)
    if samples is None:
        return None
    fine = next(iter(rows.labels.values()))
    out: dict[str, Any] = {"classes": int(len(np.unique(fine[samples[0]])))}
    for side, mask in zip(("seen", "unseen"), samples):
        ranking: dict[str, Any] = {}
        sample = vectors[mask]
        approximate = candidates is not None and fits(candidates, int(np.prod(sample.shape[:-1])), sample.shape[-1],
                                                      protocol.metric)
        out[side] = {"images": int(mask.sum()),
                     "float": protocol.evaluate(rows.subset(mask).with_roles("both"), sample, ks=ks, seed=seed,
                                                candidates=candidates if approximate else None, ranking=ranking)}
        if candidates is not None:
            out[side]["ranking"] = ranking
    return out


def evaluate_test_split(
    rows: EvalRows,
    vectors: np.ndarray,
    protocol: Protocol,
    indexes: Mapping[str, faiss.Index],
    *,
    ks: Sequence[int] = (1, 2, 4, 8),
    attribute_logits: np.ndarray | None = None,
    attribute_names: Sequence[str] = (),
    held_out_folds: Sequence[int] | None = None,
    seed: int = 0,
    candidates: Candidates | None = None,
) -> dict[str, Any]:
    """The protocol's metrics on the test rows: float vectors, then each index's decoded
    gallery (queries keep their float vectors).

    With ``held_out_folds`` (the validation folds the model did not train on), also the
    same float metrics on a sample of the classes it trained on and on as many test classes
    (``gap``: :func:`evaluate_gap`), for the gap between seen and unseen classes.

    A quantized gallery is ranked by :func:`evaluate_index`; its figures also say how far its
    codes collapsed (``distinct_codes``, ``largest_code_share``: :func:`dml.index.code_collapse`).

    With ``attribute_logits`` (the attribute head's output for every row), the float figures
    also hold ``attributes/map``: the mean over attributes of each attribute's average
    precision on the test rows (:func:`attribute_quality`); each one's is under
    ``attributes``.

    ``ranking`` says how the test rows were ranked: ``{"kind": "exact"}``, or with
    ``candidates`` (each query's candidates from a faiss index, re-ranked exactly:
    :mod:`dml.evaluate.candidates`) ``{"kind": "approximate", "index", "nprobe", "candidates",
    "recall_queries", "recall@<d>": the measured share of the exact top d found, "omitted":
    the figures left out, "quantized": each index's own recall}``.
    """
    gap = (None if held_out_folds is None else
           evaluate_gap(rows, vectors, protocol, held_out_folds=held_out_folds, ks=ks, seed=seed,
                        candidates=candidates))
    mask = test_rows(rows)
    rows, vectors = rows.subset(mask), vectors[mask]
    queries, gallery, _ = protocol.split(rows)
    per_query: dict[str, np.ndarray] = {}
    ranking: dict[str, Any] = {}
    floats = protocol.evaluate(rows, vectors, ks=ks, per_query=per_query, seed=seed, candidates=candidates,
                               ranking=ranking)
    per_attribute = None
    if attribute_logits is not None:
        floats["attributes/map"], per_attribute = attribute_quality(rows, attribute_logits[mask],
                                                                    attribute_names)
    # The spread due to the finite query set: the interval of a single run (one seed).
    intervals = {key: bootstrap_interval(values) for key, values in per_query.items()}
    quantized = {}
    coded = code_vectors(vectors, protocol.metric) if indexes else vectors  # once for every index
    for name, index in indexes.items():
        if index.ntotal != len(gallery):
            raise DataError(f"index {name} holds {index.ntotal} vectors, the gallery has {len(gallery)}")
        index_ranking: dict[str, Any] = {}
        metrics = evaluate_index(rows, coded, protocol, index, ks=ks, candidates=candidates, ranking=index_ranking)
        if candidates is not None:
            ranking.setdefault("quantized", {})[name] = {k: v for k, v in index_ranking.items()
                                                        if k.startswith("recall")}
        facts = describe_index(index)
        metrics["bytes_per_vector"] = facts["code_size"]
        if facts["kind"] != "flat":
            metrics.update(code_collapse(stored_codes(index)))
        quantized[name] = metrics
    return {
        "split": "test",
        "queries": int(len(queries)),
        "gallery": int(len(gallery)),
        "bytes_per_vector": int(4 * vectors.shape[-1]),
        "float": floats,
        # the order of the protocol's tasks (scales, finest first): JSON files sort their keys
        "prefixes": list(dict.fromkeys(k.rpartition("/")[0] for k in floats if "/" in k)),
        "float_bootstrap_ci": {k: [i.low, i.high] for k, i in intervals.items() if i.n >= 2},
        "quantized": {k: v for k, v in quantized.items() if k != "flat"},
        "exact_index": quantized.get("flat"),
        "ranking": ranking,
        **({"attributes": per_attribute} if per_attribute is not None else {}),
        **({"gap": gap} if gap is not None else {}),
    }


def evaluate_index(rows: EvalRows, vectors: np.ndarray, protocol: Protocol, index: faiss.Index, *,
                   ks: Sequence[int] = (1, 2, 4, 8), candidates: Candidates | None = None,
                   ranking: dict[str, Any] | None = None) -> dict[str, float]:
    """The protocol's metrics with the gallery as ``index`` holds it. Product codes are
    decoded and ranked against the float queries, as faiss's asymmetric search ranks them
    (by inner product under cosine protocols, by L2 distance under euclidean ones); a hash
    index encodes the queries too and ranks by Hamming distance.

    Queries are :func:`dml.index.code_vectors` of ``vectors``, the vectors the quantize stage
    built the gallery's codes from: with views (flip) the mean of image and mirror, one
    vector per query, as a search of the index takes it.

    ``candidates`` and ``ranking`` as in :meth:`Protocol.evaluate`: the decoded gallery (or
    the ±1 hash codes, whose inner product ranks as Hamming distance) is searched for
    candidates, re-ranked exactly in its own geometry."""
    queries = code_vectors(vectors, protocol.metric)
    if isinstance(faiss.downcast_index(index), faiss.IndexLSH):
        lsh = faiss.downcast_index(index)
        return protocol.evaluate(rows, encode(lsh, queries), ks=ks, gallery=index_codes(lsh),
                                 metric="hamming", nmi=False, candidates=candidates, ranking=ranking)
    return protocol.evaluate(rows, queries, ks=ks, gallery=decode_gallery(index),
                             metric=protocol.geometry.decoded, nmi=False, candidates=candidates, ranking=ranking)


def collapse_notices(experiment: str, quantized: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """One line naming the quantized indexes whose most common code holds more than
    :data:`COLLAPSED_SHARE` of the gallery (``quantized``: index name -> its figures, as
    :func:`evaluate_test_split` reports them); none where no index collapses."""
    collapsed = [f"{name} ({100 * m['largest_code_share']:.1f}% on one code, {m['distinct_codes']} distinct)"
                 for name, m in sorted(quantized.items(), key=lambda item: index_order(item[0]))
                 if m.get("largest_code_share", 0.0) > COLLAPSED_SHARE]
    if not collapsed:
        return []
    return [f"evaluate {experiment}: the gallery's codes collapse in {', '.join(collapsed)}; "
            f"{'its ranking is' if len(collapsed) == 1 else 'their rankings are'} mostly ties"]


def print_collapse_notices(experiment: str, report: Mapping[str, Any]) -> None:
    """Print :func:`collapse_notices` for the quantized indexes of an evaluation report."""
    print_notices(collapse_notices(experiment, report.get("quantized", {})))


def attribute_quality(rows: EvalRows, logits: np.ndarray,
                      names: Sequence[str]) -> tuple[float | None, dict[str, float | None]]:
    """The attribute head's quality on ``rows``: the mean of the per-attribute average
    precisions over the attributes with a known positive among the rows, and each one's
    (None where undefined), by attribute name. Unknown labels are left out."""
    if rows.attributes is None:
        raise DataError("the model has an attribute head but the rows have no attributes")
    if logits.shape != rows.attributes.shape or len(names) != logits.shape[1]:
        raise DataError(f"attribute scores {logits.shape} do not match the rows' attributes "
                        f"{rows.attributes.shape} ({len(names)} names)")
    ap = attribute_average_precision(logits, rows.attributes, rows.attribute_known)
    defined = ap[~np.isnan(ap)]
    mean = float(defined.mean()) if len(defined) else None
    return mean, {name: None if np.isnan(v) else float(v) for name, v in zip(names, ap)}


def grid_examples(
    rows: EvalRows, vectors: np.ndarray, protocol: Protocol, n_queries: int, top_k: int
) -> tuple[list[str], list[list[str]], np.ndarray]:
    """Test queries (one per class where possible), their top-k gallery ids (the query itself
    excluded) and whether each result is relevant under the protocol."""
    mask = test_rows(rows)
    rows, vectors = rows.subset(mask), vectors[mask]
    queries, results, correct = protocol.top_results(rows, vectors, n_queries, top_k)
    return list(rows.ids[queries]), [list(rows.ids[r]) for r in results], correct


def pair_scores(rows: EvalRows, vectors: np.ndarray, metric: str, queries: list[str],
                results: list[list[str]]) -> np.ndarray:
    """``[Q, K]``: each result's cosine similarity to its query, or euclidean distance where
    the protocol ranks by distance (what the grid's ranking is by; with views ``[N, V, D]``,
    the nearest pair of views)."""
    at = {image: i for i, image in enumerate(rows.ids)}
    views = vectors if vectors.ndim == 3 else vectors[:, None, :]
    q = views[[at[i] for i in queries]].astype(np.float64)[:, None, :, None, :]  # Q 1 V 1 D
    g = views[[[at[i] for i in row] for row in results]].astype(np.float64)[:, :, None]  # Q K 1 W D
    if GEOMETRIES[metric].euclidean:
        return np.linalg.norm(q - g, axis=-1).min(axis=(2, 3))
    q = q / np.linalg.norm(q, axis=-1, keepdims=True).clip(1e-12)
    g = g / np.linalg.norm(g, axis=-1, keepdims=True).clip(1e-12)
    return (q * g).sum(-1).max(axis=(2, 3))
