"""Ranking metrics under tied scores: each is the expectation over every order of the tied
items (McSherry and Najork, ECIR 2008), checked against enumerating those orders; untied
rankings keep their values to the last bit; all-tied rankings score the chance level."""

from __future__ import annotations

from math import comb

import numpy as np
import pytest
import torch

from dml.evaluate import engine, kernels, relevance, retrieval_metrics
from dml.evaluate.metrics import (
    average_precision,
    average_precision_at_k,
    average_set_intersection,
    block_metrics,
    map_at_r,
    ndcg_at_k,
    precision_at_k,
    r_precision,
    ranks_from_relevance,
    recall_at_k,
)
from evaluate.helpers import tie_orders


def metrics_of(ranks, n, ties=None, k=3):
    """Every rank-based metric of a block as a dict of float64 arrays, mAP@K under both denominators."""
    out = block_metrics(ranks, n, ties, ks=(1, k), precision_ks=(k,), map_ks=(k,), asi=True)
    out[f"map@{k}/min_r_k"] = average_precision_at_k(ranks, n, k, ties, denominator="min_r_k")
    return out


@pytest.mark.parametrize("seed", range(40))
def test_every_metric_is_the_mean_over_the_tied_orders(seed):
    rng = np.random.default_rng(seed)
    n_items = int(rng.integers(2, 9))
    scores = rng.integers(0, 3, n_items).astype(np.float32)  # three levels: many ties
    rel = rng.random(n_items) < 0.5
    if not rel.any():
        rel[0] = True
    ranks, ties, n = kernels.relevant_ranks(torch.from_numpy(scores[None].copy()), torch.from_numpy(rel[None]))
    got = metrics_of(ranks, n, ties)
    per_order = [metrics_of(*ranks_from_relevance(rel[order][None])) for order in tie_orders(scores, rel)]
    for key, value in got.items():
        expected = np.mean([float(o[key][0]) for o in per_order])
        assert float(value[0]) == pytest.approx(expected, abs=1e-12), key


@pytest.mark.parametrize("seed", range(20))
@pytest.mark.parametrize("gain", ["linear", "exponential"])
def test_ndcg_is_the_mean_over_the_tied_orders(seed, gain):
    rng = np.random.default_rng(seed)
    n_items = int(rng.integers(2, 8))
    scores = rng.integers(0, 3, n_items).astype(np.float32)
    grades = np.round(rng.random(n_items) * (rng.random(n_items) < 0.6), 2)
    if not grades.any():
        grades[0] = 0.5
    gains = grades if gain == "linear" else 2.0 ** grades - 1
    k = int(rng.integers(1, n_items + 1))
    disc = 1 / np.log2(np.arange(2, k + 2))
    ideal = (np.sort(gains)[::-1][:k] * disc).sum()
    # each distinct arrangement of the grades stands for as many orders as any other
    values = [(gains[order][:k] * disc).sum() / ideal for order in tie_orders(scores, grades)]
    got = ndcg_at_k(torch.from_numpy(scores[None]), torch.from_numpy(grades[None]), k, gain)
    assert float(got[0]) == pytest.approx(np.mean(values), abs=1e-12)


def test_all_tied_scores_give_exactly_the_chance_level():
    n_items, n_rel, k = 60, 9, 5
    scores = torch.zeros(1, n_items)
    rel = torch.zeros(1, n_items, dtype=torch.bool)
    rel[0, torch.randperm(n_items, generator=torch.Generator().manual_seed(0))[:n_rel]] = True
    ranks, ties, n = kernels.relevant_ranks(scores, rel)
    got = {key: float(v[0]) for key, v in metrics_of(ranks, n, ties, k=k).items()}
    share = n_rel / n_items
    assert got[f"precision@{k}"] == pytest.approx(share, abs=1e-15)
    assert got["r_precision"] == pytest.approx(share, abs=1e-15)
    assert got["recall@1"] == pytest.approx(share, abs=1e-15)
    assert got[f"recall@{k}"] == pytest.approx(1 - comb(n_items - n_rel, k) / comb(n_items, k), abs=1e-15)
    # E[AP] = (R - 1)/(N - 1) + H_N (N - R) / (N (N - 1)) for a random order
    harmonic = sum(1 / i for i in range(1, n_items + 1))
    chance_ap = (n_rel - 1) / (n_items - 1) + harmonic * (n_items - n_rel) / (n_items * (n_items - 1))
    assert got["map"] == pytest.approx(chance_ap, abs=1e-12)


def test_all_tied_hamming_codes_score_the_chance_level():
    """Identical codes: every Hamming distance is 0. The earlier rule (ties against the query)
    put every relevant item last and scored far below chance."""
    codes = np.ones((40, 32), dtype=np.uint8)
    labels = np.repeat(np.arange(4), 10)
    got = retrieval_metrics(codes[:8], labels[:8], codes[8:], labels[8:], metric="hamming",
                            ks=(1, 8), precision_ks=(8,), nmi=False)
    share = np.mean([(labels[8:] == y).mean() for y in labels[:8]])
    assert got["recall@1"] == pytest.approx(share, abs=1e-12)
    assert got["precision@8"] == pytest.approx(share, abs=1e-12)
    assert got["r_precision"] == pytest.approx(share, abs=1e-12)


@pytest.mark.parametrize("full_map", [True, False])
def test_untied_rankings_are_unchanged_to_the_last_bit(full_map):
    """Without ties, the values equal the plain formulas (no tie information) exactly."""
    rng = np.random.default_rng(5)
    x = rng.standard_normal((120, 16)).astype(np.float32)
    y = rng.integers(0, 6, 120)
    per_query = engine.per_query_metrics(torch.from_numpy(x), torch.from_numpy(x), relevance.label_relevance(
        torch.from_numpy(y), torch.from_numpy(y)), exclude=torch.arange(120), map_ks=(5,), precision_ks=(4,),
        asi=True, full_map=full_map)
    scores = torch.from_numpy(x) @ torch.from_numpy(x).T
    scores.fill_diagonal_(-torch.inf)
    relevant = torch.from_numpy(y[:, None] == y[None, :]).fill_diagonal_(False)
    ranks, ties, n = kernels.relevant_ranks(scores, relevant)
    assert bool((ties[ranks > 0] == 1).all())  # no tie in this data
    plain = {"recall@1": recall_at_k(ranks, n, 1), "precision@4": precision_at_k(ranks, n, 4),
             "r_precision": r_precision(ranks, n), "map@r": map_at_r(ranks, n),
             "map@5": average_precision_at_k(ranks, n, 5), "asi": average_set_intersection(ranks, n)}
    if full_map:
        plain["map"] = average_precision(ranks, n)
    for key, value in plain.items():
        assert np.array_equal(per_query[key], value.numpy()), key
        assert torch.equal(metrics_of(ranks, n, ties, k=5).get(key, value), value), key


def test_a_truncated_ranking_keeps_ties_whole():
    """The top-ranks path (no full ranking) lists a tied group across its depth whole, and
    agrees with the full ranking on every metric it reports."""
    rng = np.random.default_rng(2)
    codes = rng.integers(0, 2, (2000, 12))  # 12 bits: Hamming distances tie in large groups
    labels = rng.integers(0, 60, 2000)  # R about 33: each query's top is pruned, not ranked in full
    full = retrieval_metrics(codes, labels, metric="hamming", ks=(1, 4), map_ks=(10,), precision_ks=(10,),
                             nmi=False)
    top = retrieval_metrics(codes, labels, metric="hamming", ks=(1, 4), map_ks=(10,), precision_ks=(10,),
                            nmi=False, full_map=False)
    for key, value in top.items():
        assert value == pytest.approx(full[key], abs=1e-12), key
