"""The checked inputs of :func:`dml.evaluate.retrieval_metrics`: options, embeddings, labels.

Every check raises a one-line :class:`~dml.errors.DataError` or :class:`~dml.errors.ConfigError`
naming the argument (and the row, where one is at fault) before anything is ranked.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from numpy.typing import ArrayLike

from dml.errors import ConfigError, DataError
from dml.evaluate.geometry import geometry, prepare_embeddings
from dml.evaluate.metrics import MAP_DENOMINATORS, NDCG_GAINS
from dml.evaluate.relevance import Relevance, label_relevance, matrix_callback

__all__ = ["Inputs", "check_options", "read_inputs"]

Labels = ArrayLike | torch.Tensor | Mapping[str, ArrayLike | torch.Tensor] | None


def check_options(ks: int | Sequence[int], map_ks: int | Sequence[int], precision_ks: int | Sequence[int],
                  ndcg_ks: int | Sequence[int], *, ndcg_gain: str, map_denominator: str,
                  block_bytes: int) -> tuple[tuple[int, ...], ...]:
    """The four cutoff lists as tuples of ints (a bare int is one cutoff), the other options checked."""
    cutoffs = tuple(_cutoffs(k) for k in (ks, map_ks, precision_ks, ndcg_ks))
    for name, values in zip(("ks", "map_ks", "precision_ks", "ndcg_ks"), cutoffs, strict=True):
        if (name == "ks" and not values) or (values and min(values) < 1):
            raise ConfigError(f"{name} must be positive integers, got {tuple(values)}")
    if ndcg_gain not in NDCG_GAINS:
        raise ConfigError(f"ndcg_gain must be one of: {', '.join(NDCG_GAINS)}; got {ndcg_gain!r}")
    if map_denominator not in MAP_DENOMINATORS:
        raise ConfigError(f"map_denominator must be one of: {', '.join(MAP_DENOMINATORS)}; got {map_denominator!r}")
    if int(block_bytes) < 1:
        raise ConfigError(f"block_bytes must be positive, got {block_bytes}")
    return cutoffs


@dataclass
class Inputs:
    """Embeddings prepared for ranking, each label set's labels and the excluded items."""

    query: torch.Tensor  #: prepared (:func:`~dml.evaluate.geometry.prepare_embeddings`)
    gallery: torch.Tensor  #: prepared; the query itself when it is ranked against itself
    labels: dict[str, tuple[torch.Tensor | None, torch.Tensor | None]]  #: name -> (query, gallery) labels
    exclude: torch.Tensor | None  #: per query, the gallery position left out (-1: none)
    against_itself: bool  #: no separate gallery

    def relevances(self, relevance: Relevance | ArrayLike | torch.Tensor | None) -> list[Relevance]:
        """The given relevance (a callback or a ``[Q, N]`` matrix), else one by class per label set."""
        shape = (self.query.shape[0], self.gallery.shape[0])
        given = matrix_callback(relevance, "relevance", shape, self.query.device, torch.bool)
        return [given] if given is not None else [label_relevance(q, g) for q, g in self.labels.values()]


def read_inputs(query: ArrayLike | torch.Tensor, query_labels: Labels, gallery: ArrayLike | torch.Tensor | None,
                gallery_labels: Labels, *, relevance: object, grades: object, nmi: bool, metric: str,
                query_gallery_index: ArrayLike | torch.Tensor | None) -> Inputs:
    """Check the arguments of :func:`~dml.evaluate.retrieval_metrics` together and prepare them."""
    if gallery is None and gallery_labels is not None:
        raise DataError("gallery_labels were given without a gallery")
    if query_labels is None and relevance is None:
        raise DataError("give query_labels (relevance by class) or a relevance")
    if gallery is not None and relevance is None and gallery_labels is None:
        raise DataError("give gallery and gallery_labels together (or a relevance)")
    if nmi and query_labels is None:
        raise DataError("nmi=True needs query_labels")
    sets = _label_sets(query_labels, gallery_labels, gallery is not None)
    if len(sets) > 1 and (relevance is not None or grades is not None):
        raise DataError("several label sets rank by class: no relevance or grades of one's own")
    q = _embeddings(query, "query", metric)
    if q.shape[0] == 0:
        raise DataError("no query embeddings (query has 0 rows)")
    g = None if gallery is None else _embeddings(gallery, "gallery", metric).to(q.device)
    if g is not None and g.shape[-1] != q.shape[-1]:
        raise DataError(f"query and gallery dimensions differ: query shape {tuple(q.shape)}, "
                        f"gallery shape {tuple(g.shape)}")
    labels = {}
    for name, (q_given, g_given) in sets.items():
        q_ids, g_ids = _label_ids(q_given, g_given)
        where = f"{name} " if name else ""
        q_lab = None if q_ids is None else _labels(q_ids, f"{where}query_labels", q.shape[0], q.device)
        g_lab = (q_lab if g is None
                 else None if g_ids is None else _labels(g_ids, f"{where}gallery_labels", g.shape[0], q.device))
        labels[name] = (q_lab, g_lab)
    exclude = _excluded(query_gallery_index, q, g)
    if geometry(metric).normalized:
        for name, t in (("query", q), ("gallery", g)):
            row = None if t is None else _first_row(t, lambda c: (c == 0).all(dim=-1).reshape(len(c), -1).any(dim=1))
            if row is not None:
                raise DataError(f"{name} row {row} is all zeros: cosine similarity is undefined")
    q = prepare_embeddings(q, metric)
    return Inputs(q, q if g is None else prepare_embeddings(g, metric), labels, exclude, g is None)


def _excluded(query_gallery_index: ArrayLike | torch.Tensor | None, q: torch.Tensor,
              g: torch.Tensor | None) -> torch.Tensor | None:
    """Each query's gallery position to leave out: itself without a separate gallery, else the
    checked ``query_gallery_index`` (or none)."""
    if g is None:
        if query_gallery_index is not None:
            raise DataError("query_gallery_index needs a separate gallery (each query is excluded already)")
        return torch.arange(q.shape[0], device=q.device)
    if query_gallery_index is None:
        return None
    exclude = _labels(query_gallery_index, "query_gallery_index", q.shape[0], q.device)
    if bool(((exclude < -1) | (exclude >= g.shape[0])).any()):
        raise DataError(f"query_gallery_index values must be in [-1, {g.shape[0]})")
    return exclude


def _embeddings(x: ArrayLike | torch.Tensor, name: str, metric: str) -> torch.Tensor:
    t = x if isinstance(x, torch.Tensor) else torch.from_numpy(np.asarray(x))
    if t.dim() not in (2, 3):
        raise DataError(f"{name} embeddings must be 2-D [rows, dim] (or 3-D [rows, views, dim]), "
                        f"got shape {tuple(t.shape)}")
    if geometry(metric).binary:
        if not bool(((t == 0) | (t == 1)).all()):
            raise DataError(f"{name} codes must hold 0/1 bits (one column per bit) for hamming ranking")
    elif not t.is_floating_point():
        raise DataError(f"{name} embeddings must be floating point, got {t.dtype}")
    t = t.detach().to(torch.float32)
    row = _first_row(t, lambda chunk: ~torch.isfinite(chunk).flatten(1).all(dim=1))
    if row is not None:
        raise DataError(f"{name} embeddings contain non-finite values (NaN/inf in float32), first at row {row}")
    return t


def _first_row(t: torch.Tensor, where: Callable[[torch.Tensor], torch.Tensor], chunk: int = 1 << 14) -> int | None:
    """The first row for which ``where(rows) -> bool[rows]`` holds, checked a chunk of rows at
    a time (no temporary the size of the data)."""
    for start in range(0, t.shape[0], chunk):
        hit = where(t[start : start + chunk]).nonzero()
        if len(hit):
            return start + int(hit[0, 0])
    return None


def _cutoffs(ks: int | Sequence[int]) -> tuple[int, ...]:
    """``ks`` as a tuple of ints: one cutoff may be given as a bare int."""
    return (int(ks),) if isinstance(ks, (int, np.integer)) else tuple(int(k) for k in ks)


def _label_ids(query_labels: ArrayLike | torch.Tensor | None,
               gallery_labels: ArrayLike | torch.Tensor | None) -> tuple:
    """Labels that are not numbers (class names, any hashable objects) mapped to integer ids,
    one vocabulary for query and gallery so that equal names stay equal; numbers unchanged."""
    given = [y if isinstance(y, torch.Tensor) else np.asarray(y)  # a tensor always holds numbers
             for y in (query_labels, gallery_labels) if y is not None]
    named = [isinstance(y, np.ndarray) and y.dtype.kind in "OUS" for y in given]
    if not any(named):
        return query_labels, gallery_labels
    if not all(named):
        raise DataError("query_labels and gallery_labels must both be names or both be numbers")
    if any(y.ndim != 1 for y in given):
        raise DataError("labels must be 1-D [rows]")
    _, ids = np.unique(np.concatenate([y.astype(str) for y in given]), return_inverse=True)
    query_ids, gallery_ids = np.split(ids, [len(given[0])])
    return query_ids, (gallery_ids if gallery_labels is not None else None)


def _labels(y: ArrayLike | torch.Tensor, name: str, n_rows: int, device: torch.device) -> torch.Tensor:
    t = y if isinstance(y, torch.Tensor) else torch.from_numpy(np.asarray(y))
    if t.dim() != 1:
        raise DataError(f"{name} must be 1-D [rows], got shape {tuple(t.shape)}")
    if t.is_floating_point() or t.is_complex():
        raise DataError(f"{name} must be integers, got {t.dtype}")
    if t.shape[0] != n_rows:
        raise DataError(f"{name} has {t.shape[0]} entries but the embeddings have {n_rows} rows")
    return t.to(device=device, dtype=torch.long)


def _label_sets(query_labels, gallery_labels, has_gallery: bool) -> dict[str, tuple]:
    """``{name: (query labels, gallery labels)}``: one unnamed set (``""``), or the named sets
    of a mapping (each semantic scale's labels) with the same names on both sides."""
    if not isinstance(query_labels, Mapping):
        if isinstance(gallery_labels, Mapping):
            raise DataError("gallery_labels is a mapping of label sets but query_labels is not")
        return {"": (query_labels, gallery_labels)}
    if not query_labels:
        raise DataError("query_labels is an empty mapping: name one label set at least")
    if has_gallery and (not isinstance(gallery_labels, Mapping) or set(gallery_labels) != set(query_labels)):
        raise DataError(f"query_labels names the label sets {list(query_labels)}: gallery_labels must "
                        "be a mapping with the same names")
    return {str(name): (labels, gallery_labels[name] if has_gallery else None)
            for name, labels in query_labels.items()}
