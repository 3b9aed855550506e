"""faiss indexes: round trips, integrity checks, atomic saves, code sizes, decoded rankings, the
vectors codes are made from and the codes an index stores."""

from __future__ import annotations

import json
import os

import faiss
import numpy as np
import pytest
import torch

from dml import index as dml_index
from dml.errors import ConfigError, DataError, IntegrityError
from dml.evaluate import engine, retrieval_metrics
from dml.binary_codes import train_hash_index
from dml.index import (
    build_index,
    code_vectors,
    decode_gallery,
    load_index,
    save_index,
    search,
    sidecar_path,
    stored_codes,
)

DIM = 16
BUILDS = {"flat": None, "pq": 32, "opq": 32, "ivfpq": 32}


def unit_rows(n: int, dim: int, seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.fixture(scope="module")
def gallery() -> np.ndarray:
    return unit_rows(2000, DIM, 0)


@pytest.fixture(scope="module")
def queries() -> np.ndarray:
    return unit_rows(50, DIM, 1)


@pytest.fixture(scope="module")
def indexes(gallery) -> dict[str, faiss.Index]:
    """One index per kind, built once (OPQ training takes seconds)."""
    return {kind: build_index(gallery, kind, bits=bits, seed=0) for kind, bits in BUILDS.items()}


@pytest.mark.parametrize("kind", list(BUILDS))
def test_round_trip_gives_identical_search(kind, indexes, queries, tmp_path):
    idx = indexes[kind]
    path = tmp_path / f"{kind}.faiss"
    meta = save_index(idx, path, info={"model": "abc", "bits": BUILDS[kind]})
    loaded, sidecar = load_index(path)
    assert sidecar == meta == json.loads(sidecar_path(path).read_text())
    assert sidecar["kind"] == kind and sidecar["dim"] == DIM and sidecar["ntotal"] == 2000
    assert sidecar["metric"] == "ip" and sidecar["info"] == {"model": "abc", "bits": BUILDS[kind]}
    assert sidecar["faiss_version"] == faiss.__version__
    scores, ids = search(idx, queries, 10)
    scores2, ids2 = search(loaded, queries, 10)
    np.testing.assert_array_equal(ids, ids2)
    np.testing.assert_array_equal(scores, scores2)


def test_flat_code_size_and_exact_search(indexes, gallery, queries):
    assert dml_index.describe_index(indexes["flat"])["code_size"] == 4 * DIM
    _, ids = search(indexes["flat"], queries, 5)
    expected = np.argsort(-(queries @ gallery.T), axis=1)[:, :5]
    np.testing.assert_array_equal(ids, expected)


@pytest.mark.parametrize("bits", [32, 64, 128])
def test_pq_code_size(bits):
    idx = build_index(unit_rows(300, 32, 2), "pq", bits=bits)
    assert dml_index.describe_index(idx)["code_size"] == bits // 8


def test_same_seed_same_index(gallery):
    a = build_index(gallery, "ivfpq", bits=32, seed=5)
    b = build_index(gallery, "ivfpq", bits=32, seed=5)
    np.testing.assert_array_equal(faiss.serialize_index(a), faiss.serialize_index(b))


def _plain_pq(gallery: np.ndarray, seed: int) -> faiss.Index:
    """A PQ index made with faiss's constructor, as build_index made them before index_factory."""
    index = faiss.IndexPQ(DIM, 4, 8, faiss.METRIC_INNER_PRODUCT)
    index.pq.cp.seed, index.pq.cp.min_points_per_centroid = seed, 1
    index.train(gallery)
    index.add(gallery)
    return index


def _plain_ivfpq(gallery: np.ndarray, seed: int) -> faiss.Index:
    """An IVF-PQ index made with faiss's constructors: default nlist and nprobe."""
    quantizer = faiss.IndexFlat(DIM, faiss.METRIC_INNER_PRODUCT)
    nlist = dml_index.default_nlist(len(gallery))
    index = faiss.IndexIVFPQ(quantizer, DIM, nlist, 4, 8, faiss.METRIC_INNER_PRODUCT)
    index.cp.seed = index.pq.cp.seed = seed
    index.pq.cp.min_points_per_centroid = 1
    index.nprobe = max(1, nlist // 8)
    index.train(gallery)
    index.add(gallery)
    return index


@pytest.mark.parametrize("kind, plain", [("pq", _plain_pq), ("ivfpq", _plain_ivfpq)])
def test_factory_index_is_the_constructors_byte_for_byte(gallery, kind, plain):
    # "PQ4x8np": without "np" the factory's PQ reorders its code words (polysemous training)
    # and the file differs from the constructor's
    built = build_index(gallery, kind, bits=32, seed=3)
    np.testing.assert_array_equal(faiss.serialize_index(built),
                                  faiss.serialize_index(plain(gallery, 3)))


def test_dim_not_divisible_is_config_error():
    with pytest.raises(ConfigError, match=r"bits=64.*D=30"):
        build_index(unit_rows(300, 30, 3), "pq", bits=64)
    with pytest.raises(ConfigError, match="multiple of 8"):
        build_index(unit_rows(300, 32, 3), "pq", bits=12)
    with pytest.raises(ConfigError, match="unknown index kind"):
        build_index(unit_rows(300, 32, 3), "hnsw")
    with pytest.raises(DataError, match="at least 256"):
        build_index(unit_rows(100, 32, 3), "pq", bits=32)


def test_opq_with_fewer_vectors_than_dimensions_is_a_clear_error():
    # faiss's OPQ rotation learning aborts the whole process there; refuse it first
    x = np.random.default_rng(0).standard_normal((300, 512)).astype(np.float32)
    with pytest.raises(DataError, match="512-d vectors needs at least 512 training vectors to learn its rotation, got 300"):
        build_index(x, "opq", bits=32)


def test_search_dimension_mismatch_names_both(indexes):
    with pytest.raises(DataError, match=rf"query dimension 8 .* index dimension {DIM}"):
        search(indexes["flat"], unit_rows(3, 8, 4), 5)


def test_tampered_file_is_integrity_error(indexes, tmp_path):
    path = tmp_path / "pq.faiss"
    save_index(indexes["pq"], path, info={})
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match="pq.faiss"):
        load_index(path)


def test_missing_sidecar_is_integrity_error(indexes, tmp_path):
    path = tmp_path / "flat.faiss"
    save_index(indexes["flat"], path, info={})
    sidecar_path(path).unlink()
    with pytest.raises(IntegrityError, match="flat.faiss"):
        load_index(path)
    with pytest.raises(IntegrityError, match="missing.faiss"):
        load_index(tmp_path / "missing.faiss")


def test_sidecar_shape_mismatch_is_integrity_error(indexes, tmp_path):
    path = tmp_path / "flat.faiss"
    save_index(indexes["flat"], path, info={})
    meta = json.loads(sidecar_path(path).read_text())
    meta["ntotal"] = 1999
    sidecar_path(path).write_text(json.dumps(meta))
    with pytest.raises(IntegrityError, match="ntotal"):
        load_index(path)


def test_failed_save_leaves_no_partial_file(indexes, tmp_path, monkeypatch):
    path = tmp_path / "out.faiss"
    save_index(indexes["flat"], path, info={"version": 1})
    before = (path.read_bytes(), sidecar_path(path).read_bytes())

    def failing_write(index, name):  # fault injection: half a file, then a crash
        with open(name, "wb") as handle:
            handle.write(b"partial")
        raise RuntimeError("disk full")

    monkeypatch.setattr(faiss, "write_index", failing_write)
    with pytest.raises(RuntimeError, match="disk full"):
        save_index(indexes["pq"], path, info={"version": 2})
    assert (path.read_bytes(), sidecar_path(path).read_bytes()) == before  # old pair untouched
    assert sorted(os.listdir(tmp_path)) == ["out.faiss", "out.faiss.json"]  # no temporaries
    with pytest.raises(RuntimeError):
        save_index(indexes["pq"], tmp_path / "new.faiss", info={})
    assert not (tmp_path / "new.faiss").exists() and not sidecar_path(tmp_path / "new.faiss").exists()
    monkeypatch.undo()
    load_index(path)


@pytest.mark.parametrize("kind", list(BUILDS))
def test_decoded_gallery_reproduces_index_ranking(kind, indexes, queries):
    """Top-k of ``index.search`` == top-k by ``q . decode_gallery(index)``, allowing for ties."""
    idx = indexes[kind]
    if kind == "ivfpq":
        idx.nprobe = idx.nlist  # exhaustive: the ranking decode_gallery reproduces
    decoded = decode_gallery(idx)
    assert decoded.shape == (2000, DIM) and decoded.dtype == np.float32
    if kind == "ivfpq":
        assert faiss.extract_index_ivf(idx).direct_map.no()  # temporary map removed
    k = 20
    faiss_scores, faiss_ids = search(idx, queries, k)
    ours = queries.astype(np.float64) @ decoded.astype(np.float64).T
    # faiss's scores are q . decoded for the ids it returns ...
    np.testing.assert_allclose(np.take_along_axis(ours, faiss_ids, 1), faiss_scores, atol=1e-5)
    # ... and they are the k best: equal to our k best scores (ids may differ only in ties)
    np.testing.assert_allclose(-np.sort(-ours, axis=1)[:, :k], faiss_scores, atol=1e-5)
    # the streamed exact ranking (similarity "dot") puts the faiss top-1 at rank 1
    gallery_labels = torch.arange(2000)
    q = torch.from_numpy(queries)
    top1 = torch.from_numpy(faiss_ids[:, 0])
    blocks = engine.ranked_blocks(
        q, torch.from_numpy(decoded), lambda rows: top1[rows, None] == gallery_labels[None, :]
    )
    ranks = torch.cat([r for _, (r, _), _, _ in blocks])
    gap = np.sort(-ours, axis=1)[:, 1] - np.sort(-ours, axis=1)[:, 0]  # first-vs-second gap
    assert (ranks[gap > 1e-5, 0] == 1).all()
    # and retrieval_metrics on the decoded gallery agrees with that ranking end to end
    got = retrieval_metrics(queries, faiss_ids[:, 0], decoded, np.arange(2000), metric="dot", nmi=False)
    assert got["recall@1"] >= (gap > 1e-5).mean()


def test_opq_decodes_back_to_input_space(indexes, gallery):
    """OPQ rotates; decoded vectors are rotated back, so they approximate the inputs."""
    err_opq = np.linalg.norm(decode_gallery(indexes["opq"]) - gallery, axis=1).mean()
    err_pq = np.linalg.norm(decode_gallery(indexes["pq"]) - gallery, axis=1).mean()
    assert err_opq < 1.0 and err_opq < 1.5 * err_pq


def fail_nth_replace(monkeypatch, n: int) -> None:
    """Fault injection: the n-th os.replace from now raises, as if the process died there."""
    calls = {"count": 0}
    real = os.replace

    def replace(src, dst):
        calls["count"] += 1
        if calls["count"] == n:
            raise KeyboardInterrupt("killed")
        real(src, dst)

    monkeypatch.setattr(os, "replace", replace)


def test_death_before_the_index_rename_keeps_the_old_pair(indexes, tmp_path, monkeypatch):
    path = tmp_path / "out.faiss"
    save_index(indexes["flat"], path, info={"version": 1})
    fail_nth_replace(monkeypatch, 2)  # 1: pending sidecar, 2: index file, 3: sidecar
    with pytest.raises(KeyboardInterrupt):
        save_index(indexes["pq"], path, info={"version": 2})
    monkeypatch.undo()
    _, meta = load_index(path)
    assert meta["info"] == {"version": 1}


def test_death_between_index_and_sidecar_renames_is_completed_on_load(indexes, tmp_path, monkeypatch):
    path = tmp_path / "out.faiss"
    save_index(indexes["flat"], path, info={"version": 1})
    fail_nth_replace(monkeypatch, 3)
    with pytest.raises(KeyboardInterrupt):
        save_index(indexes["pq"], path, info={"version": 2})
    monkeypatch.undo()
    index, meta = load_index(path)
    assert meta["info"] == {"version": 2} and index.ntotal == indexes["pq"].ntotal
    assert sorted(os.listdir(tmp_path)) == ["out.faiss", "out.faiss.json"]


@pytest.mark.parametrize("kind", sorted(BUILDS))
def test_stored_codes_are_the_standalone_codes_of_the_gallery(kind, indexes, gallery):
    """Read from the index, they equal encoding the gallery again (an IVF's list number first)."""
    codes = stored_codes(indexes[kind])
    assert codes.dtype == np.uint8 and codes.shape == (len(gallery), indexes[kind].sa_code_size())
    assert np.array_equal(codes, indexes[kind].sa_encode(gallery))


def test_stored_codes_of_a_hash(gallery):
    index = train_hash_index(gallery[:200], np.arange(200) % 4, 32, seed=0)
    index.add(gallery[:50])
    assert np.array_equal(stored_codes(index), index.sa_encode(gallery[:50]))


def test_code_vectors_without_views_are_the_vectors_themselves(gallery):
    assert code_vectors(gallery, "cosine") is gallery
    one_view = gallery[:, None, :]
    assert np.array_equal(code_vectors(one_view, "euclidean"), gallery)
    with pytest.raises(ConfigError, match="protocol metric"):
        code_vectors(gallery, "ip")
    with pytest.raises(DataError, match="views"):
        code_vectors(gallery[None, None], "cosine")


def test_works_where_faiss_torch_utils_is_imported():
    """pytorch-metric-learning imports faiss.contrib.torch_utils, which makes faiss return
    torch tensors where no numpy output is given: the index module must not care."""
    import subprocess
    import sys

    code = (
        "import faiss.contrib.torch_utils\n"
        "import numpy as np\n"
        "from dml.index import build_index, decode_gallery, search\n"
        "x = np.random.default_rng(0).standard_normal((300, 8)).astype('float32')\n"
        "for kind in ('flat', 'pq'):\n"
        "    index = build_index(x, kind, bits=None if kind == 'flat' else 16, metric='ip')\n"
        "    decoded = decode_gallery(index)\n"
        "    assert type(decoded) is np.ndarray and decoded.shape == (300, 8), type(decoded)\n"
        "    scores, ids = search(index, x[:5], 3)\n"
        "    assert type(ids) is np.ndarray and ids.shape == (5, 3)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
