"""Shared fixtures: a tiny synthetic dataset on disk and a short scratch folder for Ray."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pyarrow.parquet as pq
import pytest

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_TRAIN_ENABLE_V2_MIGRATION_WARNINGS", "0")

TINY_OPTIONS = {"seed": 0, "image_size": 32, "families": 2, "types_per_family": 2, "classes_per_type": 4, "images_per_class": 12}


@pytest.fixture(scope="session")
def short_tmp() -> Path:
    """A short folder under /tmp: Ray's socket paths must stay under 107 characters."""
    path = Path(tempfile.mkdtemp(prefix="dmlt-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def tiny_data(short_tmp: Path) -> dict[str, str]:
    """Manifest + splits of a 16-class synthetic set (12 images per class), made once."""
    from dml.data.ingest import ingest
    from dml.data.splits import make_splits

    folder = short_tmp / "data"
    manifest = folder / "manifest.parquet"
    ingest("synthetic", TINY_OPTIONS, manifest)
    splits = folder / "splits.parquet"
    pq.write_table(make_splits(pq.read_table(manifest), test_fraction=0.5, num_folds=2, seed=0), splits)
    return {"manifest": str(manifest), "splits": str(splits)}


@pytest.fixture(scope="session")
def ray_local(short_tmp: Path):
    """A real local Ray instance (2 CPUs) shared by the Ray tests of a session."""
    import ray

    os.environ["DML_SCRATCH"] = str(short_tmp / "s")
    ray.init(num_cpus=2, include_dashboard=False, _temp_dir=str(short_tmp / "ray"), log_to_driver=False)
    yield
    ray.shutdown()
