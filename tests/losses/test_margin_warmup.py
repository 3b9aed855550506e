"""The margin warm-up of the additive-margin proxy losses (``loss.anneal`` of cosface and csl):
the authors' CosFace schedule written out by hand, anneal 0 bit-identical to the full margin,
steps against shares of training, the logged margin, MEMS's ramp unchanged, gradients and
the knob's errors (also through params.yaml validation)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call

from dml.losses.base import logged_terms
from dml.batch import Batch, ModelOutput
from dml.checks import check_params
from dml.config import parse_params
from dml.errors import ConfigError
from dml.losses import build_loss
from dml.losses.warmup import check_anneal, warmup_factor, warmup_fraction
from dml.losses.mems import margin_at

from .helpers import random_batch

HIERARCHY = {"middle": (0, 0, 1, 1, 2), "coarse": (0, 0, 0, 0, 1)}
SCALES = {"fine": 5, "middle": 3, "coarse": 2}


def at(step: int = 0, progress: float = 0.0, labels: torch.Tensor | None = None) -> Batch:
    """A batch stamped with a global step and a progress (only these are read here)."""
    labels = torch.zeros(1, dtype=torch.long) if labels is None else labels
    return Batch(images=None, index=torch.arange(len(labels)), labels=labels, step=step, progress=progress)


def run(loss, embeddings: torch.Tensor, labels: torch.Tensor, step: int = 0, progress: float = 0.0):
    return loss.forward_batch(ModelOutput(embeddings=embeddings, features=embeddings),
                              at(step, progress, labels))


def cosface(**knobs):
    torch.manual_seed(0)
    return build_loss("cosface", num_classes=4, embed_dim=3, **knobs).double()


def authors_cosface(x: torch.Tensor, labels: torch.Tensor, proxies: torch.Tensor, scale: float,
                    margin: float, step: int, annealing_step: int) -> float:
    """The authors' annealed CosFace, one sample at a time in plain floats: the target cosine
    becomes ``cos·(1 − α) + (cos − m)·α`` with ``α = max(min(step / annealing_step, 1), 0)``,
    the logits are ``scale ·`` cosine, and the loss is the batch mean of the cross-entropy."""
    alpha = max(min(step / annealing_step, 1), 0)
    total = 0.0
    for i in range(x.shape[0]):
        row = x[i].tolist()
        norm_x = math.sqrt(sum(v * v for v in row))
        y = int(labels[i])
        logits = []
        for c in range(proxies.shape[0]):
            w = proxies[c].tolist()
            cos = sum(a * b for a, b in zip(row, w)) / (norm_x * math.sqrt(sum(v * v for v in w)))
            if c == y:
                cos = cos * (1 - alpha) + (cos - margin) * alpha
            logits.append(scale * cos)
        top = max(logits)
        total += top + math.log(sum(math.exp(v - top) for v in logits)) - logits[y]
    return total / x.shape[0]


def test_warmup_fraction_and_factor() -> None:
    assert [warmup_fraction(p, 0.5) for p in (-1.0, 0.0, 0.25, 0.5, 0.9)] == [0.0, 0.0, 0.5, 1.0, 1.0]
    assert warmup_fraction(3.0, 0) == 1.0
    # an int counts steps, a float is a share of training (the batch's progress)
    assert warmup_factor(100, at(step=25, progress=0.9)) == 0.25
    assert warmup_factor(0.5, at(step=25, progress=0.2)) == 0.4
    assert warmup_factor(1.0, at(step=10**6, progress=1.0)) == 1.0
    # no warm-up, or a bare call: the full margin
    assert warmup_factor(0, at(step=0)) == 1.0
    assert warmup_factor(0.0, at(step=0)) == 1.0
    assert warmup_factor(100, None) == 1.0


@pytest.mark.parametrize("annealing_step", [4, 100])
@pytest.mark.parametrize("step", [0, 1, 3, 50, 100, 250])
def test_cosface_follows_the_authors_schedule_in_steps(step: int, annealing_step: int) -> None:
    """``anneal`` as steps against their code's α. (Their counter starts at ``pretrained_model``,
    -1 by default, so their α runs one call behind; here α reads the global step the batch
    carries, from 0.)"""
    embeddings, labels = random_batch(5, 9, 4, dim=3)
    loss = cosface(scale=16.0, margin=0.35, anneal=annealing_step)
    expected = authors_cosface(embeddings, labels, loss.proxies.detach(), 16.0, 0.35, step, annealing_step)
    with logged_terms() as terms:
        assert run(loss, embeddings, labels, step=step).item() == pytest.approx(expected, abs=1e-12)
    alpha = max(min(step / annealing_step, 1), 0)
    assert terms == pytest.approx({"margin": 0.35 * alpha}, abs=1e-15)


@pytest.mark.parametrize("step", [0, 1, 60, 100, 150, 200])
def test_cosface_with_a_share_of_training_is_the_authors_setting(step: int) -> None:
    """``anneal: 0.5`` over a run of 200 steps is their annealing_step 100000 of num_steps
    200000, scaled: α = progress / 0.5 = step / 100."""
    embeddings, labels = random_batch(6, 8, 4, dim=3)
    loss = cosface(margin=0.35, anneal=0.5)
    expected = authors_cosface(embeddings, labels, loss.proxies.detach(), 32.0, 0.35, step, 100)
    assert run(loss, embeddings, labels, progress=step / 200).item() == pytest.approx(expected, abs=1e-11)


def test_anneal_zero_is_bit_identical_to_the_full_margin() -> None:
    """Today's formula, ``scale · (cos − m·onehot)`` and a cross-entropy, at every step; a bare
    call with a warm-up configured also uses the full margin. Nothing is logged without one."""
    embeddings, labels = random_batch(7, 10, 4, dim=3)
    plain, annealed = cosface(margin=0.35), cosface(margin=0.35, anneal=0.5)
    cos = F.linear(F.normalize(embeddings, dim=1), F.normalize(plain.proxies, dim=1))
    today = F.cross_entropy(32.0 * (cos - 0.35 * F.one_hot(labels, 4).to(cos.dtype)), labels)
    with logged_terms() as terms:
        for step, progress in ((0, 0.0), (7, 0.3), (100, 1.0)):
            assert torch.equal(run(plain, embeddings, labels, step, progress), today)
        assert torch.equal(plain(embeddings, labels), today)
    assert terms == {}
    assert torch.equal(annealed(embeddings, labels), today)
    # at the start of a warm-up the margin is 0: the normalized softmax at the same scale
    zero = F.cross_entropy(32.0 * cos, labels)
    torch.testing.assert_close(run(annealed, embeddings, labels, progress=0.0), zero, rtol=0, atol=0)


def test_csl_margins_warm_up_by_hand() -> None:
    """CSL's test_by_hand case (tests/losses/test_csl.py) at α = 1/4: every γ m_k becomes
    γ α m_k. Proxies (1,0), (0,1), (-1,0); gamma 2, margins 0.1 (fine) and 0.2 (middle)."""
    loss = build_loss("csl", num_classes=3, embed_dim=2, margins={"fine": 0.1, "middle": 0.2}, scale=2.0,
                      hierarchy={"middle": (0, 0, 1)}, scale_classes={"fine": 3, "middle": 2},
                      anneal=8).double()
    with torch.no_grad():
        loss.proxies.copy_(torch.tensor([[1.0, 0.0], [0.0, 3.0], [-2.0, 0.0]]))
    x = torch.tensor([[1.0, 0.0], [0.0, 2.0]], dtype=torch.float64)
    labels = torch.tensor([0, 1])

    def softplus(v: float) -> float:
        return math.log1p(math.exp(v))

    alpha = 2 / 8
    fine = (softplus(math.log(1 + math.exp(-2)) - 2 + 2 * alpha * 0.1)
            + softplus(math.log(2) - 2 + 2 * alpha * 0.1)) / 2
    middle = (softplus(-2 - 2 + 2 * alpha * 0.2) + softplus(0 - 2 + 2 * alpha * 0.2)) / 2
    with logged_terms() as terms:
        assert run(loss, x, labels, step=2).item() == pytest.approx(fine + middle, abs=1e-12)
    assert terms == pytest.approx(
        {"fine": fine, "middle": middle, "margin/fine": alpha * 0.1, "margin/middle": alpha * 0.2}, abs=1e-12)


@pytest.mark.parametrize("positive", ["fine", "scale"])
def test_csl_anneal_zero_is_bit_identical(positive: str) -> None:
    embeddings, labels = random_batch(8, 10, 5, dim=3)
    knobs = {"num_classes": 5, "embed_dim": 3, "hierarchy": HIERARCHY, "scale_classes": SCALES,
             "positive": positive}
    torch.manual_seed(0)
    plain = build_loss("csl", **knobs).double()
    full = plain(embeddings, labels)
    for step, progress in ((0, 0.0), (3, 0.5)):
        assert torch.equal(run(plain, embeddings, labels, step, progress), full)
    torch.manual_seed(0)
    annealed = build_loss("csl", anneal=10, **knobs).double()
    assert torch.equal(annealed(embeddings, labels), full)  # a bare call: the full margins
    assert torch.equal(run(annealed, embeddings, labels, step=10), full)  # α = 1 once warmed up


def test_mems_ramp_is_unchanged() -> None:
    """The shared ramp behind MEMS's ``margin_at``: 1 rising to m over the first ``ramp``."""
    for progress in (0.0, 0.1, 0.25, 0.5, 0.75, 1.0):
        for margin, ramp in ((4.0, 0.5), (2.0, 0.3), (2.0, 1.0), (2.0, 1)):
            expected = 1.0 + (margin - 1.0) * min(max(progress / ramp, 0.0), 1.0)
            assert margin_at(progress, margin, ramp) == expected
    assert margin_at(0.0, 4.0, 0.0) == 4.0


class StepOf(torch.nn.Module):
    """``loss.forward_batch`` as a module's forward, so that ``functional_call`` can swap its
    proxies for gradcheck's inputs."""

    def __init__(self, loss) -> None:
        super().__init__()
        self.loss = loss

    def forward(self, output: ModelOutput, batch: Batch) -> torch.Tensor:
        return self.loss.forward_batch(output, batch)


@pytest.mark.parametrize(("name", "knobs"), [
    ("cosface", {}),
    ("csl", {"hierarchy": HIERARCHY, "scale_classes": SCALES, "positive": "fine"}),
    ("csl", {"hierarchy": HIERARCHY, "scale_classes": SCALES, "positive": "scale"}),
])
def test_gradcheck_mid_warmup(name: str, knobs: dict) -> None:
    """float64 gradients while the margins ramp (progress 0.15 of a 0.5 warm-up: α = 0.3)."""
    embeddings, labels = random_batch(9, 7, 5, dim=3)
    embeddings.requires_grad_(True)
    batch = at(progress=0.15, labels=labels)
    module = StepOf(build_loss(name, num_classes=5, embed_dim=3, scale=4.0, anneal=0.5, **knobs).double())
    proxies = module.loss.proxies.detach().clone().requires_grad_(True)

    def step(e: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
        return functional_call(module, {"loss.proxies": p}, (ModelOutput(embeddings=e, features=e), batch))

    with logged_terms() as terms:
        assert torch.autograd.gradcheck(step, (embeddings, proxies))
    key, margin = ("margin", 0.35) if name == "cosface" else ("margin/fine", 0.25)
    assert terms[key] == pytest.approx(0.3 * margin, abs=1e-15)


@pytest.mark.parametrize("value", [0, 0.0, 1, 7, 100000, 0.5, 1.0, 1e-3])
def test_good_anneal_values(value) -> None:
    assert check_anneal(value) == value
    assert type(check_anneal(value)) is type(value)
    build_loss("cosface", num_classes=2, embed_dim=2, anneal=value)


@pytest.mark.parametrize("name", ["cosface", "csl"])
@pytest.mark.parametrize("value", [-1, -0.5, 1.5, 100000.0, True, False, "half", None, float("nan"), [0.5]])
def test_bad_anneal_values_name_the_key(name: str, value) -> None:
    with pytest.raises(ConfigError, match=r"^experiments\.x\.loss\.anneal must be 0 \(no warm-up\), steps"):
        build_loss({"name": name, "anneal": value}, num_classes=2, embed_dim=2, where="experiments.x.loss")


def test_params_validation_checks_the_knob() -> None:
    """params.yaml validation builds the loss: the knob is accepted, a bad value is named."""
    def params(anneal):
        return parse_params({"experiments": {"x": {"dataset": "shapes", "loss": {
            "name": "cosface", "scale": 32.0, "margin": 0.35, "anneal": anneal}}}})

    check_params(params(0.5))
    check_params(params(1000))
    with pytest.raises(ConfigError, match=r"experiments\.x\.loss\.anneal must be .* got 2\.5"):
        check_params(params(2.5))
