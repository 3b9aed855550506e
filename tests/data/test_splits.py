from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pytest

from dml.data.splits import label_tables, make_splits, read_splits, write_splits
from dml.errors import ConfigError


def _table(classes: int = 10, per_class: int = 3, **extra) -> pa.Table:
    labels = np.repeat(np.arange(classes), per_class)
    columns = {"image_id": [f"i{k}" for k in range(len(labels))], "label": labels}
    columns.update(extra)
    return pa.table(columns)


def _by_split(splits: pa.Table, labels: np.ndarray) -> dict[str, set[int]]:
    split = np.array(splits.column("split").to_pylist())
    return {s: set(labels[split == s].tolist()) for s in set(split)}


def test_class_disjoint_and_roles():
    table = _table()
    splits = make_splits(table, test_fraction=0.4, seed=1)
    assert splits.column_names == ["image_id", "split", "role", "fold"]
    assert splits.column("image_id").equals(table.column("image_id"))
    classes = _by_split(splits, table.column("label").to_numpy())
    assert not classes["train"] & classes["test"]
    assert len(classes["test"]) == 4 and len(classes["train"]) == 6
    assert set(splits.column("role").to_pylist()) == {"both"}
    split = np.array(splits.column("split").to_pylist())
    fold = splits.column("fold").to_numpy()
    assert (fold[split == "test"] == -1).all() and (fold[split == "train"] >= 0).all()


def test_deterministic_by_seed():
    table = _table(classes=30)
    a = make_splits(table, seed=5)
    assert a.equals(make_splits(table, seed=5))
    assert not a.column("split").equals(make_splits(table, seed=6).column("split"))


def test_ordered_method_takes_first_classes_for_training():
    table = _table(classes=200, per_class=1)
    splits = make_splits(table, method="ordered", test_fraction=0.5)
    classes = _by_split(splits, table.column("label").to_numpy())
    assert classes["train"] == set(range(100)) and classes["test"] == set(range(100, 200))


def test_folds_partition_training_classes():
    table = _table(classes=20, per_class=2)
    splits = make_splits(table, num_folds=3, seed=2)
    labels = table.column("label").to_numpy()
    split = np.array(splits.column("split").to_pylist())
    fold = splits.column("fold").to_numpy()
    train_classes = set(labels[split == "train"].tolist())
    per_fold = [set(labels[fold == f].tolist()) for f in range(3)]
    assert set().union(*per_fold) == train_classes
    assert all(not (a & b) for i, a in enumerate(per_fold) for b in per_fold[i + 1:])
    assert sorted(len(c) for c in per_fold) == [3, 3, 4]
    with pytest.raises(ConfigError, match="split.num_folds"):
        make_splits(table, num_folds=11)


def test_existing_split_and_role_columns_are_respected():
    split = ["train"] * 15 + ["test"] * 15
    role = ["both"] * 15 + ["query", "gallery"] * 7 + ["gallery"]
    table = _table(classes=10, per_class=3, split=split, role=role)
    splits = make_splits(table, seed=9)
    assert splits.column("split").to_pylist() == split
    assert splits.column("role").to_pylist() == role
    # only split given: roles default to "both"
    splits = make_splits(_table(classes=10, per_class=3, split=split))
    assert splits.column("split").to_pylist() == split
    assert set(splits.column("role").to_pylist()) == {"both"}


def test_multilabel_tables_split_by_image(small_scenes):
    table, _ = small_scenes
    splits = make_splits(table, test_fraction=0.25, num_folds=2)
    split = np.array(splits.column("split").to_pylist())
    assert (split == "test").sum() == 10
    assert set(splits.column("fold").to_numpy()[split == "train"].tolist()) == {0, 1}


def test_query_fraction_draws_queries_from_the_test_images(small_scenes):
    table, _ = small_scenes
    splits = make_splits(table, test_fraction=0.5, query_fraction=0.25, seed=3)
    split = np.array(splits.column("split").to_pylist())
    role = np.array(splits.column("role").to_pylist())
    assert (role[split == "test"] == "query").sum() == 5  # a quarter of the 20 test images
    assert set(role[split == "test"]) == {"query", "gallery"}
    assert set(role[split != "test"]) == {"both"}
    again = make_splits(table, test_fraction=0.5, query_fraction=0.25, seed=3)
    assert again.column("role").equals(splits.column("role"))
    other = make_splits(table, test_fraction=0.5, query_fraction=0.25, seed=4)
    assert not other.column("role").equals(splits.column("role"))
    assert json.loads(splits.schema.metadata[b"dml"])["query_fraction"] == 0.25
    with pytest.raises(ConfigError, match="already gives each row a role"):
        make_splits(_table(classes=4, per_class=2, split=["train"] * 8, role=["both"] * 8),
                    query_fraction=0.5)


def test_bad_options():
    with pytest.raises(ConfigError, match="split.method"):
        make_splits(_table(), method="stratified")
    with pytest.raises(ConfigError, match="split.test_fraction"):
        make_splits(_table(), test_fraction=1.0)


def test_label_tables(small_objects, tmp_path):
    table, info = small_objects
    splits = make_splits(table, num_folds=3)
    write_splits(splits, tmp_path / "splits.parquet")
    assert read_splits(tmp_path / "splits.parquet").equals(splits)
    tables = label_tables(table, info, splits)
    json.dumps(tables)  # serializable
    assert set(tables["scales"]) == {"fine", "middle", "coarse"}
    fine = tables["scales"]["fine"]
    assert len(fine) == 48 and fine[0]["name"] == info.class_names["fine"][0]
    # 4 photos + 4 sketches per class, all in one split
    assert all(sorted(c["images"].values()) == [0, 8] for c in fine)
    coarse = tables["scales"]["coarse"]
    assert sum(c["images"]["train"] for c in coarse) == tables["images"]["train"]
    assert [a["name"] for a in tables["attributes"]] == info.attribute_names
    assert all(0 <= a["prevalence"]["test"] <= 1 for a in tables["attributes"])
    assert tables["num_folds"] == 3
    fold_classes = [set(f["classes"]) for f in tables["folds"]]
    assert sum(len(c) for c in fold_classes) == 24 and len(set().union(*fold_classes)) == 24


def test_label_tables_for_scenes(small_scenes):
    table, info = small_scenes
    tables = label_tables(table, info, make_splits(table))
    assert list(tables["scales"]) == ["fine"]
    total = sum(sum(c["images"].values()) for c in tables["scales"]["fine"])
    assert total == sum(len(c) for c in table.column("object_counts").to_pylist())
