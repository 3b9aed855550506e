"""An experiment's evaluation: the test split's float embeddings and every quantized index."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import faiss
import numpy as np
import pyarrow as pa

from dml.errors import DataError
from dml.evaluate import retrieval_metrics
from dml.evaluate.protocols import query_gallery_index, same_set, split_query_gallery
from dml.index import decode_gallery, describe_index


def split_test_set(table: pa.Table, vectors: np.ndarray) -> dict[str, Any]:
    """Query/gallery vectors, labels and ids of the test split, from the rows' roles."""
    split = table.column("split").to_numpy(zero_copy_only=False)
    test = split == "test"
    if not test.any():
        raise DataError("the embeddings hold no test-split rows")
    roles = table.column("role").to_numpy(zero_copy_only=False)[test]
    labels = table.column("label").to_numpy()[test]
    ids = np.asarray(table.column("image_id").to_pylist(), dtype=object)[test]
    q_mask, g_mask = split_query_gallery(roles)
    return {
        "query": vectors[test][q_mask],
        "query_labels": labels[q_mask],
        "query_ids": ids[q_mask],
        "gallery_labels": labels[g_mask],
        "gallery_ids": ids[g_mask],
        "gallery": vectors[test][g_mask],
        "same_set": same_set(q_mask, g_mask),
        "query_gallery_index": query_gallery_index(q_mask, g_mask),
    }


def evaluate_test_split(
    table: pa.Table,
    vectors: np.ndarray,
    indexes: Mapping[str, faiss.Index],
    *,
    ks: Sequence[int] = (1, 2, 4, 8),
) -> dict[str, Any]:
    """Metrics of the float embeddings and of each index's decoded gallery (same protocol).

    A quantized gallery is ranked by inner product with the decoded codes, which is the order
    faiss's asymmetric search returns; the query keeps its float vector.
    """
    split = split_test_set(table, vectors)
    q, q_labels = split["query"], split["query_labels"]
    if split["same_set"]:
        floats = retrieval_metrics(q, q_labels, ks=ks)
    else:
        floats = retrieval_metrics(q, q_labels, split["gallery"], split["gallery_labels"], ks=ks,
                                   query_gallery_index=split["query_gallery_index"])
    quantized = {}
    for name, index in indexes.items():
        if index.ntotal != len(split["gallery"]):
            raise DataError(f"index {name} holds {index.ntotal} vectors, the gallery has {len(split['gallery'])}")
        metrics = retrieval_metrics(
            q, q_labels, decode_gallery(index), split["gallery_labels"], ks=ks, similarity="dot",
            nmi=False, query_gallery_index=split["query_gallery_index"],
        )
        metrics["bytes_per_vector"] = describe_index(index)["code_size"]
        quantized[name] = metrics
    return {
        "split": "test",
        "queries": int(len(q)),
        "gallery": int(len(split["gallery"])),
        "bytes_per_vector": int(4 * vectors.shape[1]),
        "float": floats,
        "quantized": {k: v for k, v in quantized.items() if k != "flat"},
        "exact_index": quantized.get("flat"),
    }


def grid_examples(
    table: pa.Table, vectors: np.ndarray, n_queries: int, top_k: int
) -> tuple[list[str], list[list[str]], np.ndarray]:
    """The first ``n_queries`` test queries (one per class where possible), their top-k
    gallery ids (the query itself excluded) and whether each result shares its class.
    """
    split = split_test_set(table, vectors)
    q_labels = split["query_labels"]
    _, first = np.unique(q_labels, return_index=True)
    chosen = np.sort(first)[:n_queries]
    scores = split["query"][chosen] @ split["gallery"].T
    own = split["query_gallery_index"][chosen]
    rows = np.flatnonzero(own >= 0)
    scores[rows, own[rows]] = -np.inf
    top = np.argsort(-scores, axis=1, kind="stable")[:, :top_k]
    correct = split["gallery_labels"][top] == q_labels[chosen][:, None]
    return (
        list(split["query_ids"][chosen]),
        [list(split["gallery_ids"][row]) for row in top],
        correct,
    )
