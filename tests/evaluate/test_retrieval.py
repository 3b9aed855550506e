"""retrieval_metrics end to end against a slow per-query reference; edge cases; validation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from dml.errors import ConfigError, DataError
from dml.evaluate import engine, geometry, kernels, retrieval_metrics
from dml.evaluate.protocols import query_gallery_index, same_set, split_query_gallery

KS = (1, 2, 4, 8)


def reference(query, qlab, gallery=None, glab=None, ks=KS, metric="cosine", exclude=None):
    """Python loop over queries: float64 scores, full argsort, metrics by loops over positions."""
    def prep(x):
        x = np.asarray(x, dtype=np.float64)
        return x / np.linalg.norm(x, axis=1, keepdims=True) if metric == "cosine" else x

    q = prep(query)
    self_ranking = gallery is None
    g, glab = (q, np.asarray(qlab)) if self_ranking else (prep(gallery), np.asarray(glab))
    sums, n_valid, n_without = {}, 0, 0
    for i in range(len(q)):
        keep = np.ones(len(g), dtype=bool)
        if self_ranking:
            keep[i] = False
        if exclude is not None and exclude[i] >= 0:
            keep[exclude[i]] = False
        scores, labels = g[keep] @ q[i], glab[keep]
        order = np.argsort(-scores, kind="stable")
        rel = [bool(labels[j] == qlab[i]) for j in order]
        R = sum(rel)
        if R == 0:
            n_without += 1
            continue
        n_valid += 1
        row = {f"recall@{k}": float(any(rel[:k])) for k in ks}
        row["precision@1"] = float(rel[0])
        row["r_precision"] = sum(rel[:R]) / R
        hits, ap, mapr = 0, 0.0, 0.0
        for pos, r in enumerate(rel, start=1):
            if r:
                hits += 1
                ap += hits / pos
                mapr += hits / pos if pos <= R else 0.0
        row["map@r"], row["map"] = mapr / R, ap / R
        for key, value in row.items():
            sums[key] = sums.get(key, 0.0) + value
    out = {key: value / n_valid for key, value in sums.items()}
    out["queries_without_relevant"] = float(n_without)
    return out


def clustered(n, n_classes, dim, seed, spread=1.2):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, n_classes, n)
    centers = rng.standard_normal((n_classes, dim))
    return (centers[labels] + spread * rng.standard_normal((n, dim))).astype(np.float32), labels


def assert_metrics_equal(got, expected):
    assert set(expected) <= set(got)
    for key, value in expected.items():
        assert got[key] == pytest.approx(value, abs=1e-9), key


@pytest.mark.parametrize("seed", [0, 1])
def test_query_set_against_itself_matches_reference(seed):
    x, y = clustered(90, 9, 12, seed)
    y[0] = 99  # a class seen once: no relevant item
    got = retrieval_metrics(x, y, ks=KS, nmi=False)
    expected = reference(x, y)
    assert expected["queries_without_relevant"] == 1.0
    assert_metrics_equal(got, expected)
    assert "nmi" not in got


@pytest.mark.parametrize("seed", [0, 1])
def test_separate_gallery_matches_reference(seed):
    x, y = clustered(150, 7, 10, seed)
    q, ql, g, gl = x[:40], y[:40], x[40:], y[40:]
    ql = ql.copy()
    ql[:2] = 123  # query classes absent from the gallery
    got = retrieval_metrics(q, ql, g, gl, ks=KS, nmi=False)
    expected = reference(q, ql, g, gl)
    assert expected["queries_without_relevant"] == 2.0
    assert_metrics_equal(got, expected)


def test_dot_similarity_matches_reference():
    x, y = clustered(80, 5, 8, 4)
    got = retrieval_metrics(x[:30], y[:30], x[30:] * 3.0, y[30:], metric="dot", nmi=False)
    assert_metrics_equal(got, reference(x[:30], y[:30], x[30:] * 3.0, y[30:], metric="dot"))


def test_query_gallery_index_excludes_the_same_item():
    x, y = clustered(60, 4, 8, 5)
    roles = np.array(["query"] * 20 + ["both"] * 20 + ["gallery"] * 20)
    qm, gm = split_query_gallery(roles)
    own = query_gallery_index(qm, gm)
    assert (own[:20] == -1).all() and (own[20:] == np.arange(20)).all()
    got = retrieval_metrics(x[qm], y[qm], x[gm], y[gm], query_gallery_index=own, nmi=False)
    assert_metrics_equal(got, reference(x[qm], y[qm], x[gm], y[gm], exclude=own))
    # without the index, "both" queries find themselves first: recall@1 goes up
    naive = retrieval_metrics(x[qm], y[qm], x[gm], y[gm], nmi=False)
    assert naive["recall@1"] > got["recall@1"]


def test_protocol_masks_and_same_set():
    q, g = split_query_gallery(np.array(["both", "both", "both"]))
    assert same_set(q, g)
    with pytest.raises(DataError, match="'test' at row 1"):
        split_query_gallery(["query", "test"])


def test_block_size_does_not_change_results():
    x, y = clustered(37, 5, 6, 7)
    one_block = retrieval_metrics(x, y, nmi=False)
    for block_bytes in (1, kernels.BYTES_PER_PAIR * 36 * 5, kernels.BYTES_PER_PAIR * 36 * 8):
        # 1 query per block; 5 per block (37 = 7*5 + 2); 8 per block (not dividing 37)
        assert retrieval_metrics(x, y, nmi=False, block_bytes=block_bytes) == one_block
    assert kernels.rows_per_block(36, kernels.BYTES_PER_PAIR * 36 * 5) == 5


def test_query_inside_gallery_is_excluded():
    # without exclusion every query would be its own nearest neighbour (recall@1 = 1)
    x = np.array([[1.0, 0.0], [0.0, 1.0], [0.7, 0.7]])
    got = retrieval_metrics(x, [0, 0, 1], ks=(1,), nmi=False)
    # query 0: ranking [2 (non), 1 (rel)] -> recall@1 0, map 1/2; query 1 likewise; query 2: none
    assert got["recall@1"] == 0.0
    assert got["map"] == pytest.approx(0.5)
    assert got["queries_without_relevant"] == 1.0


def test_lone_query():
    # alone, it has nothing to retrieve: no metric is defined, and that is said
    with pytest.raises(DataError, match="none of the 1 queries has a relevant item in the rest of the query set"):
        retrieval_metrics(np.ones((1, 4)), [3], ks=(1,))
    # a lone query against a gallery: ranking [non (0.99), rel (0.5)] -> recall@1 0, AP 1/2
    gallery = np.array([[1.0, 0.0, 0.0, 0.0], [1.0, 1.0, 1.0, 0.9]])
    got = retrieval_metrics(np.ones((1, 4)), [3], gallery, [3, 4], ks=(1, 2))
    assert (got["recall@1"], got["recall@2"], got["map"]) == (0.0, 1.0, 0.5)
    assert got["queries_without_relevant"] == 0.0


def test_k_larger_than_gallery():
    x, y = clustered(12, 3, 4, 8)
    got = retrieval_metrics(x, y, ks=(1, 50), nmi=False)
    assert got["recall@50"] == 1.0


def test_a_collapsed_embedding_scores_the_chance_level_whatever_the_order():
    # every score ties: each query has 7 others, 3 of them relevant
    x = np.ones((8, 3))
    y = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    got = retrieval_metrics(x, y, ks=(1,), nmi=False)
    assert got["recall@1"] == pytest.approx(3 / 7, abs=1e-15)
    assert got["r_precision"] == pytest.approx(3 / 7, abs=1e-15)
    assert got == retrieval_metrics(x, y[::-1].copy(), ks=(1,), nmi=False)


def test_torch_and_other_dtypes():
    x, y = clustered(50, 5, 8, 9)
    expected = retrieval_metrics(x, y, nmi=False)
    got = retrieval_metrics(torch.from_numpy(x).double(), torch.from_numpy(y), nmi=False)
    assert got == pytest.approx(expected)
    half = retrieval_metrics(torch.from_numpy(x).half(), y.astype(np.int32), nmi=False)
    assert set(half) == set(expected)


def test_custom_relevance_hook_multi_label():
    # relevance "shares at least one label" via the same streaming code
    rng = np.random.default_rng(10)
    x = rng.standard_normal((30, 6)).astype(np.float32)
    tags = rng.random((30, 4)) < 0.3
    t = torch.from_numpy(tags)

    def shares_label(rows):
        return (t[rows].float() @ t.float().T) > 0

    xt = geometry.prepare_embeddings(torch.from_numpy(x), "cosine")
    per_query = engine.per_query_metrics(xt, xt, shares_label, ks=(1,), exclude=torch.arange(30), block_bytes=200)
    scores = xt.double() @ xt.double().T
    for i in range(30):
        order = [j for j in torch.argsort(-scores[i]).tolist() if j != i]
        rel = [bool((tags[i] & tags[j]).any()) for j in order]
        if not any(rel):
            assert math.isnan(per_query["map"][i])
            continue
        hits, ap = 0, 0.0
        for pos, r in enumerate(rel, start=1):
            if r:
                hits += 1
                ap += hits / pos
        assert per_query["map"][i] == pytest.approx(ap / sum(rel))
        assert per_query["recall@1"][i] == float(rel[0])


def test_nmi_on_separated_blobs():
    x, y = clustered(200, 5, 16, 11, spread=0.02)
    assert retrieval_metrics(x, y, seed=3)["nmi"] == pytest.approx(1.0)


# ---------------------------------------------------------------- validation
def test_dimension_mismatch_names_both_shapes():
    with pytest.raises(DataError, match=r"query shape \(4, 8\).*gallery shape \(5, 6\)"):
        retrieval_metrics(np.ones((4, 8)), [0] * 4, np.ones((5, 6)), [0] * 5)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_is_data_error(bad):
    x = np.ones((5, 3))
    x[2, 1] = bad
    with pytest.raises(DataError, match="row 2"):
        retrieval_metrics(x, [0] * 5)
    with pytest.raises(DataError, match="gallery"):
        retrieval_metrics(np.ones((2, 3)), [0, 0], x, [0] * 5)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"query": np.ones(4), "query_labels": [0] * 4}, DataError, "2-D"),
        ({"query": np.ones((4, 2)), "query_labels": [0] * 3}, DataError, "3 entries"),
        ({"query": np.ones((4, 2)), "query_labels": [0.5] * 4}, DataError, "integers"),
        ({"query": np.zeros((0, 2)), "query_labels": []}, DataError, "0 rows"),
        ({"query": np.zeros((2, 2)), "query_labels": [0, 0]}, DataError, "all zeros"),
        ({"query": np.ones((2, 2)), "query_labels": [0, 0], "gallery": np.ones((2, 2))}, DataError, "together"),
        ({"query": np.ones((2, 2)), "query_labels": [0, 0], "metric": "l2"}, ConfigError, "metric"),
        ({"query": np.ones((2, 2)), "query_labels": [0, 0], "ks": (0,)}, ConfigError, "ks"),
    ],
)
def test_input_validation(kwargs, error, match):
    with pytest.raises(error, match=match):
        retrieval_metrics(**kwargs)


def test_class_names_and_a_single_k_are_accepted():
    x = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.2, 0.8]])
    by_id = retrieval_metrics(x, [0, 0, 1, 1], ks=(1,), nmi=False)
    assert retrieval_metrics(x, ["cat", "cat", "dog", "dog"], ks=1, nmi=False) == by_id
    gallery = np.array([[0.0, 1.0], [1.0, 0.1], [1.0, 0.0]])
    # one vocabulary for both sides: "dog" in the gallery is the queries' "dog"
    named = retrieval_metrics(x[:1], np.array(["dog"], dtype=object), gallery, ["dog", "cat", "dog"], ks=(1, 2),
                              nmi=False)
    assert named == retrieval_metrics(x[:1], [1], gallery, [1, 0, 1], ks=(1, 2), nmi=False)
    with pytest.raises(DataError, match="both be names or both be numbers"):
        retrieval_metrics(x[:1], ["dog"], gallery, [1, 0, 1], nmi=False)
    with pytest.raises(DataError, match="both be names or both be numbers"):  # a tensor holds numbers
        retrieval_metrics(x[:1], torch.tensor([1]), gallery, ["dog", "cat", "dog"], nmi=False)


def test_no_query_with_a_relevant_item_is_an_error():
    gallery = np.array([[0.0, 1.0], [1.0, 0.0]])
    with pytest.raises(DataError, match="none of the 2 queries has a relevant item in the gallery"):
        retrieval_metrics(np.eye(2), [0, 1], gallery, [2, 3], nmi=False)


def test_label_sets_share_one_ranking_and_equal_separate_calls():
    rng = np.random.default_rng(7)
    x = rng.normal(size=(60, 5)).astype(np.float32)
    fine = rng.integers(0, 12, 60)
    sets = {"fine": fine, "coarse": fine // 4}
    together = retrieval_metrics(x, sets, ks=(1, 2), asi=True, nmi=True)
    for name, labels in sets.items():
        alone = retrieval_metrics(x, labels, ks=(1, 2), asi=True, nmi=name == "fine")
        assert {f"{name}/{k}": v for k, v in alone.items()} == pytest.approx(
            {k: v for k, v in together.items() if k.startswith(f"{name}/")})
    g = rng.normal(size=(30, 5)).astype(np.float32)
    g_fine = rng.integers(0, 12, 30)
    per_query = {}
    both = retrieval_metrics(x, sets, g, {"coarse": g_fine // 4, "fine": g_fine}, ks=(1,), nmi=False,
                             per_query=per_query)
    assert both["coarse/map"] == pytest.approx(
        retrieval_metrics(x, fine // 4, g, g_fine // 4, ks=(1,), nmi=False)["map"])
    assert per_query["coarse/map"].shape == (60,)
    with pytest.raises(DataError, match="gallery_labels must be a mapping with the same names"):
        retrieval_metrics(x, sets, g, {"fine": g_fine}, nmi=False)
    with pytest.raises(DataError, match="no relevance or grades of one's own"):
        retrieval_metrics(x, sets, relevance=np.ones((60, 60), bool), nmi=False)
