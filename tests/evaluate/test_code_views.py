"""Codes of a flipped protocol come from the mean of each image's and its mirror's embedding, on
the gallery's side (the quantize stage's index) and the queries' (evaluation) alike; an
un-flipped protocol's codes are the stored vectors' as they always were."""

from __future__ import annotations

import numpy as np
import pytest

from dml.embed import read_embeddings, with_views, write_embeddings
from dml.evaluate import experiment
from dml.evaluate.experiment import evaluate_index
from dml.evaluate.protocols import EvalRows, build_protocol
from dml.binary_codes import encode, hash_index, index_codes
from dml.index import build_index, code_vectors, decode_gallery

DOMAINS = np.array(["sketch", "photo"] * 4, dtype=object)
LABELS = np.array([0, 0, 1, 1, 2, 2, 3, 3])


def _rows() -> EvalRows:
    n = len(LABELS)
    return EvalRows(ids=np.array([f"r{i}" for i in range(n)], dtype=object),
                    split=np.full(n, "test", dtype=object), role=np.full(n, "both", dtype=object),
                    domain=DOMAINS, labels={"fine": LABELS})


def _views() -> np.ndarray:
    """``[8, 2, 4]``: each mirror outweighs its image on the first two dimensions, so the sign
    of the mean differs there from the sign of the plain view."""
    rng = np.random.default_rng(0)
    plain = rng.uniform(0.5, 1.0, (len(LABELS), 4)) * rng.choice([-1.0, 1.0], (len(LABELS), 4))
    mirror = plain.copy()
    mirror[:, :2] *= -3.0
    return np.stack([plain, mirror], axis=1).astype(np.float32)


def _sign_hash():
    """A hash whose code is the sign of each coordinate: the codes can be read by eye."""
    return hash_index(np.eye(4, dtype=np.float32), np.zeros(4, dtype=np.float32))


def _stored(tmp_path, views: np.ndarray | None, plain: np.ndarray):
    """The vectors the quantize stage codes, read from an embeddings file as it reads them."""
    path = tmp_path / "e.parquet"
    write_embeddings(path, {"image_id": [f"r{i}" for i in range(len(plain))]}, plain, model_hash="x",
                     normalized=False, views=None if views is None else {"flip": views})
    table, vectors, _ = read_embeddings(path)
    return table, vectors


@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
def test_flipped_gallery_and_query_codes_are_the_mean_of_the_views(tmp_path, monkeypatch, metric):
    views = _views()
    protocol = build_protocol({"name": "cross_domain", "metric": metric, "precision_ks": [1], "flip": True})
    mean = views.mean(axis=1)
    mean_codes, plain_codes = (mean > 0).astype(np.uint8), (views[:, 0] > 0).astype(np.uint8)
    assert not np.array_equal(mean_codes, plain_codes)

    # gallery: the quantize stage's vectors, from the stored plain view and its flip column
    table, stored = _stored(tmp_path, views[:, 1], views[:, 0])
    coded = code_vectors(with_views(table, stored, protocol.views), protocol.metric)
    photos = DOMAINS == "photo"
    index = _sign_hash()
    index.add(coded[photos])
    assert np.array_equal(index_codes(index), mean_codes[photos])

    # queries: what evaluation encodes
    encoded = []

    def spy(lsh, vectors):
        encoded.append(encode(lsh, vectors))
        return encoded[-1]

    monkeypatch.setattr(experiment, "encode", spy)
    evaluate_index(_rows(), views, protocol, index, ks=(1,))
    assert len(encoded) == 1 and np.array_equal(encoded[0], mean_codes)


def test_code_vectors_follow_the_protocol_metric():
    views = _views()
    np.testing.assert_allclose(code_vectors(views, "euclidean"), views.mean(axis=1), rtol=1e-6)
    unit = views.mean(axis=1) / np.linalg.norm(views.mean(axis=1), axis=1, keepdims=True)
    np.testing.assert_allclose(code_vectors(views, "cosine"), unit, rtol=1e-6)
    assert code_vectors(views, "cosine").dtype == np.float32


def test_product_codes_of_a_flipped_protocol_rank_mean_queries_against_a_mean_gallery(monkeypatch):
    rng = np.random.default_rng(1)
    train = rng.standard_normal((300, 8)).astype(np.float32)
    views = np.repeat(_views(), 2, axis=2)  # 8 dimensions: 4 sub-quantizers of 2
    protocol = build_protocol({"name": "cross_domain", "precision_ks": [1], "flip": True})
    coded = code_vectors(views, protocol.metric)
    index = build_index(train, "pq", bits=32, metric="l2", seed=0)
    index.reset()
    index.add(coded[DOMAINS == "photo"])
    want = protocol.evaluate(_rows(), coded, ks=(1,), gallery=decode_gallery(index),
                             metric="euclidean", nmi=False)
    ranked = []
    evaluate = protocol.evaluate
    monkeypatch.setattr(protocol, "evaluate", lambda rows, vectors, **kw: ranked.append(vectors) or
                        evaluate(rows, vectors, **kw))
    assert evaluate_index(_rows(), views, protocol, index, ks=(1,)) == want
    assert len(ranked) == 1 and np.array_equal(ranked[0], coded)  # one mean vector per query


@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
def test_an_unflipped_protocol_codes_the_stored_vectors_as_before(tmp_path, metric):
    plain = _views()[:, 0]
    protocol = build_protocol({"name": "cross_domain", "metric": metric, "precision_ks": [1]})
    table, stored = _stored(tmp_path, None, plain)
    coded = code_vectors(with_views(table, stored, protocol.views), protocol.metric)
    assert coded is stored  # not even copied
    index = _sign_hash()
    index.add(coded[DOMAINS == "photo"])
    assert np.array_equal(index_codes(index), (plain[DOMAINS == "photo"] > 0).astype(np.uint8))
    # evaluation: the queries' codes are the stored vectors' codes, as before views existed
    before = protocol.evaluate(_rows(), encode(index, plain), ks=(1,), gallery=index_codes(index),
                               metric="hamming", nmi=False)
    assert evaluate_index(_rows(), plain, protocol, index, ks=(1,)) == before
