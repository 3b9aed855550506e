from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
import torch
from torch.utils.data import DataLoader

from dml.data.dataset import ManifestDataset, load_images
from dml.data.manifest import ManifestInfo, read_manifest, write_manifest
from dml.data.splits import read_splits
from dml.data.transforms import build_transforms
from dml.errors import DataError

from .conftest import png_bytes


def test_selection_by_split_fold_and_domain(manifest_files):
    manifest, splits_path = manifest_files
    splits = read_splits(splits_path)
    test = ManifestDataset(manifest, splits_path, split="test", domains=("photo",))
    assert len(test) == 24 * 4 and set(test.rows.domains) == {"photo"}
    assert test.rows.num_classes == 48 and test.rows.info.scales == ["fine", "middle", "coarse"]
    both = ManifestDataset(manifest, splits_path, split="test")  # every domain by default
    assert len(both) == 2 * len(test) and set(both.rows.domains) == {"photo", "sketch"}
    assert set(both.rows.table.column("role").to_pylist()) == {"both"}
    train = ManifestDataset(manifest, splits_path, split="train")
    assert not set(train.rows.labels) & set(test.rows.labels)
    fold0 = ManifestDataset(manifest, splits_path, split="train", include_folds=[0])
    rest = ManifestDataset(manifest, splits_path, split="train", exclude_folds=[0])
    assert len(fold0) + len(rest) == len(train) and len(fold0) > 0
    assert not set(fold0.rows.labels) & set(rest.rows.labels)
    assert set(fold0.rows.table.column("fold").to_pylist()) == {0}
    # rows keep manifest order and the ids match the splits file
    split_of = dict(zip(splits.column("image_id").to_pylist(),
                        splits.column("split").to_pylist()))
    assert all(split_of[i] == "train" for i in train.rows.image_ids)
    photos = ManifestDataset(manifest, splits_path, split="train", domains=("photo",))
    assert photos.rows.image_ids == sorted(photos.rows.image_ids)


def test_items_and_loader(manifest_files):
    manifest, splits_path = manifest_files
    dataset = ManifestDataset(manifest, splits_path, split="train", train=True, image_size=24)
    image, index = dataset[3]
    assert image.shape == (3, 24, 24) and image.dtype == torch.uint8 and index == 3  # converted per batch
    batch = next(iter(DataLoader(dataset, batch_size=8, collate_fn=dataset.collate)))
    assert batch.images.shape == (8, 3, 24, 24) and batch.labels.tolist() == dataset.rows.labels[:8].tolist()
    assert batch.images.dtype == torch.float32 and -1 <= batch.images.min() and batch.images.max() <= 1
    evaluation = ManifestDataset(manifest, splits_path, split="test", domains=("sketch",))
    assert torch.equal(evaluation[0][0], evaluation[0][0])  # cached, deterministic
    loaded = load_images(evaluation, [0, 2])
    assert loaded.shape == (2, 3, 32, 32)
    one_by_one = build_transforms(32, train=False)(evaluation.images.image_array(2, keep=False))
    assert torch.equal(loaded[1], one_by_one)  # the batch conversion is the per-image transform's, bit for bit


def test_manifest_split_column_without_splits_file(tmp_path):
    info = ManifestInfo(source="t", class_names={"fine": ["a", "b"]})
    table = pa.table({"image_id": ["x", "y", "z"], "image": [png_bytes(i) for i in range(3)],
                      "split": ["train", "test", "train"], "label": [0, 1, 1]})
    write_manifest(table, tmp_path / "m.parquet", info)
    dataset = ManifestDataset(tmp_path / "m.parquet", split="train")
    assert dataset.rows.image_ids == ["x", "z"] and dataset.rows.labels.tolist() == [0, 1]
    assert ManifestDataset(tmp_path / "m.parquet").rows.labels.tolist() == [0, 1, 1]
    with pytest.raises(DataError, match="splits file"):
        ManifestDataset(tmp_path / "m.parquet", include_folds=[0])


def test_undecodable_image_names_manifest_and_id(tmp_path):
    info = ManifestInfo(source="t", class_names={"fine": ["a"]})
    table = pa.table({"image_id": ["fine", "broken"], "image": [png_bytes(0), b"garbage"],
                      "label": [0, 0]})
    path = tmp_path / "m.parquet"
    write_manifest(table, path, info)
    dataset = ManifestDataset(path)
    dataset[0]
    with pytest.raises(DataError, match=r"m.parquet: image_id 'broken' does not decode"):
        dataset[1]


def test_null_label_is_unknown_for_evaluation_and_an_error_for_training(tmp_path, manifest_files):
    # A file that bypassed validation (written by hand) with a null label.
    manifest, _ = manifest_files
    table = read_manifest(manifest).slice(0, 3)
    labels = pa.array([0, None, 2], pa.int64())
    table = table.set_column(table.column_names.index("label"), "label", labels)
    path = tmp_path / "bad.parquet"
    import pyarrow.parquet as pq

    pq.write_table(table, path)
    with pytest.raises(DataError, match=r"bad.parquet: image_id 'syn-000001-photo' has no label "
                       r"\(1 such row\(s\)\); training needs every scale's label"):
        ManifestDataset(path, train=True)
    # for evaluation an unknown label is -1 (a per-scale benchmark row), never a class id
    dataset = ManifestDataset(path, relabel=True)
    assert dataset.rows.labels.tolist()[1] == -1 and dataset.rows.labels.tolist()[0] != -1


def test_batches_carry_every_annotation(manifest_files):
    manifest, splits_path = manifest_files
    dataset = ManifestDataset(manifest, splits_path, split="train", relabel=True)
    photos, sketches = (np.flatnonzero(dataset.rows.domains == d) for d in ("photo", "sketch"))
    batch = dataset.collate([dataset[int(photos[0])], dataset[int(sketches[0])]])
    assert batch.index.tolist() == [photos[0], sketches[0]]
    assert set(batch.scales) == {"middle", "coarse"}
    assert batch.domain.tolist() == [1, 0]  # METHODS.md's d: 1 photo, 0 sketch
    assert batch.attributes.shape == (2, 8) and batch.attribute_mask.tolist() == [[True] * 8, [False] * 8]
    assert batch.attributes[1].sum() == 0  # missing attributes are masked, held as 0
    # Relabelled: every scale numbered 0..C_s-1 over the training rows; the sizes go to the build context.
    sizes = dataset.rows.context_sizes()
    assert sizes["num_classes"] == len(dataset.rows.classes["fine"]) == dataset.rows.labels.max() + 1
    assert sizes["scale_classes"]["coarse"] == dataset.rows.scale_labels["coarse"].max() + 1
    fine, middle = dataset.rows.labels, dataset.rows.scale_labels["middle"]
    assert all(sizes["hierarchy"]["middle"][f] == m for f, m in zip(fine, middle))
    assert sizes["num_attributes"] == 8 and sizes["count_classes"] == 0


def test_a_photo_and_its_sketch_share_an_instance(manifest_files):
    manifest, splits_path = manifest_files
    dataset = ManifestDataset(manifest, splits_path, split="test")
    by_id = dict(zip(dataset.rows.image_ids, dataset.rows.instances))
    photo = next(i for i in dataset.rows.image_ids if i.endswith("-photo"))
    assert by_id[photo] == by_id[photo.replace("-photo", "-sketch")] >= 0


def test_scene_manifest_gives_count_vectors_and_no_labels(tmp_path, small_scenes):
    table, info = small_scenes
    write_manifest(table, tmp_path / "s.parquet", info)
    dataset = ManifestDataset(tmp_path / "s.parquet")
    assert dataset.rows.labels is None and dataset.rows.counts.shape == (len(dataset), info.num_classes())
    first = table.column("object_counts")[0].as_py()
    assert {i: c for i, c in enumerate(dataset.rows.counts[0]) if c} == {o["label"]: o["count"] for o in first}
    batch = dataset.collate([dataset[0], dataset[1]])
    assert batch.labels is None and batch.counts.shape == (2, info.num_classes())
    with pytest.raises(DataError, match="sampler 'm_per_class' needs a fine class label"):
        dataset.rows.require_labels("sampler 'm_per_class'")


def test_labels_are_int64(manifest_files):
    manifest, splits_path = manifest_files
    dataset = ManifestDataset(manifest, splits_path, split="train")
    assert dataset.rows.labels.dtype == np.int64 and len(dataset.rows.image_ids) == len(dataset)


def test_evaluation_inputs_are_transformed_once(manifest_files):
    """Evaluation transforms are deterministic: the second read returns the kept tensor, equal
    to a fresh transform; training draws a new augmented view each time."""
    manifest, splits_path = manifest_files
    evaluation = ManifestDataset(manifest, splits_path, split="test")
    first, _ = evaluation[3]
    again, _ = evaluation[3]
    assert again is first
    fresh = evaluation.transforms[evaluation.rows.domains[3]](evaluation.images.image_array(3, keep=False))
    assert torch.equal(first, fresh)
    tight = ManifestDataset(manifest, splits_path, split="test", cache_bytes=0)  # nothing kept
    assert tight[3][0] is not tight[3][0] and torch.equal(tight[3][0], first)
    training = ManifestDataset(manifest, splits_path, split="train", train=True)
    torch.manual_seed(0)
    assert not torch.equal(training[0][0], training[0][0])
