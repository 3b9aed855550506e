"""Cross-Scale Learning (METHODS.md §3): hand values, the fine-only reduction to CosFace, the
gradient, the zero term at a scale without negatives, and the knobs' errors. The per-scale
baseline (``positive: scale``): test_per_scale_baseline.py; the margin warm-up (``anneal``):
test_margin_warmup.py."""

from __future__ import annotations

import math

import pytest
import torch

from dml.losses.base import logged_terms
from dml.context import BuildContext
from dml.errors import ConfigError
from dml.losses import CosFaceLoss, CrossScaleLoss, build_loss

from .helpers import random_batch

HIERARCHY = {"middle": (0, 0, 1, 1, 2), "coarse": (0, 0, 0, 0, 1)}
SCALES = {"fine": 5, "middle": 3, "coarse": 2}


def csl(margins=None, scale=32.0, num_classes=5, embed_dim=3, hierarchy=HIERARCHY,
        scale_classes=SCALES, **knobs) -> CrossScaleLoss:
    torch.manual_seed(0)
    return CrossScaleLoss(num_classes, embed_dim, margins=margins, scale=scale,
                          hierarchy=hierarchy, scale_classes=scale_classes, **knobs).double()


def softplus(x: float) -> float:
    return math.log1p(math.exp(x))


def test_by_hand() -> None:
    """Proxies (1,0), (0,1), (-1,0); fine classes 0, 1 in middle class 0, class 2 in middle 1;
    gamma 2, margins 0.1 (fine) and 0.2 (middle). x0 = (1,0) of class 0, x1 = (0,2) of class 1:
    cosines [1, 0, -1] and [0, 1, 0]."""
    loss = CrossScaleLoss(3, 2, margins={"fine": 0.1, "middle": 0.2}, scale=2.0,
                          hierarchy={"middle": (0, 0, 1)}, scale_classes={"fine": 3, "middle": 2})
    with torch.no_grad():
        loss.proxies.copy_(torch.tensor([[1.0, 0.0], [0.0, 3.0], [-2.0, 0.0]]))
    x = torch.tensor([[1.0, 0.0], [0.0, 2.0]], dtype=torch.float64)
    loss = loss.double()
    # fine: x0's negatives are classes 1, 2 (gamma*cos 0, -2), its positive 2; x1's: 0, 2 (0, 0)
    fine = (softplus(math.log(1 + math.exp(-2)) - 2 + 0.2) + softplus(math.log(2) - 2 + 0.2)) / 2
    # middle: both samples are in middle class 0, whose only outside proxy is class 2
    middle = (softplus(-2 - 2 + 0.4) + softplus(0 - 2 + 0.4)) / 2
    with logged_terms() as logged:
        value = loss(x, torch.tensor([0, 1]))
    assert value.item() == pytest.approx(fine + middle, abs=1e-12)
    assert logged == pytest.approx({"fine": fine, "middle": middle}, abs=1e-12)


def test_fine_scale_alone_is_cosface() -> None:
    """The fine-scale-only baseline: softplus(LSE_neg + gamma*(m - s_y)) is the cross-entropy of
    CosFace's logits gamma*(cos - m*[c = y]); value and gradients agree."""
    embeddings, labels = random_batch(0, 12, 5, dim=3)
    embeddings.requires_grad_(True)
    ours = csl(margins={"fine": 0.3}, scale=16.0)
    theirs = CosFaceLoss(5, 3, scale=16.0, margin=0.3).double()
    with torch.no_grad():
        theirs.proxies.copy_(ours.proxies)
    a, b = ours(embeddings, labels), theirs(embeddings, labels)
    torch.testing.assert_close(a, b, rtol=0, atol=1e-12)
    grads_a = torch.autograd.grad(a, (embeddings, ours.proxies))
    grads_b = torch.autograd.grad(b, (embeddings, theirs.proxies))
    for ga, gb in zip(grads_a, grads_b):
        torch.testing.assert_close(ga, gb, rtol=0, atol=1e-12)


def test_every_scale_adds_its_own_term() -> None:
    embeddings, labels = random_batch(1, 10, 5, dim=3)
    full = csl()
    terms = {}
    with logged_terms() as logged:
        full(embeddings, labels)
    for scale in SCALES:
        single = csl(margins={scale: full.margins[scale]})
        with logged_terms() as one:
            single(embeddings, labels)
        terms.update(one)
    assert logged == pytest.approx(terms, abs=1e-12)
    assert full(embeddings, labels).item() == pytest.approx(sum(terms.values()), abs=1e-12)
    # a larger coarse margin costs more at that scale alone
    wider = csl(margins={"coarse": 0.9})
    assert wider(embeddings, labels).item() > csl(margins={"coarse": 0.45})(embeddings, labels).item()


def test_a_scale_without_negatives_adds_zero_with_a_finite_gradient() -> None:
    one_coarse = {"middle": (0, 0, 1, 1, 2), "coarse": (0, 0, 0, 0, 0)}
    loss = csl(margins={"coarse": 0.45}, hierarchy=one_coarse)
    embeddings, labels = random_batch(2, 6, 5, dim=3)
    embeddings.requires_grad_(True)
    value = loss(embeddings, labels)
    assert value.item() == 0.0
    value.backward()
    assert torch.isfinite(embeddings.grad).all() and torch.isfinite(loss.proxies.grad).all()


def test_gradcheck() -> None:
    loss = csl(scale=4.0)
    embeddings, labels = random_batch(3, 7, 5, dim=3)
    proxies = loss.proxies.detach().clone().requires_grad_(True)
    embeddings.requires_grad_(True)

    def run(e, p):
        return torch.func.functional_call(loss, {"proxies": p}, (e, labels))

    assert torch.autograd.gradcheck(run, (embeddings, proxies))


def test_built_from_the_data_context() -> None:
    context = BuildContext(num_classes=5, scale_classes=SCALES, hierarchy=HIERARCHY, embed_dim=3)
    loss = build_loss({"name": "csl", "scale": 32.0}, context=context)
    assert loss.margins == {"fine": 0.25, "middle": 0.35, "coarse": 0.45}
    assert loss.positive == "fine" and loss.anneal == 0  # CSL, the full margins from the start
    assert loss.parents_middle.tolist() == [0, 0, 1, 1, 2]
    assert not [k for k in loss.state_dict() if k.startswith("parents")]  # derived, not stored


@pytest.mark.parametrize("knobs, needle", [
    ({"margins": {"species": 0.5}}, "loss.margins.species: not a scale of the data; its scales, "
                                    "finest first: fine, middle, coarse"),
    ({"margins": {}}, "loss.margins: name at least one scale"),
    ({"margins": {"fine": -0.1}}, "loss.margins.fine must be >= 0"),
    ({"scale": 0.0}, "loss.scale must be > 0"),
    ({"positive": "middle"}, "loss.positive: 'middle' is not one of: fine, scale"),
    ({"anneal": -1}, "loss.anneal must be 0 (no warm-up), steps (an int >= 1) or a share of training"),
    ({"anneal": 2.0}, "loss.anneal must be 0 (no warm-up)"),
    ({"hierarchy": {"middle": (0, 1), "coarse": (0, 0)}}, "the hierarchy gives 2 parents at scale 'middle' "
                                                          "for 5 fine classes"),
])
def test_bad_knobs_name_the_key(knobs, needle) -> None:
    with pytest.raises(ConfigError) as error:
        csl(**knobs)
    assert needle in str(error.value)
