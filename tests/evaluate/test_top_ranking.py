"""Ranking only each query's top max(R, K) (``full_map=False``) gives exactly the full ranking's metrics.

The full path is checked against a per-query loop in test_retrieval.py; here every route of
the pruned one (the symmetric self-ranking, tiles of a separate gallery, a sampled bound, a
bound that keeps too few and is replaced by the exact one, queries ranked in full because R is a large share
of the gallery, relevance callbacks, label sets, views, exact ties) must equal it.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dml.evaluate import full_ranking, geometry, retrieval_metrics, top_ranking

KS = (1, 2, 4, 8)


def clustered(n: int, n_classes: int, dim: int, seed: int, spread: float = 1.5) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, n_classes, n)
    centres = rng.standard_normal((n_classes, dim))
    return (centres[labels] + spread * rng.standard_normal((n, dim))).astype(np.float32), labels


def integer_codes(n: int, n_classes: int, dim: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Small-integer vectors: every dot product is exact in float32 and many tie."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, n_classes, n)
    centres = rng.integers(-2, 3, (n_classes, dim))
    return (centres[labels] + rng.integers(-1, 2, (n, dim))).astype(np.float32), labels


def assert_same(pruned: dict, full: dict) -> None:
    assert "map" not in pruned and "map" in full
    assert set(pruned) == set(full) - {"map"}
    for key, value in pruned.items():
        assert value == pytest.approx(full[key], abs=1e-12), key


def both(*args, **kwargs) -> tuple[dict, dict]:
    """``(full_map=False, full_map=True)`` metrics; the full one first, so that whatever a test
    records of the calls made after its first call belongs to the pruned one."""
    kwargs = {"ks": KS, "nmi": False, **kwargs}
    full = retrieval_metrics(*args, **kwargs)
    return retrieval_metrics(*args, **kwargs, full_map=False), full


@pytest.fixture
def small_sample(monkeypatch):
    """A sample of the gallery (not all of it) already at a few hundred items."""
    monkeypatch.setattr(top_ranking, "MIN_SAMPLE", 32)
    monkeypatch.setattr(top_ranking, "SAMPLE_EVERY", 8)


@pytest.fixture
def small_tiles(monkeypatch):
    """Many tiles and blocks on small data (blocks not dividing the rows)."""
    monkeypatch.setattr(top_ranking, "BLOCK", 96)
    monkeypatch.setattr(top_ranking, "ROW_TILE", 40)
    monkeypatch.setattr(top_ranking, "COLUMN_TILE", 56)


@pytest.mark.parametrize("seed", [0, 1])
def test_self_ranking_symmetric_tiles(seed, small_sample, small_tiles, monkeypatch):
    calls = []
    original = top_ranking._self_blocks
    monkeypatch.setattr(top_ranking, "_self_blocks", lambda *a: calls.append(1) or original(*a))
    x, y = clustered(500, 25, 12, seed)
    y[0] = 999  # a class seen once: no relevant item
    pruned, full = both(x, y, precision_ks=(5, 30), map_ks=(10,))
    assert calls, "a set ranked against itself by cosine takes the symmetric route"
    assert_same(pruned, full)
    assert pruned["queries_without_relevant"] == 1.0


def test_separate_gallery_with_exclusions(small_sample, small_tiles):
    x, y = clustered(600, 20, 10, 2)
    own = np.full(250, -1)
    own[100:] = np.arange(150)  # queries 100.. are also gallery rows 0..149
    q, ql = np.concatenate([x[:100], x[350:500]]), np.concatenate([y[:100], y[350:500]])
    g, gl = x[350:], y[350:]
    assert_same(*both(q, ql, g, gl, query_gallery_index=own))


@pytest.mark.parametrize("metric", ["euclidean", "dot"])
def test_euclidean_and_dot_self_ranking(metric, small_sample, small_tiles, monkeypatch):
    calls = []
    original = top_ranking._self_blocks
    monkeypatch.setattr(top_ranking, "_self_blocks", lambda *a: calls.append(1) or original(*a))
    x, y = clustered(400, 16, 8, 3)
    assert_same(*both(x * 2.5, y, metric=metric))
    assert bool(calls) == (metric == "dot")  # euclidean scores 2 q.g - |g|^2 are not symmetric


def test_exact_ties_count_against_the_query(small_sample, small_tiles):
    x, y = integer_codes(400, 12, 6, 4)
    assert_same(*both(x, y, metric="dot"))
    assert_same(*both(x[:150], y[:150], x[150:], y[150:], metric="dot"))


def test_hamming_codes(small_sample):
    rng = np.random.default_rng(5)
    y = rng.integers(0, 10, 300)
    bits = (rng.random((10, 32)) < 0.5)[y] ^ (rng.random((300, 32)) < 0.15)
    assert_same(*both(bits.astype(np.uint8), y, metric="hamming"))


def test_a_bound_that_keeps_too_few_is_replaced_by_the_exact_one(small_sample, small_tiles, monkeypatch):
    monkeypatch.setattr(top_ranking, "OVERSHOOT", 0.05)
    monkeypatch.setattr(top_ranking, "SAMPLE_MARGIN", 1)  # bounds near the sample's best: too few candidates
    full_rows, exact_rows = [], []
    original = full_ranking.rank_in_full
    monkeypatch.setattr(top_ranking, "rank_in_full", lambda q, rows, *a, **k: full_rows.append(len(rows)) or original(q, rows, *a, **k))
    kth_best = top_ranking.kth_best

    def spy(query, rows, gallery, columns, k, **kwargs):
        if columns is None:  # over the whole gallery: the exact bound
            exact_rows.append(len(rows))
        return kth_best(query, rows, gallery, columns, k, **kwargs)

    monkeypatch.setattr(top_ranking, "kth_best", spy)
    x, y = clustered(500, 10, 8, 6)
    full = retrieval_metrics(x, y, ks=KS, nmi=False)
    full_rows.clear()
    assert_same(retrieval_metrics(x, y, ks=KS, nmi=False, full_map=False), full)
    assert 100 < sum(exact_rows) < 500  # most queries were bounded again, exactly
    assert sum(full_rows) == 0  # and none of them ranked in full


def test_queries_with_a_large_share_relevant_are_ranked_in_full(small_sample, monkeypatch):
    full_rows = []
    original = full_ranking.rank_in_full
    monkeypatch.setattr(top_ranking, "rank_in_full", lambda q, rows, *a, **k: full_rows.append(len(rows)) or original(q, rows, *a, **k))
    x, y = clustered(300, 3, 6, 7)  # R ~ 100 of 300: beyond 1/DEEP of the gallery
    full = retrieval_metrics(x, y, ks=KS, nmi=False)
    full_rows.clear()
    assert_same(retrieval_metrics(x, y, ks=KS, nmi=False, full_map=False), full)
    assert sum(full_rows) == 300


def test_large_cutoffs_and_tiny_galleries():
    x, y = clustered(30, 3, 4, 8)
    assert_same(*both(x, y, ks=(1, 50), precision_ks=(100,)))  # K beyond the gallery
    assert_same(*both(x[:1], y[:1], x[1:4], y[1:4]))


def test_relevance_callbacks_and_label_sets(small_sample, small_tiles):
    x, fine = clustered(360, 30, 8, 9)
    coarse = fine // 10
    rel = fine[:120, None] == fine[None, 120:]
    rel[:, ::7] = False  # a relevance of one's own, not a class equality
    assert_same(*both(x[:120], gallery=x[120:], relevance=rel))
    pruned, full = both(x, {"fine": fine, "coarse": coarse})
    for key in pruned:
        assert pruned[key] == pytest.approx(full[key], abs=1e-12), key
    assert "fine/map" in full and "fine/map" not in pruned


def test_views_rank_by_the_nearest_pair(small_sample):
    x, y = clustered(240, 12, 6, 10)
    views = np.stack([x, x[:, ::-1].copy()], axis=1)
    assert_same(*both(views[:80], y[:80], views[80:], y[80:], metric="euclidean"))
    assert_same(*both(views, y))


def test_small_pending_budget_uses_row_tiles(small_sample, small_tiles, monkeypatch):
    calls = []
    original = top_ranking._self_blocks
    monkeypatch.setattr(top_ranking, "_self_blocks", lambda *a: calls.append(1) or original(*a))
    x, y = clustered(300, 15, 8, 11)
    assert_same(*both(x, y, block_bytes=4096))
    assert not calls  # the candidates kept for later blocks would not fit in 4 KiB


def test_candidate_ranks_by_hand():
    rows = np.array([0, 0, 0, 1, 1, 1, 1])
    values = np.array([0.9, 0.5, 0.5, 0.1, 0.7, 0.3, 0.2], dtype=np.float32)
    relevant = np.array([False, True, False, True, False, True, False])
    # row 0: 0.9, then a tie of a relevant and a non-relevant 0.5: the relevant one is listed
    # at the group's last position, 3, with the group's size, 2
    # row 1: 0.7, 0.3 (relevant, 2nd), 0.2, 0.1 (relevant, 4th); row 2: no candidate
    ranks, ties = top_ranking.candidate_ranks(rows, values, relevant, 3)
    assert ranks.tolist() == [[3, 0], [2, 4], [0, 0]]
    assert ties.tolist() == [[2, 0], [1, 1], [0, 0]]


def test_kth_best_over_the_whole_gallery():
    gallery = torch.arange(20, dtype=torch.float32)[:, None]  # scores q * g with q = 1: 0..19
    sample = top_ranking.sample_columns(20, torch.device("cpu"))
    assert sample.tolist() == list(range(20))  # smaller than MIN_SAMPLE: all of it
    want = torch.tensor([2, 4])
    k = top_ranking.sample_k(want, len(sample), 20)
    assert k.tolist() == [np.ceil(top_ranking.OVERSHOOT * 2) + top_ranking.SAMPLE_MARGIN, 6 + top_ranking.SAMPLE_MARGIN]
    bound = top_ranking.kth_best(torch.ones(2, 1), torch.arange(2), gallery, sample, k, metric="dot", sq_norms=None,
                               own=torch.tensor([19, -1]))
    # query 0 has its own item (19) excluded: its k-th best of 0..18; query 1 of 0..19
    assert bound.tolist() == [19 - k[0], 20 - k[1]]


def test_kth_best_in_chunks_equals_one_pass(monkeypatch):
    """The sample scored a chunk at a time, queries grouped by k in tiles, each keeping a
    running top k: the k-th best over the whole sample, the excluded item left out."""
    monkeypatch.setattr(top_ranking, "SAMPLE_CHUNK", 7)  # 40 sampled items: 6 chunks
    monkeypatch.setattr(top_ranking, "SAMPLE_TILE_BYTES", 4 * 7 * 16)  # 16 queries per tile
    g = torch.Generator().manual_seed(3)
    gallery, query = torch.randn(80, 5, generator=g), torch.randn(50, 5, generator=g)
    sample = torch.arange(0, 80, 2)
    rows = torch.arange(50).flip(0)
    want = torch.randint(1, 76, (50,), generator=g)
    own = torch.where(torch.arange(50) % 3 == 0, torch.randint(0, 80, (50,), generator=g), -1)
    k = top_ranking.sample_k(want, 40, 80)
    bound = top_ranking.kth_best(query, rows, gallery, sample, k, metric="dot", sq_norms=None, own=own)

    scores = query[rows] @ gallery[sample].T
    scores[(sample[None, :] == own[:, None])] = -torch.inf
    expected = scores.sort(dim=1, descending=True).values.gather(1, (k.clamp(max=40) - 1)[:, None]).squeeze(1)
    n_finite = scores.isfinite().sum(1)
    expected = torch.where(k > n_finite, torch.full_like(expected, top_ranking.LOWEST), expected)
    assert (k > n_finite).any() and (k <= n_finite).any()  # both cases are met
    torch.testing.assert_close(bound, expected, rtol=0, atol=1e-5)  # GEMMs of other shapes: rounding


def test_sample_is_seeded_and_sorted():
    a = top_ranking.sample_columns(50_000, torch.device("cpu"))
    assert len(a) == 50_000 // top_ranking.SAMPLE_EVERY
    assert torch.equal(a, top_ranking.sample_columns(50_000, torch.device("cpu")))
    assert bool((a[1:] > a[:-1]).all())
    assert torch.equal(a // top_ranking.SAMPLE_EVERY, torch.arange(len(a)))  # one item in each run
    assert len(top_ranking.sample_columns(5_000, torch.device("cpu"))) >= top_ranking.MIN_SAMPLE  # shorter runs


def test_unit_vectors_are_ranked_without_a_normalized_copy():
    unit = torch.nn.functional.normalize(torch.randn(50, 8), dim=1)
    assert geometry.prepare_embeddings(unit, "cosine").data_ptr() == unit.data_ptr()  # no copy the size of the data
    raw = unit * 3.0
    torch.testing.assert_close(geometry.prepare_embeddings(raw, "cosine"), unit)


def test_row_checks_run_a_chunk_at_a_time():
    from dml.evaluate.inputs import _first_row

    t = torch.zeros(9, 3)
    t[5, 1] = float("nan")
    assert _first_row(t, lambda c: torch.isnan(c).any(dim=1), chunk=2) == 5
    assert _first_row(t[:5], lambda c: torch.isnan(c).any(dim=1), chunk=2) is None
