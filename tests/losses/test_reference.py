"""Every loss equals its slow loop-based reference (tests/losses/reference.py) in float64."""

from __future__ import annotations

import math

import pytest
import torch

from dml.label_similarity import equality_similarity, multiset_jaccard

from . import reference
from .helpers import make_loss, random_batch

# (seed, batch size, classes, singleton class)
BATCHES = [
    (0, 4, 2, False),
    (1, 6, 3, True),
    (2, 8, 2, False),
    (3, 9, 4, True),
    (4, 12, 3, False),
    (5, 12, 4, True),
]

PAIR_CASES = [
    ("contrastive", {}),
    ("contrastive", {"pos_margin": 0.3, "neg_margin": 1.2}),
    ("triplet", {}),
    ("triplet", {"margin": 0.5}),
    ("triplet", {"mining": "semihard"}),
    ("triplet", {"mining": "semihard", "margin": 0.6}),
    ("triplet", {"mining": "hard"}),
    ("triplet", {"mining": "hard", "margin": 0.05}),
    ("multi_similarity", {}),
    ("multi_similarity", {"epsilon": 0.3, "alpha": 1.0, "beta": 10.0, "base": 0.2}),
    ("multi_similarity", {"epsilon": math.inf}),  # mining disabled
    ("binomial_deviance", {}),
    ("binomial_deviance", {"alpha": 1.0, "beta": 0.2, "neg_weight": 5.0}),
    ("adaptive_triplet", {}),
    ("adaptive_triplet", {"margin": 0.3, "gamma": 0.0, "reduction": "non_zero"}),
    ("adaptive_triplet", {"margin": 0.05, "gamma": 1.0, "mining": "semihard"}),
    ("adaptive_triplet", {"block_elements": 7}),  # blocks of one anchor
]

PROXY_CASES = [
    ("proxy_anchor", {}),
    ("proxy_anchor", {"margin": 0.3, "alpha": 8.0}),
    ("normalized_softmax", {}),
    ("normalized_softmax", {"temperature": 0.5}),
    ("cosface", {}),
    ("cosface", {"scale": 10.0, "margin": 0.1}),
]

TOL = {"rel": 1e-6, "abs": 1e-6}


def _ids(case: tuple[str, dict]) -> str:
    name, kwargs = case
    return name + "".join(f"-{k}={v}" for k, v in kwargs.items())


@pytest.mark.parametrize("case", PAIR_CASES, ids=_ids)
@pytest.mark.parametrize("batch", BATCHES, ids=lambda b: f"seed{b[0]}-B{b[1]}-C{b[2]}")
def test_pair_loss_matches_reference(case: tuple[str, dict], batch: tuple) -> None:
    name, kwargs = case
    seed, size, classes, singleton = batch
    embeddings, labels = random_batch(seed, size, classes, singleton=singleton)
    loss = make_loss(name, classes, embeddings.shape[1], **kwargs)
    expected = getattr(reference, name)(embeddings, equality_similarity(labels), **kwargs)
    got = loss(embeddings, labels)
    assert got.dtype == torch.float64
    assert got.item() == pytest.approx(expected, **TOL)


@pytest.mark.parametrize("case", PAIR_CASES, ids=_ids)
@pytest.mark.parametrize("seed", [10, 11, 12])
def test_pair_loss_matches_reference_on_graded_similarity(
    case: tuple[str, dict], seed: int
) -> None:
    """Multiset-Jaccard similarity: positives are pairs sharing a label, negatives share none."""
    name, kwargs = case
    gen = torch.Generator().manual_seed(seed)
    counts = torch.randint(0, 3, (10, 4), generator=gen) * (torch.rand(10, 4, generator=gen) < 0.4)
    similarity = multiset_jaccard(counts).to(torch.float64)
    embeddings = torch.randn(10, 3, generator=gen, dtype=torch.float64)
    loss = make_loss(name, 4, 3, **kwargs)
    expected = getattr(reference, name)(embeddings, similarity, **kwargs)
    assert loss(embeddings, similarity=similarity).item() == pytest.approx(expected, **TOL)


@pytest.mark.parametrize("case", PROXY_CASES, ids=_ids)
@pytest.mark.parametrize("batch", BATCHES, ids=lambda b: f"seed{b[0]}-B{b[1]}-C{b[2]}")
def test_proxy_loss_matches_reference(case: tuple[str, dict], batch: tuple) -> None:
    name, kwargs = case
    seed, size, classes, singleton = batch
    embeddings, labels = random_batch(seed, size, classes, singleton=singleton)
    # One class more than the batch can hold: a proxy with no sample in the batch.
    loss = make_loss(name, classes + 1, embeddings.shape[1], **kwargs).double()
    expected = getattr(reference, name)(embeddings, labels, loss.proxies, **kwargs)
    assert loss(embeddings, labels).item() == pytest.approx(expected, **TOL)


def test_semihard_cases_are_not_vacuous() -> None:
    """At least some random batches above do contain semi-hard triplets."""
    values = []
    for seed, size, classes, singleton in BATCHES:
        embeddings, labels = random_batch(seed, size, classes, singleton=singleton)
        values.append(
            make_loss("triplet", classes, 3, mining="semihard")(embeddings, labels).item()
        )
    assert sum(v > 0 for v in values) >= 3
