"""Binary codes for Hamming ranking, learned on the class centres of the training embeddings.

Sketch-based retrieval reports hashed codes beside the float figures (32, 64 and 128 bits).
The hash is the one of the DASE/MEMS authors' tester: a linear map ``h(x) = W x + b`` whose
signs are the code, trained on the class centres alone so that the centres' codes are as far
apart as possible. Its loss is the mean inner product of the relaxed codes
``s_c = h(c) / |h(c)|`` (the sign, with gradient ``1 / |h(c)|``) over pairs of distinct
centres, and a spectral norm keeps ``W`` from growing instead. Adam at ``lr``, decayed
linearly to 0 over ``steps``, from a seeded initialisation.

What differs from that code, deliberately: the centres are the mean training embedding of
each class, not a loss's learned centres, so every experiment (a loss with or without
centres) gets its codes the same way; and the map is stored in a faiss ``IndexLSH`` (its
"rotation" replaced by ``W, b``), so the exported index encodes a float query and ranks the
gallery by Hamming distance by itself. Evaluation ranks the same 0/1 codes with
:func:`dml.evaluate.retrieval_metrics` (``metric="hamming"``: deterministic ties), which the
tests check against the index's own search.

What is coded, where the protocol flips (image and mirror): the authors' tester codes the mean
of the network's raw outputs for an image and for its mirror, L2-normalized when it ranks by
angle. Callers pass :func:`dml.index.code_vectors` of the stored views to :func:`encode`,
to ``index.add`` and to :func:`train_hash_index` alike (gallery, queries and the training
rows the centres come from); it says where it departs (cosine protocols store normalized
views, so the mean is of those). The tester also normalizes its centres under angular
ranking; these centres are the plain mean of the rows given, as they were before.
"""

from __future__ import annotations

import faiss
import numpy as np
import torch

from dml.errors import ConfigError, DataError
from dml.index import stored_codes

__all__ = ["class_centres", "encode", "fit_hash", "hash_index", "index_codes", "train_hash_index"]

#: Optimisation steps and learning rate of the hash (the authors' tester: 10,000 at 1e-3; on
#: a dozen centres the codes stop changing well before 300).
DEFAULT_STEPS = 300
DEFAULT_LR = 1e-3


def class_centres(vectors: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """The mean of ``vectors: float[N, D]`` over each class of ``labels: int[N]``, in label
    order: float32 ``[C, D]``; rows with a negative label are left out."""
    vectors, labels = np.asarray(vectors, dtype=np.float64), np.asarray(labels)
    keep = labels >= 0
    classes, inverse = np.unique(labels[keep], return_inverse=True)
    if len(classes) < 2:
        raise DataError(f"hashing needs the centres of at least 2 classes, the training rows have {len(classes)}")
    sums = np.zeros((len(classes), vectors.shape[1]))
    np.add.at(sums, inverse, vectors[keep])
    return (sums / np.bincount(inverse)[:, None]).astype(np.float32)


def fit_hash(centres: np.ndarray, bits: int, *, seed: int = 0, steps: int = DEFAULT_STEPS,
             lr: float = DEFAULT_LR) -> tuple[np.ndarray, np.ndarray]:
    """``(W float32[bits, D], b float32[bits])`` of a hash that spreads the codes of
    ``centres: float[C, D]`` apart (module doc)."""
    if bits < 1:
        raise ConfigError(f"hash bits must be positive, got {bits}")
    centres_t = torch.as_tensor(np.asarray(centres, dtype=np.float32))
    n = centres_t.shape[0]
    distinct = ~torch.eye(n, dtype=torch.bool)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        layer = torch.nn.utils.parametrizations.spectral_norm(torch.nn.Linear(centres_t.shape[1], bits))
        optimizer = torch.optim.Adam(layer.parameters(), lr=lr)
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0 - step / steps)
        for _ in range(int(steps)):
            code = layer(centres_t)
            relaxed = code / (code.abs().detach() + 1e-8)
            loss = (relaxed @ relaxed.T)[distinct].mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
        layer.eval()
        with torch.no_grad():
            weight = layer.weight.detach().clone()  # the spectrally normalised W
    return weight.numpy().astype(np.float32), layer.bias.detach().numpy().astype(np.float32)


def hash_index(weight: np.ndarray, bias: np.ndarray) -> faiss.IndexLSH:
    """An empty faiss ``IndexLSH`` whose codes are the signs of ``weight @ x + bias``: it
    encodes float vectors and ranks by Hamming distance (``add`` the gallery, then search)."""
    bits, dim = weight.shape
    index = faiss.IndexLSH(dim, bits, True, False)
    faiss.copy_array_to_vector(np.ascontiguousarray(weight, dtype=np.float32).ravel(), index.rrot.A)
    faiss.copy_array_to_vector(np.ascontiguousarray(bias, dtype=np.float32), index.rrot.b)
    index.rrot.have_bias = True
    index.rrot.is_orthonormal = False
    return index


def train_hash_index(vectors: np.ndarray, labels: np.ndarray | None, bits: int, *, seed: int = 0,
                     steps: int = DEFAULT_STEPS) -> faiss.IndexLSH:
    """An empty hash index of ``bits`` bits, learned on the class centres of ``vectors``
    (training embeddings) by their ``labels``; DataError where the rows have no class labels
    (multi-label scenes)."""
    if labels is None:
        raise DataError("hashing learns on class centres: the training rows have no class labels")
    weight, bias = fit_hash(class_centres(vectors, labels), bits, seed=seed, steps=steps)
    return hash_index(weight, bias)


def encode(index: faiss.IndexLSH, vectors: np.ndarray) -> np.ndarray:
    """The code of each of ``vectors: float[N, D]`` as 0/1 bits: uint8 ``[N, bits]``. Views
    ``[N, V, D]`` are refused: :func:`dml.index.code_vectors` makes the one vector coded."""
    if np.ndim(vectors) != 2:
        raise DataError(f"hash codes are made from one vector per row, got shape {np.shape(vectors)}; "
                        "pass dml.index.code_vectors of the views")
    packed = index.sa_encode(np.ascontiguousarray(vectors, dtype=np.float32))
    return np.unpackbits(packed, axis=1, bitorder="little")[:, : index.nbits]


def index_codes(index: faiss.IndexLSH) -> np.ndarray:
    """The codes the index holds (its gallery), as 0/1 bits: uint8 ``[ntotal, bits]``."""
    return np.unpackbits(stored_codes(index), axis=1, bitorder="little")[:, : index.nbits]
