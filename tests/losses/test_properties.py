"""Registry-wide property checks, input validation, configuration errors and reductions."""

from __future__ import annotations

import pytest
import torch

from dml.errors import ConfigError
from dml.losses import LOSSES, MetricLoss, build_loss, is_wrapper
from dml.losses.triplet import TripletLoss
from dml.label_similarity import equality_similarity

from .helpers import make_loss, random_batch

ALL = LOSSES.names()
WRAPPERS = [n for n in ALL if is_wrapper(n)]
PAIR = [n for n in ALL if not LOSSES.get(n).needs_class_labels and n not in WRAPPERS]
PROXY = [n for n in ALL if LOSSES.get(n).needs_class_labels]

LABEL_SETS = {
    "mixed": torch.tensor([0, 0, 1, 1, 2, 2, 3, 1]),
    "all_distinct": torch.arange(8),  # no positive pair
    "all_equal": torch.zeros(8, dtype=torch.long),  # no negative pair
    "one_sample": torch.tensor([3]),
}


def test_registry_holds_the_expected_losses() -> None:
    expected = {
        "binomial_deviance",
        "contrastive",
        "cosface",
        "multi_similarity",
        "normalized_softmax",
        "proxy_anchor",
        "triplet",
    }
    assert expected <= set(ALL)
    assert {"proxy_anchor", "normalized_softmax", "cosface"} <= set(PROXY)


@pytest.mark.parametrize("labels_kind", list(LABEL_SETS))
@pytest.mark.parametrize("name", ALL)
def test_scalar_finite_and_every_parameter_gets_a_gradient(name: str, labels_kind: str) -> None:
    labels = LABEL_SETS[labels_kind]
    gen = torch.Generator().manual_seed(0)
    embeddings = torch.randn(len(labels), 5, generator=gen).requires_grad_(True)
    loss = make_loss(name, num_classes=8, embed_dim=5)
    value = loss(embeddings, labels)
    assert value.dim() == 0
    assert torch.isfinite(value)
    value.backward()
    for what, tensor in [("embeddings", embeddings), *loss.named_parameters()]:
        assert tensor.grad is not None, f"{name}: {what} got no gradient"
        assert torch.isfinite(tensor.grad).all(), f"{name}: {what} gradient not finite"


def _zero_cases() -> list[tuple[str, str]]:
    # A single sample has no pair at all; triplet and multi-similarity also need both a positive
    # and a negative per anchor (contrastive and binomial deviance keep their other term).
    cases = [(name, "one_sample") for name in PAIR]
    for name in ("triplet", "multi_similarity", "adaptive_triplet"):
        cases += [(name, "all_distinct"), (name, "all_equal")]
    return cases


@pytest.mark.parametrize(("name", "labels_kind"), _zero_cases())
def test_pair_loss_without_valid_pairs_is_zero(name: str, labels_kind: str) -> None:
    labels = LABEL_SETS[labels_kind]
    embeddings = torch.randn(len(labels), 5, requires_grad=True)
    value = make_loss(name, 8, 5)(embeddings, labels)
    assert value.item() == 0.0
    value.backward()
    assert torch.equal(embeddings.grad, torch.zeros_like(embeddings))


@pytest.mark.parametrize("name", ALL)
def test_half_precision_embeddings_give_a_float32_loss(name: str) -> None:
    embeddings, labels = random_batch(0, 8, 3, dim=5)
    loss = make_loss(name, 3, 5)
    value = loss(embeddings.to(torch.bfloat16), labels)
    assert value.dtype == torch.float32 and torch.isfinite(value)
    assert value.item() == pytest.approx(
        loss(embeddings.float(), labels).item(), rel=0.05, abs=0.05
    )


@pytest.mark.parametrize("name", PAIR)
def test_similarity_matrix_input_equals_labels(name: str) -> None:
    embeddings, labels = random_batch(7, 10, 3, dim=4)
    loss = make_loss(name, 3, 4)
    similarity = equality_similarity(labels, dtype=torch.float64)
    from_labels = loss(embeddings, labels)
    assert loss(embeddings, similarity=similarity).item() == pytest.approx(
        from_labels.item(), abs=1e-12
    )
    # A bool matrix works too, and the matrix wins over labels when both are given.
    assert loss(embeddings, similarity=similarity.bool()).item() == pytest.approx(
        from_labels.item(), abs=1e-12
    )
    other = equality_similarity(torch.zeros_like(labels), dtype=torch.float64)
    assert loss(embeddings, labels, similarity=other).item() == pytest.approx(
        loss(embeddings, similarity=other).item(), abs=1e-12
    )


@pytest.mark.parametrize("name", PROXY)
def test_proxy_loss_rejects_similarity_only(name: str) -> None:
    embeddings, labels = random_batch(0, 6, 3, dim=4)
    loss = make_loss(name, 3, 4)
    with pytest.raises(ValueError, match="needs class labels"):
        loss(embeddings.float(), similarity=equality_similarity(labels))


@pytest.mark.parametrize("name", PROXY)
def test_proxy_parameters_are_plain_parameters(name: str) -> None:
    loss = make_loss(name, 7, 4)
    params = dict(loss.named_parameters())
    assert set(params) == {"proxies"}
    assert isinstance(params["proxies"], torch.nn.Parameter)
    assert params["proxies"].shape == (7, 4)
    clone = make_loss(name, 7, 4)
    clone.load_state_dict(loss.state_dict())
    assert torch.equal(clone.proxies, loss.proxies)


@pytest.mark.parametrize("name", PROXY)
def test_proxy_loss_checks_dimension_and_label_range(name: str) -> None:
    loss = make_loss(name, 3, 4)
    with pytest.raises(ValueError, match="embed_dim=4"):
        loss(torch.randn(5, 6), torch.tensor([0, 1, 2, 0, 1]))
    with pytest.raises(ValueError, match=r"num_classes=3"):
        loss(torch.randn(5, 4), torch.tensor([0, 1, 2, 3, 1]))
    with pytest.raises(ValueError, match=r"num_classes=3"):
        loss(torch.randn(5, 4), torch.tensor([0, 1, 2, -1, 1]))


@pytest.mark.parametrize(
    ("args", "kwargs", "match"),
    [
        (
            (torch.randn(6),),
            {"labels": torch.zeros(6, dtype=torch.long)},
            r"embeddings .*\[B, D\].*\(6,\)",
        ),
        ((torch.randn(0, 3),), {"labels": torch.zeros(0, dtype=torch.long)}, "B >= 1"),
        (
            (torch.ones(4, 3, dtype=torch.long),),
            {"labels": torch.zeros(4, dtype=torch.long)},
            "floating",
        ),
        ((torch.randn(4, 3),), {}, "labels .* or similarity"),
        (
            (torch.randn(4, 3), torch.zeros(5, dtype=torch.long)),
            {},
            r"labels .*B=4.*\(4, 3\).*\(5,\)",
        ),
        ((torch.randn(4, 3), torch.zeros(4, 1, dtype=torch.long)), {}, r"labels .*\(4, 1\)"),
        ((torch.randn(4, 3), torch.zeros(4)), {}, "labels must be an integer"),
        (
            (torch.randn(4, 3),),
            {"similarity": torch.zeros(4, 3)},
            r"similarity .*\[4, 4\].*\(4, 3\)",
        ),
        ((torch.randn(4, 3),), {"similarity": torch.full((4, 4), 1.5)}, r"\[0, 1\]"),
        ((torch.randn(4, 3),), {"similarity": torch.full((4, 4), float("nan"))}, r"\[0, 1\]"),
    ],
)
def test_invalid_inputs_raise_clear_errors(args: tuple, kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        TripletLoss()(*args, **kwargs)


def test_unknown_key_names_the_key_and_lists_valid_ones() -> None:
    with pytest.raises(ConfigError, match=r"loss\.marginn") as info:
        build_loss("triplet", marginn=0.1)
    assert "valid keys: margin, mining" in str(info.value)


def test_unknown_loss_lists_valid_names() -> None:
    with pytest.raises(ConfigError, match="nope") as info:
        build_loss("nope")
    for name in ALL:
        assert name in str(info.value)


def test_unknown_mining_lists_valid_values() -> None:
    with pytest.raises(ConfigError, match="all, semihard, hard"):
        build_loss("triplet", mining="hardest")


@pytest.mark.parametrize(
    ("name", "kwargs", "key"),
    [
        (
            "normalized_softmax",
            {"num_classes": 3, "embed_dim": 4, "temperature": 0.0},
            "temperature",
        ),
        ("cosface", {"num_classes": 0, "embed_dim": 4}, "num_classes"),
        ("proxy_anchor", {"num_classes": 3, "embed_dim": 2.5}, "embed_dim"),
        ("triplet", {"margin": -0.1}, "margin"),
        ("multi_similarity", {"alpha": 0}, "alpha"),
    ],
)
def test_bad_knob_values_are_config_errors(name: str, kwargs: dict, key: str) -> None:
    with pytest.raises(ConfigError, match=rf"loss\.{key}"):
        build_loss(name, **kwargs)


def test_build_loss_returns_configured_metric_loss() -> None:
    loss = build_loss("multi_similarity", alpha=1.0, epsilon=0.2)
    assert isinstance(loss, MetricLoss)
    assert (loss.alpha, loss.beta, loss.epsilon) == (1.0, 50.0, 0.2)


def test_cosface_without_margin_is_normalized_softmax() -> None:
    embeddings, labels = random_batch(2, 10, 4, dim=6)
    softmax = build_loss("normalized_softmax", num_classes=4, embed_dim=6, temperature=0.1).double()
    cosface = build_loss("cosface", num_classes=4, embed_dim=6, margin=0.0, scale=10.0).double()
    cosface.load_state_dict(softmax.state_dict())
    assert cosface(embeddings, labels).item() == pytest.approx(
        softmax(embeddings, labels).item(), abs=1e-12
    )
    # and the default margin makes a difference
    margin = build_loss("cosface", num_classes=4, embed_dim=6, scale=10.0).double()
    margin.load_state_dict(softmax.state_dict())
    assert margin(embeddings, labels).item() > softmax(embeddings, labels).item()


@pytest.mark.parametrize("name", ALL)
def test_loss_under_autocast_is_float32(name: str) -> None:
    embeddings, labels = random_batch(1, 8, 3, dim=5)
    loss = make_loss(name, 3, 5)
    expected = loss(embeddings.float(), labels).item()
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        value = loss(embeddings.float(), labels)
    assert value.dtype == torch.float32
    assert value.item() == pytest.approx(expected, rel=1e-5, abs=1e-5)
