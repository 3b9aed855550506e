"""The Stanford Cars (Cars196) reader on a tiny tree in the published layout."""

from __future__ import annotations

import re

import numpy as np
import pytest
from PIL import Image
from scipy.io import savemat

from dml.data.sources import SOURCES, Source
from dml.data.sources import cars196 as cars196_module
from dml.data.sources.cars196 import Cars196Source
from dml.data.ingest import ingest
from dml.data.manifest import read_info, read_manifest
from dml.errors import ConfigError, DataError

FIELDS = ("relative_im_path", "bbox_x1", "bbox_y1", "bbox_x2", "bbox_y2", "class", "test")
# (path, class id, test flag): classes on both sides of 98/99, the test flag (the release's
# classification split) deliberately disagreeing with the split by class.
ROWS = [
    ("car_ims/000001.jpg", 1, 0),
    ("car_ims/000002.jpg", 1, 1),
    ("car_ims/000045.jpg", 2, 1),
    ("car_ims/008000.jpg", 98, 0),
    ("car_ims/008100.jpg", 99, 0),
    ("car_ims/008200.jpg", 100, 1),
    ("car_ims/016185.jpg", 196, 0),
]
CLASS_NAMES = ["AM General Hummer SUV 2000", "Acura RL Sedan 2012"] + [
    f"Make {k} Model 2012" for k in range(3, 196)] + ["smart fortwo Convertible 2012"]


def _jpeg(path, seed: int) -> None:
    """A real 8x8 JPEG."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path, format="JPEG")


def _annotations(rows, fields=FIELDS) -> np.ndarray:
    """A 1xN MATLAB struct array; a row is (path, class, test) and may hold any values."""
    array = np.zeros((1, len(rows)), dtype=[(f, "O") for f in fields])
    for i, (path, class_id, test) in enumerate(rows):
        # as in the release: uint8 class and flag, uint16 box
        values = {"relative_im_path": path, "class": _typed(class_id), "test": np.uint8(test),
                  "bbox_x1": np.uint16(1), "bbox_y1": np.uint16(2), "bbox_x2": np.uint16(7),
                  "bbox_y2": np.uint16(6)}
        for field in fields:
            array[0, i][field] = values[field]
    return array


def _typed(value):
    return np.uint8(value) if isinstance(value, int) and 0 <= value < 256 else value


def _cell(strings) -> np.ndarray:
    """A 1xN MATLAB cell array of strings."""
    array = np.empty((1, len(strings)), dtype=object)
    array[0, :] = list(strings)
    return array


def _write_mat(root, rows=ROWS, **variables) -> None:
    """``cars_annos.mat`` of ``rows`` and CLASS_NAMES; ``variables`` replace or add variables
    (a list is written as a cell array, None leaves the variable out)."""
    content = {"annotations": _annotations(rows), "class_names": CLASS_NAMES, **variables}
    savemat(root / "cars_annos.mat", {k: _cell(v) if isinstance(v, list) else v
                                      for k, v in content.items() if v is not None})


@pytest.fixture
def cars(tmp_path):
    root = tmp_path / "cars196"
    root.mkdir()
    _write_mat(root)
    for seed, (path, _, _) in enumerate(ROWS):
        _jpeg(root / path, seed)
    return root


def test_cars196_records_and_info(cars):
    source = SOURCES.build("cars196", root=str(cars))
    assert isinstance(source, Source) and isinstance(source, Cars196Source)
    records = list(source.records())
    assert [r["image_id"] for r in records] == [row[0] for row in ROWS]
    assert [r["path"] for r in records] == [str(cars / row[0]) for row in ROWS]
    # split by class id (1-98 train, 99-196 test), not by the release's test flag
    assert [r["split"] for r in records] == ["train"] * 4 + ["test"] * 3
    assert [r["label"] for r in records] == [0, 0, 1, 97, 98, 99, 195]
    assert all(r["role"] == "both" and r["domain"] == "photo" for r in records)
    assert records[3]["_origin"] == f"{cars / 'cars_annos.mat'} annotation 4"
    assert all(set(r) == set(records[0]) for r in records)
    info = source.info()
    assert info.source == "cars196" and info.scales == ["fine"]
    assert info.class_names == {"fine": CLASS_NAMES} and info.num_classes() == 196
    assert info.class_names["fine"][records[6]["label"]] == "smart fortwo Convertible 2012"
    assert info.options == {"root": str(cars)}


def test_cars196_single_annotation_and_other_encodings(tmp_path):
    """One annotation squeezes to a scalar struct; a double class (5.0), a char-matrix of
    class names (space padded) and a Windows path are read too."""
    names = np.array([f"Car {k}" + " " * (k % 3) for k in range(1, 197)])  # char matrix
    _write_mat(tmp_path, rows=[("car_ims\\000005.jpg", 5.0, 1)], class_names=names)
    source = Cars196Source(tmp_path)
    assert list(source.records()) == [{
        "image_id": "car_ims/000005.jpg", "path": str(tmp_path / "car_ims/000005.jpg"),
        "split": "train", "role": "both", "domain": "photo", "label": 4,
        "_origin": f"{tmp_path / 'cars_annos.mat'} annotation 1"}]
    assert source.info().class_names["fine"][:3] == ["Car 1", "Car 2", "Car 3"]


def test_cars196_ingest_end_to_end(cars, tmp_path):
    out = tmp_path / "manifest.parquet"
    report = ingest("cars196", {"root": str(cars)}, out)
    assert report.images == 7 and report.quarantined == 0
    assert report.counts["split"] == {"test": 3, "train": 4}
    assert report.counts["role"] == {"both": 7}
    assert report.classes == {"fine": 196}
    assert read_info(out).class_names["fine"] == CLASS_NAMES
    table = read_manifest(out)
    assert table.column("image_id").to_pylist() == [row[0] for row in ROWS]
    assert table.column("label").to_pylist() == [0, 0, 1, 97, 98, 99, 195]
    assert all(len(b) > 0 for b in table.column("image").to_pylist())


def test_cars196_missing_image_is_a_bad_file_with_its_annotation(cars, tmp_path):
    (cars / ROWS[4][0]).unlink()
    with pytest.raises(DataError, match=re.escape(f"{cars / 'cars_annos.mat'} annotation 5")):
        ingest("cars196", {"root": str(cars)}, tmp_path / "m.parquet")
    report = ingest("cars196", {"root": str(cars)}, tmp_path / "m.parquet", on_bad="skip")
    assert report.images == 6 and report.bad_files[0].reason == "missing (no such file)"


def _rows(index: int, path=None, class_id=None):
    """ROWS with annotation ``index`` (1-based) given another path and/or class."""
    rows = list(ROWS)
    old = rows[index - 1]
    rows[index - 1] = (old[0] if path is None else path,
                       old[1] if class_id is None else class_id, old[2])
    return rows


CARS_ERRORS = [  # (keyword arguments of _write_mat, expected message fragment)
    ({"rows": _rows(3, class_id=0)}, "annotation 3: class 0 is not an integer in 1..196"),
    ({"rows": _rows(3, class_id=197)}, "annotation 3: class 197 is not an integer"),
    ({"rows": _rows(3, class_id=2.5)}, "annotation 3: class 2.5 is not an integer"),
    ({"rows": _rows(3, class_id=-4)}, "annotation 3: class -4 is not an integer"),
    ({"rows": _rows(3, class_id="x")}, "annotation 3: class 'x' is not an integer"),
    ({"rows": _rows(3, class_id=np.array([]))}, r"annotation 3: class \[\] is not an integer"),
    ({"rows": _rows(6, class_id=np.array([4, 5]))},
     r"annotation 6: class \[4, 5\] is not an integer"),
    ({"rows": _rows(5, path=ROWS[1][0])},
     f"annotation 5: path {ROWS[1][0]} already on annotation 2"),
    ({"rows": _rows(5, path="./" + ROWS[0][0])},
     f"annotation 5: path {ROWS[0][0]} already on annotation 1"),
    ({"rows": _rows(2, path="../car_ims/000002.jpg")},
     "annotation 2: relative_im_path '../car_ims/000002.jpg' leaves the dataset folder"),
    ({"rows": _rows(2, path="/data/car_ims/000002.jpg")}, "annotation 2: .* leaves the dataset"),
    ({"rows": _rows(7, path=np.uint8(3))}, "annotation 7: relative_im_path 3 is not text"),
    ({"rows": []}, "no images"),
    ({"annotations": None}, "no 'annotations' variable"),
    ({"annotations": np.arange(3.0)}, "annotations is not a struct array"),
    ({"annotations": _cell(["car_ims/000001.jpg"])}, "annotations is not a struct array"),
    ({"annotations": _annotations(ROWS, fields=FIELDS[:5] + FIELDS[6:])},
     "annotations has no field 'class' \\(fields: relative_im_path, bbox_x1"),
    ({"class_names": None}, "no 'class_names' variable"),
    ({"class_names": CLASS_NAMES[:195]}, "class_names has 195 entries, expected 196"),
    ({"class_names": "Hummer"}, "class_names has 1 entries, expected 196"),
    ({"class_names": CLASS_NAMES[:4] + [" "] + CLASS_NAMES[5:]},
     r"class_names entries \[5\] are not non-empty strings"),
]


@pytest.mark.parametrize(("change", "message"), CARS_ERRORS,
                         ids=[e[1][:40] for e in CARS_ERRORS])
def test_cars196_errors_name_file_and_annotation(cars, change, message):
    _write_mat(cars, **change)
    path = cars / "cars_annos.mat"
    with pytest.raises(DataError) as error:
        Cars196Source(cars)
    assert str(error.value).startswith(f"{path}: "), str(error.value)
    assert re.search(message, str(error.value)), str(error.value)


def test_cars196_problems_of_the_file_come_together(cars):
    rows = _rows(2, path="../x.jpg")
    rows[3] = (rows[3][0], 0, 0)
    rows[6] = (ROWS[0][0], 196, 0)
    _write_mat(cars, rows=rows, class_names=CLASS_NAMES[:10])
    with pytest.raises(DataError) as error:
        Cars196Source(cars)
    message = str(error.value)
    assert message.startswith(f"{cars / 'cars_annos.mat'}: 4 problem(s)"), message
    assert "class_names has 10 entries" in message
    assert "annotation 2: relative_im_path '../x.jpg' leaves" in message
    assert "annotation 4: class 0 is not" in message
    assert f"annotation 7: path {ROWS[0][0]} already on annotation 1" in message


def test_cars196_unreadable_and_missing_files(cars, monkeypatch):
    path = cars / "cars_annos.mat"
    path.write_bytes(path.read_bytes()[:300])
    with pytest.raises(DataError, match=re.escape(f"{path}: not a readable MATLAB v5 file")):
        Cars196Source(cars)
    path.write_bytes(b"not a MATLAB file" * 10)
    with pytest.raises(DataError, match=re.escape(f"{path}: not a readable MATLAB v5 file")):
        Cars196Source(cars)

    def v73(*args, **kwargs):
        raise NotImplementedError("Please use HDF reader for matlab v7.3 files, e.g. h5py")

    monkeypatch.setattr(cars196_module, "loadmat", v73)
    with pytest.raises(DataError, match=re.escape(f"{path}: a MATLAB v7.3 (HDF5) file")):
        Cars196Source(cars)
    path.unlink()
    with pytest.raises(DataError, match="cars_annos.mat does not exist .*car_ims/"):
        Cars196Source(cars)


def test_cars196_configuration(cars):
    with pytest.raises(ConfigError, match="unknown key.*datasets.<name>.options.crop"):
        SOURCES.build("cars196", where="datasets.<name>.options", root=str(cars), crop=True)
    with pytest.raises(DataError, match="cars196 source: root .* is not a directory"):
        SOURCES.build("cars196", root=str(cars / "nowhere"))
