"""Triplet mining by counts (no B x B x B tensor) against the explicit triplet tensor: the
same value and the same gradient, for all and semi-hard triplets, single- and multi-label."""

from __future__ import annotations

import pytest
import torch

from dml.losses.base import avg_non_zero, distance_matrix, pair_masks
from dml.losses.triplet import TripletLoss


def cubic(embeddings: torch.Tensor, similarity: torch.Tensor, margin: float, mining: str) -> torch.Tensor:
    """The loss from every triplet explicitly: ``[a, p, n]`` losses and masks."""
    distances = distance_matrix(embeddings)
    pos, neg = pair_masks(similarity)
    d_ap, d_an = distances[:, :, None], distances[:, None, :]
    losses = torch.relu(d_ap - d_an + margin)
    valid = pos[:, :, None] & neg[:, None, :]
    if mining == "semihard":
        valid = valid & (d_an > d_ap) & (d_an < d_ap + margin)
    return avg_non_zero(losses, valid)


def _batch(seed: int, n: int = 96, classes: int = 12, graded: bool = False):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 16, generator=g, dtype=torch.float64)
    if graded:  # multi-label: pairs sharing any of 3 random labels of 10 are positives
        labels = torch.rand(n, 10, generator=g) < 0.2
        similarity = (labels.double() @ labels.double().T > 0).double()
    else:
        y = torch.randint(classes, (n,), generator=g)
        similarity = (y[:, None] == y[None, :]).double()
    return x, similarity


@pytest.mark.parametrize("mining", ["all", "semihard"])
@pytest.mark.parametrize("margin", [0.05, 0.2, 1.0])
@pytest.mark.parametrize("graded", [False, True])
def test_value_and_gradient_equal_the_explicit_triplets(mining, margin, graded):
    for seed in range(3):
        x, similarity = _batch(seed, graded=graded)
        a = x.clone().requires_grad_(True)
        b = x.clone().requires_grad_(True)
        got = TripletLoss(margin=margin, mining=mining).compute_loss(a, None, similarity)
        want = cubic(b, similarity, margin, mining)
        got.backward()
        want.backward()
        assert got.item() == pytest.approx(want.item(), rel=1e-10, abs=1e-12)
        assert torch.allclose(a.grad, b.grad, rtol=1e-9, atol=1e-12)


def test_no_selected_triplet_is_an_exact_zero_on_the_graph():
    x = torch.tensor([[1.0, 0.0], [1.0, 0.0], [-1.0, 0.0], [-1.0, 0.0]], requires_grad=True)
    similarity = torch.tensor([[1, 1, 0, 0], [1, 1, 0, 0], [0, 0, 1, 1], [0, 0, 1, 1]], dtype=torch.float32)
    for mining in ("all", "semihard"):
        loss = TripletLoss(margin=0.5, mining=mining).compute_loss(x, None, similarity)
        assert loss.item() == 0.0 and loss.requires_grad


def test_hand_counts():
    """One anchor, positives at 0.3 and 0.6, negatives at 0.5 and 1.0, margin 0.3: all selects
    (0.3, 0.5) loss 0.1, (0.6, 0.5) loss 0.4, (0.6, 1.0 no: -0.1); semi-hard only (0.3, 0.5)."""
    distances = torch.tensor([[0.0, 0.3, 0.6, 0.5, 1.0]], dtype=torch.float64)
    pos = torch.tensor([[False, True, True, False, False]])
    neg = torch.tensor([[False, False, False, True, True]])
    assert TripletLoss(0.3, "all")._counted(distances, pos, neg).item() == pytest.approx(0.25)
    assert TripletLoss(0.3, "semihard")._counted(distances, pos, neg).item() == pytest.approx(0.1)
