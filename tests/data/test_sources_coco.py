"""The MS-COCO instances reader on tiny trees in the published layout."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from PIL import Image

import dml.data.sources.coco  # noqa: F401  (registers "coco")
from dml.data.sources import SOURCES, Source
from dml.data.sources.coco import CocoSource
from dml.data.ingest import ingest
from dml.data.manifest import read_info, read_manifest
from dml.errors import ConfigError, DataError

# Non-contiguous ids, listed out of id order in one file: labels follow the id order.
CATEGORIES = [(1, "person", "person"), (3, "car", "vehicle"), (18, "dog", "animal"),
              (90, "toothbrush", "indoor")]
CLASS_NAMES = ["person", "car", "dog", "toothbrush"]  # labels 0, 1, 2, 3
IMAGES = {  # file stem -> image ids, in file order
    "train": [9, 25, 30, 34],
    "val": [139, 285, 632],
}
ANNOTATIONS = {  # file stem -> (annotation id, image id, category id, iscrowd)
    "train": [(101, 9, 1, 0), (102, 9, 18, 0), (103, 9, 1, 0), (104, 9, 1, 1),  # 2 person+dog
              (105, 25, 90, 0), (106, 25, 3, 0),  # toothbrush + car
              (107, 30, 1, 1)],  # 30: a crowd only; 34: no annotation
    "val": [(201, 139, 18, 0), (202, 139, 3, 0), (203, 139, 18, 0), (204, 139, 18, 0),
            (205, 285, 90, 0)],  # 632: no annotation
}
# Hand-counted objects of the labelled images, crowds left out.
EXPECTED = {
    "train2017/000000000009.jpg": [{"label": 0, "count": 2}, {"label": 2, "count": 1}],
    "train2017/000000000025.jpg": [{"label": 1, "count": 1}, {"label": 3, "count": 1}],
    "val2017/000000000139.jpg": [{"label": 1, "count": 1}, {"label": 2, "count": 3}],
    "val2017/000000000285.jpg": [{"label": 3, "count": 1}],
}
IGNORED = ["train2017/000000000030.jpg (only crowd annotations)",
           "train2017/000000000034.jpg (no object annotation)",
           "val2017/000000000632.jpg (no object annotation)"]


def _file_name(stem: str, year: int, ident: int) -> str:
    return f"{ident:012d}.jpg" if year == 2017 else f"COCO_{stem}{year}_{ident:012d}.jpg"


def _instances(stem: str, year: int) -> dict:
    """An instances file with the structure of the release."""
    images = [{"license": 3, "file_name": _file_name(stem, year, i),
               "coco_url": f"http://images.cocodataset.org/{stem}{year}/{i:012d}.jpg",
               "height": 8, "width": 8, "date_captured": "2013-11-14 11:18:45",
               "flickr_url": "http://farm9.staticflickr.com/x.jpg", "id": i}
              for i in IMAGES[stem]]
    annotations = []
    for ident, image, category, crowd in ANNOTATIONS[stem]:
        segmentation = ({"counts": [0, 10, 54], "size": [8, 8]} if crowd
                        else [[1.0, 1.0, 5.0, 1.0, 5.0, 5.0]])
        annotations.append({"segmentation": segmentation, "area": 8.0, "iscrowd": crowd,
                            "image_id": image, "bbox": [1.0, 1.0, 4.0, 4.0],
                            "category_id": category, "id": ident})
    order = CATEGORIES if stem == "train" else CATEGORIES[::-1]
    return {
        "info": {"description": "COCO 2017 Dataset", "version": "1.0", "year": year},
        "licenses": [{"url": "http://creativecommons.org/licenses/by-nc-sa/2.0/", "id": 3,
                      "name": "Attribution-NonCommercial-ShareAlike License"}],
        "images": images,
        "annotations": annotations,
        "categories": [{"supercategory": s, "id": i, "name": n} for i, n, s in order],
    }


def _write_coco(parent, year: int = 2017):
    """A COCO folder under ``parent``: both instances files and real 8x8 JPEG images."""
    root = parent / "coco"
    (root / "annotations").mkdir(parents=True)
    for stem, idents in IMAGES.items():
        (root / f"annotations/instances_{stem}{year}.json").write_text(
            json.dumps(_instances(stem, year)))
        (root / f"{stem}{year}").mkdir()
        for i in idents:
            pixels = np.random.default_rng(i).integers(0, 256, (8, 8, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / f"{stem}{year}" / _file_name(stem, year, i),
                                         format="JPEG")
    return root


def _edit(root, stem: str, change) -> None:
    """Apply ``change`` to the parsed 2017 instances file ``stem`` and write it back."""
    path = root / f"annotations/instances_{stem}2017.json"
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


@pytest.fixture
def coco(tmp_path):
    return _write_coco(tmp_path)


def test_coco_records_and_info(coco):
    source = SOURCES.build("coco", root=str(coco))
    assert isinstance(source, Source) and isinstance(source, CocoSource)
    records = list(source.records())
    assert [r["image_id"] for r in records] == list(EXPECTED)
    assert {r["image_id"]: r["object_counts"] for r in records} == EXPECTED
    assert [r["split"] for r in records] == ["train", "train", "test", "test"]
    assert all(set(r) == {"image_id", "path", "split", "domain", "object_counts", "_origin"}
               and r["domain"] == "photo" for r in records)
    assert records[2]["path"] == str(coco / "val2017/000000000139.jpg")
    val_file = coco / "annotations/instances_val2017.json"
    assert records[2]["_origin"] == f"{val_file} images[0] (id 139)"
    assert source.ignored == IGNORED
    info = source.info()
    assert info.source == "coco" and info.scales == ["fine"]
    assert info.class_names == {"fine": CLASS_NAMES}
    assert info.options == {"root": str(coco), "year": 2017, "count_crowd": False,
                            "unlabelled": "skip"}


def test_coco_ingest_end_to_end(coco, tmp_path):
    out, report_path = tmp_path / "manifest.parquet", tmp_path / "report.json"
    report = ingest("coco", {"root": str(coco)}, out, report_path=report_path)
    assert report.images == 4 and report.quarantined == 0
    assert report.counts == {"split": {"test": 2, "train": 2}, "domain": {"photo": 4}}
    assert report.classes == {"fine": 4}
    assert report.ignored_files == IGNORED
    assert json.loads(report_path.read_text())["ignored_files"] == IGNORED
    assert read_info(out).class_names == {"fine": CLASS_NAMES}
    table = read_manifest(out)
    assert "label" not in table.column_names and "role" not in table.column_names
    ids = table.column("image_id").to_pylist()
    assert ids == list(EXPECTED)
    assert dict(zip(ids, table.column("object_counts").to_pylist())) == EXPECTED
    assert table.column("split").to_pylist() == ["train", "train", "test", "test"]
    assert table.column("image")[0].as_py() == (coco / ids[0]).read_bytes()


def test_coco_count_crowd(coco):
    source = CocoSource(coco, count_crowd=True)
    counts = {r["image_id"]: r["object_counts"] for r in source.records()}
    assert counts["train2017/000000000009.jpg"] == [{"label": 0, "count": 3},
                                                    {"label": 2, "count": 1}]
    assert counts["train2017/000000000030.jpg"] == [{"label": 0, "count": 1}]
    assert source.ignored == [IGNORED[1], IGNORED[2]]
    assert source.info().options["count_crowd"] is True


def test_coco_unlabelled_fail_names_the_images(coco):
    with pytest.raises(DataError) as error:
        SOURCES.build("coco", root=str(coco), unlabelled="fail")
    message = str(error.value)
    assert "3 image(s) show no class" in message
    assert all(entry in message for entry in IGNORED)
    with pytest.raises(DataError, match="^coco source: 2 image"):
        CocoSource(coco, count_crowd=True, unlabelled="fail")
    for stem in ("train", "val"):  # drop the images without any annotation
        _edit(coco, stem, lambda d: d["images"].pop())
    assert len(list(CocoSource(coco, count_crowd=True, unlabelled="fail").records())) == 5


def test_coco_unlabelled_fail_counts_the_rest(coco):
    def unlabelled(data):
        data["images"] += [{"id": 1000 + i, "file_name": f"extra{i}.jpg"} for i in range(6)]

    _edit(coco, "val", unlabelled)
    with pytest.raises(DataError, match=r"9 image\(s\) .* and 4 more$"):
        CocoSource(coco, unlabelled="fail")


def test_coco_2014_naming(tmp_path):
    root = _write_coco(tmp_path, year=2014)
    source = SOURCES.build("coco", root=str(root), year=2014)
    ids = [r["image_id"] for r in source.records()]
    assert ids[0] == "train2014/COCO_train2014_000000000009.jpg"
    assert ids[2] == "val2014/COCO_val2014_000000000139.jpg"
    assert source.ignored[-1] == "val2014/COCO_val2014_000000000632.jpg (no object annotation)"
    report = ingest("coco", {"root": str(root), "year": 2014}, tmp_path / "m.parquet")
    assert report.images == 4 and read_info(tmp_path / "m.parquet").options["year"] == 2014
    with pytest.raises(DataError, match="instances_train2017.json does not exist .*the 2014 "
                                        "files are there: set datasets.<name>.options.year: 2014"):
        CocoSource(root)


def test_coco_missing_files(coco, tmp_path):
    with pytest.raises(DataError, match="coco source: root .* is not a directory"):
        CocoSource(tmp_path / "nowhere")
    (coco / "val2017/000000000285.jpg").unlink()  # a missing image: ingest names its entry
    with pytest.raises(DataError, match=re.escape(
            "instances_val2017.json images[1] (id 285)): missing")):
        ingest("coco", {"root": str(coco)}, tmp_path / "m.parquet")
    (coco / "val2017").rename(coco / "elsewhere")
    with pytest.raises(DataError, match=f"image folder {re.escape(str(coco / 'val2017'))} does "
                                        "not exist"):
        CocoSource(coco)
    path = coco / "annotations/instances_val2017.json"
    path.unlink()
    with pytest.raises(DataError) as error:
        CocoSource(coco)
    assert str(error.value).startswith(f"coco source: {path} does not exist (root must be the "
                                       "COCO folder holding annotations/")
    assert "the 2014 files" not in str(error.value)


def _drop_key(key):
    return lambda d: d.pop(key)


def _set(key, index, field, value):
    return lambda d: d[key][index].__setitem__(field, value)


COCO_ERRORS = [  # (file stem, change to the parsed file or new text, expected message)
    ("train", '{"images": [', "not valid JSON"),
    ("val", "\xff", "not valid JSON"),
    ("val", "[]", ("expected a JSON object with the keys images, annotations, categories, got "
                   "a list")),
    ("train", _drop_key("annotations"), "no key 'annotations'"),
    ("val", _drop_key("categories"), "no key 'categories'"),
    ("val", lambda d: d.__setitem__("images", {}), "not a list under the key 'images'"),
    ("val", _set("annotations", 1, "category_id", 7),
     r"annotations\[1\] \(id 202\): category_id 7 is not a category of this file"),
    ("train", _set("annotations", 4, "image_id", 139),
     r"annotations\[4\] \(id 105\): image_id 139 is not an image of this file"),
    ("train", _set("annotations", 4, "image_id", "9"),
     r"annotations\[4\] \(id 105\): image_id '9' is not an image"),
    ("train", _set("annotations", 0, "iscrowd", 2), r"annotations\[0\] \(id 101\): iscrowd 2"),
    ("train", lambda d: d["annotations"][0].pop("id") and d["annotations"][0].pop("image_id"),
     r"1 problem\(s\):\n  annotations\[0\]: image_id None is not an image"),
    ("val", lambda d: d["images"][1].pop("file_name"),
     r"images\[1\] \(id 285\): needs an integer 'id' and a 'file_name'"),
    ("val", _set("images", 1, "id", 139.0), r"images\[1\]: needs an integer 'id'"),
    ("val", _set("images", 1, "id", 139),
     r"images\[1\] \(id 139\): image id 139 is also images\[0\] \(id 139\)"),
    ("val", _set("images", 2, "file_name", "./000000000139.jpg"),
     r"images\[2\] \(id 632\): file_name 000000000139.jpg is also images\[0\]"),
    ("val", _set("images", 2, "file_name", "../train2017/000000000009.jpg"),
     r"images\[2\] \(id 632\): file_name '../train2017/000000000009.jpg' leaves the image"),
    ("val", lambda d: d.update(images=[], annotations=[]), "no images"),
    ("train", _set("categories", 1, "id", 1),
     r"categories\[1\] \(id 1\): category id 1 is listed twice"),
    ("train", lambda d: d["categories"][2].pop("name"),
     r"categories\[2\] \(id 18\): needs an integer 'id' and a 'name'"),
]


@pytest.mark.parametrize(("stem", "change", "message"), COCO_ERRORS,
                         ids=[f"{e[0]}:{e[2][:30]}" for e in COCO_ERRORS])
def test_coco_errors_name_file_and_entry(coco, stem, change, message):
    path = coco / f"annotations/instances_{stem}2017.json"
    if isinstance(change, str):
        path.write_bytes(change.encode("latin-1"))
    else:
        _edit(coco, stem, change)
    with pytest.raises(DataError) as error:
        CocoSource(coco)
    assert str(error.value).startswith(f"{path}: ")
    assert re.search(message, str(error.value)), str(error.value)


def test_coco_problems_are_collected_per_file(coco):
    def broken(data):
        data["annotations"][0]["category_id"] = 2
        data["annotations"][5]["image_id"] = 1

    _edit(coco, "train", broken)
    with pytest.raises(DataError, match=r"2 problem\(s\):\n  annotations\[0\] \(id 101\): "
                                        r"category_id 2 .*\n  annotations\[5\] \(id 106\)"):
        CocoSource(coco)


def test_coco_categories_must_match_between_files(coco):
    def differ(data):
        data["categories"].append({"supercategory": "indoor", "id": 89, "name": "hair drier"})
        next(c for c in data["categories"] if c["id"] == 18)["name"] = "puppy"

    _edit(coco, "val", differ)
    train, val = (coco / f"annotations/instances_{s}2017.json" for s in ("train", "val"))
    with pytest.raises(DataError) as error:
        CocoSource(coco)
    assert str(error.value) == (
        f"coco source: {train} and {val} list different categories (they must be the same): "
        "id 18: 'dog' vs 'puppy'; id 89: absent vs 'hair drier'")


@pytest.mark.parametrize(("options", "message"), [
    ({"year": 2016}, "datasets.<name>.options.year: 2016 is not one of: 2014, 2017"),
    ({"year": "2017"}, "datasets.<name>.options.year: '2017' is not one of"),
    ({"year": True}, "datasets.<name>.options.year: True"),
    ({"count_crowd": "yes"}, "datasets.<name>.options.count_crowd: 'yes' is not true or false"),
    ({"unlabelled": "drop"}, "datasets.<name>.options.unlabelled: 'drop' is not one of: skip, fail"),
    ({"max_images": 10},
     "unknown key.*datasets.<name>.options.max_images.*valid keys: count_crowd, root, unlabelled, year"),
])
def test_coco_bad_options(coco, options, message):
    with pytest.raises(ConfigError, match=message):
        SOURCES.build("coco", where="datasets.<name>.options", root=str(coco), **options)
