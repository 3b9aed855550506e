from __future__ import annotations

import json
import os

import numpy as np
import pytest

from dml.data.sources import SOURCES
from dml.data.ingest import ingest
from dml.data.manifest import read_info, read_manifest
from dml.errors import ConfigError, DataError

from .conftest import png_bytes


def _tree(root, files: dict[str, bytes]) -> None:
    for rel, data in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


@pytest.fixture
def bad_tree(tmp_path):
    """Three good images and four bad files (corrupt, truncated, empty, missing)."""
    root = tmp_path / "images"
    good = png_bytes(1, 16)
    corrupt = bytearray(good)
    corrupt[60:90] = b"\x00" * 30
    _tree(root, {
        "cat/good1.png": png_bytes(2),
        "cat/corrupt.png": bytes(corrupt),
        "dog/good2.png": png_bytes(3),
        "dog/truncated.png": good[: len(good) // 2],
        "dog/empty.png": b"",
        "eel/good3.png": png_bytes(4),
        "eel/notes.txt": b"not part of the data",
    })
    os.symlink(root / "eel" / "gone.png", root / "eel" / "missing.png")  # dangling link
    return root


BAD = ["cat/corrupt.png", "dog/truncated.png", "dog/empty.png", "eel/missing.png"]


def test_fail_lists_every_bad_file_and_writes_nothing(bad_tree, tmp_path):
    out = tmp_path / "out" / "manifest.parquet"
    report = tmp_path / "out" / "report.json"
    with pytest.raises(DataError) as error:
        ingest("folder", {"root": str(bad_tree)}, out, report_path=report)
    message = str(error.value)
    for rel in BAD:
        assert str(bad_tree / rel) in message
    assert "4 bad file(s)" in message
    for reason in ("corrupt", "truncated", "empty file", "missing"):
        assert reason in message
    assert not out.exists() and not report.exists()
    assert not out.parent.exists() or not any(out.parent.iterdir())  # no temporary left over


def test_fail_keeps_an_existing_manifest(bad_tree, tmp_path):
    out = tmp_path / "manifest.parquet"
    out.write_bytes(b"previous")
    with pytest.raises(DataError):
        ingest("folder", {"root": str(bad_tree)}, out)
    assert out.read_bytes() == b"previous"


def test_skip_writes_the_rest_and_reports(bad_tree, tmp_path):
    out = tmp_path / "manifest.parquet"
    report_path = tmp_path / "report.json"
    report = ingest("folder", {"root": str(bad_tree)}, out, on_bad="skip",
                    report_path=report_path)
    assert report.quarantined == 4 and report.images == 3
    table = read_manifest(out)
    assert sorted(table.column("image_id").to_pylist()) == [
        "cat/good1.png", "dog/good2.png", "eel/good3.png"]
    assert table.column("label").to_pylist() == [0, 1, 2]
    assert table.column("image")[0].as_py() == (bad_tree / "cat/good1.png").read_bytes()
    assert read_info(out).class_names == {"fine": ["cat", "dog", "eel"]}
    saved = json.loads(report_path.read_text())
    assert saved["quarantined"] == 4
    assert sorted(b["image_id"] for b in saved["bad_files"]) == sorted(BAD)
    assert saved["counts"]["domain"] == {"photo": 3}
    assert saved["ignored_files"] == ["eel/notes.txt"]


def test_csv_row_naming_a_missing_file_is_a_bad_file_with_its_line(tmp_path):
    root = tmp_path / "images"
    _tree(root, {"a/x.png": png_bytes(1), "b/y.png": png_bytes(2)})
    csv_path = tmp_path / "ann.csv"
    csv_path.write_text("path,split\na/x.png,train\nb/y.png,test\nb/ghost.png,test\n")
    with pytest.raises(DataError, match=r"b/ghost.png \(.*ann.csv line 4\): missing"):
        ingest("folder", {"root": str(root), "annotations_csv": str(csv_path)},
               tmp_path / "m.parquet")
    report = ingest("folder", {"root": str(root), "annotations_csv": str(csv_path)},
                    tmp_path / "m.parquet", on_bad="skip")
    assert report.quarantined == 1 and report.counts["split"] == {"test": 1, "train": 1}


def test_synthetic_source_round_trip(tmp_path):
    out = tmp_path / "m.parquet"
    report = ingest("synthetic", {"images_per_class": 2, "classes_per_type": 2,
                                  "domains": ["photo", "sketch"]}, out)
    assert report.images == 2 * 24 * 2 and report.quarantined == 0
    assert report.counts["domain"] == {"photo": 48, "sketch": 48}
    info = read_info(out)
    assert info.source == "synthetic" and info.options["domains"] == ["photo", "sketch"]
    table = read_manifest(out)
    assert table.column("attributes").null_count == 48
    assert np.array_equal(table.column("label_middle").to_numpy(),
                          table.column("label").to_numpy() // 2)


def test_configuration_errors(tmp_path):
    with pytest.raises(ConfigError, match="datasets.<name>.options.image_sise"):
        ingest("synthetic", {"image_sise": 32}, tmp_path / "m.parquet")
    with pytest.raises(ConfigError, match="fail, skip"):
        ingest("synthetic", {}, tmp_path / "m.parquet", on_bad="ignore")
    with pytest.raises(ConfigError, match="folder"):
        ingest("nonsense", {}, tmp_path / "m.parquet")
    assert {"folder", "synthetic"} <= set(SOURCES.names())
    assert not (tmp_path / "m.parquet").exists()
