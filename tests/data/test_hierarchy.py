"""The class hierarchy: one parent per fine class and coarser scale, checked at preprocess;
per-scale benchmark rows (a label at one scale only) through splits and label tables."""

from __future__ import annotations

import pyarrow as pa
import pytest

from dml.data.hierarchy import class_parents
from dml.data.manifest import ManifestInfo
from dml.data.splits import label_tables, make_splits
from dml.errors import DataError

INFO = ManifestInfo(source="t", scales=["fine", "middle", "coarse"],
                    class_names={"fine": ["a1", "a2", "b1", "c1"], "middle": ["A", "B", "C"],
                                 "coarse": ["X", "Y"]})


def _table(fine, middle, coarse, split=None, role=None) -> pa.Table:
    n = len(fine)
    columns = {"image_id": [f"i{k}" for k in range(n)], "label": pa.array(fine, pa.int64()),
               "label_middle": pa.array(middle, pa.int64()), "label_coarse": pa.array(coarse, pa.int64())}
    if split is not None:
        columns["split"] = split
    if role is not None:
        columns["role"] = role
    return pa.table(columns)


def test_parents_of_each_fine_class():
    table = _table([0, 0, 1, 2, 3], [0, 0, 0, 1, 2], [0, 0, 0, 0, 1])
    parents = class_parents(table, INFO)
    assert parents["middle"].tolist() == [0, 0, 1, 2]
    assert parents["coarse"].tolist() == [0, 0, 0, 1]


def test_a_fine_class_with_two_parents_is_named_with_them():
    table = _table([0, 0, 0, 1, 2, 2], [0, 0, 1, 0, 1, 1], [0, 0, 0, 0, 0, 1])
    with pytest.raises(DataError) as error:
        class_parents(table, INFO)
    message = str(error.value)
    assert "1 fine class(es) have more than one 'middle' parent" in message
    assert "fine class 'a1' has middle parents 'A' (2 rows), 'B' (1 rows)" in message
    # the first scale with a conflict stops it; coarse is checked once middle is clean
    table = _table([0, 1, 2, 2], [0, 0, 1, 1], [0, 0, 0, 1])
    with pytest.raises(DataError, match="fine class 'b1' has coarse parents 'X' \\(1 rows\\), 'Y' \\(1 rows\\)"):
        class_parents(table, INFO)


def test_benchmark_rows_labelled_at_one_scale():
    """DyML Vehicle/Animal: test rows of a coarse benchmark have only a coarse label; they
    neither define nor break the hierarchy, keep their given split and get no fold."""
    split = ["train"] * 4 + ["test"] * 3
    role = ["both"] * 4 + ["query", "gallery", "gallery"]
    table = _table([0, 1, 2, 3, None, None, 2], [0, 0, 1, 2, None, None, 1], [0, 0, 0, 1, 1, 0, None],
                   split=split, role=role)
    assert class_parents(table, INFO)["coarse"].tolist() == [0, 0, 0, 1]
    splits = make_splits(table, num_folds=2)
    assert splits.column("split").to_pylist() == split
    assert splits.column("role").to_pylist() == role
    folds = splits.column("fold").to_pylist()
    assert all(f >= 0 for f in folds[:4]) and folds[4:] == [-1, -1, -1]
    tables = label_tables(table, INFO, splits)
    assert [c["images"] for c in tables["scales"]["coarse"]] == [{"train": 3, "test": 1},
                                                                {"train": 1, "test": 1}]
    assert tables["scales"]["fine"][3]["parents"] == {"middle": "C", "coarse": "Y"}
    # without a given split, a class-disjoint split needs every fine label
    with pytest.raises(DataError, match="null label on row 4"):
        make_splits(table.drop_columns(["split", "role"]))
