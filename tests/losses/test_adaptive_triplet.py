"""The adaptive-margin triplet loss of METHODS.md §2: hand values, its reductions to the plain
triplet loss, gradients, the similarity it reads from object counts, and its memory bound."""

from __future__ import annotations

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from dml.batch import Batch, ModelOutput
from dml.errors import ConfigError
from dml.losses import build_loss
from dml.label_similarity import count_cosine, multiset_jaccard

from . import reference
from .helpers import random_batch
from .test_hand_computed import EMBEDDINGS

# Object counts of the four hand-computed samples (classes A, B):
#   x0 {A: 2}, x1 {A: 1, B: 1}, x2 {B: 1}, x3 {A: 1}
# Multiset Jaccard: J01 = 1/3, J02 = 0, J03 = 1/2, J12 = 1/2, J13 = 1/2, J23 = 0.
# Distances of the normalized embeddings: d01 0.8, d02 0.9, d03 1.6, d12 0.6, d13 1.1, d23 1.0.
COUNTS = torch.tensor([[2, 0], [1, 1], [0, 1], [1, 0]])

# Triplets (a, p, n) with J(a,p) > J(a,n), and d_ap − d_an + 0.1 + 0.5·(J_ap − J_an):
#   (0,3,1) 1.6 − 0.8 + 0.1 + 0.5/6 = 0.98333   (0,3,2) 1.6 − 0.9 + 0.1 + 0.25 = 1.05
#   (0,1,2) 0.8 − 0.9 + 0.1 + 1/6 = 0.16667     (1,2,0) 0.6 − 0.8 + 0.1 + 1/12 < 0
#   (1,3,0) 1.1 − 0.8 + 0.1 + 1/12 = 0.48333    (2,1,0) 0.6 − 0.9 + 0.1 + 0.25 = 0.05
#   (2,1,3) 0.6 − 1.0 + 0.35 < 0                (3,0,2) 1.6 − 1.0 + 0.35 = 0.95
#   (3,1,2) 1.1 − 1.0 + 0.35 = 0.45
# 9 triplets, 7 with a positive loss, summing to 4.13333.
HAND_SUM = 59 / 60 + 1.05 + 1 / 6 + 29 / 60 + 0.05 + 0.95 + 0.45


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({}, HAND_SUM / 9),
        ({"reduction": "non_zero"}, HAND_SUM / 7),
        # semi-hard: d_an > d_ap and a positive loss: (0,1,2) 0.16667 and (2,1,0) 0.05
        ({"mining": "semihard"}, (1 / 6 + 0.05) / 2),
    ],
)
def test_by_hand(kwargs: dict, expected: float) -> None:
    loss = build_loss("adaptive_triplet", margin=0.1, gamma=0.5, **kwargs)
    similarity = multiset_jaccard(COUNTS.double())
    assert loss(EMBEDDINGS, similarity=similarity).item() == pytest.approx(expected, abs=1e-9)


def test_forward_batch_reads_the_object_counts() -> None:
    """The training path: S from the batch's counts by the configured similarity."""
    output = ModelOutput(embeddings=EMBEDDINGS, features=EMBEDDINGS)
    batch = Batch(images=None, index=torch.arange(4), counts=COUNTS.float())
    jaccard = build_loss("adaptive_triplet", margin=0.1, gamma=0.5)
    assert jaccard.forward_batch(output, batch).item() == pytest.approx(HAND_SUM / 9, abs=1e-9)
    cosine = build_loss("adaptive_triplet", margin=0.1, gamma=0.5, similarity="cosine")
    expected = reference.adaptive_triplet(EMBEDDINGS, count_cosine(COUNTS.double()), 0.1, 0.5)
    assert cosine.forward_batch(output, batch).item() == pytest.approx(expected, abs=1e-9)
    assert expected != pytest.approx(HAND_SUM / 9)  # the two similarities order pairs differently


def _graded(seed: int, n: int = 10) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    counts = torch.randint(0, 3, (n, 4), generator=gen) * (torch.rand(n, 4, generator=gen) < 0.5)
    counts[counts.sum(1) == 0, 0] = 1
    return torch.randn(n, 3, generator=gen, dtype=torch.float64), multiset_jaccard(counts).double()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_gamma_zero_is_the_plain_triplet_loss_on_the_same_triplets(seed: int) -> None:
    embeddings, similarity = _graded(seed)
    loss = build_loss("adaptive_triplet", margin=0.2, gamma=0.0)
    plain = reference.adaptive_triplet(embeddings, similarity, margin=0.2, gamma=0.0)
    assert loss(embeddings, similarity=similarity).item() == pytest.approx(plain, abs=1e-12)
    adaptive = build_loss("adaptive_triplet", margin=0.2, gamma=1.0)
    assert adaptive(embeddings, similarity=similarity).item() > plain  # the knob does act


@pytest.mark.parametrize("mining", ["all", "semihard"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_on_class_labels_gamma_zero_equals_triplet_in_value_and_gradient(mining: str, seed: int) -> None:
    """Equality similarity: the same triplets as ``triplet``; averaging over the non-zero ones
    as ``triplet`` does gives the same loss and gradient."""
    embeddings, labels = random_batch(seed, 12, 3, dim=4)
    embeddings.requires_grad_(True)
    adaptive = build_loss("adaptive_triplet", margin=0.5, gamma=0.0, mining=mining,
                          reduction="non_zero")(embeddings, labels)
    plain = build_loss("triplet", margin=0.5, mining=mining)(embeddings, labels)
    assert adaptive.item() > 0
    torch.testing.assert_close(adaptive, plain, rtol=0, atol=1e-12)
    (g_adaptive,) = torch.autograd.grad(adaptive, embeddings)
    (g_plain,) = torch.autograd.grad(plain, embeddings)
    torch.testing.assert_close(g_adaptive, g_plain, rtol=0, atol=1e-12)


@pytest.mark.parametrize("kwargs", [{}, {"reduction": "non_zero"}, {"mining": "semihard", "margin": 0.5}])
def test_gradcheck_on_graded_similarity(kwargs: dict) -> None:
    embeddings, similarity = _graded(5, n=8)
    loss = build_loss("adaptive_triplet", **kwargs)
    embeddings.requires_grad_(True)
    assert loss(embeddings, similarity=similarity).item() > 0
    assert torch.autograd.gradcheck(lambda e: loss(e, similarity=similarity), (embeddings,))


def test_blocks_give_the_same_loss_and_gradient() -> None:
    embeddings, similarity = _graded(6, n=16)
    values = []
    for block in (1, 16 * 16 * 3, 1 << 22):
        e = embeddings.clone().requires_grad_(True)
        value = build_loss("adaptive_triplet", block_elements=block)(e, similarity=similarity)
        values.append((value.detach(), torch.autograd.grad(value, e)[0]))
    for value, grad in values[1:]:
        torch.testing.assert_close(value, values[0][0], rtol=0, atol=1e-12)
        torch.testing.assert_close(grad, values[0][1], rtol=0, atol=1e-12)


class _LargestTensor(TorchDispatchMode):
    """Records the largest number of elements of any tensor an operator returns."""

    def __init__(self) -> None:
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for item in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(item, torch.Tensor):
                self.largest = max(self.largest, item.numel())
        return out


def test_no_cube_of_triplets_at_batch_512() -> None:
    """B = 512: the B³ = 134M triplets are mined in blocks of 256K entries, forward and
    backward (``triplet`` with ``mining: all`` builds the whole cube); the largest tensor is the
    Jaccard similarity's own block (B x rows x C, at most 4M entries)."""
    gen = torch.Generator().manual_seed(0)
    counts = (torch.rand(512, 20, generator=gen) < 0.15).float() * 2
    counts[counts.sum(1) == 0, 0] = 1
    embeddings = torch.randn(512, 16, generator=gen, requires_grad=True)
    batch = Batch(images=None, index=torch.arange(512), counts=counts)
    loss = build_loss("adaptive_triplet")
    with _LargestTensor() as probe:
        value = loss.forward_batch(ModelOutput(embeddings=embeddings, features=embeddings), batch)
        value.backward()
    assert value.item() > 0 and torch.isfinite(embeddings.grad).all()
    assert probe.largest <= 1 << 22 < 512**3


def test_errors_name_the_knob() -> None:
    with pytest.raises(ConfigError, match="loss.mining"):
        build_loss("adaptive_triplet", mining="hard")
    with pytest.raises(ConfigError, match="loss.reduction"):
        build_loss("adaptive_triplet", reduction="sum")
    with pytest.raises(ConfigError, match="loss.gamma"):
        build_loss("adaptive_triplet", gamma=-1.0)
    with pytest.raises(ConfigError, match="loss.similarity.*jaccard"):
        build_loss("adaptive_triplet", similarity="dice")
