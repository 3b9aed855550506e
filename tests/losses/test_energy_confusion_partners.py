"""The ``energy_confusion`` partner draw (only rows of other classes, uniform, fixed by seed and
step) and batches without a pair of different classes (no positive pair, one class, one row):
finite values, and gradients that finite differences confirm."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.func import functional_call

from dml.losses.base import logged_terms
from dml.batch import Batch, ModelOutput
from dml.losses import build_loss
from dml.losses.energy_confusion import random_partners

BASE = {"name": "binomial_deviance"}


def _energy_confusion(layer: nn.Linear, **knobs) -> nn.Module:
    return build_loss({"name": "energy_confusion", "base": BASE, **knobs}, embedding_head=layer)


def _layer(seed: int = 0, d_in: int = 5, d_out: int = 3) -> nn.Linear:
    torch.manual_seed(seed)
    return nn.Linear(d_in, d_out).double()


def _value(loss: nn.Module, layer: nn.Linear, features: torch.Tensor, labels: torch.Tensor,
           step: int = 0) -> torch.Tensor:
    output = ModelOutput(embeddings=layer(features), features=features)
    return loss.forward_batch(output, Batch(images=None, index=torch.arange(len(labels)),
                                            labels=labels, step=step))


class _OnTheLayer(nn.Module):
    """The loss of one fixed batch as a function of the embedding layer's parameters."""

    def __init__(self, layer: nn.Linear, loss: nn.Module, features: torch.Tensor,
                 labels: torch.Tensor) -> None:
        super().__init__()
        self.layer, self.features, self.labels = layer, features, labels
        self.__dict__["loss"] = loss  # not a submodule: it holds no copy of the layer

    def forward(self) -> torch.Tensor:
        return _value(self.loss, self.layer, self.features, self.labels, step=2)


def test_partners_are_only_ever_of_another_class() -> None:
    g = torch.Generator().manual_seed(0)
    for trial in range(300):
        size = int(torch.randint(1, 16, (1,), generator=g))
        classes = int(torch.randint(1, 6, (1,), generator=g))
        partners = int(torch.randint(1, 8, (1,), generator=g))
        labels = torch.randint(0, classes, (size,), generator=g)
        chosen = random_partners(labels, partners, torch.Generator().manual_seed(trial))
        negative = labels[:, None] != labels[None, :]
        assert chosen.shape == (size, size) and chosen.dtype == torch.bool
        assert not (chosen & ~negative).any(), (labels, chosen)
        # r distinct partners, or every row of another class when there are fewer
        assert torch.equal(chosen.sum(1), negative.sum(1).clamp_max(partners)), (labels, partners)


def test_an_anchor_with_few_negatives_takes_them_all() -> None:
    labels = torch.tensor([0, 0, 0, 0, 0, 1, 2])  # rows 0-4: two negatives each, r = 3
    chosen = random_partners(labels, 3, torch.Generator().manual_seed(0))
    assert chosen[:5, 5:].all() and not chosen[:5, :5].any()
    assert chosen[5].sum() == 3 and chosen[6].sum() == 3 and not chosen[5, 5] and not chosen[6, 6]


def test_partners_are_uniform_among_the_other_classes() -> None:
    # anchor 0 has 6 negatives, draws 2: each is drawn with probability 1/3
    labels = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
    counts = torch.zeros(8)
    draws = 3000
    for seed in range(draws):
        counts += random_partners(labels, 2, torch.Generator().manual_seed(seed))[0].double()
    assert counts[:2].sum() == 0
    expected = draws / 3
    sd = (draws * (1 / 3) * (2 / 3)) ** 0.5
    assert ((counts[2:] - expected).abs() < 5 * sd).all(), counts


def test_partners_are_the_same_for_a_seed_and_step_and_change_with_either() -> None:
    loss = _energy_confusion(_layer(), partners=3, seed=4)
    order = torch.randperm(32, generator=torch.Generator().manual_seed(0))
    labels = torch.arange(8).repeat_interleave(4)[order]  # 8 classes x 4, shuffled
    first = loss.draw(labels, step=11)
    assert torch.equal(loss.draw(labels, step=11), first)
    assert torch.equal(_energy_confusion(_layer(1), partners=3, seed=4).draw(labels, step=11), first)
    assert not torch.equal(loss.draw(labels, step=12), first)
    assert not torch.equal(_energy_confusion(_layer(), partners=3, seed=5).draw(labels, step=11), first)


def test_no_positive_pair_is_finite_and_its_gradient_matches_finite_differences() -> None:
    # what the random sampler often gives: every row of its own class
    layer = _layer()
    features = torch.randn(6, 5, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    labels = torch.tensor([3, 0, 5, 1, 4, 2])
    loss = _energy_confusion(layer, weight=0.7, partners=2, row_norm=0.5)
    with logged_terms() as terms:
        value = _value(loss, layer, features, labels, step=2)
    value.backward()
    term = terms["energy_confusion"]
    assert value.isfinite() and math.isfinite(term) and term != 0.0  # the term is on
    assert layer.weight.grad.isfinite().all() and layer.bias.grad.isfinite().all()

    # the loss applies the very layer it was built with: swap that layer's values in place
    step = _OnTheLayer(layer, loss, features, labels)
    inputs = tuple(p.detach().clone().requires_grad_(True) for p in (layer.weight, layer.bias))
    assert torch.autograd.gradcheck(
        lambda weight, bias: functional_call(step, {"layer.weight": weight, "layer.bias": bias}, ()),
        inputs)


@pytest.mark.parametrize("labels", [torch.tensor([2, 2, 2, 2, 2]), torch.tensor([7])],
                         ids=["one class", "one row"])
def test_no_pair_of_different_classes_is_the_base_loss_exactly(labels: torch.Tensor) -> None:
    layer = _layer()
    features = torch.randn(len(labels), 5, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    base = build_loss(BASE)
    embeddings = layer(features)
    expected = base(embeddings, labels)
    (expected_grad,) = torch.autograd.grad(expected, layer.weight)
    loss = _energy_confusion(layer, weight=0.5, partners=3, row_norm=0.0)
    with logged_terms() as terms:
        value = _value(loss, layer, features, labels)
    assert torch.equal(value, expected)
    assert terms["energy_confusion"] == 0.0
    weight_grad, bias_grad = torch.autograd.grad(value, (layer.weight, layer.bias))
    assert torch.equal(weight_grad, expected_grad)  # the term adds exactly nothing
    assert weight_grad.isfinite().all() and bias_grad.isfinite().all()
    # with the row-norm penalty: the base loss plus the penalty, still finite
    penalized = _energy_confusion(layer, weight=0.5, partners=3, row_norm=0.5)
    value = _value(penalized, layer, features, labels)
    penalty = 0.5 / 3 * ((layer.weight.pow(2).sum(1) - 1) ** 2).sum()
    torch.testing.assert_close(value, expected + penalty)
    grads = torch.autograd.grad(value, (layer.weight, layer.bias))
    assert all(g.isfinite().all() for g in grads)


def test_coinciding_drawn_pairs_stay_finite() -> None:
    # W = 0: every embedding is b, E = 0 on every drawn pair; the energy is read as 1e-12
    layer = _layer()
    with torch.no_grad():
        layer.weight.zero_()
    features = torch.randn(4, 5, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    loss = _energy_confusion(layer, weight=0.5, partners=2, row_norm=0.5)
    value = _value(loss, layer, features, torch.tensor([0, 0, 1, 1]))
    grads = torch.autograd.grad(value, (layer.weight, layer.bias))
    assert value.isfinite() and all(g.isfinite().all() for g in grads)
