"""Pure metric functions against slow loop-based references, hand-computed values, edge cases."""

from __future__ import annotations

import doctest
import importlib
import math

import numpy as np
import pytest
import torch

from dml.evaluate import kernels
from dml.evaluate.metrics import (
    average_set_intersection,
    attribute_average_precision,
    average_precision,
    clustering_scores,
    map_at_r,
    precision_at_k,
    r_precision,
    ranks_from_relevance,
    recall_at_k,
)


# ---------------------------------------------------------------- slow reference (loops)
def reference_row(rel: list[bool], n_relevant: int | None = None, ks=(1, 2, 4, 8)) -> dict | None:
    """Every metric of one ranked relevance list, by direct loops over positions."""
    R = sum(rel) if n_relevant is None else n_relevant
    if R == 0:
        return None
    out = {}
    for k in ks:
        out[f"recall@{k}"] = 1.0 if any(rel[:k]) else 0.0
        out[f"precision@{k}"] = sum(rel[:k]) / k
    out["r_precision"] = sum(rel[:R]) / R
    hits, ap, mapr = 0, 0.0, 0.0
    for i, r in enumerate(rel, start=1):
        if r:
            hits += 1
            ap += hits / i
            if i <= R:
                mapr += hits / i
    out["map@r"] = mapr / R
    out["map"] = ap / R
    return out


def check_against_reference(rel: np.ndarray, ranks, n_rel, ks=(1, 2, 4, 8)) -> None:
    computed = {f"recall@{k}": recall_at_k(ranks, n_rel, k) for k in ks}
    computed |= {f"precision@{k}": precision_at_k(ranks, n_rel, k) for k in ks}
    computed |= {
        "r_precision": r_precision(ranks, n_rel),
        "map@r": map_at_r(ranks, n_rel),
        "map": average_precision(ranks, n_rel),
    }
    for q, row in enumerate(rel.tolist()):
        expected = reference_row(row, int(n_rel[q]), ks)
        for name, values in computed.items():
            if expected is None:
                assert math.isnan(values[q].item()), (name, q)
            else:
                assert values[q].item() == pytest.approx(expected[name], abs=1e-12), (name, q)


# ---------------------------------------------------------------- hand-computed examples
def test_hand_computed_ranking():
    # ranking [rel, non, rel], R = 2:
    #   MAP@R = (P@1*1 + P@2*0) / 2 = (1/1 + 0) / 2 = 0.5
    #   AP    = (P@1 + P@3) / 2     = (1 + 2/3) / 2 = 5/6
    #   R-Precision = 1 relevant in top 2 / 2 = 0.5; recall@1 = 1
    ranks, n = ranks_from_relevance([[True, False, True]])
    assert ranks.tolist() == [[1, 3]]
    assert map_at_r(ranks, n).item() == pytest.approx(0.5)
    assert average_precision(ranks, n).item() == pytest.approx((1 + 2 / 3) / 2)
    assert r_precision(ranks, n).item() == pytest.approx(0.5)
    assert recall_at_k(ranks, n, 1).item() == 1.0


def test_hand_computed_six_items():
    # ranking [non, rel, rel, non, non, rel], R = 3:
    #   relevant at positions 2, 3, 6 -> P@2 = 1/2, P@3 = 2/3, P@6 = 3/6
    #   MAP@R = (1/2 + 2/3) / 3 = 7/18 (position 6 is beyond R = 3)
    #   AP    = (1/2 + 2/3 + 1/2) / 3 = 5/9
    #   R-Precision = 2/3, recall@1 = 0, recall@2 = 1, P@4 = 2/4
    ranks, n = ranks_from_relevance([[False, True, True, False, False, True]])
    assert ranks.tolist() == [[2, 3, 6]]
    assert map_at_r(ranks, n).item() == pytest.approx(7 / 18)
    assert average_precision(ranks, n).item() == pytest.approx(5 / 9)
    assert r_precision(ranks, n).item() == pytest.approx(2 / 3)
    assert recall_at_k(ranks, n, 1).item() == 0.0
    assert recall_at_k(ranks, n, 2).item() == 1.0
    assert precision_at_k(ranks, n, 4).item() == pytest.approx(0.5)


# ---------------------------------------------------------------- random against reference
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_relevance_matches_reference(seed):
    rng = np.random.default_rng(seed)
    rel = rng.random((40, 30)) < rng.uniform(0.05, 0.4, size=(40, 1))
    rel[:3] = False  # queries without relevant items
    ranks, n_rel = ranks_from_relevance(rel)
    assert n_rel.tolist() == rel.sum(1).tolist()
    check_against_reference(rel, ranks, n_rel)


def test_truncated_ranking_counts_missing_relevant_as_not_found():
    # top-3 list [non, rel, non] of a query with R = 3 relevant items in the gallery
    rel = np.array([[False, True, False]])
    ranks, _ = ranks_from_relevance(rel)
    n_rel = torch.tensor([3])
    assert average_precision(ranks, n_rel).item() == pytest.approx((1 / 2) / 3)
    assert map_at_r(ranks, n_rel).item() == pytest.approx((1 / 2) / 3)
    assert r_precision(ranks, n_rel).item() == pytest.approx(1 / 3)
    check_against_reference(rel, ranks, n_rel, ks=(1, 2))


def test_no_relevant_and_empty_gallery_give_nan():
    ranks, n = ranks_from_relevance(np.zeros((2, 0), dtype=bool))  # lone query, nothing to rank
    assert ranks.shape == (2, 0)
    for values in (recall_at_k(ranks, n, 1), map_at_r(ranks, n), average_precision(ranks, n), r_precision(ranks, n)):
        assert torch.isnan(values).all()


def test_k_larger_than_gallery():
    ranks, n = ranks_from_relevance([[False, False, True]])
    assert recall_at_k(ranks, n, 1000).item() == 1.0
    assert precision_at_k(ranks, n, 10).item() == pytest.approx(0.1)


# ---------------------------------------------------------------- block ranking (kernels)
def test_relevant_ranks_matches_argsort_without_ties():
    rng = np.random.default_rng(3)
    scores = rng.standard_normal((25, 60)).astype(np.float32)
    relevant = rng.random((25, 60)) < 0.2
    order = np.argsort(-scores, axis=1, kind="stable")
    expected, expected_n = ranks_from_relevance(np.take_along_axis(relevant, order, axis=1))
    ranks, ties, n_rel = kernels.relevant_ranks(torch.from_numpy(scores.copy()), torch.from_numpy(relevant))
    assert torch.equal(n_rel, expected_n)
    assert torch.equal(ranks, expected)
    assert torch.equal(ties, (expected > 0).long())  # no score is tied


def test_relevant_ranks_list_each_tie_group_at_its_last_position_with_its_size():
    # scores: rel 0.5, non 0.5, rel 0.5, non 0.9, rel 0.1 -> 0.9 first, then a group of three
    # at positions 2-4 holding two relevant items, then the relevant 0.1 at 5
    scores = torch.tensor([[0.5, 0.5, 0.5, 0.9, 0.1]])
    relevant = torch.tensor([[True, False, True, False, True]])
    ranks, ties, _ = kernels.relevant_ranks(scores, relevant)
    assert ranks.tolist() == [[4, 4, 5]] and ties.tolist() == [[3, 3, 1]]


def test_excluded_item_is_ranked_nowhere():
    scores = torch.tensor([[0.2, -torch.inf, 0.7, 0.4]])
    relevant = torch.tensor([[True, False, False, True]])
    ranks, _, n = kernels.relevant_ranks(scores, relevant)
    assert ranks.tolist() == [[2, 3]] and n.tolist() == [2]


# ---------------------------------------------------------------- clustering
def test_nmi_and_ami_perfect_on_separated_blobs():
    rng = np.random.default_rng(0)
    centers = rng.standard_normal((6, 16)) * 10
    labels = np.repeat(np.arange(6), 30)
    x = (centers[labels] + 0.05 * rng.standard_normal((180, 16))).astype(np.float32)
    assert clustering_scores(x, labels, seed=0) == pytest.approx({"nmi": 1.0, "ami": 1.0})


def test_nmi_and_ami_of_random_labels_are_low_and_ami_is_chance_corrected():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((300, 8)).astype(np.float32)
    few = clustering_scores(x, rng.integers(0, 5, 300), seed=0)
    assert few["nmi"] < 0.2 and abs(few["ami"]) < 0.05
    many = clustering_scores(x, rng.integers(0, 60, 300), seed=0)
    assert many["nmi"] > 0.4 and abs(many["ami"]) < 0.05  # NMI grows with K on noise, AMI does not


def test_clustering_is_seeded():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((200, 8)).astype(np.float32)
    labels = rng.integers(0, 8, 200)
    assert clustering_scores(x, labels, seed=4) == clustering_scores(x, labels, seed=4)


def test_ami_matches_its_definition_on_a_hand_clustering():
    # two classes of four points, k-means finds them exactly: both scores are 1; a labelling
    # that splits each cluster in half carries no information about it: AMI <= 0
    x = np.array([[0, 0], [0, 0.1], [0.1, 0], [0.1, 0.1], [5, 5], [5, 5.1], [5.1, 5], [5.1, 5.1]],
                 dtype=np.float32)
    assert clustering_scores(x, [0, 0, 0, 0, 1, 1, 1, 1]) == pytest.approx({"nmi": 1.0, "ami": 1.0})
    halves = clustering_scores(x, [0, 0, 1, 1, 0, 0, 1, 1])
    assert halves["nmi"] < 0.5 and halves["ami"] <= 1e-9


# ---------------------------------------------------------------- docstring examples
@pytest.mark.parametrize(
    "module",
    ["dml.evaluate", "dml.evaluate.metrics", "dml.evaluate.kernels", "dml.evaluate.relevance", "dml.evaluate.engine", "dml.evaluate.protocols", "dml.index"],
)
def test_doctests(module):
    result = doctest.testmod(importlib.import_module(module), optionflags=doctest.ELLIPSIS)
    assert result.failed == 0


def test_attribute_average_precision_by_hand():
    # attribute 0: scores 0.9 (pos), 0.8 (neg), 0.7 (pos), 0.1 (neg): AP = (1/1 + 2/3) / 2
    # attribute 1: a tie of a positive and a negative at the top counts as one threshold:
    #              precision 1/2 at recall 1 -> AP = 0.5; the third row is unknown
    # attribute 2: no positive -> NaN
    scores = [[0.9, 0.5, 0.0], [0.8, 0.5, 0.1], [0.7, 0.9, 0.2], [0.1, 0.2, 0.3]]
    targets = [[1, 1, 0], [0, 0, 0], [1, 1, 0], [0, 0, 0]]
    known = [[True, True, True], [True, True, True], [True, False, True], [True, True, True]]
    ap = attribute_average_precision(scores, targets, known)
    assert ap[0] == pytest.approx((1 + 2 / 3) / 2)
    assert ap[1] == pytest.approx(0.5)
    assert np.isnan(ap[2])
    with pytest.raises(ValueError, match="must all be"):
        attribute_average_precision([[0.1]], [[1, 0]])


def asi_reference(ranked_labels: list, query_label) -> float:
    """ASI as HAPPIER defines it, literally: at each depth n <= R, the size of the multiset
    intersection of the top n retrieved labels' relevance with the ideal top n's, over n."""
    relevance = [int(label == query_label) for label in ranked_labels]
    ideal = sorted(relevance, reverse=True)
    R = sum(relevance)
    total = 0.0
    for n in range(1, R + 1):
        top, best = relevance[:n], ideal[:n]
        shared = sum(min(top.count(v), best.count(v)) for v in (0, 1))
        total += shared / n
    return total / R


@pytest.mark.parametrize("seed", range(5))
def test_average_set_intersection_matches_happier_definition(seed):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 3, size=(6, 40))
    rel = labels == 0
    rel[:, 0] = True  # every query has a relevant item
    ranks, n_rel = ranks_from_relevance(rel)
    got = average_set_intersection(ranks, n_rel).numpy()
    expected = [asi_reference(list(np.where(r, 0, 1)), 0) for r in rel]
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-12)


def test_average_set_intersection_edge_cases():
    # every item relevant, or all ahead of the rest: a perfect ranking
    assert average_set_intersection(*ranks_from_relevance([[True] * 7])).item() == pytest.approx(1.0, abs=1e-12)
    assert average_set_intersection(*ranks_from_relevance([[True, True, False, False]])).item() == pytest.approx(1.0)
    # no relevant item: undefined
    assert math.isnan(average_set_intersection(*ranks_from_relevance([[False, False]])).item())
    # all relevant items last: P@n = 0 for every n <= R
    assert average_set_intersection(*ranks_from_relevance([[False, False, True]])).tolist() == [0.0]
    # R larger than the gallery minus one: a query with 4 relevant items and a ranking of 2 (both
    # relevant) has P@1..P@4 = 1, 1, 2/3, 2/4
    got = average_set_intersection(torch.tensor([[1, 2]]), torch.tensor([4])).item()
    assert got == pytest.approx((1 + 1 + 2 / 3 + 2 / 4) / 4, abs=1e-12)
    # R larger than the ranked list (a top-k list): the relevant items never listed count as not found
    ranks = torch.tensor([[1, 3]])
    by_hand = (1 / 1 + 1 / 2 + 2 / 3 + 2 / 4 + 2 / 5) / 5
    assert average_set_intersection(ranks, torch.tensor([5])).item() == pytest.approx(by_hand, abs=1e-12)
    # thousands of relevant items: the harmonic-number form against the depth loop
    rel = np.random.default_rng(0).random(5000) < 0.6
    got = average_set_intersection(*ranks_from_relevance(rel[None, :])).item()
    hits = np.cumsum(rel)[: rel.sum()]
    assert got == pytest.approx(float((hits / np.arange(1, len(hits) + 1)).mean()), abs=1e-10)


def test_ranks_in_block_counts_what_a_full_sort_finds():
    """The counted ranks (no row sorted) equal the full sort's, ties and their group sizes
    included: scores with many ties, at scales from 1e-3 to 1e4, an excluded item (-inf), a
    row without a relevant item, one relevant item, relevant items all tied, two relevances
    at once, and blocks split among threads."""
    rng = np.random.default_rng(4)
    for trial in range(40):
        n_rows, n_cols = int(rng.integers(1, 90)), int(rng.integers(1, 400))
        scores = rng.standard_normal((n_rows, n_cols)) * rng.choice([1e-3, 1.0, 1e4])
        if trial % 3:
            scores = np.round(scores, int(rng.integers(0, 3)))  # many ties
        scores = scores.astype(np.float32)
        relevances = [rng.random((n_rows, n_cols)) < rng.choice([0.003, 0.05, 0.5]) for _ in range(1 + trial % 2)]
        if n_cols > 7:
            scores[:, 7] = -np.inf  # an excluded item: never relevant
            for rel in relevances:
                rel[:, 7] = False
        relevances[0][0] = False  # a row without a relevant item
        if n_rows > 1:
            relevances[0][1] = False
            relevances[0][1, rng.integers(n_cols)] = n_cols != 8  # one relevant item
        if n_rows > 2:
            scores[2] = 0.5  # every score tied
        found = [kernels.relevant_scores(torch.from_numpy(scores), torch.from_numpy(rel)) for rel in relevances]
        counted = kernels.ranks_in_block(torch.from_numpy(scores.copy()), found)
        ascending = torch.sort(torch.from_numpy(scores), dim=1).values
        for (ranks, ties), (rel_scores, n_rel) in zip(counted, found, strict=True):
            expected_ranks, expected_ties = kernels.ranks_among(ascending, rel_scores, n_rel)
            assert torch.equal(ranks, expected_ranks) and torch.equal(ties, expected_ties), trial


def test_counted_ranks_of_many_rows_against_a_small_gallery():
    """Over 4,096 rows counted in one thread's chunk (a small gallery): each row's
    buckets stay its own, however far its histogram starts."""
    rng = np.random.default_rng(7)
    scores = rng.standard_normal((70_000, 6)).astype(np.float32)
    relevant = rng.random((70_000, 6)) < 0.3
    found = [kernels.relevant_scores(torch.from_numpy(scores), torch.from_numpy(relevant))]
    (ranks, ties), = kernels.ranks_in_block(torch.from_numpy(scores.copy()), found)
    expected_ranks, expected_ties = kernels.ranks_among(torch.sort(torch.from_numpy(scores), dim=1).values, *found[0])
    assert torch.equal(ranks, expected_ranks) and torch.equal(ties, expected_ties)
