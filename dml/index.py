"""faiss indexes over embeddings: build, save/load with integrity checks, search, decode.

Kinds (:data:`KINDS`):

- ``"flat"``: exact search over the float32 vectors (4*D bytes per vector);
- ``"pq"``: product quantization, ``M = bits // 8`` sub-quantizers of 8 bits (``bits / 8``
  bytes per vector);
- ``"opq"``: a learned rotation (OPQ) followed by the same PQ;
- ``"ivfpq"``: an inverted file over a flat coarse quantizer with PQ codes of the residuals;
- ``"hash"`` (built by :mod:`dml.binary_codes`, read here like the others): a faiss ``IndexLSH``
  of binary codes, queries encoded too and ranked by Hamming distance.

:func:`build_index` makes the first four with ``faiss.index_factory`` (``"Flat"``,
``"PQ{M}x8np"``, ``"OPQ{M},PQ{M}x8np"``, ``"IVF{nlist},PQ{M}x8np"``) and then sets what a
factory string cannot: seeds, OPQ's rotation updates, ``nprobe``.

Inner product (``metric="ip"``) is the default: embeddings are L2-normalized, so it ranks as
cosine. Every random choice (training sample, k-means of the coarse quantizer and of the
sub-quantizers) is seeded, so the same vectors and seed give the same index, byte for byte.

On disk an index is two files: the faiss file and a JSON sidecar ``<file>.json`` with kind,
faiss type, dim, metric, code size, ntotal, faiss version, the file's sha256 and the caller's
``info``. :func:`load_index` refuses a file whose sidecar is missing or disagrees with it.

:func:`decode_gallery` turns the codes back into vectors, so that exact evaluation
(``dml.evaluate.retrieval_metrics(..., similarity="dot")``) ranks the gallery exactly as the
index's asymmetric search does (ties aside).

:func:`code_vectors` is the one vector per image that every index is built from and searched
with (the mean of image and mirror where the protocol flips); :func:`stored_codes` and
:func:`code_collapse` tell how many different codes a gallery got, so that a quantizer that
gives most items one code is seen.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from dml.errors import ConfigError, DataError, IntegrityError
from dml.evaluate.geometry import geometry
from dml.io import atomic_path, sha256_file, write_json_atomic

__all__ = [
    "KINDS",
    "pq_from_codebooks",
    "min_training_vectors",
    "METRICS",
    "build_index",
    "code_collapse",
    "code_vectors",
    "decode_gallery",
    "describe_index",
    "load_index",
    "save_index",
    "search",
    "sidecar_path",
    "stored_codes",
]

KINDS = ("flat", "pq", "opq", "ivfpq")
METRICS = {"ip": faiss.METRIC_INNER_PRODUCT, "l2": faiss.METRIC_L2}
CODEBOOK_BITS = 8  # bits per sub-quantizer: 256 centroids each
MIN_POINTS_PER_CENTROID = 39  # faiss warns below this many training points per centroid
DEFAULT_MAX_TRAIN_POINTS = 1 << 17


def _vectors(x: Any, name: str) -> np.ndarray:
    a = np.asarray(x)
    if a.ndim != 2:
        raise DataError(f"{name} must be 2-D [rows, dim], got shape {a.shape}")
    if not np.issubdtype(a.dtype, np.floating):
        raise DataError(f"{name} must be floating point, got {a.dtype}")
    a = np.ascontiguousarray(a, dtype=np.float32)
    finite = np.isfinite(a).all(axis=1)
    if not finite.all():
        raise DataError(f"{name} contain non-finite values, first at row {int(np.flatnonzero(~finite)[0])}")
    return a


def _subquantizers(bits: int | None, dim: int) -> int:
    if bits is None or int(bits) != bits or bits <= 0 or bits % CODEBOOK_BITS:
        raise ConfigError(f"bits must be a positive multiple of {CODEBOOK_BITS} for a PQ index, got {bits}")
    m = int(bits) // CODEBOOK_BITS
    if dim % m:
        raise ConfigError(
            f"bits={bits} means M={m} sub-quantizers of {CODEBOOK_BITS} bits, "
            f"but the embedding dim D={dim} is not divisible by M={m}"
        )
    return m


def _training_sample(x: np.ndarray, cap: int, seed: int) -> np.ndarray:
    if x.shape[0] <= cap:
        return x
    rows = np.sort(np.random.default_rng(seed).choice(x.shape[0], size=cap, replace=False))
    return np.ascontiguousarray(x[rows])


def default_nlist(n_train: int) -> int:
    """About ``4 * sqrt(N)`` lists, at most one per 39 training points, at least 1.

    >>> default_nlist(10**6), default_nlist(10_000), default_nlist(10)   # 10k: capped at 10k // 39
    (4000, 256, 1)
    """
    return max(1, min(round(4 * np.sqrt(n_train)), n_train // MIN_POINTS_PER_CENTROID))


#: Rotation updates when learning OPQ. faiss's default of 50 takes tens of seconds per index
#: on two CPU cores even for a thousand 64-d vectors; 10 keeps the demo within its budget.
OPQ_ITERATIONS = 10


def _quiet(params: faiss.ClusteringParameters) -> None:
    """Accept small training sets without faiss's per-k-means warning (256 codes need 256 points)."""
    params.min_points_per_centroid = 1


def min_training_vectors(kind: str, dim: int) -> int:
    """Vectors an index of ``kind`` over ``dim``-d vectors needs to train: one per code word
    of a sub-quantizer, and for OPQ at least ``dim`` to learn its rotation (faiss's rotation
    learning crashes the process below that); 0 for the exact index."""
    if kind == "flat":
        return 0
    return max(1 << CODEBOOK_BITS, dim) if kind == "opq" else 1 << CODEBOOK_BITS


def build_index(
    vectors: np.ndarray,
    kind: str,
    *,
    bits: int | None = None,
    metric: str = "ip",
    nlist: int | None = None,
    nprobe: int | None = None,
    seed: int = 0,
    max_train_points: int = DEFAULT_MAX_TRAIN_POINTS,
) -> faiss.Index:
    """Train (if needed) and fill an index of ``kind`` with ``vectors: float32[N, D]``.

    Args:
        vectors: the gallery; converted to contiguous float32, must be finite.
        kind: one of :data:`KINDS`.
        bits: code length per vector for "pq", "opq", "ivfpq" (a multiple of 8; D must be
            divisible by ``bits // 8``); must be None for "flat".
        metric: "ip" (inner product) or "l2".
        nlist: inverted lists for "ivfpq"; default :func:`default_nlist` of the training
            set size.
        nprobe: lists visited per query for "ivfpq" (default ``max(1, nlist // 8)``, stored
            in the file). Set ``index.nprobe = index.nlist`` for an exhaustive search, the
            one that :func:`decode_gallery` reproduces.
        seed: seeds the training sample and every k-means.
        max_train_points: training uses all vectors up to this many, else a seeded sample.

    Raises:
        ConfigError: unknown kind or metric, bad ``bits`` (the message names bits and D),
            ``nlist`` larger than the training set.
        DataError: vectors not 2-D, not finite, or too few to train 256-word codebooks.
    """
    x = _vectors(vectors, "vectors")
    metric_type = _metric_type(kind, metric)
    if kind == "flat":
        return _flat_index(x, bits, metric_type)
    m = _subquantizers(bits, x.shape[1])
    train = _training_sample(x, max_train_points, seed)
    _check_training_size(kind, train.shape[0], x.shape[1])
    nlist = _checked_nlist(nlist, train.shape[0]) if kind == "ivfpq" else None
    index = faiss.index_factory(x.shape[1], _factory_string(kind, m, nlist), metric_type)
    _TRAINERS[kind](index, train, seed=seed, nprobe=nprobe)
    index.add(x)
    return index


#: The ``faiss.index_factory`` description of each kind: ``m`` sub-quantizers of ``nbits`` bits,
#: ``nlist`` inverted lists over a flat coarse quantizer. "np": no polysemous training (a
#: reordering of the code words that the factory's PQ does by default and the plain
#: ``IndexPQ`` / ``IndexIVFPQ`` constructors do not).
_FACTORY = {
    "flat": "Flat",
    "pq": "PQ{m}x{nbits}np",
    "opq": "OPQ{m},PQ{m}x{nbits}np",
    "ivfpq": "IVF{nlist},PQ{m}x{nbits}np",
}


def _factory_string(kind: str, m: int | None = None, nlist: int | None = None) -> str:
    """The ``faiss.index_factory`` string of ``kind``: what the index is, in one line."""
    return _FACTORY[kind].format(m=m, nbits=CODEBOOK_BITS, nlist=nlist)


def _metric_type(kind: str, metric: str) -> int:
    """The faiss metric of ``metric``, after checking that ``kind`` and ``metric`` are known."""
    if kind not in KINDS:
        raise ConfigError(f"unknown index kind {kind!r}; expected one of {KINDS}")
    if metric not in METRICS:
        raise ConfigError(f"unknown metric {metric!r}; expected one of {tuple(METRICS)}")
    return METRICS[metric]


def _flat_index(x: np.ndarray, bits: int | None, metric_type: int) -> faiss.Index:
    """The exact index over ``x``: nothing to train, and no code length to choose."""
    d = x.shape[1]
    if bits is not None:
        raise ConfigError(
            f"a flat index stores float32 vectors ({32 * d} bits); bits must be None, got {bits}"
        )
    index = faiss.index_factory(d, _factory_string("flat"), metric_type)
    index.add(x)
    return index


def _check_training_size(kind: str, n_train: int, d: int) -> None:
    """Refuse a training set too small for 256-word codebooks (or, for OPQ, for a ``d``-d
    rotation, whose learning crashes the process below ``d`` vectors)."""
    if n_train >= min_training_vectors(kind, d):
        return
    raise DataError(
        f"a {kind} index needs at least {1 << CODEBOOK_BITS} training vectors "
        f"(one per code word of an {CODEBOOK_BITS}-bit sub-quantizer), got {n_train}"
        if n_train < 1 << CODEBOOK_BITS else
        f"an {kind} index of {d}-d vectors needs at least {d} training vectors to learn its "
        f"rotation, got {n_train}"
    )


def _checked_nlist(nlist: int | None, n_train: int) -> int:
    """The inverted lists of an IVF index: :func:`default_nlist` unless given; each list's
    k-means centroid needs a training vector at least."""
    nlist = default_nlist(n_train) if nlist is None else int(nlist)
    if not 1 <= nlist <= n_train:
        raise ConfigError(f"nlist must be in [1, {n_train}] (training vectors), got {nlist}")
    return nlist


def _seed_pq(pq: faiss.ProductQuantizer, seed: int) -> None:
    """Seed the k-means of ``pq``'s sub-quantizers and let it train on small sets."""
    pq.cp.seed = seed
    _quiet(pq.cp)


def _train_pq(index: faiss.IndexPQ, train: np.ndarray, *, seed: int, nprobe: int | None) -> None:
    """Train a PQ index's seeded codebooks (``nprobe`` is for IVF only)."""
    _seed_pq(index.pq, seed)
    index.train(train)


def _train_opq(index: faiss.IndexPreTransform, train: np.ndarray, *, seed: int,
               nprobe: int | None) -> None:
    """Learn the OPQ rotation (:data:`OPQ_ITERATIONS` updates, with a PQ of our own seeded
    from ``seed``, where faiss would use a default one seeded 1234), then the seeded codebooks."""
    opq = faiss.downcast_VectorTransform(index.chain.at(0))
    opq.niter = OPQ_ITERATIONS
    opq_pq = faiss.ProductQuantizer(index.d, opq.M, CODEBOOK_BITS)  # used while learning it
    _seed_pq(opq_pq, seed)
    opq.pq = opq_pq
    _seed_pq(faiss.downcast_index(index.index).pq, seed)
    index.train(train)
    opq.pq = None  # only needed for training; do not keep a pointer to a Python-owned object


def _train_ivfpq(index: faiss.IndexIVFPQ, train: np.ndarray, *, seed: int,
                 nprobe: int | None) -> None:
    """Train the seeded coarse quantizer and residual codebooks; set the lists visited per
    query (default an eighth of them), which the factory string cannot."""
    index.cp.seed = seed
    _seed_pq(index.pq, seed)
    index.nprobe = max(1, index.nlist // 8) if nprobe is None else int(nprobe)
    index.train(train)


_TRAINERS = {"pq": _train_pq, "opq": _train_opq, "ivfpq": _train_ivfpq}


def pq_from_codebooks(codebooks: np.ndarray, metric: str = "ip") -> faiss.IndexPQ:
    """An empty, trained ``IndexPQ`` whose code words were learned elsewhere (a soft-PQ head):
    ``codebooks`` is float ``[M, K, D / M]`` with ``K = 2**nbits``; plain faiss searches it."""
    books = np.ascontiguousarray(codebooks, dtype=np.float32)
    if books.ndim != 3 or books.shape[1] < 2 or books.shape[1] & (books.shape[1] - 1):
        raise DataError(f"codebooks must be [M, K, d] with K a power of two, got {books.shape}")
    if metric not in METRICS:
        raise ConfigError(f"unknown metric {metric!r}; expected one of {tuple(METRICS)}")
    m, k, sub = books.shape
    index = faiss.IndexPQ(m * sub, m, k.bit_length() - 1, METRICS[metric])
    faiss.copy_array_to_vector(books.ravel(), index.pq.centroids)
    index.pq.sync_transposed_centroids()
    index.is_trained = True
    return index


def _kind(index: faiss.Index) -> str:
    index = faiss.downcast_index(index)
    if isinstance(index, faiss.IndexPreTransform):
        inner = faiss.downcast_index(index.index)
        if index.chain.size() == 1 and isinstance(
            faiss.downcast_VectorTransform(index.chain.at(0)), faiss.OPQMatrix
        ) and isinstance(inner, faiss.IndexPQ):
            return "opq"
    elif isinstance(index, faiss.IndexFlat):
        return "flat"
    elif isinstance(index, faiss.IndexIVFPQ):
        return "ivfpq"
    elif isinstance(index, faiss.IndexPQ):
        return "pq"
    elif isinstance(index, faiss.IndexLSH):
        return "hash"
    return "other"


def describe_index(index: faiss.Index) -> dict[str, Any]:
    """Facts about an index, as stored in its sidecar (without checksum and info)."""
    try:
        code_size = int(index.sa_code_size())
    except RuntimeError:  # index types without standalone codes
        code_size = 4 * index.d if _kind(index) == "flat" else None
    metric = {v: k for k, v in METRICS.items()}.get(index.metric_type, str(index.metric_type))
    return {
        "kind": _kind(index),
        "type": type(faiss.downcast_index(index)).__name__,
        "dim": int(index.d),
        "metric": metric,
        "code_size": code_size,
        "ntotal": int(index.ntotal),
        "faiss_version": faiss.__version__,
    }


def sidecar_path(path: str | os.PathLike[str]) -> Path:
    """The JSON sidecar of an index file: ``<path>.json``."""
    return Path(f"{os.fspath(path)}.json")


def save_index(index: faiss.Index, path: str | os.PathLike[str], *, info: dict[str, Any]) -> dict[str, Any]:
    """Write ``index`` to ``path`` and its sidecar to ``path + ".json"``; return the sidecar.

    Crash-consistent in three atomic renames: the new sidecar is first written beside the old
    one as ``<sidecar>.pending``, then the index file is renamed into place, then the pending
    sidecar. Dying before the index rename leaves the old pair (the pending file does not
    match it and is ignored); dying after it leaves the new index with a pending sidecar that
    matches it, which :func:`load_index` verifies and completes. ``info`` (JSON-serializable:
    model hash, params, ...) is stored under ``"info"``.
    """
    path = Path(path)
    meta = describe_index(index)
    try:
        meta["info"] = json.loads(json.dumps(info))
    except (TypeError, ValueError) as err:
        raise ConfigError(f"info for index {path} is not JSON-serializable: {err}") from err
    meta["file"] = path.name
    with atomic_path(path) as tmp:
        faiss.write_index(index, str(tmp))
        meta["sha256"] = sha256_file(tmp)
        write_json_atomic(_pending_path(path), meta)
    os.replace(_pending_path(path), sidecar_path(path))
    return meta


def _pending_path(path: Path) -> Path:
    return Path(f"{sidecar_path(path)}.pending")


def _read_sidecar(sidecar: Path, path: Path) -> dict[str, Any]:
    try:
        meta = json.loads(sidecar.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise IntegrityError(f"sidecar {sidecar} of index {path} is unreadable: {err!r}") from err
    missing = [key for key in ("sha256", "dim", "ntotal") if not isinstance(meta, dict) or key not in meta]
    if missing:
        raise IntegrityError(f"sidecar {sidecar} of index {path} lacks {', '.join(missing)}")
    return meta


def load_index(path: str | os.PathLike[str]) -> tuple[faiss.Index, dict[str, Any]]:
    """Read an index saved by :func:`save_index`; return ``(index, sidecar)``.

    Raises IntegrityError, naming the file, when the file or its sidecar is missing or
    unreadable, the sha256 differs from the sidecar's, or dim/ntotal disagree with it. A save
    that died between its last two renames is completed here when its pending sidecar matches.
    """
    path = Path(path)
    sidecar, pending = sidecar_path(path), _pending_path(path)
    if not path.is_file():
        raise IntegrityError(f"index file {path} does not exist")
    digest = sha256_file(path)
    if pending.is_file() and _read_sidecar(pending, path)["sha256"] == digest:
        os.replace(pending, sidecar)  # finish the interrupted save
    if not sidecar.is_file():
        raise IntegrityError(f"index file {path} has no sidecar {sidecar}; refusing to load it unchecked")
    meta = _read_sidecar(sidecar, path)
    if digest != meta["sha256"]:
        raise IntegrityError(
            f"index file {path} is corrupt or was replaced: sha256 {digest} "
            f"does not match its sidecar's {meta['sha256']}"
        )
    try:
        index = faiss.read_index(str(path))
    except RuntimeError as err:
        raise IntegrityError(f"faiss cannot read index file {path}: {err}") from err
    if index.d != meta["dim"] or index.ntotal != meta["ntotal"]:
        raise IntegrityError(
            f"index file {path} has dim={index.d}, ntotal={index.ntotal}; its sidecar says "
            f"dim={meta['dim']}, ntotal={meta['ntotal']}"
        )
    return index, meta


def search(index: faiss.Index, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """``index.search`` with checked inputs: ``(scores float32[Q, k'], ids int64[Q, k'])``.

    ``k' = min(k, index.ntotal)``. For an "ip" index scores are inner products (higher is
    closer), for "l2" squared distances. Raises DataError when the queries are not a finite
    2-D float array or their dimension differs from the index's (both are named).
    """
    q = _vectors(queries, "queries")
    if q.shape[1] != index.d:
        raise DataError(
            f"query dimension {q.shape[1]} (queries shape {q.shape}) does not match "
            f"the index dimension {index.d}"
        )
    if int(k) < 1:
        raise ConfigError(f"k must be >= 1, got {k}")
    k = min(int(k), int(index.ntotal))
    if k == 0:
        return np.zeros((q.shape[0], 0), np.float32), np.zeros((q.shape[0], 0), np.int64)
    return index.search(q, k)


def decode_gallery(index: faiss.Index) -> np.ndarray:
    """The vectors the index actually searches, back in the input space: float32 ``[N, D]``.

    flat: the stored vectors; pq: the decoded codes; opq: the decoded codes rotated back
    (the OPQ rotation is orthonormal, so ``q . decoded = (R q) . code``); ivfpq: coarse
    centroid + decoded residual. For an inner-product index, ranking each query by
    ``q . decoded`` (``retrieval_metrics(..., similarity="dot")``) is the ranking of the
    index's asymmetric search, up to float rounding in near-ties; for IVF only when the
    search is exhaustive (``nprobe == nlist``). An IVF index gets a temporary direct map,
    removed afterwards.
    """
    # Into a numpy array of our own: with faiss.contrib.torch_utils imported (as
    # pytorch-metric-learning does), faiss would otherwise hand back a torch tensor.
    out = np.empty((index.ntotal, index.d), dtype=np.float32)
    ivf = faiss.try_extract_index_ivf(index)
    if ivf is not None and ivf.direct_map.no():
        ivf.make_direct_map(True)
        try:
            index.reconstruct_n(0, index.ntotal, out)
        finally:
            ivf.make_direct_map(False)
    else:
        index.reconstruct_n(0, index.ntotal, out)
    return out


def code_vectors(vectors: np.ndarray, metric: str) -> np.ndarray:
    """The vector an index codes for each row, float32 ``[N, D]``: ``[N, D]`` as it is; with
    views ``[N, V, D]`` (image and mirror, the plain view first), the mean of the views,
    L2-normalized again where the protocol's ``metric`` is ``"cosine"``.

    This is what the DASE/MEMS authors' hash tester codes: the mean of the network's outputs
    for an image and its mirror, L2-normalized when it ranks by angle. Under ``"euclidean"``
    the stored views are those raw outputs, so the mean is theirs. Under ``"cosine"`` the
    embed stage stores each view already normalized, so this averages the normalized views
    (each weighs the same, where theirs weigh by their raw norms) before normalizing again.

    Every index of a flipped protocol is built from these vectors (hash codes, product codes,
    the exact index) and the queries ranked against it are these vectors too: an index is
    searched with one vector per query, and a code cannot hold two views, so gallery and
    queries are made alike. One view, or none, is returned as stored (bit for bit).
    """
    shape = geometry(metric, where="protocol metric", protocol=True)
    x = np.asarray(vectors)
    if x.ndim == 2:
        return x
    if x.ndim != 3:
        raise DataError(f"vectors must be [rows, dim] or [rows, views, dim], got shape {x.shape}")
    if x.shape[1] == 1:
        return x[:, 0]
    mean = x.mean(axis=1, dtype=np.float64)
    if shape.normalized:
        mean /= np.linalg.norm(mean, axis=1, keepdims=True).clip(1e-12)
    return mean.astype(np.float32)


def stored_codes(index: faiss.Index) -> np.ndarray:
    """The code of each vector the index holds, in id order, as faiss's standalone codes
    (``index.sa_encode`` of the vectors it was given): uint8 ``[ntotal, sa_code_size]``.

    Read from the index's own storage (a flat code array, or an inverted file's lists with
    each list's number in front), so no vector is encoded again.
    """
    index = faiss.downcast_index(index)
    if isinstance(index, faiss.IndexPreTransform):  # OPQ: the transform is not stored
        return stored_codes(index.index)
    if isinstance(index, faiss.IndexFlatCodes):
        return faiss.vector_to_array(index.codes).reshape(index.ntotal, index.code_size)
    ivf = faiss.try_extract_index_ivf(index)
    if ivf is None:
        raise DataError(f"no stored codes to read in a {type(index).__name__}")
    from faiss.contrib.inspect_tools import get_invlist

    prefix = ivf.coarse_code_size()  # the list number, little-endian, as sa_encode writes it
    codes = np.zeros((ivf.ntotal, prefix + ivf.code_size), dtype=np.uint8)
    for number in range(ivf.nlist):  # one pass per list, not per vector
        ids, list_codes = get_invlist(ivf.invlists, number)
        codes[ids, :prefix] = np.frombuffer(np.uint64(number).tobytes(), np.uint8)[:prefix]
        codes[ids, prefix:] = list_codes
    return codes


def index_order(name: str) -> tuple[str, int]:
    """Sort key of a quantized index's name: by kind, then bits as a number (``hash32`` before
    ``hash128``)."""
    kind, bits = re.fullmatch(r"(.*?)(\d*)", name).groups()
    return kind, int(bits or 0)


def code_collapse(codes: np.ndarray) -> dict[str, int | float]:
    """How far a gallery's codes collapsed: ``distinct_codes``, the number of different rows
    of ``codes: uint8[N, B]``, and ``largest_code_share``, the fraction of rows holding the
    most common one (1/N for all-distinct codes, 1.0 when every item has the same code)."""
    rows = np.ascontiguousarray(codes, dtype=np.uint8)
    if rows.ndim != 2 or not len(rows):
        raise DataError(f"codes must be a non-empty [items, bytes] array, got shape {rows.shape}")
    keys = rows.view(np.dtype((np.void, rows.shape[1]))).ravel()  # one opaque value per row
    _, counts = np.unique(keys, return_counts=True)
    return {"distinct_codes": len(counts), "largest_code_share": float(counts.max() / len(rows))}
