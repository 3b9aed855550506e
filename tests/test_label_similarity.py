"""Label-similarity matrices: hand-computed values, special cases and invariants."""

from __future__ import annotations

import math

import pytest
import torch

from dml.label_similarity import attribute_similarity, count_cosine, equality_similarity, multiset_jaccard


def test_equality_similarity() -> None:
    out = equality_similarity(torch.tensor([2, 0, 2]))
    assert out.dtype == torch.get_default_dtype()
    assert torch.equal(out, torch.tensor([[1.0, 0, 1], [0, 1, 0], [1, 0, 1]]))
    assert equality_similarity(torch.tensor([1]), dtype=torch.float64).dtype == torch.float64
    with pytest.raises(ValueError, match="labels"):
        equality_similarity(torch.zeros(2, 2))


def test_jaccard_by_hand() -> None:
    a = torch.tensor([[2, 1, 0]])
    b = torch.tensor([[1, 1, 1], [0, 0, 3], [2, 1, 0], [0, 0, 0]])
    # [2,1,0] vs [1,1,1]: Σmin = 1+1+0 = 2, Σmax = 2+1+1 = 4 -> 0.5
    # [2,1,0] vs [0,0,3]: Σmin = 0 -> 0;  vs itself: 1;  vs the empty multiset: 0/3 = 0
    assert torch.allclose(multiset_jaccard(a, b), torch.tensor([[0.5, 0.0, 1.0, 0.0]]))


def test_jaccard_of_two_empty_rows_is_zero() -> None:
    out = multiset_jaccard(torch.zeros(2, 3))
    assert torch.equal(out, torch.zeros(2, 2))


def test_jaccard_binary_labels_is_intersection_over_union() -> None:
    gen = torch.Generator().manual_seed(0)
    labels = (torch.rand(12, 6, generator=gen) < 0.4).long()
    out = multiset_jaccard(labels)
    sets = [set(torch.nonzero(row).flatten().tolist()) for row in labels]
    for i, si in enumerate(sets):
        for j, sj in enumerate(sets):
            expected = len(si & sj) / len(si | sj) if si | sj else 0.0
            assert out[i, j].item() == pytest.approx(expected)


def test_jaccard_symmetric_bounded_unit_diagonal_and_blocked() -> None:
    gen = torch.Generator().manual_seed(1)
    counts = torch.randint(0, 4, (15, 5), generator=gen)
    counts[3] = 0
    out = multiset_jaccard(counts)
    assert torch.allclose(out, out.T)
    assert ((out >= 0) & (out <= 1)).all()
    nonempty = counts.sum(1) > 0
    assert torch.allclose(out.diagonal()[nonempty], torch.ones(int(nonempty.sum())))
    assert out[3, 3] == 0
    # Row blocks of any size give the same matrix.
    assert torch.equal(multiset_jaccard(counts, counts, block_elements=7), out)
    # Rectangular inputs, float counts.
    rect = multiset_jaccard(counts[:4].double(), counts)
    assert rect.shape == (4, 15) and rect.dtype == torch.float64
    assert torch.allclose(rect.float(), out[:4])


def test_cosine_by_hand() -> None:
    a = torch.tensor([[2, 1, 0], [0, 0, 0]])
    b = torch.tensor([[1, 1, 1], [0, 0, 5]])
    # [2,1,0]·[1,1,1] = 3, ‖·‖ = √5·√3 -> 3/√15;  [2,1,0]·[0,0,5] = 0;  zero row -> 0
    expected = torch.tensor([[3 / math.sqrt(15), 0.0], [0.0, 0.0]])
    assert torch.allclose(count_cosine(a, b), expected)


def test_cosine_symmetric_unit_diagonal() -> None:
    gen = torch.Generator().manual_seed(2)
    counts = torch.randint(0, 3, (10, 4), generator=gen)
    counts[0] = 0
    out = count_cosine(counts)
    assert torch.allclose(out, out.T)
    assert ((out >= 0) & (out <= 1)).all()
    nonempty = counts.sum(1) > 0
    assert torch.allclose(out.diagonal()[nonempty], torch.ones(int(nonempty.sum())))
    assert out[0].eq(0).all()


@pytest.mark.parametrize("fn", [multiset_jaccard, count_cosine])
def test_invalid_counts(fn) -> None:
    with pytest.raises(ValueError, match="counts_a"):
        fn(torch.zeros(3))
    with pytest.raises(ValueError, match="non-negative"):
        fn(torch.tensor([[1, -1]]))
    with pytest.raises(ValueError, match="same number of classes"):
        fn(torch.zeros(2, 3), torch.zeros(2, 4))


def _attribute_similarity_loop(x: torch.Tensor, known: torch.Tensor) -> torch.Tensor:
    """The cosine of every pair over the attributes known for both, one pair at a time."""
    n = x.shape[0]
    out = torch.zeros(n, n, dtype=torch.float64)
    for i in range(n):
        for j in range(n):
            shared = known[i] & known[j]
            a, b = x[i][shared].double(), x[j][shared].double()
            norm = math.sqrt(float(a @ a) * float(b @ b))
            out[i, j] = float(a @ b) / norm if norm > 0 else 0.0
    return out


@pytest.mark.parametrize("kind", ["binary", "probabilities"])
def test_attribute_similarity_matches_a_loop(kind: str) -> None:
    gen = torch.Generator().manual_seed(7)
    x = torch.rand(12, 6, generator=gen, dtype=torch.float64)
    if kind == "binary":
        x = (x < 0.4).double()
    known = torch.rand(12, 6, generator=gen) < 0.75
    known[3] = False  # a row with nothing known: g = 0 with everyone
    expected = _attribute_similarity_loop(x, known)
    torch.testing.assert_close(attribute_similarity(x, known), expected)
    torch.testing.assert_close(attribute_similarity(x), _attribute_similarity_loop(x, torch.ones_like(known)))
    assert attribute_similarity(x, known)[3].abs().sum() == 0


def test_attribute_similarity_invalid_inputs() -> None:
    with pytest.raises(ValueError, match="non-negative"):
        attribute_similarity(torch.tensor([[-1.0, 0.0]]))
    with pytest.raises(ValueError, match="2-D"):
        attribute_similarity(torch.ones(3))
    with pytest.raises(ValueError, match="shape of attributes"):
        attribute_similarity(torch.ones(2, 3), torch.ones(2, 2, dtype=torch.bool))
