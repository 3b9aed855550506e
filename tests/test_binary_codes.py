"""Hashed codes learned on class centres, stored in a faiss IndexLSH, ranked by Hamming distance."""

from __future__ import annotations

import faiss
import numpy as np
import pytest

from dml.errors import DataError
from dml.evaluate import retrieval_metrics
from dml.evaluate.experiment import evaluate_index
from dml.evaluate.protocols import EvalRows, build_protocol
from dml.binary_codes import class_centres, encode, fit_hash, hash_index, index_codes, train_hash_index
from dml.index import describe_index, load_index, save_index


def _blobs(classes: int = 6, per_class: int = 10, dim: int = 16, seed: int = 0):
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((classes, dim)) * 3
    labels = np.repeat(np.arange(classes), per_class)
    return (centres[labels] + rng.standard_normal((len(labels), dim))).astype(np.float32), labels


def test_class_centres_by_hand():
    x = np.array([[0.0, 2.0], [2.0, 0.0], [4.0, 4.0], [9.0, 9.0]], dtype=np.float32)
    centres = class_centres(x, np.array([1, 1, 3, -1]))  # -1: no label, left out
    assert centres.tolist() == [[1.0, 1.0], [4.0, 4.0]]
    with pytest.raises(DataError, match="at least 2 classes"):
        class_centres(x, np.array([0, 0, 0, 0]))


def test_codes_are_the_signs_of_the_map():
    rng = np.random.default_rng(1)
    weight, bias = rng.standard_normal((24, 8)).astype(np.float32), rng.standard_normal(24).astype(np.float32)
    index = hash_index(weight, bias)
    x = rng.standard_normal((5, 8)).astype(np.float32)
    expected = (x @ weight.T + bias > 0).astype(np.uint8)
    assert np.array_equal(encode(index, x), expected)
    index.add(x)
    assert np.array_equal(index_codes(index), expected)
    assert describe_index(index)["kind"] == "hash" and describe_index(index)["code_size"] == 3


def test_learned_codes_spread_the_centres_apart():
    x, labels = _blobs()
    centres = class_centres(x, labels)
    weight, bias = fit_hash(centres, 32, seed=0)
    codes = encode(hash_index(weight, bias), centres)
    distance = (codes[:, None] != codes[None]).sum(-1)[~np.eye(len(centres), dtype=bool)]
    # random codes would sit ~16 bits apart; the learned ones all differ in at least 10
    assert distance.min() >= 10 and distance.mean() >= 16
    # the spectral norm holds W's largest singular value at 1
    assert np.linalg.svd(weight, compute_uv=False)[0] == pytest.approx(1.0, rel=1e-3)
    assert np.array_equal(fit_hash(centres, 32, seed=0)[0], weight)  # seeded
    assert not np.array_equal(fit_hash(centres, 32, seed=1)[0], weight)


def test_more_bits_than_dimensions():
    x, labels = _blobs(dim=8)
    index = train_hash_index(x, labels, 128, seed=0)
    assert index.nbits == 128 and encode(index, x).shape == (len(x), 128)


def test_no_labels_is_a_clear_error():
    with pytest.raises(DataError, match="no class labels"):
        train_hash_index(np.zeros((4, 2), np.float32), None, 32)


def test_faiss_search_ranks_as_the_evaluation_does(tmp_path):
    """The saved index searches by Hamming distance itself: its distances are the evaluation's."""
    x, labels = _blobs(per_class=12)
    index = train_hash_index(x, labels, 64, seed=0)
    gallery, queries = x[::2], x[1::2]
    index.add(gallery)
    save_index(index, tmp_path / "hash64.faiss", info={})
    loaded, meta = load_index(tmp_path / "hash64.faiss")
    assert meta["kind"] == "hash"
    distances, ids = loaded.search(queries, len(gallery))
    q, g = encode(loaded, queries), index_codes(faiss.downcast_index(loaded))
    hamming = (q[:, None, :] != g[None, :, :]).sum(-1)
    assert np.array_equal(np.take_along_axis(hamming, ids, axis=1), distances.astype(int))
    # the evaluation ranks by the same distances; the nearest distance's tied items are first
    # in every order alike: R@1 is the share of relevant items among them
    m = retrieval_metrics(q, labels[1::2], g, labels[::2], metric="hamming", ks=(1,), nmi=False)
    relevant = labels[1::2][:, None] == labels[::2][None, :]
    nearest = hamming == hamming.min(axis=1, keepdims=True)
    assert m["recall@1"] == pytest.approx(np.mean((nearest & relevant).sum(1) / nearest.sum(1)))


def test_evaluate_index_encodes_queries_and_ranks_by_hamming():
    x, labels = _blobs(per_class=8)
    domain = np.where(np.arange(len(x)) % 2 == 0, "photo", "sketch").astype(object)
    rows = EvalRows(ids=np.arange(len(x)).astype(str).astype(object),
                    split=np.full(len(x), "test", dtype=object), role=np.full(len(x), "both", dtype=object),
                    domain=domain, labels={"fine": labels})
    protocol = build_protocol({"name": "cross_domain", "precision_ks": [4]})
    index = train_hash_index(x, labels, 32, seed=0)
    index.add(x[domain == "photo"])
    got = evaluate_index(rows, x, protocol, index, ks=(1,))
    want = protocol.evaluate(rows, encode(index, x), ks=(1,), gallery=index_codes(index),
                             metric="hamming", nmi=False)
    assert got == want and 0.5 < got["map"] <= 1.0
    # with views (image and mirror) the queries' codes come from the mean of the two
    views = np.stack([x, x[::-1]], axis=1)
    mean = protocol.evaluate(rows, encode(index, views.mean(axis=1)), ks=(1,), gallery=index_codes(index),
                             metric="hamming", nmi=False)
    assert evaluate_index(rows, views, protocol, index, ks=(1,)) == mean != want


def test_encode_refuses_views():
    index = hash_index(np.eye(4, dtype=np.float32), np.zeros(4, np.float32))
    with pytest.raises(DataError, match="code_vectors"):
        encode(index, np.ones((3, 2, 4), np.float32))
