"""The ``energy_confusion`` wrapper (ECAML): hand values, reduction to the base loss, where its
gradient goes (the embedding layer, never the trunk), the row-norm penalty, gradcheck and
errors. The partner draw and batches without a pair of different classes:
test_energy_confusion_partners.py. Two-worker exactness: tests/train/test_distributed.py."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.func import functional_call

from dml.losses.base import logged_terms
from dml.batch import Batch, ModelOutput
from dml.errors import ConfigError
from dml.losses import build_loss
from dml.models import EmbeddingModel
from dml.train.learner import MetricLearner

BASE = {"name": "binomial_deviance"}
LABELS = torch.tensor([0, 0, 1, 1])
# With W = I and b = 0 these features are the embeddings z.
FEATURES = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 2.0], [0.0, 3.0]], dtype=torch.float64)


def _layer(weight: torch.Tensor, bias: torch.Tensor | None = None) -> nn.Linear:
    layer = nn.Linear(weight.shape[1], weight.shape[0]).double()
    with torch.no_grad():
        layer.weight.copy_(weight)
        layer.bias.copy_(torch.zeros(weight.shape[0]) if bias is None else bias)
    return layer


def _call(loss, layer: nn.Linear, features: torch.Tensor = FEATURES, labels: torch.Tensor = LABELS,
          step: int = 0) -> torch.Tensor:
    output = ModelOutput(embeddings=layer(features), features=features)
    return loss.forward_batch(output, Batch(images=None, index=torch.arange(len(labels)), labels=labels,
                                            step=step))


def _energy_confusion(layer: nn.Linear | None, **knobs) -> nn.Module:
    return build_loss({"name": "energy_confusion", "base": BASE, **knobs}, embedding_head=layer)


def test_by_hand_every_other_class_row_a_partner() -> None:
    # r = B - 1: every anchor takes every row of another class, and each unordered pair counts
    # once. E = (1/w) Σ_{i<j, y_i != y_j} ½ ‖z_i − z_j‖² with w = 4 negative pairs:
    # (0,2) 4, (0,3) 9, (1,2) 1 + 4 = 5, (1,3) 1 + 9 = 10 -> ½ · 28 / 4 = 3.5. The positive
    # pairs (0,1) and (2,3) are never drawn.
    layer = _layer(torch.eye(2))
    base = build_loss(BASE)(layer(FEATURES), LABELS)
    loss = _energy_confusion(layer, weight=0.25, partners=3)
    with logged_terms() as terms:
        assert _call(loss, layer).item() == pytest.approx(base.item() + 0.25 * math.log(3.5), abs=1e-12)
    assert terms["energy_confusion"] == pytest.approx(math.log(3.5))
    assert terms["row_norm"] == 0.0  # unit rows
    # W = 2I: z doubles, E = 14, and each row's squared norm is 4: penalty 0.5/2 * (9 + 9) = 4.5
    double = _layer(2 * torch.eye(2))
    base = build_loss(BASE)(double(FEATURES), LABELS)
    expected = base.item() + 0.25 * math.log(14.0) + 4.5
    assert _call(_energy_confusion(double, weight=0.25, partners=3), double).item() == pytest.approx(expected, abs=1e-12)


def test_by_hand_few_random_partners_each() -> None:
    # Uneven classes, r = 2: the drawn pairs, read from the draw, summed with explicit loops.
    layer = _layer(torch.tensor([[1.0, 0.5], [-0.5, 2.0]]), torch.tensor([0.1, -0.2]))
    features = torch.randn(7, 2, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    labels = torch.tensor([0, 0, 0, 1, 1, 2, 3])
    loss = _energy_confusion(layer, weight=1.0, partners=2, row_norm=0.0, seed=3)
    chosen = loss.draw(labels, step=5).tolist()
    z = layer(features).detach().tolist()
    w = sum(int(labels[i] != labels[j]) for i in range(7) for j in range(i + 1, 7))
    assert w == 3 * 4 + 2 * 2 + 1  # 0 with the others, 1 with 2 and 3, 2 with 3
    pairs = {(min(i, j), max(i, j)) for i in range(7) for j in range(7) if chosen[i][j]}
    assert all(labels[i] != labels[j] for i, j in pairs)
    energy = sum(0.5 * ((z[i][0] - z[j][0]) ** 2 + (z[i][1] - z[j][1]) ** 2) for i, j in pairs) / w
    base = build_loss(BASE)(layer(features), labels)
    value = _call(loss, layer, features, labels, step=5)
    assert value.item() == pytest.approx(base.item() + math.log(energy), abs=1e-12)


def test_weight_zero_is_the_base_loss_exactly() -> None:
    layer = _layer(torch.tensor([[1.0, 0.5], [-0.5, 2.0]]))
    base = build_loss(BASE)
    off = _energy_confusion(layer, weight=0.0, row_norm=0.5)
    output = ModelOutput(embeddings=layer(FEATURES), features=FEATURES)
    batch = Batch(images=None, index=torch.arange(4), labels=LABELS)
    with logged_terms() as terms:
        off_value = off.forward_batch(output, batch)
    assert torch.equal(off_value, base.forward_batch(output, batch))
    assert set(terms) == {"base"}  # neither log E nor the penalty is computed


class _Trunk(nn.Module):
    """A one-layer trunk with its own weights."""

    out_dim = 5

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Linear(6, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.net(x))


def _learner(weight: float, seed: int = 0) -> MetricLearner:
    torch.manual_seed(seed)
    model = EmbeddingModel(_Trunk(), 4)
    loss = build_loss({"name": "energy_confusion", "weight": weight, "partners": 3, "base": BASE},
                      embedding_head=model.head)
    return MetricLearner(model, loss)


def _images(seed: int = 1) -> Batch:
    g = torch.Generator().manual_seed(seed)
    return Batch(images=torch.randn(8, 6, generator=g), index=torch.arange(8),
                 labels=torch.tensor([0, 0, 1, 1, 2, 2, 3, 3]))


def _gradients(learner: MetricLearner) -> dict[str, torch.Tensor]:
    learner.zero_grad()
    learner(_images())[0].backward()
    return {name: p.grad.clone() for name, p in learner.named_parameters()}


def test_the_trunk_gradient_is_the_base_losses_alone_and_the_layer_gets_the_term() -> None:
    plain, confused = _gradients(_learner(0.0)), _gradients(_learner(0.5))
    assert set(plain) == set(confused) == {"model.trunk.net.weight", "model.trunk.net.bias",
                                           "model.head.weight", "model.head.bias"}
    # b cancels out of every z_i - z_j: the energy moves W alone
    for name in ("model.trunk.net.weight", "model.trunk.net.bias", "model.head.bias"):
        assert torch.equal(plain[name], confused[name]), name
    assert not torch.allclose(plain["model.head.weight"], confused["model.head.weight"])


def test_the_layer_stays_the_models_own() -> None:
    learner = _learner(0.5)
    # one parameter set, one state-dict entry per weight: the loss holds no copy of W, b
    assert [n for n, _ in learner.loss.named_parameters()] == []
    assert not any(key.startswith("loss.") for key in learner.state_dict())


def test_the_loss_is_fixed_by_seed_and_step() -> None:
    layer = _layer(torch.tensor([[1.0, 0.5], [-0.5, 2.0]]))
    features = torch.randn(10, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    labels = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3, 4, 4])
    loss = _energy_confusion(layer, weight=1.0, partners=2)
    first = _call(loss, layer, features, labels, step=7)
    assert torch.equal(_call(loss, layer, features, labels, step=7), first)
    assert _call(loss, layer, features, labels, step=8) != first
    other = _energy_confusion(layer, weight=1.0, partners=2, seed=1)
    assert _call(other, layer, features, labels, step=7) != first


def test_gradcheck_of_the_embedding_layer_through_the_model() -> None:
    # The embedding layer's gradient is the base loss's plus the term's. The trunk's is not
    # checked against finite differences: by design it leaves out how the term moves with
    # the trunk features (they are detached in its branch).
    learner = _learner(0.7).double()
    batch = _images()
    batch = batch.replace(images=batch.images.double())
    params = {name: p.detach().clone().requires_grad_(True) for name, p in learner.named_parameters()
              if name.startswith("model.head.")}
    names = list(params)

    def run(*values: torch.Tensor) -> torch.Tensor:
        return functional_call(learner, dict(zip(names, values)), (batch,))[0]

    assert torch.autograd.gradcheck(run, tuple(params.values()))


def test_errors_name_what_is_wrong() -> None:
    with pytest.raises(ConfigError, match="loss.partners"):
        _energy_confusion(None, partners=0)
    with pytest.raises(ConfigError, match="loss.row_norm"):
        _energy_confusion(None, row_norm=-1.0)
    with pytest.raises(ConfigError, match="model.embed_dim"):
        _energy_confusion(nn.Identity())
    layer = _layer(torch.eye(2))
    with pytest.raises(ValueError, match="embedding layer"):
        _call(_energy_confusion(None), layer)
    with pytest.raises(ValueError, match="forward_batch"):  # a bare call has no trunk features
        _energy_confusion(_layer(torch.ones(3, 2)))(torch.randn(4, 3, dtype=torch.float64), LABELS)
    output = ModelOutput(embeddings=layer(FEATURES), features=FEATURES)
    with pytest.raises(ValueError, match="'labels'"):
        _energy_confusion(layer).forward_batch(output, Batch(images=None, index=torch.arange(4),
                                                             counts=torch.ones(4, 2)))


def test_over_a_proxy_loss_the_proxies_stay_the_wrappers_parameters() -> None:
    layer = _layer(torch.tensor([[1.0, 0.5], [-0.5, 2.0]]))
    base = {"name": "proxy_anchor", "num_classes": 2, "embed_dim": 2}
    torch.manual_seed(0)
    plain = build_loss(base).double()
    torch.manual_seed(0)
    wrapped = build_loss({"name": "energy_confusion", "weight": 0.3, "partners": 3, "base": base},
                         embedding_head=layer).double()
    assert [n for n, _ in wrapped.named_parameters()] == ["base.proxies"]
    z = layer(FEATURES)
    energy = wrapped.energy(z.detach(), LABELS, step=0)  # r = B - 1: every other row a partner
    penalty = 0.5 / 2 * ((layer.weight.detach().pow(2).sum(1) - 1) ** 2).sum()
    expected = plain(z, LABELS) + 0.3 * torch.log(energy) + penalty
    torch.testing.assert_close(_call(wrapped, layer), expected)


def test_the_gradient_is_the_same_on_every_run() -> None:
    # a gather's scattered backward sums in a thread-dependent order; the Gram form does not
    torch.manual_seed(0)
    layer = nn.Linear(32, 16)
    features = torch.randn(48, 32)
    labels = torch.arange(12).repeat_interleave(4)
    loss = build_loss({"name": "energy_confusion", "weight": 0.5, "base": BASE}, embedding_head=layer)
    runs = []
    for _ in range(10):
        layer.zero_grad()
        value = loss.forward_batch(ModelOutput(embeddings=layer(features), features=features),
                                   Batch(images=None, index=torch.arange(48), labels=labels, step=3))
        value.backward()
        runs.append((value.detach(), layer.weight.grad.clone()))
    assert all(torch.equal(v, runs[0][0]) and torch.equal(g, runs[0][1]) for v, g in runs)
