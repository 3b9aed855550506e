"""Label-similarity matrices: how related two samples' labels are, as a number in [0, 1].

Pair losses (``dml.losses``) take such a matrix through their ``similarity`` argument: entries
``> 0`` mark positive pairs and ``== 0`` negative pairs (see ``dml.losses.base.pair_masks``).
Single-label data uses :func:`equality_similarity`; multi-label, multi-object data uses
:func:`multiset_jaccard` (METHODS.md §2), :func:`binary_jaccard` (presence only) or the
baseline :func:`count_cosine`; ``LABEL_SIMILARITIES`` names these three for params.yaml
(``loss.similarity``). SGML's semantic
granularity similarity (METHODS.md §1) is :func:`attribute_similarity`: it weights pairs
rather than deciding which pairs are positive.

All functions are vectorized; the Jaccard similarity is computed in row blocks so that its
``Na x Nb x C`` intermediate stays bounded.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from dml.registry import Registry

__all__ = [
    "LABEL_SIMILARITIES",
    "attribute_similarity",
    "binary_jaccard",
    "count_cosine",
    "equality_similarity",
    "multiset_jaccard",
]

#: Largest number of elements of the ``rows x Nb x C`` block that multiset_jaccard materialises.
DEFAULT_BLOCK_ELEMENTS = 1 << 22


def equality_similarity(labels: Tensor, *, dtype: torch.dtype | None = None) -> Tensor:
    """Similarity of single-label samples: 1 where two labels are equal, else 0.

    Args:
        labels: ``Tensor[B]`` of class ids (any integer dtype).
        dtype: floating dtype of the result; ``torch.get_default_dtype()`` when None.

    Returns:
        ``Tensor[B, B]`` with ``out[i, j] = float(labels[i] == labels[j])``; the diagonal is 1.

    >>> equality_similarity(torch.tensor([0, 1, 0]))
    tensor([[1., 0., 1.],
            [0., 1., 0.],
            [1., 0., 1.]])
    """
    if not isinstance(labels, Tensor) or labels.dim() != 1:
        shape = tuple(labels.shape) if isinstance(labels, Tensor) else type(labels).__name__
        raise ValueError(f"labels must be a 1-D tensor of class ids, got {shape}")
    dtype = dtype or torch.get_default_dtype()
    return (labels[:, None] == labels[None, :]).to(dtype)


def _check_counts(counts_a: Tensor, counts_b: Tensor | None) -> tuple[Tensor, Tensor]:
    """Validate two count matrices and return them as one floating dtype."""
    counts_b = counts_a if counts_b is None else counts_b
    for name, counts in (("counts_a", counts_a), ("counts_b", counts_b)):
        if not isinstance(counts, Tensor) or counts.dim() != 2:
            shape = tuple(counts.shape) if isinstance(counts, Tensor) else type(counts).__name__
            raise ValueError(f"{name} must be a 2-D tensor [N, C] of counts, got {shape}")
        if counts.numel() and bool((counts < 0).any()):
            raise ValueError(f"{name} must be non-negative")
    if counts_a.shape[1] != counts_b.shape[1]:
        raise ValueError(
            f"counts_a and counts_b must have the same number of classes C, got "
            f"{tuple(counts_a.shape)} and {tuple(counts_b.shape)}"
        )
    if counts_a.dtype.is_floating_point or counts_b.dtype.is_floating_point:
        dtype = torch.promote_types(counts_a.dtype, counts_b.dtype)
    else:
        dtype = torch.get_default_dtype()
    return counts_a.to(dtype), counts_b.to(dtype)


def multiset_jaccard(
    counts_a: Tensor,
    counts_b: Tensor | None = None,
    *,
    block_elements: int = DEFAULT_BLOCK_ELEMENTS,
) -> Tensor:
    """Multiset Jaccard similarity of label-count vectors (METHODS.md §2).

    ``J(x, y) = Σ_c min(n_x(c), n_y(c)) / Σ_c max(n_x(c), n_y(c))``; for 0/1 vectors this is
    ``|x ∩ y| / |x ∪ y|``. Two all-zero rows give 0 (0/0 is defined as 0).

    ``Σ max`` is computed as ``Σ n_x + Σ n_y − Σ min``, so only the minimum is materialised, in
    blocks of rows of ``counts_a`` holding at most ``block_elements`` elements.

    Args:
        counts_a: ``Tensor[Na, C]`` non-negative counts (integer or floating).
        counts_b: ``Tensor[Nb, C]``; ``counts_a`` itself when None.
        block_elements: memory bound for one ``rows x Nb x C`` block.

    Returns:
        ``Tensor[Na, Nb]`` in [0, 1], floating (the inputs' floating dtype, else the default).

    >>> multiset_jaccard(torch.tensor([[2, 1, 0]]), torch.tensor([[1, 1, 1], [0, 0, 0]]))
    tensor([[0.5000, 0.0000]])
    """
    a, b = _check_counts(counts_a, counts_b)
    num_b, num_classes = b.shape
    rows = max(1, block_elements // max(1, num_b * num_classes))
    mins = a.new_zeros(a.shape[0], num_b)
    for start in range(0, a.shape[0], rows):
        block = a[start : start + rows]
        mins[start : start + rows] = torch.minimum(block[:, None, :], b[None, :, :]).sum(-1)
    maxs = a.sum(1, keepdim=True) + b.sum(1)[None, :] - mins
    # 0/0 -> 0: maxs == 0 only when both rows are all zero, and then mins == 0 too.
    return mins / maxs.clamp_min(torch.finfo(maxs.dtype).tiny)


def binary_jaccard(counts_a: Tensor, counts_b: Tensor | None = None, *,
                   block_elements: int = DEFAULT_BLOCK_ELEMENTS) -> Tensor:
    """Jaccard similarity of the label *sets* ``|x ∩ y| / |x ∪ y|``: counts read as present
    (> 0) or absent, so multiplicity is ignored (the multi-label, not multi-object, view).

    >>> binary_jaccard(torch.tensor([[2, 1, 0]]), torch.tensor([[1, 0, 1]]))
    tensor([[0.3333]])
    """
    a, b = _check_counts(counts_a, counts_b)
    return multiset_jaccard((a > 0).to(a.dtype), (b > 0).to(b.dtype), block_elements=block_elements)


def count_cosine(counts_a: Tensor, counts_b: Tensor | None = None) -> Tensor:
    """Cosine similarity of label-count vectors, the baseline of METHODS.md §2.

    ``S_cos(x, y) = n_x · n_y / (‖n_x‖ ‖n_y‖)``; a zero vector has similarity 0 with everything.
    Inputs are non-negative (counts, or attribute probabilities), so the result is in [0, 1]; it
    is clamped there to absorb rounding.

    Args:
        counts_a: ``Tensor[Na, C]`` non-negative.
        counts_b: ``Tensor[Nb, C]``; ``counts_a`` itself when None.

    Returns:
        ``Tensor[Na, Nb]`` in [0, 1].

    >>> count_cosine(torch.tensor([[1, 0], [1, 1]]), torch.tensor([[1, 0], [0, 0]]))
    tensor([[1.0000, 0.0000],
            [0.7071, 0.0000]])
    """
    a, b = _check_counts(counts_a, counts_b)
    return (F.normalize(a, dim=1) @ F.normalize(b, dim=1).T).clamp(0.0, 1.0)


def attribute_similarity(attributes: Tensor, known: Tensor | None = None) -> Tensor:
    """Semantic granularity similarity ``g_ij`` of SGML (METHODS.md §1): the cosine of two
    samples' attribute vectors, over the attributes known for both.

    ``g_ij = Σ_a k_ia k_ja x_ia x_ja / sqrt(Σ_a k_ja x_ia² · Σ_a k_ia x_ja²)`` with ``k`` the
    ``known`` mask: an attribute unknown for either sample (a sketch, CUB's "not visible")
    counts for neither, instead of reading as "absent". With every attribute known this is the
    plain cosine. A pair with nothing in common to compare (a zero vector over the shared
    known attributes) has ``g = 0``. Vectorized: three ``[B, A] x [A, B]`` products.

    Args:
        attributes: ``Tensor[B, A]``, non-negative: 0/1 ground truth or predicted probabilities.
        known: bool ``Tensor[B, A]``; every entry known when None.

    Returns:
        ``Tensor[B, B]`` in [0, 1], symmetric.

    >>> attribute_similarity(torch.tensor([[1., 1., 0.], [1., 0., 1.], [1., 1., 1.]]),
    ...                      torch.tensor([[True, True, True], [True, True, True], [True, False, True]]))
    tensor([[1.0000, 0.5000, 0.7071],
            [0.5000, 1.0000, 1.0000],
            [0.7071, 1.0000, 1.0000]])
    """
    if not isinstance(attributes, Tensor) or attributes.dim() != 2:
        shape = tuple(attributes.shape) if isinstance(attributes, Tensor) else type(attributes).__name__
        raise ValueError(f"attributes must be a 2-D tensor [B, A], got {shape}")
    x = attributes if attributes.dtype.is_floating_point else attributes.to(torch.get_default_dtype())
    if x.numel() and bool((x < 0).any()):
        raise ValueError("attributes must be non-negative (0/1 labels or probabilities)")
    if known is None:
        k = torch.ones_like(x)
    else:
        if tuple(known.shape) != tuple(x.shape):
            raise ValueError(f"known {tuple(known.shape)} must have the shape of attributes {tuple(x.shape)}")
        k = known.to(x.dtype)
        x = x * k
    numerator = x @ x.T
    norms = (x * x) @ k.T  # [i, j]: Σ_a k_ja x_ia², sample i's squared norm over j's known attributes
    denominator = torch.sqrt(norms * norms.T)
    g = numerator / torch.where(denominator > 0, denominator, torch.ones_like(denominator))
    return g.clamp(0.0, 1.0)


#: Label similarities of count vectors by their params.yaml name (``loss.similarity``):
#: ``LABEL_SIMILARITIES.get(name)(counts)`` is the ``[B, B]`` matrix.
LABEL_SIMILARITIES: Registry[Tensor] = Registry("label similarity")
LABEL_SIMILARITIES.register("jaccard")(multiset_jaccard)
LABEL_SIMILARITIES.register("binary_jaccard")(binary_jaccard)
LABEL_SIMILARITIES.register("cosine")(count_cosine)
