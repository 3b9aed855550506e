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
from dml.errors import DataError
from dml.evaluate.protocols import EvalRows, Protocol
from dml.index import decode_gallery, describe_index
from dml.stats import bootstrap_interval


def experiment_rows(spec: RunSpec, manifest: str, splits: str,
                    image_size: int = 32) -> tuple[ManifestDataset, EvalRows]:
    """Every row of the experiment's dataset in its domains (all splits), as a dataset for
    embedding and as annotations for evaluation."""
    dataset = ManifestDataset(manifest, splits, domains=spec.domains, image_size=image_size)
    return dataset, EvalRows.from_dataset(dataset)


def aligned_rows(spec: RunSpec, manifest: str, splits: str, embeddings: pa.Table) -> EvalRows:
    """The annotations of the rows of an embeddings file, which must be the experiment's rows
    in the same order (as the embed stage writes them)."""
    _, rows = experiment_rows(spec, manifest, splits)
    ids = embeddings.column("image_id").to_pylist()
    if ids != list(rows.ids):
        raise DataError(f"the embeddings of {spec.experiment!r} do not hold the rows of "
                        f"{manifest} (domains {spec.domains or 'all'}) in order; re-run embed")
    return rows


def test_rows(rows: EvalRows) -> np.ndarray:
    """Mask of the test split's rows; a clear error when there are none."""
    mask = rows.split == "test"
    if not mask.any():
        raise DataError("the embeddings hold no test-split rows")
    return mask


def evaluate_test_split(
    rows: EvalRows,
    vectors: np.ndarray,
    protocol: Protocol,
    indexes: Mapping[str, faiss.Index],
    *,
    ks: Sequence[int] = (1, 2, 4, 8),
) -> dict[str, Any]:
    """The protocol's metrics on the test rows: float vectors, then each index's decoded
    gallery (queries keep their float vectors).

    A quantized gallery is ranked as faiss's asymmetric search does: by inner product with
    the decoded codes under cosine protocols, by L2 distance under euclidean ones.
    """
    mask = test_rows(rows)
    rows, vectors = rows.subset(mask), vectors[mask]
    queries, gallery, _ = protocol.split(rows)
    per_query: dict[str, np.ndarray] = {}
    floats = protocol.evaluate(rows, vectors, ks=ks, per_query=per_query)
    # The spread due to the finite query set: the interval of a single run (one seed).
    intervals = {key: bootstrap_interval(values) for key, values in per_query.items()}
    quantized_metric = "dot" if protocol.metric == "cosine" else protocol.metric
    quantized = {}
    for name, index in indexes.items():
        if index.ntotal != len(gallery):
            raise DataError(f"index {name} holds {index.ntotal} vectors, the gallery has {len(gallery)}")
        metrics = protocol.evaluate(rows, vectors, ks=ks, gallery=decode_gallery(index),
                                    metric=quantized_metric, nmi=False)
        metrics["bytes_per_vector"] = describe_index(index)["code_size"]
        quantized[name] = metrics
    return {
        "split": "test",
        "queries": int(len(queries)),
        "gallery": int(len(gallery)),
        "bytes_per_vector": int(4 * vectors.shape[1]),
        "float": floats,
        "float_bootstrap_ci": {k: [i.low, i.high] for k, i in intervals.items() if i.n >= 2},
        "quantized": {k: v for k, v in quantized.items() if k != "flat"},
        "exact_index": quantized.get("flat"),
    }


def grid_examples(
    rows: EvalRows, vectors: np.ndarray, protocol: Protocol, n_queries: int, top_k: int
) -> tuple[list[str], list[list[str]], np.ndarray]:
    """Test queries (one per class where possible), their top-k gallery ids (the query itself
    excluded) and whether each result is relevant under the protocol."""
    mask = test_rows(rows)
    rows, vectors = rows.subset(mask), vectors[mask]
    queries, results, correct = protocol.top_results(rows, vectors, n_queries, top_k)
    return list(rows.ids[queries]), [list(rows.ids[r]) for r in results], correct
