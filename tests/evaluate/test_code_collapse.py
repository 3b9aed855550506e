"""A quantizer whose codes collapse (most of the gallery on one code) shows in the metrics of
every quantized index and, past one half, in one notice naming the experiment and the index."""

from __future__ import annotations

import numpy as np
import pytest

from dml.evaluate.experiment import (
    collapse_notices,
    evaluate_test_split,
    print_collapse_notices,
)
from dml.evaluate.protocols import EvalRows, build_protocol
from dml.binary_codes import hash_index
from dml.index import build_index, code_collapse

#: Ten photos by sign pattern: seven on one code, the other three each on its own -> 4 codes.
PHOTO_SIGNS = [[1, 1, 1, 1]] * 7 + [[-1, 1, 1, 1], [1, -1, 1, 1], [1, 1, -1, 1]]
SKETCH_SIGNS = [[1, 1, 1, 1], [-1, 1, 1, 1], [1, -1, 1, 1], [1, 1, -1, 1]]


def _gallery() -> tuple[EvalRows, np.ndarray]:
    """Four sketches, then ten photos whose sign codes are :data:`PHOTO_SIGNS`."""
    signs = np.array(SKETCH_SIGNS + PHOTO_SIGNS, dtype=np.float32)
    vectors = signs * np.random.default_rng(0).uniform(0.5, 1.0, signs.shape).astype(np.float32)
    n = len(signs)
    labels = np.array([0, 1, 2, 3] + [0] * 7 + [1, 2, 3])
    rows = EvalRows(ids=np.array([f"r{i}" for i in range(n)], dtype=object),
                    split=np.full(n, "test", dtype=object), role=np.full(n, "both", dtype=object),
                    domain=np.array(["sketch"] * 4 + ["photo"] * 10, dtype=object), labels={"fine": labels})
    return rows, vectors


def _indexes(gallery: np.ndarray) -> dict:
    sign_hash = hash_index(np.eye(4, dtype=np.float32), np.zeros(4, dtype=np.float32))
    sign_hash.add(gallery)
    flat = build_index(gallery, "flat", metric="l2")
    return {"hash4": sign_hash, "flat": flat}


def test_collapse_of_hand_built_codes():
    codes = np.array([[7, 1]] * 7 + [[7, 2], [0, 1], [1, 7]], dtype=np.uint8)
    assert code_collapse(codes) == {"distinct_codes": 4, "largest_code_share": 0.7}
    assert code_collapse(np.eye(5, dtype=np.uint8)) == {"distinct_codes": 5, "largest_code_share": 0.2}


def test_every_quantized_index_reports_its_collapse_and_one_notice_names_it(capsys):
    rows, vectors = _gallery()
    protocol = build_protocol({"name": "cross_domain", "precision_ks": [1]})
    report = evaluate_test_split(rows, vectors, protocol, _indexes(vectors[4:]), ks=(1,))
    hashed = report["quantized"]["hash4"]
    assert hashed["distinct_codes"] == 4 and hashed["largest_code_share"] == pytest.approx(0.7)
    assert "distinct_codes" not in report["exact_index"]  # float vectors are no code
    print_collapse_notices("dase_mems", report)
    assert capsys.readouterr().out == (
        "notice: evaluate dase_mems: the gallery's codes collapse in hash4 (70.0% on one code, "
        "4 distinct); its ranking is mostly ties\n")


def test_product_codes_report_their_collapse_too():
    rows, vectors = _gallery()
    train = np.random.default_rng(1).standard_normal((300, 4)).astype(np.float32)
    protocol = build_protocol({"name": "cross_domain", "precision_ks": [1]})
    indexes = {}
    for kind in ("pq", "opq", "ivfpq"):
        index = build_index(train, kind, bits=16, metric="l2", seed=0)
        index.reset()
        index.add(np.repeat(vectors[4:5], 10, axis=0))  # ten copies of one photo: one code
        indexes[f"{kind}16"] = index
    report = evaluate_test_split(rows, vectors, protocol, indexes, ks=(1,))
    for name in indexes:
        assert report["quantized"][name]["distinct_codes"] == 1
        assert report["quantized"][name]["largest_code_share"] == 1.0
    assert collapse_notices("x", report["quantized"]) == [  # one line for all, in index order
        "evaluate x: the gallery's codes collapse in ivfpq16 (100.0% on one code, 1 distinct), "
        "opq16 (100.0% on one code, 1 distinct), pq16 (100.0% on one code, 1 distinct); "
        "their rankings are mostly ties"]


def test_no_notice_at_or_below_half():
    quantized = {"pq32": {"distinct_codes": 2, "largest_code_share": 0.5},
                 "hash64": {"distinct_codes": 9, "largest_code_share": 0.2},
                 "softpq32": {"map": 0.3}}  # figures without collapse keys: nothing to say
    assert collapse_notices("x", quantized) == []
    assert collapse_notices("x", {"pq32": {"distinct_codes": 2, "largest_code_share": 0.51}}) == [
        "evaluate x: the gallery's codes collapse in pq32 (51.0% on one code, 2 distinct); "
        "its ranking is mostly ties"]
