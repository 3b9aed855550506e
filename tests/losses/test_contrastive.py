"""The contrastive loss equals its plain formula over ``dml.losses.base``'s shared pieces.

``ContrastiveLoss`` computes distances, masks and non-zero means in fewer B x B passes; these
check it against ``distance_matrix``, ``pair_masks`` and ``avg_non_zero`` on random batches
(values and gradients), including batches without a positive or without a negative pair and
duplicate samples (zero distances, where the gradient must stay finite).
"""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

from dml.losses import ContrastiveLoss
from dml.losses.base import avg_non_zero, distance_matrix, pair_masks
from dml.label_similarity import equality_similarity

MARGINS = [(0.0, 1.0), (0.0, 0.6), (0.3, 1.2), (0.0, 0.0), (2.5, 2.5)]


def plain(embeddings: Tensor, similarity: Tensor, pos_margin: float, neg_margin: float) -> Tensor:
    """The loss as its class docstring writes it."""
    distances = distance_matrix(embeddings)
    pos, neg = pair_masks(similarity)
    return (avg_non_zero(torch.relu(distances - pos_margin), pos)
            + avg_non_zero(torch.relu(neg_margin - distances), neg))


def value_and_grad(loss, embeddings: Tensor, *args, **kwargs) -> tuple[Tensor, Tensor]:
    x = embeddings.detach().clone().requires_grad_(True)
    value = loss(x, *args, **kwargs)
    value.backward()
    return value.detach(), x.grad


def batches(dtype: torch.dtype) -> list[tuple[str, Tensor, Tensor]]:
    """(what, embeddings, similarity) for one dtype."""
    gen = torch.Generator().manual_seed(0)
    out = []
    for batch, classes in [(2, 2), (9, 3), (64, 8), (200, 20)]:
        labels = torch.randint(0, classes, (batch,), generator=gen)
        embeddings = torch.randn(batch, 6, generator=gen, dtype=dtype)
        out.append((f"random-{batch}", embeddings, equality_similarity(labels, dtype=dtype)))
    embeddings = torch.randn(12, 6, generator=gen, dtype=dtype)
    out.append(("no_positive", embeddings, equality_similarity(torch.arange(12), dtype=dtype)))
    out.append(("no_negative", embeddings, torch.ones(12, 12, dtype=dtype)))
    duplicates = embeddings.clone()
    duplicates[5] = duplicates[0]  # 0~5: a negative pair at distance 0
    duplicates[7] = duplicates[2]  # 2~7: a positive pair at distance 0
    duplicates[9] = duplicates[3] * 3.0  # 3~9: same direction, (about) 0 after normalization
    labels = torch.tensor([0, 1, 2, 0, 1, 1, 2, 2, 1, 2, 0, 2])
    out.append(("duplicates", duplicates, equality_similarity(labels, dtype=dtype)))
    graded = torch.rand(12, 12, generator=gen, dtype=dtype)
    graded[graded < 0.6] = 0.0
    graded.fill_diagonal_(0.0)  # not symmetric, and no sample similar to itself
    out.append(("graded", embeddings, graded))
    return out


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize(("pos_margin", "neg_margin"), MARGINS)
def test_equals_the_plain_formula(dtype: torch.dtype, pos_margin: float, neg_margin: float) -> None:
    loss = ContrastiveLoss(pos_margin=pos_margin, neg_margin=neg_margin)
    for what, embeddings, similarity in batches(dtype):
        value, grad = value_and_grad(loss, embeddings, similarity=similarity)
        expected, expected_grad = value_and_grad(plain, embeddings, similarity, pos_margin, neg_margin)
        assert value.dtype == dtype
        assert torch.isfinite(grad).all(), what
        torch.testing.assert_close(value, expected, rtol=0, atol=1e-6, msg=what)
        torch.testing.assert_close(grad, expected_grad, rtol=0, atol=1e-6, msg=what)


def test_no_pair_with_non_zero_loss_gives_zero_and_zero_gradient() -> None:
    # distinct labels (no positive pair) and a zero negative margin (no negative hinge above 0)
    embeddings = torch.randn(10, 4, generator=torch.Generator().manual_seed(1), requires_grad=True)
    value = ContrastiveLoss(neg_margin=0.0)(embeddings, torch.arange(10))
    assert value.item() == 0.0
    value.backward()
    assert torch.equal(embeddings.grad, torch.zeros_like(embeddings))
