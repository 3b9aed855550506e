"""Wrapper losses (a term added to any base loss): hand values, reduction to the base,
gradients, nested knobs, logged terms."""

from __future__ import annotations

import pytest
import torch

from dml.losses.base import logged_terms
from dml.batch import Batch, ModelOutput
from dml.errors import ConfigError
from dml.losses import build_loss

from .helpers import random_batch
from .test_hand_computed import EMBEDDINGS, LABELS


def test_embedding_norm_adds_the_mean_norm_of_the_raw_embeddings():
    # The rows of EMBEDDINGS have lengths 1, 2, 0.5 and 3: mean 1.625.
    base = build_loss("contrastive", neg_margin=0.7)
    wrapped = build_loss({"name": "embedding_norm", "weight": 0.2, "base": {"name": "contrastive", "neg_margin": 0.7}})
    expected = base(EMBEDDINGS, LABELS).item() + 0.2 * 1.625
    assert wrapped(EMBEDDINGS, LABELS).item() == pytest.approx(expected, abs=1e-12)
    l1 = build_loss({"name": "embedding_norm", "weight": 1.0, "p": 1, "base": {"name": "contrastive"}})
    x = torch.tensor([[3.0, -4.0], [1.0, 0.0]], dtype=torch.float64)
    assert l1(x, torch.tensor([0, 1])).item() == pytest.approx(
        build_loss("contrastive")(x, torch.tensor([0, 1])).item() + (7 + 1) / 2)


@pytest.mark.parametrize("base", [{"name": "multi_similarity", "base": 0.4}, {"name": "triplet", "mining": "hard"},
                                  {"name": "proxy_anchor", "margin": 0.2}])
def test_weight_zero_is_exactly_the_base_loss(base):
    embeddings, labels = random_batch(seed=2, batch=10, classes=3, dim=4)
    sizes = {"num_classes": 3, "embed_dim": 4} if base["name"] == "proxy_anchor" else {}
    torch.manual_seed(0)
    plain = build_loss({**base, **sizes})
    torch.manual_seed(0)
    wrapped = build_loss({"name": "embedding_norm", "weight": 0.0, "base": {**base, **sizes}})
    assert torch.equal(wrapped(embeddings, labels), plain(embeddings, labels))
    # The base's parameters (proxies) are the wrapper's parameters.
    assert [n for n, _ in wrapped.named_parameters()] == [f"base.{n}" for n, _ in plain.named_parameters()]


def test_gradcheck():
    embeddings, labels = random_batch(seed=3, batch=7, classes=3, dim=4)
    loss = build_loss({"name": "embedding_norm", "weight": 0.5, "base": {"name": "binomial_deviance"}})
    embeddings.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda e: loss(e, labels), (embeddings,))


def test_training_path_logs_base_and_term():
    embeddings, labels = random_batch(seed=1, batch=6, classes=2, dim=3)
    loss = build_loss({"name": "embedding_norm", "weight": 0.1, "base": {"name": "contrastive"}})
    output = ModelOutput(embeddings=embeddings, features=embeddings)
    with logged_terms() as terms:
        value = loss.forward_batch(output, Batch(images=None, index=torch.arange(6), labels=labels))
    assert set(terms) == {"base", "embedding_norm"}
    assert value.item() == pytest.approx(terms["base"] + 0.1 * terms["embedding_norm"])
    with logged_terms() as outside:
        pass
    assert outside == {}  # nothing is kept between blocks


def test_nested_knobs_are_checked_and_named():
    with pytest.raises(ConfigError, match=r"loss\.base\.marginn.*valid keys: mining, margin|loss\.base\.marginn"):
        build_loss({"name": "embedding_norm", "base": {"name": "triplet", "marginn": 0.1}})
    with pytest.raises(ConfigError, match=r"loss\.base\.margin must be >= 0"):
        build_loss({"name": "embedding_norm", "base": {"name": "triplet", "margin": -1}})
    with pytest.raises(ConfigError, match=r"loss\.base: the wrapper loss 'embedding_norm' needs a base loss"):
        build_loss({"name": "embedding_norm", "weight": 0.1})
