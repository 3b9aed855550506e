"""SGML's soft-binomial deviance: hand values, the reduction to binomial deviance, gradients,
the per-pair weights, where g comes from, and masking of unknown attributes."""

from __future__ import annotations

import math

import pytest
import torch

from dml.batch import Batch, ModelOutput
from dml.errors import ConfigError
from dml.losses import BinomialDevianceLoss, build_loss
from dml.losses.soft_binomial_deviance import granularity_weights
from dml.similarity import attribute_similarity

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
    value = loss.forward_batch(output(), batch())
    assert value.item() == pytest.approx(positive + negative + 0.5 * bce, abs=1e-9)
    terms = loss.pop_terms()
    assert terms["deviance"] == pytest.approx(positive + negative, abs=1e-9)
    assert terms["attribute_bce"] == pytest.approx(bce, abs=1e-9)
    # mean g over the 8 ordered negative pairs: 2·(1 + 0 + 1/√2 + 0) / 8
    assert terms["negative_granularity"] == pytest.approx((1 + r) / 4, abs=1e-9)


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
    loss = sgml(alpha=3.0, beta=0.4, neg_weight=10.0, kappa=0.0, delta=0.0, attribute_weight=0.0,
                granularity=granularity, warmup_epochs=0)
    a = embeddings.clone().requires_grad_(True)
    b = embeddings.clone().requires_grad_(True)
    expected = reference(a, labels)
    value = loss.forward_batch(output(b, logits), batch(labels, attributes, None))
    assert torch.equal(value, expected)
    expected.backward()
    value.backward()
    assert torch.equal(a.grad, b.grad)
    # and with any g given, kappa = delta = 0 ignores it
    g = attribute_similarity(attributes)
    assert torch.equal(loss(embeddings, labels, granularity=g), reference(embeddings, labels))


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
    ({"kappa": -1.0}, "loss.kappa"),
    ({"delta": -0.1}, "loss.delta"),
    ({"attribute_weight": -1.0}, "loss.attribute_weight"),
    ({"warmup_epochs": -1}, "loss.warmup_epochs"),
])
def test_bad_knobs_name_the_key(knobs: dict, key: str) -> None:
    with pytest.raises(ConfigError, match=key):
        sgml(**knobs)


def test_bad_granularity_input_is_refused() -> None:
    loss = sgml()
    with pytest.raises(ValueError, match=r"granularity must be a \[B, B\]"):
        loss(EMBEDDINGS, LABELS, granularity=torch.zeros(3, 3))
    with pytest.raises(ValueError, match=r"granularity values must lie in \[0, 1\]"):
        loss(EMBEDDINGS, LABELS, granularity=torch.full((4, 4), 2.0))
