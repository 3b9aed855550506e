"""Shared fixtures for the fault tests: a dataset with epochs long enough to be interrupted."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
import pytest

from dml.train.training_data import DataSpec


@pytest.fixture(scope="session")
def fault_data(short_tmp: Path) -> DataSpec:
    """8 training classes of 60 images: 15 steps an epoch for 2 workers of 16 images."""
    from dml.data.ingest import ingest
    from dml.data.splits import make_splits

    folder = short_tmp / "fault-data"
    options = {"seed": 1, "image_size": 32, "families": 2, "types_per_family": 2, "classes_per_type": 4,
               "images_per_class": 60}
    ingest("synthetic", options, folder / "manifest.parquet")
    splits = make_splits(pq.read_table(folder / "manifest.parquet"), test_fraction=0.5, num_folds=2, seed=0)
    pq.write_table(splits, folder / "splits.parquet")
    return DataSpec(manifest=str(folder / "manifest.parquet"), splits=str(folder / "splits.parquet"))
