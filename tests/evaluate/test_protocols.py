"""Each evaluation protocol against a loop over queries on tiny data, and the options of
retrieval_metrics that protocols use (own relevance, graded NDCG, euclidean and Hamming)."""

from __future__ import annotations

import numpy as np
import pytest

from dml.errors import ConfigError, DataError
from dml.evaluate import retrieval_metrics
from dml.evaluate.protocols import PROTOCOLS, EvalRows, build_protocol
from evaluate.helpers import tie_orders


def loop_metrics(query, gallery, relevant, *, own=None, metric="cosine", grades=None, ndcg_k=None, map_k=None,
                 precision_k=None):
    """Per query: score every gallery item, average each metric over every order of the tied
    items (the expectation the metrics report), then over the queries."""
    def prep(x):
        x = np.asarray(x, dtype=np.float64)
        return x / np.linalg.norm(x, axis=1, keepdims=True) if metric == "cosine" else x

    q, g = prep(query), prep(gallery)
    rows = []
    for i in range(len(q)):
        keep = np.ones(len(g), bool)
        if own is not None and own[i] >= 0:
            keep[own[i]] = False
        if metric == "euclidean":
            scores = -((g[keep] - q[i]) ** 2).sum(1)
        elif metric == "hamming":
            scores = -(g[keep] != q[i]).sum(1)
        else:
            scores = g[keep] @ q[i]
        rel = relevant[i][keep]
        grade = grades[i][keep] if grades is not None else np.zeros(len(rel))
        if not rel.any():
            continue
        per_order = [one_order(rel[order], np.where(rel, grade, 0.0)[order], np.where(rel, grade, 0.0),
                               ndcg_k=ndcg_k, map_k=map_k, precision_k=precision_k)
                     for order in tie_orders(scores, rel, grade)]
        rows.append({k: float(np.mean([o[k] for o in per_order])) for k in per_order[0]})
    return {k: float(np.mean([row[k] for row in rows])) for k in rows[0]}


def one_order(r, gains, all_gains, *, ndcg_k=None, map_k=None, precision_k=None):
    """The metrics of one strict ranking: ``r`` relevance and ``gains`` in ranked order."""
    R = int(r.sum())
    hits = np.cumsum(r)
    prec = hits / np.arange(1, len(r) + 1)
    row = {"recall@1": float(r[0]), "r_precision": float(r[:R].sum() / R),
           "map@r": float((prec[:R] * r[:R]).sum() / R), "map": float((prec * r).sum() / R)}
    if map_k:
        top = r[:map_k]
        row[f"map@{map_k}"] = float((prec[:map_k] * top).sum() / top.sum()) if top.any() else 0.0
    if precision_k:
        row[f"precision@{precision_k}"] = float(r[:precision_k].sum() / precision_k)
    if ndcg_k:
        disc = 1 / np.log2(np.arange(2, ndcg_k + 2))
        dcg = (gains[:ndcg_k] * disc[: len(gains[:ndcg_k])]).sum()
        ideal = np.sort(all_gains)[::-1][:ndcg_k]
        row[f"ndcg@{ndcg_k}"] = float(dcg / (ideal * disc[: len(ideal)]).sum())
    return row


def check(got, expected):
    for key, value in expected.items():
        assert got[key] == pytest.approx(value, abs=1e-9), key


def tiny_rows(seed=0, n=40):
    rng = np.random.default_rng(seed)
    fine = rng.integers(0, 6, n)
    rows = EvalRows(
        ids=np.asarray([f"i{k}" for k in range(n)], dtype=object),
        split=np.full(n, "test", dtype=object),
        role=np.asarray(rng.choice(["query", "gallery", "both"], n), dtype=object),
        domain=np.asarray(rng.choice(["photo", "sketch"], n), dtype=object),
        labels={"fine": fine, "middle": fine // 2, "coarse": fine // 4},
        counts=rng.integers(0, 3, (n, 5)).astype(np.float32),
    )
    vectors = rng.normal(size=(n, 4)) + fine[:, None] * 0.3
    return rows, vectors.astype(np.float32)


def test_registry_names():
    assert set(PROTOCOLS.names()) == {"self_retrieval", "query_gallery", "cross_domain", "per_scale", "multilabel"}


def test_self_retrieval_is_leave_one_out_over_every_row():
    rows, x = tiny_rows()
    got = build_protocol({"name": "self_retrieval"}).evaluate(rows, x, ks=(1,), nmi=False)
    labels = rows.labels["fine"]
    check(got, loop_metrics(x, x, labels[:, None] == labels[None, :], own=np.arange(len(x))))


def test_query_gallery_follows_roles_and_leaves_out_each_both_row_itself():
    rows, x = tiny_rows(1)
    got = build_protocol({"name": "query_gallery"}).evaluate(rows, x, ks=(1,), nmi=False)
    q = np.isin(rows.role, ["query", "both"])
    g = np.isin(rows.role, ["gallery", "both"])
    gallery_pos = np.cumsum(g) - 1
    own = np.where(rows.role[q] == "both", gallery_pos[q], -1)
    labels = rows.labels["fine"]
    check(got, loop_metrics(x[q], x[g], labels[q][:, None] == labels[g][None, :], own=own))


def test_cross_domain_ranks_sketches_against_photos_by_euclidean_distance():
    rows, x = tiny_rows(2)
    x = x * np.random.default_rng(9).uniform(0.5, 2.0, (len(x), 1)).astype(np.float32)  # norms matter
    protocol = build_protocol({"name": "cross_domain", "precision_ks": [3]})
    got = protocol.evaluate(rows, x, ks=(1,), nmi=False)
    q, g = rows.domain == "sketch", rows.domain == "photo"
    labels = rows.labels["fine"]
    expected = loop_metrics(x[q], x[g], labels[q][:, None] == labels[g][None, :], metric="euclidean", precision_k=3)
    check(got, expected)
    cosine = build_protocol({"name": "cross_domain", "metric": "cosine"}).evaluate(rows, x, ks=(1,), nmi=False)
    assert cosine["map"] != pytest.approx(got["map"])


def asi_loop(x, q, g, relevant, own):
    """ASI per query by a loop over depths (1/R * sum_{n<=R} P@n), averaged."""
    values = []
    for i in range(len(q)):
        keep = np.ones(len(g), bool)
        if own[i] >= 0:
            keep[own[i]] = False
        scores = (g[keep] / np.linalg.norm(g[keep], axis=1, keepdims=True)) @ (q[i] / np.linalg.norm(q[i]))
        rel = relevant[i][keep][np.lexsort((relevant[i][keep], -scores))]
        R = int(rel.sum())
        if R:
            values.append(np.mean([rel[:n].sum() / n for n in range(1, R + 1)]))
    return float(np.mean(values))


def per_scale_expected(rows, x):
    """Each scale by loops: its labelled queries (query/both) against its labelled gallery
    (gallery/both), each "both" query leaving itself out."""
    expected = {}
    for scale, labels in rows.labels.items():
        q = np.isin(rows.role, ["query", "both"]) & (labels >= 0)
        g = np.isin(rows.role, ["gallery", "both"]) & (labels >= 0)
        gallery_pos = np.cumsum(g) - 1
        own = np.where(g[q], gallery_pos[q], -1)
        relevant = labels[q][:, None] == labels[g][None, :]
        values = loop_metrics(x[q], x[g], relevant, own=own)
        values["asi"] = asi_loop(x, x[q], x[g], relevant, own)
        expected.update({f"{scale}/{k}": v for k, v in values.items()})
    return expected


def test_per_scale_reports_each_scale_with_asi_and_their_average():
    rows, x = tiny_rows(3)
    rows = EvalRows(ids=rows.ids, split=rows.split, role=np.full(len(rows), "both", dtype=object),
                    domain=rows.domain, labels=rows.labels)
    got = build_protocol({"name": "per_scale"}).evaluate(rows, x, ks=(1,), nmi=False)
    check(got, per_scale_expected(rows, x))
    for name in ("map", "map@r", "recall@1", "asi"):
        assert got[f"avg/{name}"] == pytest.approx(np.mean([got[f"{s}/{name}"] for s in rows.labels]))
    with pytest.raises(DataError, match=r"no labels at scale\(s\) \['species'\]"):
        build_protocol({"name": "per_scale", "scales": ["fine", "species"]}).evaluate(rows, x, nmi=False)


def test_per_scale_ranks_each_scale_benchmark_by_role_and_its_labelled_rows():
    """DyML Vehicle/Animal: a query/gallery benchmark per scale, each row labelled at one
    scale only (-1 elsewhere)."""
    rows, x = tiny_rows(5, n=60)
    rng = np.random.default_rng(5)
    benchmark = rng.integers(0, 3, len(rows))
    labels = {scale: np.where(benchmark == i, values, -1)
              for i, (scale, values) in enumerate(rows.labels.items())}
    rows = EvalRows(ids=rows.ids, split=rows.split, role=rows.role, domain=rows.domain, labels=labels)
    protocol = build_protocol({"name": "per_scale"})
    got = protocol.evaluate(rows, x, ks=(1,), nmi=False)
    check(got, per_scale_expected(rows, x))
    # the retrieval grid ranks the finest benchmark's own rows
    queries, results, _ = protocol.top_results(rows, x, n_queries=3, top_k=4)
    assert (labels["fine"][queries] >= 0).all() and (labels["fine"][results] >= 0).all()
    # other protocols refuse rows without a fine label instead of reading -1 as a class
    with pytest.raises(DataError, match=r"no 'fine' label.*per_scale"):
        build_protocol({"name": "self_retrieval"}).evaluate(rows, x, nmi=False)
    unlabelled = EvalRows(ids=rows.ids, split=rows.split, role=rows.role, domain=rows.domain,
                          labels={**labels, "coarse": np.full(len(rows), -1)})
    with pytest.raises(DataError, match="no query row is labelled at scale 'coarse'"):
        protocol.evaluate(unlabelled, x, nmi=False)


def test_multilabel_shares_a_label_and_grades_ndcg_by_jaccard():
    rows, x = tiny_rows(4)
    got = build_protocol({"name": "multilabel", "map_ks": [5], "ndcg_ks": [4]}).evaluate(rows, x, ks=(1,), nmi=False)
    q = np.isin(rows.role, ["query", "both"])
    g = np.isin(rows.role, ["gallery", "both"])
    gallery_pos = np.cumsum(g) - 1
    own = np.where(rows.role[q] == "both", gallery_pos[q], -1)
    cq, cg = rows.counts[q], rows.counts[g]
    relevant = (cq > 0).astype(float) @ (cg > 0).astype(float).T > 0
    mins = np.minimum(cq[:, None, :], cg[None, :, :]).sum(-1)
    maxs = np.maximum(cq[:, None, :], cg[None, :, :]).sum(-1)
    jaccard = np.divide(mins, maxs, out=np.zeros_like(mins), where=maxs > 0)
    check(got, loop_metrics(x[q], x[g], relevant, own=own, grades=jaccard, ndcg_k=4, map_k=5))


def test_quantized_gallery_replaces_the_gallery_vectors():
    rows, x = tiny_rows(5)
    protocol = build_protocol({"name": "cross_domain", "metric": "cosine"})
    queries, gallery, _ = protocol.split(rows)
    same = protocol.evaluate(rows, x, ks=(1,), gallery=x[gallery], metric="cosine", nmi=False)
    assert same == protocol.evaluate(rows, x, ks=(1,), nmi=False)
    with pytest.raises(DataError, match="the gallery holds 3 vectors"):
        protocol.evaluate(rows, x, gallery=x[:3], nmi=False)


def test_protocol_knobs_are_checked():
    with pytest.raises(ConfigError, match=r"protocol\.metric: 'manhattan'"):
        build_protocol({"name": "cross_domain", "metric": "manhattan"})
    with pytest.raises(ConfigError, match=r"unknown key\(s\) protocol\.k "):
        build_protocol({"name": "self_retrieval", "k": 3})
    with pytest.raises(ConfigError, match=r"protocol\.ndcg_ks must be positive"):
        build_protocol({"name": "multilabel", "ndcg_ks": [0]})


def test_retrieval_metrics_takes_a_relevance_of_ones_own():
    rows, x = tiny_rows(6)
    rng = np.random.default_rng(0)
    relevant = rng.random((10, 30)) < 0.3
    relevant[:, 0] = True
    got = retrieval_metrics(x[:10], gallery=x[10:], relevance=relevant, ks=(1,), nmi=False)
    check(got, loop_metrics(x[:10], x[10:], relevant))
    callback = retrieval_metrics(x[:10], gallery=x[10:], relevance=lambda r: __import__("torch").as_tensor(relevant)[r],
                                 ks=(1,), nmi=False, block_bytes=5 * 30 * 3)  # streamed in blocks of 3 queries
    assert callback == got


def test_hamming_ranking_of_binary_codes():
    rng = np.random.default_rng(7)
    codes = rng.integers(0, 2, (25, 16))
    labels = rng.integers(0, 3, 25)
    got = retrieval_metrics(codes[:8], labels[:8], codes[8:], labels[8:], metric="hamming", ks=(1,), nmi=False)
    check(got, loop_metrics(codes[:8], codes[8:], labels[:8, None] == labels[None, 8:], metric="hamming"))
    with pytest.raises(DataError, match="0/1 bits"):
        retrieval_metrics(codes[:8] * 2, labels[:8], codes[8:], labels[8:], metric="hamming", nmi=False)


def test_metric_conventions_are_protocol_knobs():
    """NDCG's gain and mAP@K's denominator follow the protocol's knobs; a bad value names its key."""
    rows, x = tiny_rows(3)
    rows.role[:] = "both"
    base = {"name": "multilabel", "map_ks": [3], "ndcg_ks": [5]}
    linear = build_protocol(base).evaluate(rows, x, ks=(1,), nmi=False)
    exponential = build_protocol({**base, "ndcg_gain": "exponential"}).evaluate(rows, x, ks=(1,), nmi=False)
    min_r_k = build_protocol({**base, "map_denominator": "min_r_k"}).evaluate(rows, x, ks=(1,), nmi=False)
    assert linear["ndcg@5"] != exponential["ndcg@5"] and linear["map@3"] == exponential["map@3"]
    assert min_r_k["map@3"] < linear["map@3"] and min_r_k["ndcg@5"] == linear["ndcg@5"]
    assert build_protocol({**base, "ndcg_gain": "exponential"}).conventions() == {
        "ndcg_gain": "exponential", "map_denominator": "found"}
    assert build_protocol({"name": "cross_domain", "map_ks": [10], "map_denominator": "min_r_k"}).conventions() == {
        "map_denominator": "min_r_k"}
    with pytest.raises(ConfigError, match=r"protocol\.ndcg_gain: 'squared' is not one of: linear, exponential"):
        build_protocol({**base, "ndcg_gain": "squared"})
    with pytest.raises(ConfigError, match=r"protocol\.map_denominator"):
        build_protocol({"name": "cross_domain", "map_denominator": "all"})
