"""Geometries are declarations: a registered one ranks through the engine, protocols and
stages read their fields, and an unknown name is a clear error."""

from __future__ import annotations

import numpy as np
import pytest

from dml.errors import ConfigError
from dml.evaluate import geometry as geometries
from dml.evaluate import retrieval_metrics
from dml.evaluate.geometry import GEOMETRIES, Geometry, geometry, register_geometry
from dml.evaluate.protocols import build_protocol
from dml.index import code_vectors


@pytest.fixture
def chord():
    """A geometry registered for one test: euclidean distance between L2-normalized rows."""
    yield register_geometry(Geometry("chord", "chord length", "l2", decoded="euclidean", normalized=True,
                                     euclidean=True))
    GEOMETRIES.pop("chord")


def test_a_registered_geometry_ranks_through_the_engine(chord):
    """Euclidean distance between L2-normalized rows orders a gallery as cosine does: a
    geometry declared so (normalized, euclidean) gives the cosine ranking's metrics."""
    assert geometry("chord") is chord and "chord" not in geometries.protocol_geometries()
    rng = np.random.default_rng(0)
    x = rng.standard_normal((300, 8)).astype(np.float32) * rng.uniform(0.5, 3, (300, 1)).astype(np.float32)
    y = rng.integers(0, 12, 300)
    by_chord = retrieval_metrics(x, y, metric="chord", nmi=False)
    cosine = retrieval_metrics(x, y, metric="cosine", nmi=False)
    euclidean = retrieval_metrics(x, y, metric="euclidean", nmi=False)
    assert by_chord.keys() == cosine.keys()
    for key in cosine:
        assert by_chord[key] == pytest.approx(cosine[key], abs=1e-12), key
    assert any(abs(euclidean[k] - cosine[k]) > 1e-6 for k in cosine)  # the norms matter without normalization
    with pytest.raises(ValueError, match="registered already"):
        register_geometry(Geometry("chord", "x", None, decoded="chord"))


def test_unknown_geometries_name_the_valid_ones():
    with pytest.raises(ConfigError, match=r"metric must be one of: cosine, dot, euclidean, hamming; got 'angle'"):
        retrieval_metrics(np.eye(3, dtype=np.float32), [0, 0, 1], metric="angle", nmi=False)
    with pytest.raises(ConfigError, match=r"protocol metric must be one of: cosine, euclidean; got 'dot'"):
        code_vectors(np.zeros((2, 3), np.float32), "dot")
    with pytest.raises(ConfigError, match=r"protocol.metric: 'hamming' is not one of: cosine, euclidean"):
        build_protocol({"name": "cross_domain", "metric": "hamming"})


def test_protocols_and_stages_read_the_declarations():
    euclidean = build_protocol({"name": "cross_domain", "metric": "euclidean"}).geometry
    cosine = build_protocol({"name": "self_retrieval"}).geometry
    assert (cosine.faiss_metric, cosine.normalized, cosine.decoded) == ("ip", True, "dot")
    assert (euclidean.faiss_metric, euclidean.normalized, euclidean.decoded) == ("l2", False, "euclidean")
    assert cosine.higher_is_nearer and not euclidean.higher_is_nearer and not geometry("hamming").higher_is_nearer
    views = np.array([[[3.0, 4.0], [4.0, 3.0]]], dtype=np.float32)  # one row, two views
    assert np.allclose(np.linalg.norm(code_vectors(views, "cosine"), axis=1), 1.0)  # normalized again
    assert np.allclose(code_vectors(views, "euclidean"), [[3.5, 3.5]])  # the mean as it is
