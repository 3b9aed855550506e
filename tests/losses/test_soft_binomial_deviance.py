"""SGML's soft-binomial deviance: hand values in both weighting directions, the reduction to
binomial deviance, the default form unchanged, gradients, degenerate batches, the per-pair
weights, where g comes from, and masking of unknown attributes."""

from __future__ import annotations

import math

import pytest
import torch

from dml.losses.base import logged_terms
from dml.batch import Batch, ModelOutput
from dml.checks import check_experiment
from dml.config import parse_params
from dml.errors import ConfigError
from dml.losses import BinomialDevianceLoss, build_loss
from dml.losses.base import cosine_matrix, pair_masks, weighted_mean
from dml.losses.soft_binomial_deviance import granularity_weights, relative_weights
from dml.label_similarity import attribute_similarity

from .helpers import random_batch
from .test_hand_computed import EMBEDDINGS, LABELS

# Attributes of the four hand-computed samples (labels [0, 0, 1, 1]); sample 1's third
# attribute is unknown. g of the negative pairs, over the attributes known for both:
#   0-2: cos([1,1,0], [1,1,0]) = 1          0-3: cos([1,1,0], [0,0,1]) = 0
#   1-2: cos([1,0], [1,1]) = 1/√2            1-3: [0,0] has no norm -> 0
ATTRIBUTES = torch.tensor([[1, 1, 0], [1, 0, 0], [1, 1, 0], [0, 0, 1]], dtype=torch.float64)
KNOWN = torch.tensor([[True, True, True], [True, True, False], [True, True, True], [True, True, True]])
LOGITS = torch.tensor([[2.0, -1.0, 0.5], [0.5, -2.0, 3.0], [1.0, 1.0, -1.0], [-1.0, 0.0, 2.0]],
                      dtype=torch.float64)


def _softplus(x: float) -> float:
    return math.log1p(math.exp(x))


def loop_reference(embeddings: torch.Tensor, labels: torch.Tensor, g: torch.Tensor, *, alpha: float,
                   beta: float, neg_weight: float, kappa: float, pos_kappa: float, delta: float) -> float:
    """L_SBD written out pair by pair (ordered pairs i != j), in Python floats:

    P: p = (1 + g)^pos_kappa;                          Σ p·softplus(−α(s − β)) / Σ p
    N: w = (1 − g)^kappa, or (1 + g)^|kappa| if < 0;  Σ w·softplus(α·C_n·(s − β − δ·g)) / Σ w
    An empty sum of weights gives 0."""
    x = [[v / math.sqrt(sum(u * u for u in row)) for v in row] for row in embeddings.tolist()]
    pos_sum = pos_weights = neg_sum = neg_weights = 0.0
    for i in range(len(x)):
        for j in range(len(x)):
            if i == j:
                continue
            s = sum(a * b for a, b in zip(x[i], x[j]))
            gij = float(g[i, j])
            if labels[i] == labels[j]:
                p = (1 + gij) ** pos_kappa
                pos_sum += p * _softplus(-alpha * (s - beta))
                pos_weights += p
            else:
                w = (1 - gij) ** kappa if kappa >= 0 else (1 + gij) ** -kappa
                neg_sum += w * _softplus(alpha * neg_weight * (s - beta - delta * gij))
                neg_weights += w
    positive = pos_sum / pos_weights if pos_weights else 0.0
    return positive + (neg_sum / neg_weights if neg_weights else 0.0)


def sgml(**knobs) -> torch.nn.Module:
    return build_loss("soft_binomial_deviance", **knobs)


def batch(labels=LABELS, attributes=ATTRIBUTES, known=KNOWN, epoch: int = 5) -> Batch:
    return Batch(images=None, index=torch.arange(len(labels)), labels=labels,
                 attributes=attributes, attribute_mask=known, epoch=epoch)


def output(embeddings=EMBEDDINGS, logits=LOGITS) -> ModelOutput:
    return ModelOutput(embeddings=embeddings, features=embeddings, heads={"attributes": logits})


def test_by_hand() -> None:
    # alpha=2, beta=0.5, C_n=25, kappa=1, delta=0.1, lambda_attr=0.5, g from the labels.
    # P (as binomial deviance): (softplus(-0.36) + log 2) / 2 ≈ 0.611204
    # N: w = (1-g) = 0, 1, 1-1/√2, 1 for 0-2, 0-3, 1-2, 1-3 (each ordered pair twice: the
    #    factor cancels); shifts δ·g = 0.1, 0, 0.1/√2, 0:
    #    [0 + softplus(50·(-0.78)) + (1-1/√2)·softplus(50·(0.32 - 0.1/√2)) + softplus(-5.25)]
    #    / (0 + 1 + (1-1/√2) + 1) ≈ 1.594488
    r = 1 / math.sqrt(2)
    positive = (_softplus(-0.36) + math.log(2)) / 2
    negative = (_softplus(-39) + (1 - r) * _softplus(50 * (0.32 - 0.1 * r)) + _softplus(-5.25)) / (2 + (1 - r))
    assert positive + negative == pytest.approx(0.611204 + 1.594488, abs=1e-5)
    # BCE over the 11 known entries: softplus(l) - t·l (sample 1's third logit, 3, is unknown).
    entries = [(2, 1), (-1, 1), (0.5, 0), (0.5, 1), (-2, 0), (1, 1), (1, 1), (-1, 0),
               (-1, 0), (0, 0), (2, 1)]
    bce = sum(_softplus(l) - t * l for l, t in entries) / 11
    loss = sgml(kappa=1.0, delta=0.1, attribute_weight=0.5, granularity="ground_truth")
    with logged_terms() as terms:
        value = loss.forward_batch(output(), batch())
    assert value.item() == pytest.approx(positive + negative + 0.5 * bce, abs=1e-9)
    assert terms["deviance"] == pytest.approx(positive + negative, abs=1e-9)
    assert terms["attribute_bce"] == pytest.approx(bce, abs=1e-9)
    # mean g over the 8 ordered negative pairs: 2·(1 + 0 + 1/√2 + 0) / 8
    assert terms["negative_granularity"] == pytest.approx((1 + r) / 4, abs=1e-9)


# Hand batch (see test_by_hand): positives 0-1 (s 0.68, g 1/√2) and 2-3 (s 0.5, g 0); negatives
# 0-2 (s 0.595, g 1), 0-3 (s -0.28, g 0), 1-2 (s 0.82, g 1/√2), 1-3 (s 0.395, g 0).
# Penalties with alpha 2, beta 0.5, C_n 25, delta 0.1: P softplus(-0.36) ≈ 0.529260, log 2;
# N softplus(-0.25) ≈ 0.575939, softplus(-39), softplus(50·(0.32 - 0.1/√2)) ≈ 12.464470,
# softplus(-5.25). Each ordered pair counts twice in both sums: the factor cancels.
@pytest.mark.parametrize(("kappa", "pos_kappa", "expected"), [
    # up: w = (1+g)^2 = 4, 1, (1+1/√2)^2, 1; p = (1+1/√2)^1.5, 1
    #   P = ((1+r)^1.5·0.529260 + log 2) / ((1+r)^1.5 + 1) ≈ 0.579992
    #   N = (4·0.575939 + sp(-39) + (1+r)^2·12.464470 + sp(-5.25)) / (6 + (1+r)^2) ≈ 4.333879
    (-2.0, 1.5, 0.579992 + 4.333879),
    # down: w = (1-g)^1.5 = 0, 1, (1-1/√2)^1.5, 1; p = (1+1/√2)^-2, 1
    #   P = ((1+r)^-2·0.529260 + log 2) / ((1+r)^-2 + 1) ≈ 0.651278
    #   N = (sp(-39) + (1-r)^1.5·12.464470 + sp(-5.25)) / (1 + (1-r)^1.5 + 1) ≈ 0.917766
    (1.5, -2.0, 0.651278 + 0.917766),
])
def test_both_directions_by_hand(kappa: float, pos_kappa: float, expected: float) -> None:
    g = attribute_similarity(ATTRIBUTES, KNOWN)
    by_loops = loop_reference(EMBEDDINGS, LABELS, g, alpha=2.0, beta=0.5, neg_weight=25.0, kappa=kappa,
                              pos_kappa=pos_kappa, delta=0.1)
    assert by_loops == pytest.approx(expected, abs=1e-5)
    loss = sgml(kappa=kappa, pos_kappa=pos_kappa, delta=0.1, attribute_weight=0.0,
                granularity="ground_truth")
    with logged_terms() as terms:
        value = loss.forward_batch(output(), batch())
    assert value.item() == pytest.approx(by_loops, abs=1e-12)
    assert terms["positive_granularity"] == pytest.approx((1 / math.sqrt(2)) / 2, abs=1e-12)


@pytest.mark.parametrize(("kappa", "pos_kappa"), [(-2.5, 0.0), (-1.0, 2.0), (0.0, -3.0), (2.0, -0.5),
                                                  (0.7, 3.0), (-3.0, -3.0)])
@pytest.mark.parametrize("seed", [0, 1])
def test_matches_the_pair_loops_on_random_batches(kappa: float, pos_kappa: float, seed: int) -> None:
    embeddings, labels = random_batch(seed=seed, batch=9, classes=3, dim=4)
    gen = torch.Generator().manual_seed(seed + 10)
    g = attribute_similarity(torch.rand(9, 5, generator=gen, dtype=torch.float64))
    knobs = {"alpha": 3.0, "beta": 0.4, "neg_weight": 10.0, "kappa": kappa, "pos_kappa": pos_kappa,
             "delta": 0.2}
    value = sgml(**knobs)(embeddings, labels, granularity=g)
    # torch's softplus is x above 20, off by less than e^-20
    assert value.item() == pytest.approx(loop_reference(embeddings, labels, g, **knobs), rel=1e-9)


def test_default_form_is_unchanged() -> None:
    # METHODS.md's form as computed before the signed knobs, with the base helpers: the
    # constructor's defaults and the sgml experiment's knobs must give the same bits.
    embeddings, labels = random_batch(seed=7, batch=12, classes=4, dim=5)
    gen = torch.Generator().manual_seed(8)
    attributes = (torch.rand(12, 6, generator=gen) < 0.5).double()
    known = torch.rand(12, 6, generator=gen) < 0.8
    g = attribute_similarity(attributes, known)
    experiment = {"alpha": 10.0, "beta": 0.5, "neg_weight": 5.0, "kappa": 1.0, "pos_kappa": 0.0, "delta": 0.1,
                  "attribute_weight": 1.0, "granularity": "ground_truth", "warmup_epochs": 2}
    for knobs in ({}, experiment):
        loss = sgml(**knobs)
        for dtype in (torch.float32, torch.float64):
            a = embeddings.to(dtype).clone().requires_grad_(True)
            b = embeddings.to(dtype).clone().requires_grad_(True)
            gd = g.to(dtype)
            s = cosine_matrix(a)
            pos, neg = pair_masks((labels[:, None] == labels[None, :]).to(dtype))
            w = torch.pow((1.0 - gd).clamp(0.0, 1.0), loss.kappa)
            negative = weighted_mean(loss.negative_penalty(s, loss.delta * gd), neg, w)
            before = loss.positive_term(s, pos) + negative
            now = loss(b, labels, granularity=gd)
            assert torch.equal(now, before)
            before.backward()
            now.backward()
            assert torch.equal(a.grad, b.grad)


@pytest.mark.parametrize(("kappa", "pos_kappa"), [(-2.0, 1.5), (2.0, -1.5)])
def test_gradcheck_each_direction(kappa: float, pos_kappa: float) -> None:
    embeddings, labels = random_batch(seed=6, batch=7, classes=3, dim=4, singleton=True)
    gen = torch.Generator().manual_seed(9)
    attributes = (torch.rand(7, 5, generator=gen) < 0.5).double()
    known = torch.rand(7, 5, generator=gen) < 0.8
    logits = torch.randn(7, 5, generator=gen, dtype=torch.float64, requires_grad=True)
    embeddings.requires_grad_(True)
    loss = sgml(kappa=kappa, pos_kappa=pos_kappa, delta=0.2, attribute_weight=0.7, granularity="ground_truth")

    def run(e, l):
        return loss.forward_batch(output(e, l), batch(labels, attributes, known))

    assert torch.autograd.gradcheck(run, (embeddings, logits))
    # g from the head's (detached) predictions: through the embeddings only, by design
    predicted = sgml(kappa=kappa, pos_kappa=pos_kappa, delta=0.2, granularity="predicted", warmup_epochs=0)
    fixed = logits.detach()
    assert torch.autograd.gradcheck(
        lambda e: predicted.forward_batch(output(e, fixed), batch(labels, attributes, known)), (embeddings,))
    # and through g itself (interior values, so that no clamp or max ties sit at the probe)
    g = (0.1 + 0.8 * torch.rand(7, 7, generator=gen, dtype=torch.float64)).requires_grad_(True)
    bare = sgml(kappa=kappa, pos_kappa=pos_kappa, delta=0.2)
    assert torch.autograd.gradcheck(lambda e, g: bare(e, labels, granularity=g), (embeddings, g))


def _degenerate_cases() -> list[tuple[str, torch.Tensor, torch.Tensor]]:
    """(what, labels, g): batches with no positive pair, no negative pair, one row, and g all
    0, all 1, or within float32's epsilon of 1 (tiny (1 - g)^kappa weights)."""
    mixed = torch.tensor([0, 0, 1, 1, 2])
    return [
        ("no positive pair", torch.arange(5), torch.full((5, 5), 0.5)),
        ("no negative pair", torch.zeros(5, dtype=torch.long), torch.full((5, 5), 0.5)),
        ("one row", torch.zeros(1, dtype=torch.long), torch.ones(1, 1)),
        ("g all 0", mixed, torch.zeros(5, 5)),
        ("g all 1", mixed, torch.ones(5, 5)),
        ("g nearly 1", mixed, torch.full((5, 5), 1 - 1e-7)),
    ]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("kappa", [-500.0, -3.0, 3.0, 500.0])
@pytest.mark.parametrize("pos_kappa", [-500.0, -3.0, 3.0, 500.0])
def test_finite_on_degenerate_batches(kappa: float, pos_kappa: float, dtype: torch.dtype) -> None:
    loss = sgml(kappa=kappa, pos_kappa=pos_kappa, delta=0.3)
    for what, labels, g in _degenerate_cases():
        embeddings = torch.randn(len(labels), 3, generator=torch.Generator().manual_seed(0), dtype=dtype)
        embeddings.requires_grad_(True)
        value = loss(embeddings, labels, granularity=g.to(dtype))
        value.backward()
        assert torch.isfinite(value), what
        assert bool(torch.isfinite(embeddings.grad).all()), what


def test_relative_weights_are_the_power_up_to_one_factor() -> None:
    gen = torch.Generator().manual_seed(3)
    g = torch.rand(6, 6, generator=gen, dtype=torch.float64)
    mask = torch.rand(6, 6, generator=gen) < 0.5
    for power in (-2.5, 1.5):
        w = relative_weights(g, power, mask)
        raw = (1 + g) ** power
        torch.testing.assert_close(w[mask], raw[mask] / raw[mask].max(), rtol=1e-14, atol=0)
    # any power: weights in [0, 1], the heaviest pair of the mask at exactly 1, none NaN
    for power in (-1e4, 1e4):
        w = relative_weights(g.float(), power, mask)
        assert bool(((w >= 0) & (w <= 1)).all()) and w[mask].max() == 1
    # kappa < 0 on negatives is (1 + g)^|kappa| relative to the mask
    torch.testing.assert_close(granularity_weights(g, -2.0, mask), relative_weights(g, 2.0, mask))


def test_granularity_by_hand() -> None:
    g = attribute_similarity(ATTRIBUTES, KNOWN)
    r = 1 / math.sqrt(2)
    assert g[0, 2] == pytest.approx(1) and g[0, 3] == 0 and g[1, 3] == 0
    assert g[1, 2] == pytest.approx(r) and g[2, 1] == pytest.approx(r)


@pytest.mark.parametrize("granularity", ["ground_truth", "predicted"])
def test_knobs_at_zero_are_exactly_binomial_deviance(granularity: str) -> None:
    embeddings, labels = random_batch(seed=5, batch=10, classes=3, dim=4)
    gen = torch.Generator().manual_seed(1)
    attributes = (torch.rand(10, 6, generator=gen) < 0.5).double()
    logits = torch.randn(10, 6, generator=gen, dtype=torch.float64)
    reference = BinomialDevianceLoss(alpha=3.0, beta=0.4, neg_weight=10.0)
    loss = sgml(alpha=3.0, beta=0.4, neg_weight=10.0, kappa=0.0, pos_kappa=0.0, delta=0.0,
                attribute_weight=0.0, granularity=granularity, warmup_epochs=0)
    a = embeddings.clone().requires_grad_(True)
    b = embeddings.clone().requires_grad_(True)
    expected = reference(a, labels)
    value = loss.forward_batch(output(b, logits), batch(labels, attributes, None))
    assert torch.equal(value, expected)
    expected.backward()
    value.backward()
    assert torch.equal(a.grad, b.grad)
    # and with any g given, kappa = pos_kappa = delta = 0 ignores it (-0.0 as well)
    g = attribute_similarity(attributes)
    assert torch.equal(loss(embeddings, labels, granularity=g), reference(embeddings, labels))
    negative_zero = sgml(alpha=3.0, beta=0.4, neg_weight=10.0, kappa=-0.0, pos_kappa=-0.0, delta=0.0)
    assert torch.equal(negative_zero(embeddings, labels, granularity=g), reference(embeddings, labels))


def test_attribute_weight_adds_exactly_the_masked_bce() -> None:
    base = sgml(kappa=0.0, delta=0.0, attribute_weight=0.0)(EMBEDDINGS, LABELS)
    value = sgml(kappa=0.0, delta=0.0, attribute_weight=2.0).forward_batch(output(), batch())
    bce = torch.nn.functional.binary_cross_entropy_with_logits(LOGITS[KNOWN], ATTRIBUTES[KNOWN])
    torch.testing.assert_close(value, base + 2.0 * bce, rtol=0, atol=1e-12)


@pytest.mark.parametrize("kappa", [0.0, 0.5, 1.0, 3.0])
def test_pair_weights_lie_in_unit_interval(kappa: float) -> None:
    gen = torch.Generator().manual_seed(2)
    probabilities = torch.rand(32, 9, generator=gen, dtype=torch.float64)
    known = torch.rand(32, 9, generator=gen) < 0.7
    for g in (attribute_similarity(probabilities), attribute_similarity(probabilities, known),
              attribute_similarity((probabilities > 0.5).double(), known)):
        assert bool(((g >= 0) & (g <= 1)).all())
        torch.testing.assert_close(g, g.T)
        w = granularity_weights(g, kappa)
        assert bool(((w >= 0) & (w <= 1)).all())
    assert torch.equal(granularity_weights(torch.ones(3, 3), 0.0), torch.ones(3, 3))  # 0^0 = 1


def test_gradcheck_deviance_and_attribute_term() -> None:
    embeddings, labels = random_batch(seed=3, batch=7, classes=3, dim=4, singleton=True)
    gen = torch.Generator().manual_seed(4)
    attributes = (torch.rand(7, 5, generator=gen) < 0.5).double()
    known = torch.rand(7, 5, generator=gen) < 0.8
    logits = torch.randn(7, 5, generator=gen, dtype=torch.float64)
    loss = sgml(kappa=2.0, delta=0.2, attribute_weight=0.7, granularity="ground_truth")
    embeddings.requires_grad_(True)
    logits.requires_grad_(True)

    def run(e, l):
        return loss.forward_batch(output(e, l), batch(labels, attributes, known))

    assert run(embeddings, logits).item() > 0
    assert torch.autograd.gradcheck(run, (embeddings, logits))


def test_predicted_granularity_uses_detached_probabilities_after_warmup() -> None:
    loss = sgml(kappa=1.0, delta=0.2, attribute_weight=0.0, granularity="predicted", warmup_epochs=2)
    logits = LOGITS.clone().requires_grad_(True)
    out = output(EMBEDDINGS.clone().requires_grad_(True), logits)
    predicted = attribute_similarity(torch.sigmoid(LOGITS))
    truth = attribute_similarity(ATTRIBUTES, KNOWN)
    during, after = loss.batch_granularity(out, batch(epoch=1)), loss.batch_granularity(out, batch(epoch=2))
    torch.testing.assert_close(during, truth)
    torch.testing.assert_close(after, predicted)
    assert not torch.allclose(predicted, truth)
    value = loss.forward_batch(out, batch(epoch=2))
    torch.testing.assert_close(value, loss(EMBEDDINGS, LABELS, granularity=predicted))
    value.backward()
    assert logits.grad is None  # g carries no gradient into the attribute head


def test_predicted_labels_threshold_the_probabilities_at_one_half() -> None:
    loss = sgml(granularity="predicted_labels", warmup_epochs=0)
    expected = attribute_similarity((torch.sigmoid(LOGITS) > 0.5).double())
    torch.testing.assert_close(loss.batch_granularity(output(), batch(epoch=0)), expected)


def test_unknown_attributes_change_nothing() -> None:
    loss = sgml(kappa=1.0, delta=0.3, attribute_weight=1.0, granularity="ground_truth")
    flipped = ATTRIBUTES.clone()
    flipped[1, 2] = 1.0  # the unknown entry
    before = loss.forward_batch(output(), batch())
    after = loss.forward_batch(output(), batch(attributes=flipped))
    assert torch.equal(before, after)
    # a row with no attributes at all (a sketch) has g = 0 with everyone: weight 1, no shift
    none_known = KNOWN.clone()
    none_known[3] = False
    g = attribute_similarity(ATTRIBUTES, none_known)
    assert g[3].abs().sum() == 0 and g[:, 3].abs().sum() == 0


def test_missing_head_and_attributes_are_clear_errors() -> None:
    loss = sgml(granularity="predicted", warmup_epochs=0)
    plain = ModelOutput(embeddings=EMBEDDINGS, features=EMBEDDINGS)
    with pytest.raises(ValueError, match="model head 'attributes'.*model.heads"):
        loss.forward_batch(plain, batch())
    bare = Batch(images=None, index=torch.arange(4), labels=LABELS)
    with pytest.raises(ValueError, match="soft_binomial_deviance needs the annotation 'attributes'"):
        sgml(granularity="ground_truth").forward_batch(output(), bare)


@pytest.mark.parametrize(("knobs", "key"), [
    ({"granularity": "labels"}, "loss.granularity"),
    ({"kappa": float("nan")}, "loss.kappa"),
    ({"kappa": float("-inf")}, "loss.kappa"),
    ({"kappa": "1.0"}, "loss.kappa"),
    ({"kappa": True}, "loss.kappa"),
    ({"pos_kappa": float("nan")}, "loss.pos_kappa"),
    ({"pos_kappa": float("inf")}, "loss.pos_kappa"),
    ({"pos_kappa": None}, "loss.pos_kappa"),
    ({"pos_kappa": [1.0]}, "loss.pos_kappa"),
    ({"delta": -0.1}, "loss.delta"),
    ({"attribute_weight": -1.0}, "loss.attribute_weight"),
    ({"warmup_epochs": -1}, "loss.warmup_epochs"),
])
def test_bad_knobs_name_the_key(knobs: dict, key: str) -> None:
    with pytest.raises(ConfigError, match=key):
        sgml(**knobs)


def test_signed_knobs_are_accepted() -> None:
    loss = sgml(kappa=-3, pos_kappa=-1.5)  # an int from the YAML as well
    assert loss.kappa == -3.0 and loss.pos_kappa == -1.5
    assert "pos_kappa=-1.5" in repr(loss)


SGML_EXPERIMENT = {
    "dataset": "shapes",
    "model": {"heads": {"attributes": {}}},
    "loss": {"name": "soft_binomial_deviance", "kappa": 1.0, "pos_kappa": 0.0,
             "granularity": "ground_truth"},
    "search": {"loss.kappa": {"type": "uniform", "low": -3.0, "high": 3.0},
               "loss.pos_kappa": {"type": "uniform", "low": -3.0, "high": 3.0}},
}


def test_config_checks_accept_both_directions() -> None:
    # the search keys are built at their low end: negative kappa and pos_kappa
    check_experiment(parse_params({"experiments": {"sgml": SGML_EXPERIMENT}}), "sgml")
    bad = {**SGML_EXPERIMENT, "loss": {**SGML_EXPERIMENT["loss"], "pos_kappa": ".5"}}
    with pytest.raises(ConfigError, match=r"experiments\.sgml\.loss\.pos_kappa"):
        check_experiment(parse_params({"experiments": {"sgml": bad}}), "sgml")


def test_bad_granularity_input_is_refused() -> None:
    loss = sgml()
    with pytest.raises(ValueError, match=r"granularity must be a \[B, B\]"):
        loss(EMBEDDINGS, LABELS, granularity=torch.zeros(3, 3))
    with pytest.raises(ValueError, match=r"granularity values must lie in \[0, 1\]"):
        loss(EMBEDDINGS, LABELS, granularity=torch.full((4, 4), 2.0))
