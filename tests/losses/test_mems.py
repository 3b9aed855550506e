"""The ``mems`` loss: hand values, the margin-1 reduction to the euclidean softmax, the
margin schedule over training, its gradient, and errors. Two-worker exactness:
tests/train/test_distributed.py (the registry-wide cases)."""

from __future__ import annotations

import math

import pytest
import torch
from torch.func import functional_call

from dml.losses.base import logged_terms
from dml.batch import Batch, ModelOutput
from dml.errors import ConfigError
from dml.losses import build_loss
from dml.losses.mems import margin_at

F = torch.tensor([[1.0, 0.0], [0.0, 2.0]], dtype=torch.float64)
LABELS = torch.tensor([0, 1])
CENTRES = torch.tensor([[1.0, 1.0], [0.0, 1.0]], dtype=torch.float64)


def _mems(**knobs):
    loss = build_loss("mems", num_classes=2, embed_dim=2, **knobs).double()
    with torch.no_grad():
        loss.proxies.copy_(CENTRES)
    return loss


def test_by_hand() -> None:
    # squared distances: sample 0 -> (1, 2), sample 1 -> (2, 1); true classes 0 and 1
    # margin 2: true logits -4 · 1, others -2: each CE = log(1 + e^{-2 + 4}) = log(1 + e^2)
    assert _mems(margin=2.0)(F, LABELS).item() == pytest.approx(math.log(1 + math.e ** 2), abs=1e-12)
    # margin 1: the plain euclidean softmax, CE = log(1 + e^{-2 + 1})
    assert _mems(margin=1.0)(F, LABELS).item() == pytest.approx(math.log(1 + math.e ** -1), abs=1e-12)


def test_margin_one_is_the_euclidean_softmax_at_every_point_of_training() -> None:
    torch.manual_seed(0)
    x = torch.randn(6, 2, dtype=torch.float64)
    labels = torch.tensor([0, 1, 0, 1, 1, 0])
    loss = _mems(margin=1.0)
    squared = torch.cdist(x, CENTRES).pow(2)
    expected = torch.nn.functional.cross_entropy(-squared, labels)
    for progress in (0.0, 0.3, 1.0):
        got = loss.forward_batch(ModelOutput(embeddings=x, features=x),
                                 Batch(images=None, index=torch.arange(6), labels=labels, progress=progress))
        torch.testing.assert_close(got, expected)


def test_the_margin_rises_from_one_to_m_over_the_first_half() -> None:
    assert [margin_at(p, 4.0, 0.5) for p in (0.0, 0.25, 0.5, 0.75, 1.0)] == [1.0, 2.5, 4.0, 4.0, 4.0]
    assert margin_at(0.0, 4.0, 0.0) == 4.0
    loss = _mems(margin=4.0)
    for progress, m in ((0.0, 1.0), (0.25, 2.5), (1.0, 4.0)):
        with logged_terms() as terms:
            value = loss.forward_batch(ModelOutput(embeddings=F, features=F),
                                       Batch(images=None, index=torch.arange(2), labels=LABELS, progress=progress))
        # true logit -m², the other -2: CE = log(1 + e^{m² - 2})
        assert value.item() == pytest.approx(math.log(1 + math.exp(m * m - 2)), abs=1e-9)
        assert terms["margin"] == m


def test_gradcheck() -> None:
    torch.manual_seed(1)
    x = torch.randn(5, 3, dtype=torch.float64, requires_grad=True)
    labels = torch.tensor([0, 1, 2, 1, 0])
    loss = build_loss("mems", num_classes=3, embed_dim=3, margin=2.0).double()
    centres = loss.proxies.detach().clone().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda e, c: functional_call(loss, {"proxies": c}, (e, labels)),
                                    (x, centres))


def test_centres_start_on_the_unit_sphere() -> None:
    loss = build_loss("mems", num_classes=7, embed_dim=5)
    torch.testing.assert_close(loss.proxies.norm(dim=1), torch.ones(7))


@pytest.mark.parametrize(("knobs", "key"), [({"margin": 0.5}, "loss.margin"), ({"ramp": 2.0}, "loss.ramp"),
                                            ({"ramp": -0.1}, "loss.ramp")])
def test_bad_knobs_name_the_key(knobs: dict, key: str) -> None:
    with pytest.raises(ConfigError, match=key):
        build_loss("mems", num_classes=2, embed_dim=2, **knobs)
