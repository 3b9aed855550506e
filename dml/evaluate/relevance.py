"""Which gallery items are relevant to a query: class labels, a matrix, a callback, grades.

Relevance is a callback, ``relevance(rows) -> bool[B, N]`` for a block of query row indices,
so that multi-label ("shares a label") and per-scale relevance reuse the same ranking code;
:func:`label_relevance` (same class) is the default, and also answers without a ``B x N``
matrix how many items each query's class has and whether given pairs are relevant, which is
what ranking only each query's top needs. Graded relevance for NDCG is a second callback of
the same shape, ``grades(rows) -> float[B, N]``. A dense ``[Q, N]`` matrix becomes a callback
with :func:`matrix_callback`.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from numpy.typing import ArrayLike

from dml.errors import DataError

__all__ = ["Grades", "LabelRelevance", "Relevance", "exclude_in_block", "label_relevance", "matrix_callback",
           "relevance_in_block", "relevance_matrix"]

Relevance = Callable[[torch.Tensor], torch.Tensor]
"""``relevance(rows: int64[B]) -> bool[B, N]``: which gallery items are relevant to those queries.

Must return a new tensor (the caller clears the excluded self-matches in place)."""

Grades = Callable[[torch.Tensor], torch.Tensor]
"""``grades(rows: int64[B]) -> float[B, N]``: graded relevance (0 = not relevant), for NDCG."""


class LabelRelevance:
    """Relevance by class equality: ``relevant[b, j] = query_labels[rows[b]] == gallery_labels[j]``.

    A :data:`Relevance` callback that also answers, without a ``B x N`` matrix, how many
    gallery items each query's class has (:meth:`counts`), which they are (:meth:`members`)
    and whether given pairs are relevant (:meth:`pairs`).

    >>> rel = label_relevance(torch.tensor([0, 1]), torch.tensor([1, 0, 1]))
    >>> rel(torch.tensor([1])).tolist()
    [[True, False, True]]
    >>> rel.counts(torch.tensor([0, 1])).tolist(), rel.pairs(torch.tensor([1, 1]), torch.tensor([0, 1])).tolist()
    ([1, 2], [True, False])
    >>> rel.members(torch.tensor([1, 0])).tolist()                  # -1 pads
    [[0, 2], [1, -1]]
    """

    def __init__(self, query_labels: torch.Tensor, gallery_labels: torch.Tensor) -> None:
        self.query_labels, self.gallery_labels = query_labels, gallery_labels
        self._classes, self._sizes = torch.unique(gallery_labels, return_counts=True)
        self._by_class = torch.argsort(gallery_labels, stable=True)  # each class's items, in gallery order
        self._starts = torch.cumsum(self._sizes, 0) - self._sizes

    def __call__(self, rows: torch.Tensor) -> torch.Tensor:
        return self.query_labels[rows, None] == self.gallery_labels[None, :]

    def counts(self, rows: torch.Tensor) -> torch.Tensor:
        """int64 ``[B]``: the gallery items of each query's class."""
        labels = self.query_labels[rows]
        if self._classes.numel() == 0:
            return torch.zeros_like(labels)
        at = torch.searchsorted(self._classes, labels).clamp(max=self._classes.numel() - 1)
        return torch.where(self._classes[at] == labels, self._sizes[at], 0)

    def members(self, rows: torch.Tensor) -> torch.Tensor:
        """int64 ``[B, max count]``: the gallery positions of each query's class, increasing,
        padded with -1."""
        counts = self.counts(rows)
        width = int(counts.max()) if len(rows) else 0
        if self._classes.numel() == 0:  # an empty gallery: no member
            return torch.full((len(rows), width), -1, dtype=torch.long, device=rows.device)
        at = torch.searchsorted(self._classes, self.query_labels[rows]).clamp(max=self._classes.numel() - 1)
        offsets = torch.arange(width, device=rows.device)
        listed = offsets[None, :] < counts[:, None]
        picked = self._by_class[(self._starts[at][:, None] + offsets[None, :]).clamp(max=len(self._by_class) - 1)]
        return torch.where(listed, picked, -1)

    def pairs(self, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
        """bool ``[K]``: whether gallery item ``cols[i]`` is relevant to query ``rows[i]``."""
        return self.query_labels[rows] == self.gallery_labels[cols]


def label_relevance(query_labels: torch.Tensor, gallery_labels: torch.Tensor) -> LabelRelevance:
    """Relevance by class equality (:class:`LabelRelevance`)."""
    return LabelRelevance(query_labels, gallery_labels)


def matrix_callback(value: Relevance | ArrayLike | torch.Tensor | None, name: str, shape: tuple[int, int],
                    device: torch.device, dtype: torch.dtype) -> Relevance | None:
    """A ``rows -> [B, N]`` callback from a callback or a dense ``[Q, N]`` matrix."""
    if value is None or callable(value):
        return value
    t = value if isinstance(value, torch.Tensor) else torch.from_numpy(np.asarray(value))
    if tuple(t.shape) != shape:
        raise DataError(f"{name} must be a [queries, gallery] = {list(shape)} matrix, got {list(t.shape)}")
    t = t.to(device=device, dtype=dtype)
    return lambda rows: t[rows].clone()


def relevance_matrix(rel: Relevance, rows: torch.Tensor, n_gallery: int) -> torch.Tensor:
    """``rel(rows)``, checked to be ``bool[len(rows), n_gallery]``."""
    relevant = rel(rows)
    if tuple(relevant.shape) != (len(rows), n_gallery) or relevant.dtype != torch.bool:
        raise ValueError(
            f"relevance must return bool[{len(rows)}, {n_gallery}], "
            f"got {relevant.dtype}{list(relevant.shape)}"
        )
    return relevant


def exclude_in_block(own: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor] | None:
    """``(block rows, gallery positions)`` of the excluded items of a block (``own``: -1 = none)."""
    if own is None:
        return None
    inside = (own >= 0).nonzero(as_tuple=True)[0]
    return inside, own[inside]


def relevance_in_block(rel: Relevance, rows: torch.Tensor, own: torch.Tensor | None,
                       n_gallery: int) -> tuple[torch.Tensor, Callable[[np.ndarray, np.ndarray], np.ndarray]]:
    """``(n_relevant int64[B], flags(block_rows, cols) -> bool)`` of one block of queries (the
    excluded item not counted); ``flags`` takes and gives flat numpy arrays. Class relevance
    needs no ``B x N`` matrix."""
    excluded = exclude_in_block(own)
    if isinstance(rel, LabelRelevance):
        n_relevant = rel.counts(rows)
        if excluded is not None:
            n_relevant[excluded[0]] -= rel.pairs(rows[excluded[0]], excluded[1]).long()
        query_labels, gallery_labels = rel.query_labels[rows].cpu().numpy(), rel.gallery_labels.cpu().numpy()

        def flags(block_rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
            return query_labels[block_rows] == gallery_labels[cols]

        return n_relevant, flags
    relevant = relevance_matrix(rel, rows, n_gallery)
    if excluded is not None:
        relevant[excluded] = False
    n_relevant = torch.bincount(relevant.nonzero(as_tuple=True)[0], minlength=len(rows))
    matrix = relevant.cpu().numpy()

    def flags_of_matrix(block_rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        return matrix[block_rows, cols]

    return n_relevant, flags_of_matrix
