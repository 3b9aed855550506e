"""Shared fixtures for the data tests: small synthetic manifests built once per session."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from dml.data.synthetic.generator import generate


def decode(data: bytes) -> np.ndarray:
    """uint8 RGB array of encoded image bytes."""
    with Image.open(io.BytesIO(data)) as image:
        return np.array(image.convert("RGB"))


def png_bytes(seed: int = 0, size: int = 8) -> bytes:
    """A small valid PNG."""
    pixels = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="session")
def default_objects():
    """The default synthetic dataset (2,400 photos at 32 px), generated once."""
    return generate()


@pytest.fixture(scope="session")
def small_objects():
    """A small synthetic dataset with photos and sketches."""
    return generate(images_per_class=4, domains=("photo", "sketch"))


@pytest.fixture(scope="session")
def small_scenes():
    return generate(view="scenes", scenes=40)


@pytest.fixture(scope="session")
def manifest_files(tmp_path_factory, small_objects):
    """(manifest path, splits path) of the small dataset, written through the real API."""
    from dml.data.manifest import write_manifest
    from dml.data.splits import make_splits, write_splits

    folder = tmp_path_factory.mktemp("manifest")
    table, info = small_objects
    manifest = folder / "manifest.parquet"
    splits = folder / "splits.parquet"
    write_manifest(table, manifest, info)
    write_splits(make_splits(table, num_folds=3, seed=0), splits)
    return manifest, splits
