"""How embeddings are compared: one declaration per geometry, read by every stage.

A :class:`Geometry` says how vectors are prepared for ranking (L2-normalized, 0/1 bits mapped
to ±1, or as they are), how a pair is scored (inner product, or euclidean distance as the
score ``2 q·g − ‖g‖²``, which orders a query's gallery exactly as ``−‖q − g‖²`` does and is
one GEMM per block; ±1 codes' inner product is ``bits − 2·hamming``), which faiss metric an
index of such vectors uses, whether the embed stage stores the embeddings normalized, what a
shown score is called and which geometry ranks a gallery decoded from product codes. The
ranking, the embed, quantize and evaluate stages, validation, search and export read these
fields; nothing compares geometry names. Register another with :func:`register_geometry`.

>>> geometry("cosine").faiss_metric, geometry("euclidean").score_name
('ip', 'euclidean distance')
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from dml.errors import ConfigError

__all__ = ["GEOMETRIES", "Geometry", "block_scores", "gathered_scores", "geometry", "prepare_embeddings",
           "protocol_geometries", "register_geometry"]

UNIT_TOLERANCE = 1e-6  # a vector this close to unit norm is not normalized again


@dataclass(frozen=True)
class Geometry:
    """How vectors are compared (module docstring)."""

    name: str
    score_name: str  #: what a shown score is ("cosine similarity", "euclidean distance", ...)
    faiss_metric: str | None  #: an index's metric, ``"ip"`` or ``"l2"`` (:data:`dml.index.METRICS`); None: not a float index
    decoded: str  #: the geometry that ranks vectors decoded from product codes of such vectors
    normalized: bool = False  #: rows L2-normalized: when ranked, and by the embed stage when stored
    binary: bool = False  #: 0/1 code bits, ranked as ±1
    euclidean: bool = False  #: ranked by increasing euclidean distance, not by inner product
    protocol: bool = False  #: an evaluation protocol may rank by it (a geometry of embeddings)

    @property
    def higher_is_nearer(self) -> bool:
        """Whether a larger shown score is a nearer item (a similarity, not a distance)."""
        return not (self.euclidean or self.binary)


GEOMETRIES: dict[str, Geometry] = {}


def register_geometry(shape: Geometry) -> Geometry:
    """Add ``shape`` under its name (an error if the name is taken); returns it."""
    if shape.name in GEOMETRIES:
        raise ValueError(f"geometry {shape.name!r} is registered already")
    GEOMETRIES[shape.name] = shape
    return shape


for _shape in (
    Geometry("cosine", "cosine similarity", "ip", decoded="dot", normalized=True, protocol=True),
    Geometry("dot", "inner product", "ip", decoded="dot"),
    Geometry("euclidean", "euclidean distance", "l2", decoded="euclidean", euclidean=True, protocol=True),
    Geometry("hamming", "hamming distance", None, decoded="hamming", binary=True),
):
    register_geometry(_shape)


def geometry(name: str, *, where: str = "metric", protocol: bool = False) -> Geometry:
    """The geometry called ``name``; with ``protocol``, one an evaluation protocol may rank by.
    An unknown name is a :class:`~dml.errors.ConfigError` naming ``where`` and the valid ones."""
    valid = protocol_geometries() if protocol else list(GEOMETRIES)
    if name not in valid:
        raise ConfigError(f"{where} must be one of: {', '.join(valid)}; got {name!r}")
    return GEOMETRIES[name]


def protocol_geometries() -> list[str]:
    """The names of the geometries an evaluation protocol may rank by."""
    return [name for name, shape in GEOMETRIES.items() if shape.protocol]


def prepare_embeddings(x: torch.Tensor, metric: str) -> torch.Tensor:
    """float32 copy of ``x: [N, D]`` (or ``[N, V, D]``, views) in the form :func:`block_scores`
    ranks under the geometry ``metric``: L2-normalized rows where it is ``normalized`` (vectors
    already of unit norm, as the embed stage writes them, are used as they are: no copy the
    size of the data), 0/1 (or boolean) bits mapped to ±1 where it is ``binary``, else as they are.
    """
    shape = geometry(metric)
    x = x.detach().to(torch.float32)
    if shape.normalized:
        unit = all(bool(((chunk.norm(dim=-1) - 1).abs() <= UNIT_TOLERANCE).all()) for chunk in x.split(1 << 14))
        return x if unit else F.normalize(x, dim=-1)
    if shape.binary:
        return x * 2.0 - 1.0
    return x


def block_scores(query_rows: torch.Tensor, gallery: torch.Tensor, metric: str,
                 gallery_sq_norms: torch.Tensor | None = None, out: torch.Tensor | None = None) -> torch.Tensor:
    """``float32[B, N]`` scores, higher is nearer, from prepared vectors (one GEMM).

    For a ``euclidean`` geometry pass ``gallery_sq_norms = ‖g‖²``: the score ``2 q·g − ‖g‖²`` differs
    from ``−‖q − g‖²`` by ``‖q‖²``, a constant per query, so it ranks identically.

    Rows with several views (``[B, V, D]`` and/or ``[N, W, D]``, e.g. image and mirror)
    score as their nearest pair of views: the largest of the ``V·W`` scores, euclidean ones
    as ``−‖q − g‖²`` in full (the constant per query differs between views).
    ``out``: a contiguous ``[B, N]`` buffer to write single-view scores into (no allocation).
    """
    if query_rows.dim() == 3 or gallery.dim() == 3:
        return _nearest_views(query_rows, gallery, metric)
    scores = torch.mm(query_rows, gallery.T, out=out) if out is not None else query_rows @ gallery.T
    if GEOMETRIES[metric].euclidean:
        norms = gallery_sq_norms if gallery_sq_norms is not None else (gallery * gallery).sum(1)
        scores.mul_(2.0).sub_(norms[None, :])
    return scores


def gathered_scores(query_rows: torch.Tensor, gathered: torch.Tensor, metric: str) -> torch.Tensor:
    """``float32[B, C]``: :func:`block_scores` of each query against its own ``C`` items,
    ``gathered`` ``[B, C, D]`` (or ``[B, C, W, D]``, views; the query may be ``[B, V, D]``):
    the same scores, one batched product instead of a ``B x N`` block (candidates re-ranked
    exactly, :mod:`dml.evaluate.candidates`)."""
    q = query_rows if query_rows.dim() == 3 else query_rows[:, None]  # B V D
    g = gathered if gathered.dim() == 4 else gathered[:, :, None]  # B C W D
    views = q.shape[1] > 1 or g.shape[2] > 1
    euclidean = GEOMETRIES[metric].euclidean
    best: torch.Tensor | None = None
    for v in range(q.shape[1]):
        for w in range(g.shape[2]):
            items = g[:, :, w]
            scores = torch.bmm(items, q[:, v, :, None]).squeeze(2)
            if euclidean:
                scores.mul_(2.0).sub_((items * items).sum(2))
                if views:  # views compare as -||q - g||^2 in full, as block_scores does
                    scores.sub_((q[:, v] * q[:, v]).sum(1)[:, None])
            best = scores if best is None else torch.maximum(best, scores, out=best)
    assert best is not None
    return best


def _nearest_views(query_rows: torch.Tensor, gallery: torch.Tensor, metric: str) -> torch.Tensor:
    """``float32[B, N]``: for each pair the best score over its views (:func:`block_scores`)."""
    q = query_rows if query_rows.dim() == 3 else query_rows[:, None]
    g = gallery if gallery.dim() == 3 else gallery[:, None]
    best: torch.Tensor | None = None
    for v in range(q.shape[1]):
        for w in range(g.shape[1]):
            scores = q[:, v] @ g[:, w].T
            if GEOMETRIES[metric].euclidean:
                scores.mul_(2.0).sub_((g[:, w] * g[:, w]).sum(1)[None, :])
                scores.sub_((q[:, v] * q[:, v]).sum(1)[:, None])
            best = scores if best is None else torch.maximum(best, scores, out=best)
    assert best is not None
    return best
