"""Flip test-time augmentation: each item has views (image and mirror), and a pair is as near as
its nearest pair of views, under every metric; the embed stage's stored view."""

from __future__ import annotations

import itertools

import numpy as np
import pyarrow as pa
import pytest

from dml.embed import with_views, write_embeddings, read_embeddings
from dml.errors import ConfigError, DataError
from dml.evaluate import retrieval_metrics
from dml.evaluate.protocols import EvalRows, build_protocol


def _views(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, 2, 6)).astype(np.float32)


def _nearest_ranking(q: np.ndarray, g: np.ndarray, metric: str) -> np.ndarray:
    """Loop reference: [Q, N] distance of each pair's nearest views (cosine: 1 - similarity)."""
    out = np.empty((len(q), len(g)))
    for i, j in itertools.product(range(len(q)), range(len(g))):
        pairs = []
        for a, b in itertools.product(q[i], g[j]):
            if metric == "euclidean":
                pairs.append(np.linalg.norm(a - b))
            else:
                pairs.append(1 - a @ b / np.linalg.norm(a) / np.linalg.norm(b))
        out[i, j] = min(pairs)
    return out


@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
def test_nearest_views_against_a_loop(metric):
    q, g = _views(7, 0), _views(11, 1)
    qy, gy = np.arange(7) % 3, np.arange(11) % 3
    per_query: dict[str, np.ndarray] = {}
    m = retrieval_metrics(q, qy, g, gy, metric=metric, ks=(1, 2), nmi=False, per_query=per_query)
    distance = _nearest_ranking(q, g, metric)
    order = np.argsort(distance, axis=1, kind="stable")
    hits = gy[order] == qy[:, None]
    assert per_query["recall@1"].tolist() == hits[:, 0].astype(float).tolist()
    precisions = np.cumsum(hits, axis=1) / np.arange(1, 12)
    ap = (precisions * hits).sum(1) / hits.sum(1)
    assert m["map"] == pytest.approx(ap.mean())


def test_one_view_is_the_plain_ranking_and_views_differ():
    q, g = _views(5, 2), _views(9, 3)
    qy, gy = np.arange(5) % 3, np.arange(9) % 3
    plain = retrieval_metrics(q[:, 0], qy, g[:, 0], gy, metric="euclidean", nmi=False)
    assert retrieval_metrics(q[:, :1], qy, g[:, :1], gy, metric="euclidean", nmi=False) == plain
    # a 2-D gallery beside 3-D queries: the queries' views against the gallery's one
    mixed = retrieval_metrics(q, qy, g[:, 0], gy, metric="euclidean", nmi=False)
    want = _nearest_ranking(q, g[:, :1], "euclidean")
    assert mixed["recall@1"] == pytest.approx(np.mean(gy[want.argmin(1)] == qy))


def test_mirror_of_the_query_finds_its_match():
    """A gallery item that equals only the query's mirror is found at distance 0."""
    q = np.array([[[1.0, 0.0], [0.0, 1.0]]], dtype=np.float32)            # image, mirror
    g = np.array([[[5.0, 5.0], [5.0, 5.1]], [[0.0, 1.0], [3.0, 3.0]]], dtype=np.float32)
    m = retrieval_metrics(q, [1], g, [0, 1], metric="euclidean", ks=(1,), nmi=False)
    assert m["recall@1"] == 1.0
    assert retrieval_metrics(q[:, :1], [1], g[:, :1], [0, 1], metric="euclidean", ks=(1,),
                             nmi=False)["recall@1"] == 1.0  # (here the plain view agrees)


def test_bad_views_are_clear():
    with pytest.raises(DataError, match="3-D"):
        retrieval_metrics(np.zeros((2, 2, 2, 2), np.float32), [0, 1], nmi=False)
    q = np.ones((2, 2, 3), np.float32)
    q[1, 1] = 0
    with pytest.raises(DataError, match="row 1 is all zeros"):
        retrieval_metrics(q, [0, 0], metric="cosine", nmi=False)


def test_flip_knob_of_the_cross_domain_protocol():
    assert build_protocol({"name": "cross_domain", "flip": True}).views == ("flip",)
    assert build_protocol({"name": "cross_domain"}).views == ()
    assert build_protocol({"name": "self_retrieval"}).views == ()
    with pytest.raises(ConfigError, match="protocol.flip"):
        build_protocol({"name": "cross_domain", "flip": "yes"})


def test_protocol_ranks_sketches_by_nearest_views():
    labels = np.array([0, 0, 1, 1])
    rows = EvalRows(ids=np.array(list("abcd"), dtype=object), split=np.full(4, "test", dtype=object),
                    role=np.full(4, "both", dtype=object),
                    domain=np.array(["sketch", "photo", "sketch", "photo"], dtype=object),
                    labels={"fine": labels})
    views = np.array([[[0, 0], [9, 9]], [[9, 9.1], [50, 50]],        # class 0: mirror matches
                      [[1, 1], [1, 1]], [[0.2, 0.2], [0.2, 0.2]]], dtype=np.float32)
    protocol = build_protocol({"name": "cross_domain", "precision_ks": [1], "flip": True})
    assert protocol.evaluate(rows, views, ks=(1,), nmi=False)["recall@1"] == 1.0
    # without the mirror the class-0 sketch's nearest photo is the class-1 one
    assert protocol.evaluate(rows, views[:, 0], ks=(1,), nmi=False)["recall@1"] == 0.5


def test_stored_view_round_trip(tmp_path):
    path = tmp_path / "e.parquet"
    vectors, flipped = _views(3, 4)[:, 0], _views(3, 5)[:, 0]
    write_embeddings(path, {"image_id": ["a", "b", "c"]}, vectors, model_hash="x", normalized=False,
                     views={"flip": flipped})
    table, plain, meta = read_embeddings(path)
    assert meta["views"] == ["flip"]
    stacked = with_views(table, plain, ("flip",), path=path)
    assert stacked.shape == (3, 2, 6)
    assert np.array_equal(stacked[:, 0], vectors) and np.array_equal(stacked[:, 1], flipped)
    assert with_views(table, plain, ()) is plain
    with pytest.raises(DataError, match="no 'flip' view"):
        with_views(pa.table({"image_id": ["a"]}), plain[:1], ("flip",), path=path)
