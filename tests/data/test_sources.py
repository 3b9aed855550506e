from __future__ import annotations

import pytest

from dml.data.sources import SOURCES, Source
from dml.data.sources.folder import FolderSource
from dml.errors import ConfigError, DataError

from .conftest import png_bytes


@pytest.fixture
def tree(tmp_path):
    root = tmp_path / "images"
    for rel in ["zebra/1.png", "ant/1.png", "ant/deep/2.PNG", "moth/1.jpg"]:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(png_bytes(len(rel)))
    (root / "README.txt").write_text("top-level file")
    (root / ".hidden").mkdir()
    return root


def _csv(tmp_path, text: str):
    path = tmp_path / "annotations.csv"
    path.write_text(text)
    return str(path)


def test_folder_labels_from_sorted_names(tree):
    source = SOURCES.build("folder", root=str(tree))
    assert isinstance(source, Source)
    records = list(source.records())
    assert [r["image_id"] for r in records] == ["ant/1.png", "ant/deep/2.PNG", "moth/1.jpg",
                                                "zebra/1.png"]
    assert [r["label"] for r in records] == [0, 0, 1, 2]
    assert all(r["domain"] == "photo" and r["path"].startswith(str(tree)) for r in records)
    info = source.info()
    assert info.class_names == {"fine": ["ant", "moth", "zebra"]} and info.scales == ["fine"]
    assert source.ignored == ["README.txt"]


def test_folder_csv_annotations(tree, tmp_path):
    csv_path = _csv(tmp_path, (
        "path,split,role,domain,label_family,attr_striped,attr_small\n"
        "ant/1.png,train,both,photo,insect,0,1\n"
        "./ant/deep/2.PNG,train,both,sketch,insect,1,1\n"
        "moth/1.jpg,test,query,photo,insect,0,0\n"
        "zebra/1.png,test,gallery,photo,mammal,1,0\n"
    ))
    source = FolderSource(tree, csv_path)
    info = source.info()
    assert info.scales == ["fine", "family"]
    assert info.class_names["family"] == ["insect", "mammal"]
    assert info.attribute_names == ["striped", "small"]
    records = {r["image_id"]: r for r in source.records()}
    assert records["ant/deep/2.PNG"]["domain"] == "sketch"
    assert records["zebra/1.png"]["label_family"] == 1
    assert records["zebra/1.png"]["attributes"] == [1, 0]
    assert records["moth/1.jpg"]["role"] == "query"
    assert records["moth/1.jpg"]["_origin"].endswith("annotations.csv line 4")


def test_folder_csv_errors_name_file_and_line(tree, tmp_path):
    with pytest.raises(DataError, match="no 'path' column"):
        FolderSource(tree, _csv(tmp_path, "file,split\nant/1.png,train\n"))
    with pytest.raises(DataError) as error:
        FolderSource(tree, _csv(tmp_path, (
            "path,split,label_family\n"
            "ant/1.png,train,insect\n"
            "ant/deep/2.PNG,holdout,insect\n"
            "moth/1.jpg,test,\n"
        )))
    message = str(error.value)
    assert "line 3: split 'holdout'" in message
    assert "line 4: empty label_family" in message
    assert "zebra/1.png: image has no row" in message
    with pytest.raises(DataError, match="line 2: .*not inside a class folder"):
        FolderSource(tree, _csv(tmp_path, "path\nREADME.txt\n"))
    with pytest.raises(DataError, match="unknown or repeated"):
        FolderSource(tree, _csv(tmp_path, "path,colour\nant/1.png,red\n"))
    with pytest.raises(DataError, match="line 3: ant/1.png already annotated on line 2"):
        FolderSource(tree, _csv(tmp_path, "path\nant/1.png\nant/1.png\n"))
    with pytest.raises(DataError, match="not a directory"):
        FolderSource(tmp_path / "nowhere")
    with pytest.raises(ConfigError, match="datasets.<name>.options.domain"):
        FolderSource(tree, domain="painting")


def test_csv_row_for_a_file_not_in_the_tree_becomes_a_missing_record(tree, tmp_path):
    source = FolderSource(tree, _csv(tmp_path, "path\nant/1.png\nant/ghost.png\n"))
    ghost = [r for r in source.records() if r["image_id"] == "ant/ghost.png"]
    assert len(ghost) == 1 and ghost[0]["_origin"].endswith("line 3")


def test_synthetic_source_checks_options_when_built():
    with pytest.raises(ConfigError, match="datasets.<name>.options.image_size"):
        SOURCES.build("synthetic", image_size=4)
    source = SOURCES.build("synthetic", images_per_class=1, classes_per_type=1,
                           types_per_family=1, families=2)
    records = list(source.records())
    assert len(records) == 2 and set(records[0]) >= {"image_id", "image", "label"}
    assert source.info().num_classes() == 2
