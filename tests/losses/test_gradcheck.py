"""torch.autograd.gradcheck of every loss in float64 (embeddings, and proxies where present)."""

from __future__ import annotations

import pytest
import torch
from torch.func import functional_call

from .helpers import make_loss, random_batch

PAIR_CASES = [
    ("contrastive", {}),
    ("triplet", {"mining": "all"}),
    ("triplet", {"mining": "semihard", "margin": 0.6}),
    ("triplet", {"mining": "hard"}),
    ("multi_similarity", {}),
    ("binomial_deviance", {}),
    ("adaptive_triplet", {}),
    ("adaptive_triplet", {"mining": "semihard", "margin": 0.6}),
]
PROXY_CASES = [("proxy_anchor", {}), ("normalized_softmax", {}), ("cosface", {})]


@pytest.mark.parametrize(("name", "kwargs"), PAIR_CASES)
def test_gradcheck_pair_loss(name: str, kwargs: dict) -> None:
    embeddings, labels = random_batch(seed=3, batch=7, classes=3, dim=4, singleton=True)
    loss = make_loss(name, 3, 4, **kwargs)
    embeddings.requires_grad_(True)
    assert loss(embeddings, labels).item() > 0  # the check is not vacuous
    assert torch.autograd.gradcheck(lambda e: loss(e, labels), (embeddings,))


@pytest.mark.parametrize(("name", "kwargs"), PROXY_CASES)
def test_gradcheck_proxy_loss(name: str, kwargs: dict) -> None:
    embeddings, labels = random_batch(seed=4, batch=6, classes=3, dim=4, singleton=True)
    loss = make_loss(name, 4, 4, **kwargs).double()
    proxies = loss.proxies.detach().clone().requires_grad_(True)
    embeddings.requires_grad_(True)

    def run(e: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
        return functional_call(loss, {"proxies": p}, (e, labels))

    assert torch.autograd.gradcheck(run, (embeddings, proxies))
