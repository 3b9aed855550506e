from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from dml.data.manifest import (
    ManifestInfo,
    attribute_matrix,
    read_info,
    read_manifest,
    validate_manifest,
    write_manifest,
)
from dml.errors import DataError

from .conftest import png_bytes


def _info(**overrides) -> ManifestInfo:
    values = dict(
        source="test",
        scales=["fine", "coarse"],
        class_names={"fine": ["a", "b", "c"], "coarse": ["x", "y"]},
        attribute_names=["red", "big"],
        options={"root": "somewhere", "sizes": (1, 2)},
    )
    values.update(overrides)
    return ManifestInfo(**values)


def _table(n: int = 4) -> pa.Table:
    return pa.table(
        {
            "image_id": [f"img{i}" for i in range(n)],
            "image": [png_bytes(i) for i in range(n)],
            "split": ["train", "train", "test", "test"][:n],
            "role": ["both"] * n,
            "domain": ["photo", "sketch", "photo", "photo"][:n],
            "label": pa.array([0, 1, 2, 1][:n], pa.int32()),
            "label_coarse": [0, 0, 1, 1][:n],
            "attributes": [[1, 0], [0, 1], None, [1, 1]][:n],
            "object_counts": [[{"label": 0, "count": 2}], [{"label": 1, "count": 1}], [{"label": 2, "count": 1}],
                              [{"label": 1, "count": 3}, {"label": 2, "count": 1}]][:n],
            "instance_id": ["i0", "i0", "i1", "i2"][:n],
        }
    )


def test_round_trip_with_metadata(tmp_path):
    path = tmp_path / "sub" / "manifest.parquet"
    info = _info()
    write_manifest(_table(), path, info)
    assert read_info(path) == ManifestInfo(**{**info.__dict__, "options": {"root": "somewhere",
                                                                            "sizes": [1, 2]}})
    table = read_manifest(path)
    assert table.num_rows == 4
    assert table.schema.field("label").type == pa.int64()  # conformed
    assert table.schema.field("attributes").type == pa.list_(pa.uint8())
    assert table.column("image").to_pylist() == _table().column("image").to_pylist()
    assert table.column("attributes").to_pylist()[2] is None
    only = read_manifest(path, columns=["image_id", "label"])
    assert only.column_names == ["image_id", "label"]
    assert info.label_column("fine") == "label" and info.label_column("coarse") == "label_coarse"
    assert info.num_classes() == 3 and info.num_classes("coarse") == 2
    # Nothing but the manifest is left in the folder (the write was atomic).
    assert [p.name for p in path.parent.iterdir()] == ["manifest.parquet"]


@pytest.mark.parametrize(
    "column, values, needle",
    [
        ("image_id", ["a", "b", "a", "c"], "duplicate ids"),
        ("label", [0, 1, 3, 1], "out of range"),
        ("label", [0, None, 1, 1], "null labels"),
        ("label_coarse", [0, 2, 1, 1], "out of range"),
        ("attributes", [[1, 0], [1], None, [1, 1]], "attribute length mismatch"),
        ("attributes", [[1, 0], [2, 0], None, [1, 1]], "other than 0/1"),
        ("domain", ["photo", "drawing", "photo", "photo"], "unknown value"),
        ("split", ["train", "dev", "test", "test"], "unknown value"),
        ("role", ["both", "both", "queries", "both"], "unknown value"),
        ("object_counts", [[{"label": 5, "count": 1}]] + [[{"label": 0, "count": 1}]] * 3,
         "object label out of range"),
        ("object_counts", [[{"label": 1, "count": 0}]] + [[{"label": 0, "count": 1}]] * 3,
         "counts below 1"),
        # an image with no label at all is an error naming it, not a similarity of zero
        ("object_counts", [[{"label": 1, "count": 1}], [], [{"label": 0, "count": 1}], []],
         "no object at all"),
    ],
)
def test_validation_names_file_column_and_rows(tmp_path, column, values, needle):
    table = _table()
    table = table.set_column(table.column_names.index(column), column,
                             pa.array(values, type=table.schema.field(column).type
                                      if column != "label" else pa.int64()))
    path = tmp_path / "m.parquet"
    with pytest.raises(DataError) as error:
        write_manifest(table, path, _info())
    message = str(error.value)
    assert str(path) in message and repr(column) in message and needle in message
    assert "row" in message
    assert not path.exists()


def test_unknown_attribute_entries_are_kept_as_unknown(tmp_path):
    """An entry may be null (that attribute is unknown for the image, e.g. CUB's "not
    visible"): it survives the round trip and reads as unknown, never as 0."""
    table = _table()
    column = pa.array([[1, None], [0, 1], None, [None, None]], pa.list_(pa.uint8()))
    table = table.set_column(table.column_names.index("attributes"), "attributes", column)
    path = tmp_path / "m.parquet"
    write_manifest(table, path, _info())
    stored = read_manifest(path).column("attributes")
    assert stored.to_pylist() == [[1, None], [0, 1], None, [None, None]]
    values, known = attribute_matrix(stored, 2)
    assert known.tolist() == [[True, False], [True, True], [False, False], [False, False]]
    assert values.tolist() == [[1, 0], [0, 1], [0, 0], [0, 0]]


def test_validation_reports_first_rows_with_ids():
    table = _table().set_column(5, "label", pa.array([7, 1, 9, 1], pa.int64()))
    expected = r"2 row\(s\): 0 \(image_id 'img0'\), 2 \(image_id 'img2'\)"
    with pytest.raises(DataError, match=expected):
        validate_manifest(table, _info(), "x.parquet")


def test_unknown_columns_and_scales_are_errors():
    with pytest.raises(DataError, match="unknown column"):
        validate_manifest(_table().append_column("colour", pa.array(["r"] * 4)), _info(), "m")
    with pytest.raises(DataError, match="label_middle"):
        validate_manifest(_table().append_column("label_middle", pa.array([0] * 4)), _info(), "m")
    with pytest.raises(DataError, match="'image' or a 'path'"):
        validate_manifest(_table().drop(["image"]), _info(), "m")


def test_absent_annotations_are_absent_columns(tmp_path):
    table = _table().select(["image_id", "image", "label"])
    write_manifest(table, tmp_path / "m.parquet", _info(attribute_names=[]))
    assert read_manifest(tmp_path / "m.parquet").column_names == ["image_id", "image", "label"]


def test_bad_info_and_foreign_files(tmp_path):
    with pytest.raises(DataError, match="class_names"):
        ManifestInfo(source="x", scales=["fine"], class_names={})
    plain = tmp_path / "plain.parquet"
    pq.write_table(_table(), plain)
    with pytest.raises(DataError, match="not a manifest"):
        read_info(plain)
    with pytest.raises(DataError, match="does not exist"):
        read_manifest(tmp_path / "nope.parquet")
    with pytest.raises(DataError, match="no column"):
        read_manifest(plain, columns=["image_id", "nope"])


def test_failed_write_keeps_existing_file(tmp_path):
    path = tmp_path / "m.parquet"
    write_manifest(_table(), path, _info())
    before = path.read_bytes()
    bad = _table().set_column(0, "image_id", pa.array(["a", "a", "b", "c"]))
    with pytest.raises(DataError):
        write_manifest(bad, path, _info())
    assert path.read_bytes() == before


def test_a_label_may_be_unknown_on_test_rows_only(tmp_path):
    """DyML's per-scale benchmarks label a test image at one scale: null elsewhere. Training
    rows need every scale, and a row needs a label at some scale."""
    table = _table().set_column(_table().column_names.index("split"), "split",
                                pa.array(["train", "train", "test", "test"]))
    fine, coarse = table.column_names.index("label"), table.column_names.index("label_coarse")
    ok = table.set_column(fine, "label", pa.array([0, 1, None, 1], pa.int64()))
    ok = ok.set_column(coarse, "label_coarse", pa.array([0, 0, 1, None], pa.int64()))
    path = tmp_path / "m.parquet"
    write_manifest(ok, path, _info())
    assert read_manifest(path).column("label").to_pylist() == [0, 1, None, 1]
    on_train = table.set_column(fine, "label", pa.array([None, 1, 2, 1], pa.int64()))
    with pytest.raises(DataError, match=r"column 'label': null labels .* only on a test row.*row\(s\): 0 "):
        write_manifest(on_train, tmp_path / "bad.parquet", _info())
    nowhere = ok.set_column(coarse, "label_coarse", pa.array([0, 0, None, None], pa.int64()))
    with pytest.raises(DataError, match=r"column 'label/label_coarse': no label at any scale; 1 row\(s\): 2"):
        write_manifest(nowhere, tmp_path / "bad.parquet", _info())
    assert not (tmp_path / "bad.parquet").exists()
