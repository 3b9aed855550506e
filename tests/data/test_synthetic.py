from __future__ import annotations

import time

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
import torch

from dml.data.manifest import validate_manifest
from dml.data.synthetic.catalogue import ATTRIBUTES
from dml.data.synthetic.generator import generate
from dml.errors import ConfigError

from .conftest import decode

OBJECT_COLUMNS = ["image_id", "image", "domain", "label", "label_middle", "label_coarse",
                  "attributes", "instance_id"]


def test_same_seed_same_bytes_different_seed_different():
    a, info_a = generate(seed=3, images_per_class=2, classes_per_type=2)
    b, info_b = generate(seed=3, images_per_class=2, classes_per_type=2)
    c, _ = generate(seed=4, images_per_class=2, classes_per_type=2)
    assert a.equals(b) and info_a == info_b
    assert a.column("image").to_pylist() == b.column("image").to_pylist()
    different = [x != y for x, y in zip(a.column("image").to_pylist(),
                                        c.column("image").to_pylist())]
    assert all(different)


def test_photos_do_not_depend_on_asking_for_sketches(small_objects):
    table, _ = small_objects
    photos, _ = generate(images_per_class=4)
    both = table.filter(pc.equal(table.column("domain"), "photo"))
    assert both.column("image").to_pylist() == photos.column("image").to_pylist()


def test_object_columns_and_hierarchy(default_objects):
    table, info = default_objects
    assert table.column_names == OBJECT_COLUMNS
    assert table.num_rows == 2400
    validate_manifest(table, info, "synthetic")
    assert info.scales == ["fine", "middle", "coarse"]
    assert [info.num_classes(s) for s in info.scales] == [48, 12, 4]
    assert info.attribute_names == ATTRIBUTES and len(ATTRIBUTES) >= 6
    fine = table.column("label").to_numpy()
    middle = table.column("label_middle").to_numpy()
    coarse = table.column("label_coarse").to_numpy()
    assert np.bincount(fine).tolist() == [50] * 48
    # fine determines middle determines coarse
    for child, parent in ((fine, middle), (middle, coarse)):
        pairs = np.unique(np.stack([child, parent], 1), axis=0)
        assert len(pairs) == len(np.unique(child))
    assert set(table.column("domain").to_pylist()) == {"photo"}
    attributes = np.array(table.column("attributes").to_pylist())
    assert attributes.shape == (2400, len(ATTRIBUTES))
    prevalence = attributes.mean(0)
    assert ((prevalence > 0.1) & (prevalence < 0.9)).all(), prevalence
    # class-level attributes are constant within a fine class, instance-level ones are not
    for j, name in enumerate(ATTRIBUTES):
        per_class = [len(np.unique(attributes[fine == c, j])) for c in range(48)]
        if name in ("warm", "filled", "striped", "elongated"):
            assert max(per_class) == 1, name
        else:
            assert max(per_class) == 2, name
    image = decode(table.column("image")[0].as_py())
    assert image.shape == (32, 32, 3) and image.dtype == np.uint8


def test_sketch_rows(small_objects):
    table, info = small_objects
    validate_manifest(table, info, "synthetic")
    domain = np.array(table.column("domain").to_pylist())
    assert (domain == "photo").sum() == (domain == "sketch").sum() == 48 * 4
    sketches = table.filter(pa.array(domain == "sketch"))
    photos = table.filter(pa.array(domain == "photo"))
    assert sketches.column("instance_id").to_pylist() == photos.column("instance_id").to_pylist()
    assert sketches.column("label").equals(photos.column("label"))
    assert sketches.column("attributes").null_count == sketches.num_rows
    pixels = decode(sketches.column("image")[0].as_py())
    assert pixels.shape == (32, 32, 3)
    # black strokes on white: mostly white, some dark ink, no colour
    assert (pixels > 200).mean() > 0.6 and (pixels < 100).any()
    assert np.abs(pixels.astype(int) - pixels[..., :1]).max() == 0


def test_scenes(small_scenes):
    table, info = small_scenes
    assert table.column_names == ["image_id", "image", "domain", "object_counts"]
    validate_manifest(table, info, "scenes")
    assert info.attribute_names == []
    for counts in table.column("object_counts").to_pylist():
        labels = [c["label"] for c in counts]
        total = sum(c["count"] for c in counts)
        assert 1 <= len(labels) <= 3 and 2 <= total <= 4
        assert labels == sorted(set(labels))
        assert all(0 <= lab < info.num_classes() for lab in labels)


def test_options_are_checked():
    with pytest.raises(ConfigError, match="datasets.<name>.options.view"):
        generate(view="grid")
    with pytest.raises(ConfigError, match="datasets.<name>.options.domains"):
        generate(view="scenes", domains=("sketch",))
    with pytest.raises(ConfigError, match="datasets.<name>.options.families"):
        generate(families=9)
    table, info = generate(image_size=48, families=2, types_per_family=2, classes_per_type=3,
                           images_per_class=1)
    assert table.num_rows == 12 and info.num_classes("middle") == 4
    assert decode(table.column("image")[0].as_py()).shape == (48, 48, 3)


def test_generation_is_fast():
    start = time.process_time()
    generate(images_per_class=10)  # 480 images: a fifth of the default
    assert time.process_time() - start < 5.0


def _recall_at_1(x: torch.Tensor, labels: torch.Tensor) -> float:
    """Leave-one-out nearest neighbour (Euclidean) Recall@1."""
    distances = torch.cdist(x, x)
    distances.fill_diagonal_(float("inf"))
    return (labels[distances.argmin(1)] == labels).float().mean().item()


def test_raw_pixels_retrieve_held_out_classes_poorly(default_objects):
    table, _ = default_objects
    labels = torch.tensor(table.column("label").to_numpy())
    test_classes = torch.from_numpy(np.random.default_rng(0).permutation(48)[24:])
    keep = torch.isin(labels, test_classes)
    pixels = torch.from_numpy(
        np.stack([decode(b) for b in table.column("image").to_pylist()])
    ).float().flatten(1)
    recall = {
        scale: _recall_at_1(pixels[keep], torch.tensor(table.column(col).to_numpy())[keep])
        for scale, col in (("fine", "label"), ("middle", "label_middle"),
                           ("coarse", "label_coarse"))
    }
    print(f"raw-pixel Recall@1 on the 24 held-out classes: {recall}")
    assert recall["fine"] < 0.6
    assert recall["fine"] > 2 * 49 / 1199  # above chance: the images do carry the class
