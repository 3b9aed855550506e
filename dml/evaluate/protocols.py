"""Query and gallery sets from the manifest's ``role`` column ("query", "gallery", "both").

An item with role "both" is in the query set and in the gallery set. Two cases for the caller:

- every item is "both" (CUB, Cars196, SOP: each test image is ranked against all the others):
  the query set equals the gallery set, so call ``retrieval_metrics(x, y)`` with no gallery,
  which leaves each query out of its own ranking;
- separate sets (In-Shop, DyML, Sketchy): ``retrieval_metrics(x[q], y[q], x[g], y[g])``; where
  some items are "both", pass ``query_gallery_index=query_gallery_index(q, g)`` so that such a
  query does not find itself in the gallery.

:func:`split_query_gallery` gives the masks, and ``same_set`` tells which case applies.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

from dml.errors import DataError

__all__ = ["ROLES", "query_gallery_index", "same_set", "split_query_gallery"]

ROLES = ("query", "gallery", "both")


def split_query_gallery(roles: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Boolean masks ``(query_mask, gallery_mask)``, each ``[N]``, from ``roles: str[N]``.

    Raises DataError naming the first row whose role is not one of ``ROLES``.

    >>> q, g = split_query_gallery(["query", "gallery", "both"])
    >>> q.tolist(), g.tolist()
    ([True, False, True], [False, True, True])
    """
    r = np.asarray(roles, dtype=object)
    if r.ndim != 1:
        raise DataError(f"roles must be 1-D, got shape {r.shape}")
    query = (r == "query") | (r == "both")
    gallery = (r == "gallery") | (r == "both")
    unknown = ~(query | gallery)
    if unknown.any():
        row = int(np.flatnonzero(unknown)[0])
        raise DataError(f"unknown role {r[row]!r} at row {row}; expected one of {ROLES}")
    return query.astype(bool), gallery.astype(bool)


def same_set(query_mask: ArrayLike, gallery_mask: ArrayLike) -> bool:
    """True when the query set equals the gallery set: evaluate with ``gallery=None``.

    >>> same_set(*split_query_gallery(["both", "both"])), same_set(*split_query_gallery(["query", "both"]))
    (True, False)
    """
    return bool(np.array_equal(np.asarray(query_mask, bool), np.asarray(gallery_mask, bool)))


def query_gallery_index(query_mask: ArrayLike, gallery_mask: ArrayLike) -> np.ndarray:
    """For each query item, its row in the gallery subset (``x[gallery_mask]``), or -1. int64 ``[Q]``.

    >>> query_gallery_index(*split_query_gallery(["query", "gallery", "both", "both"])).tolist()
    [-1, 1, 2]
    """
    q = np.asarray(query_mask, bool)
    g = np.asarray(gallery_mask, bool)
    gallery_row = np.cumsum(g) - 1  # row of each item within the gallery subset
    return np.where(g, gallery_row, -1)[q].astype(np.int64)
