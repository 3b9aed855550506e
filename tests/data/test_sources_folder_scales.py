"""The folder source's ``folder_scales``: scales from the levels of a nested tree."""

from __future__ import annotations

import os

import numpy as np
import pytest

from dml.data.sources import SOURCES
from dml.data.hierarchy import class_parents
from dml.data.ingest import ingest
from dml.data.manifest import read_info, read_manifest
from dml.errors import ConfigError, DataError

from .conftest import png_bytes

FILES = ["animals/birds/1.png", "animals/birds/deep/2.png", "animals/cats/3.png",
         "signs/birds/4.png", "signs/flags/5.PNG", "signs/flags/6.png"]


@pytest.fixture
def tree(tmp_path):
    root = tmp_path / "images"
    for i, rel in enumerate(FILES):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(png_bytes(i))
    (root / "animals" / "about.png").write_bytes(png_bytes(9))   # above the class level
    (root / "top.txt").write_text("a file at the root")
    return root


def test_each_level_is_a_scale_named_by_its_path(tree):
    source = SOURCES.build("folder", root=str(tree), folder_scales=["coarse", "fine"])
    info = source.info()
    assert info.scales == ["fine", "coarse"]
    assert info.class_names == {
        "fine": ["animals/birds", "animals/cats", "signs/birds", "signs/flags"],
        "coarse": ["animals", "signs"]}
    records = list(source.records())
    assert [r["image_id"] for r in records] == [
        "animals/birds/1.png", "animals/birds/deep/2.png", "animals/cats/3.png",
        "signs/birds/4.png", "signs/flags/5.PNG", "signs/flags/6.png"]
    assert [r["label"] for r in records] == [0, 0, 1, 2, 3, 3]
    assert [r["label_coarse"] for r in records] == [0, 0, 0, 1, 1, 1]
    assert source.ignored == ["animals/about.png", "top.txt"]
    assert info.options["folder_scales"] == ["coarse", "fine"]


def test_three_levels(tmp_path):
    root = tmp_path / "t"
    for i, rel in enumerate(["a/x/p/1.png", "a/x/q/2.png", "a/y/p/3.png", "b/x/p/4.png"]):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(png_bytes(i))
    info = SOURCES.build("folder", root=str(root), folder_scales=["top", "mid", "fine"]).info()
    assert info.scales == ["fine", "mid", "top"]
    assert info.class_names["mid"] == ["a/x", "a/y", "b/x"]
    assert info.class_names["fine"] == ["a/x/p", "a/x/q", "a/y/p", "b/x/p"]


def test_ingest_gives_a_consistent_hierarchy(tree, tmp_path):
    out = tmp_path / "m.parquet"
    report = ingest("folder", {"root": str(tree), "folder_scales": ["coarse", "fine"]}, out)
    assert report.images == 6 and report.quarantined == 0
    table = read_manifest(out)
    assert table.column("label_coarse").to_pylist() == [0, 0, 0, 1, 1, 1]
    info = read_info(out)
    parents = class_parents(table, info)
    assert np.array_equal(np.asarray(parents["coarse"]), [0, 0, 1, 1])


def test_a_csv_adds_attributes_and_coarser_scales(tree, tmp_path):
    csv_path = tmp_path / "a.csv"
    rows = "\n".join(f"{rel},{'living' if rel.startswith('animals') else 'thing'},"
                     f"{int('birds' in rel)}" for rel in FILES)
    csv_path.write_text("path,label_kingdom,attr_flies\n" + rows + "\n")
    source = SOURCES.build("folder", root=str(tree), annotations_csv=str(csv_path),
                           folder_scales=["coarse", "fine"])
    info = source.info()
    assert info.scales == ["fine", "coarse", "kingdom"]
    records = list(source.records())
    assert [r["label_kingdom"] for r in records] == [0, 0, 0, 1, 1, 1]
    assert [r["attributes"] for r in records] == [[1], [1], [0], [1], [0], [0]]


def test_a_csv_column_cannot_name_a_folder_scale(tree, tmp_path):
    csv_path = tmp_path / "a.csv"
    csv_path.write_text("path,label_coarse\n" + "\n".join(f"{r},x" for r in FILES) + "\n")
    with pytest.raises(DataError, match=r"a.csv: column label_coarse names a scale that "
                                        r"folder_scales already takes"):
        SOURCES.build("folder", root=str(tree), annotations_csv=str(csv_path),
                      folder_scales=["coarse", "fine"])


def test_csv_rows_above_the_class_level_are_named(tree, tmp_path):
    csv_path = tmp_path / "a.csv"
    csv_path.write_text("path,split\n" + "\n".join(f"{r},train" for r in FILES)
                        + "\nanimals/about.png,train\n")
    with pytest.raises(DataError, match=r"line 8.*animals/about.png is not inside a class"):
        SOURCES.build("folder", root=str(tree), annotations_csv=str(csv_path),
                      folder_scales=["coarse", "fine"])


@pytest.mark.parametrize("bad", [["coarse"], ["fine", "coarse"], ["x", "x", "fine"], [],
                                 "coarse/fine", ["a b", "fine"]])
def test_bad_option_names_the_key(tree, bad):
    with pytest.raises(ConfigError, match=r"^datasets.<name>.options.folder_scales: "):
        SOURCES.build("folder", root=str(tree), folder_scales=bad)


def test_a_tree_too_shallow_is_one_error(tmp_path):
    root = tmp_path / "flat"
    (root / "a").mkdir(parents=True)
    (root / "a" / "1.png").write_bytes(png_bytes(1))
    with pytest.raises(DataError, match=r"flat has no class folders 2 levels down"):
        SOURCES.build("folder", root=str(root), folder_scales=["coarse", "fine"])


def test_linked_folders_are_followed_once(tree):
    os.symlink(tree / "animals", tree / "signs" / "loop")       # a cycle through a link
    os.symlink(tree / "signs" / "flags", tree / "animals" / "flags_link")
    source = SOURCES.build("folder", root=str(tree), folder_scales=["coarse", "fine"])
    fine = source.info().class_names["fine"]
    assert "animals/flags_link" in fine and "signs/loop" in fine
    # a linked class folder holds what its target holds (animals/: 4 images, flags/: 2)
    assert len(list(source.records())) == 6 + 2 + 4


def test_a_link_back_to_an_ancestor_is_not_entered_again(tmp_path):
    root = tmp_path / "t"
    for i, rel in enumerate(["a/x/p/1.png", "b/y/q/2.png"]):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(png_bytes(i))
    os.symlink(root / "a", root / "a" / "again")          # a/again/x/p, a/again/again/...
    source = SOURCES.build("folder", root=str(root), folder_scales=["top", "mid", "fine"])
    assert source.info().class_names["fine"] == ["a/x/p", "b/y/q"]
