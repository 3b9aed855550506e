"""The DyML and Stanford Online Products readers on tiny trees in the published layouts."""

from __future__ import annotations

import re

import numpy as np
import pytest
from PIL import Image

from dml.data.sources import SOURCES, Source
from dml.data.sources.dyml import DymlSource
from dml.data.sources.sop import SopSource
from dml.data.ingest import ingest
from dml.data.manifest import read_info, read_manifest
from dml.errors import ConfigError, DataError


def _image(path, seed: int) -> None:
    """A real 8x8 image: JPEG or PNG by the file's extension."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path, format="PNG" if path.suffix == ".png" else "JPEG")


# ----------------------------------------------------------------------------- DyML

LABEL_HEADER = "fname, coarse_id, middle_id, fine_id"
BMK_HEADER = "fname, labels"
# label.csv rows: fname, coarse, middle, fine. Fine ids 7 < 100 < 101 (numeric, not text, order).
TRAIN_ROWS = [("0.jpg", 1, 10, 100), ("1.jpg", 1, 10, 101), ("2.jpg", 0, 3, 7),
              ("10.png", 0, 3, 7)]
BMK_ROWS = {  # (benchmark folder, query or gallery) -> rows (fname, label at that scale)
    ("bmk_fine", "query"): [("0.jpg", 12), ("1.jpg", 5)],
    ("bmk_fine", "gallery"): [("0.jpg", 12), ("1.jpg", 5), ("2.jpg", 12)],
    ("bmk_middle", "query"): [("0.jpg", 3)],
    ("bmk_middle", "gallery"): [("0.jpg", 3), ("1.jpg", 4)],
    ("bmk_coarse", "query"): [("0.jpg", 1)],
    ("bmk_coarse", "gallery"): [("5.jpg", 1), ("6.jpg", 0)],
}
PRODUCT_ROWS = [("0.jpg", 2, 30, 300), ("1.jpg", 2, 30, 300), ("2.jpg", 3, 31, 301)]


def _csv(header: str, rows, glued: bool = True) -> str:
    """A DyML csv; ``glued``: as released, no newline after the header and a trailing empty
    line; else the header on its own line."""
    body = "\n".join(", ".join(str(f) for f in row) for row in rows)
    return header + ("" if glued else "\n") + body + ("\n\n" if glued else "\n")


def _write_dyml(parent, product: bool = False, glued: bool = True):
    """A DyML dataset folder under ``parent``: Vehicle/Animal-style benchmarks (one per
    scale), or Product-style (``mini-bmk_all_in_one``); returns its path."""
    root = parent / ("dyml_product" if product else "dyml_vehicle")
    files = [("train/label.csv", "train/imgs", LABEL_HEADER, TRAIN_ROWS)]
    if product:
        files.append(("mini-bmk_all_in_one/label.csv", "mini-bmk_all_in_one/imgs", LABEL_HEADER,
                      PRODUCT_ROWS))
    else:
        files += [(f"{bench}/{kind}.csv", f"{bench}/{kind}", BMK_HEADER, rows)
                  for (bench, kind), rows in BMK_ROWS.items()]
    seed = 0
    for csv_rel, folder, header, rows in files:
        (root / csv_rel).parent.mkdir(parents=True, exist_ok=True)
        (root / csv_rel).write_text(_csv(header, rows, glued))
        for row in rows:
            _image(root / folder / row[0], seed)
            seed += 1
    return root


@pytest.fixture
def vehicle(tmp_path):
    return _write_dyml(tmp_path)


@pytest.fixture
def product(tmp_path):
    return _write_dyml(tmp_path, product=True)


def test_dyml_glued_header_is_split_off_line_one(vehicle):
    text = (vehicle / "train/label.csv").read_text()
    assert text.startswith("fname, coarse_id, middle_id, fine_id0.jpg, 1, 10, 100\n")
    assert (vehicle / "bmk_fine/query.csv").read_text().startswith("fname, labels0.jpg, 12\n")
    records = list(DymlSource(vehicle, test=False).records())
    assert [r["image_id"] for r in records] == [f"train/imgs/{r[0]}" for r in TRAIN_ROWS]
    assert records[0]["_origin"] == f"{vehicle / 'train/label.csv'} line 1"
    assert records[1]["_origin"] == f"{vehicle / 'train/label.csv'} line 2"


def test_dyml_vehicle_records_and_info(vehicle):
    source = SOURCES.build("dyml", root=str(vehicle))
    assert isinstance(source, Source) and isinstance(source, DymlSource)
    info = source.info()
    assert info.source == "dyml" and info.scales == ["fine", "middle", "coarse"]
    assert info.class_names == {
        "fine": ["7", "100", "101", "bmk_fine:5", "bmk_fine:12"],
        "middle": ["3", "10", "bmk_middle:3", "bmk_middle:4"],
        "coarse": ["0", "1", "bmk_coarse:0", "bmk_coarse:1"],
    }
    assert info.options == {"root": str(vehicle), "test": True}
    records = list(source.records())
    assert len(records) == 4 + sum(len(rows) for rows in BMK_ROWS.values())
    assert all(set(r) == {"image_id", "path", "split", "role", "domain", "label",
                          "label_middle", "label_coarse", "_origin"} for r in records)
    assert all(r["domain"] == "photo" for r in records)
    train = records[:4]
    assert [(r["label"], r["label_middle"], r["label_coarse"]) for r in train] == [
        (1, 1, 1), (2, 1, 1), (0, 0, 0), (0, 0, 0)]
    assert all(r["split"] == "train" and r["role"] == "both" for r in train)
    assert train[3]["path"] == str(vehicle / "train/imgs/10.png")
    by_id = {r["image_id"]: r for r in records}
    fine_query = by_id["bmk_fine/query/0.jpg"]
    assert fine_query["split"] == "test" and fine_query["role"] == "query"
    assert (fine_query["label"], fine_query["label_middle"], fine_query["label_coarse"]) == (
        4, None, None)
    assert by_id["bmk_fine/gallery/1.jpg"]["label"] == 3  # query and gallery share classes
    assert by_id["bmk_fine/gallery/1.jpg"]["role"] == "gallery"
    middle = by_id["bmk_middle/gallery/1.jpg"]
    assert (middle["label"], middle["label_middle"], middle["label_coarse"]) == (None, 3, None)
    coarse = by_id["bmk_coarse/gallery/6.jpg"]
    assert (coarse["label"], coarse["label_middle"], coarse["label_coarse"]) == (None, None, 2)
    assert coarse["path"] == str(vehicle / "bmk_coarse/gallery/6.jpg")
    assert coarse["_origin"] == f"{vehicle / 'bmk_coarse/gallery.csv'} line 2"
    assert by_id["bmk_coarse/gallery/5.jpg"]["_origin"].endswith("gallery.csv line 1")
    test = [r for r in records if r["split"] == "test"]
    assert all(sum(r[k] is None for k in ("label", "label_middle", "label_coarse")) == 2
               for r in test)


def test_dyml_product_records_and_info(product):
    source = DymlSource(product)
    info = source.info()
    assert info.class_names == {
        "fine": ["7", "100", "101", "mini-bmk_all_in_one:300", "mini-bmk_all_in_one:301"],
        "middle": ["3", "10", "mini-bmk_all_in_one:30", "mini-bmk_all_in_one:31"],
        "coarse": ["0", "1", "mini-bmk_all_in_one:2", "mini-bmk_all_in_one:3"],
    }
    test = [r for r in source.records() if r["split"] == "test"]
    assert [r["image_id"] for r in test] == [f"mini-bmk_all_in_one/imgs/{r[0]}"
                                             for r in PRODUCT_ROWS]
    assert all(r["role"] == "both" for r in test)
    assert [(r["label"], r["label_middle"], r["label_coarse"]) for r in test] == [
        (3, 2, 2), (3, 2, 2), (4, 3, 3)]
    assert test[0]["_origin"] == f"{product / 'mini-bmk_all_in_one/label.csv'} line 1"


@pytest.mark.parametrize("product_style", [False, True], ids=["vehicle", "product"])
def test_dyml_clean_header_reads_like_the_glued_one(tmp_path, product_style):
    glued = _write_dyml(tmp_path / "glued", product=product_style)
    clean = _write_dyml(tmp_path / "clean", product=product_style, glued=False)
    assert (clean / "train/label.csv").read_text().startswith(LABEL_HEADER + "\n0.jpg")
    a, b = DymlSource(glued), DymlSource(clean)
    assert a.info().class_names == b.info().class_names
    strip = [{k: v for k, v in r.items() if k not in ("path", "_origin")} for r in a.records()]
    assert strip == [{k: v for k, v in r.items() if k not in ("path", "_origin")}
                     for r in b.records()]
    assert next(iter(b.records()))["_origin"].endswith("label.csv line 2")


def test_dyml_header_names_place_columns(tmp_path):
    root = _write_dyml(tmp_path)
    # Columns named in another order go by name; glued; padded with spaces.
    (root / "train/label.csv").write_text(
        "fname ,  fine_id , middle_id,coarse_id 0.jpg , 100, 10, 1\r\n1.jpg,101,10,1\r\n"
        "2.jpg, 7, 3, 0\r\n10.png, 7, 3, 0\r\n  \r\n")
    # Generic names go by position (coarse, middle, fine); the singular "label" is accepted.
    (root / "bmk_fine/query.csv").write_text("fname, label0.jpg, 12\n1.jpg, 5\n")
    renamed = DymlSource(root)
    assert renamed.info().class_names == DymlSource(_write_dyml(tmp_path / "ref")).info(
        ).class_names
    labels = [(r["label"], r["label_middle"], r["label_coarse"]) for r in renamed.records()]
    assert labels[:4] == [(1, 1, 1), (2, 1, 1), (0, 0, 0), (0, 0, 0)]
    (root / "train/label.csv").write_text(_csv("fname, labels, labels, labels", TRAIN_ROWS))
    labels = [(r["label"], r["label_middle"], r["label_coarse"])
              for r in DymlSource(root, test=False).records()]
    assert labels == [(1, 1, 1), (2, 1, 1), (0, 0, 0), (0, 0, 0)]


def test_dyml_options_and_layout_detection(vehicle, tmp_path):
    train_only = DymlSource(vehicle, test=False)
    assert {r["split"] for r in train_only.records()} == {"train"}
    assert train_only.info().class_names == {"fine": ["7", "100", "101"], "middle": ["3", "10"],
                                             "coarse": ["0", "1"]}
    assert train_only.info().options["test"] is False
    # Only some benchmarks downloaded: those are read.
    for kind in ("query", "gallery"):
        (vehicle / f"bmk_middle/{kind}.csv").unlink()
    assert not any(r["image_id"].startswith("bmk_middle") for r in DymlSource(vehicle).records())
    # Test files without training files.
    (vehicle / "train/label.csv").unlink()
    assert {r["split"] for r in DymlSource(vehicle).records()} == {"test"}
    with pytest.raises(DataError, match="train/label.csv does not exist and .*test is false"):
        DymlSource(vehicle, test=False)
    (vehicle / "bmk_fine/gallery.csv").unlink()
    with pytest.raises(DataError, match="bmk_fine/query.csv exists but .*gallery.csv does not"):
        DymlSource(vehicle)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match=f"dyml source: {re.escape(str(empty))} has none of "
                                        "train/label.csv"):
        DymlSource(empty)


def test_dyml_configuration_errors(vehicle):
    with pytest.raises(ConfigError, match="unknown key.*datasets.<name>.options.scales"):
        SOURCES.build("dyml", where="datasets.<name>.options", root=str(vehicle), scales=3)
    with pytest.raises(ConfigError, match="datasets.<name>.options.test: 'no'"):
        SOURCES.build("dyml", root=str(vehicle), test="no")
    with pytest.raises(DataError, match="not a directory"):
        SOURCES.build("dyml", root=str(vehicle / "nowhere"))


def test_dyml_ingest_end_to_end(vehicle, tmp_path):
    out = tmp_path / "manifest.parquet"
    report = ingest("dyml", {"root": str(vehicle)}, out)
    n_test = sum(len(rows) for rows in BMK_ROWS.values())
    assert report.images == 4 + n_test and report.quarantined == 0
    assert report.counts["split"] == {"test": n_test, "train": 4}
    assert report.counts["role"] == {"both": 4, "gallery": 7, "query": 4}
    assert report.classes == {"fine": 5, "middle": 4, "coarse": 4}
    info = read_info(out)
    assert info.source == "dyml" and info.scales == ["fine", "middle", "coarse"]
    assert info.class_names["coarse"] == ["0", "1", "bmk_coarse:0", "bmk_coarse:1"]
    table = read_manifest(out)
    ids = table.column("image_id").to_pylist()
    assert ids[:4] == [f"train/imgs/{r[0]}" for r in TRAIN_ROWS]
    assert ids[4] == "bmk_fine/query/0.jpg"
    rows = {i: (f, m, c) for i, f, m, c in zip(ids, table.column("label").to_pylist(),
                                                 table.column("label_middle").to_pylist(),
                                                 table.column("label_coarse").to_pylist())}
    assert rows["train/imgs/0.jpg"] == (1, 1, 1)
    assert rows["bmk_fine/query/0.jpg"] == (4, None, None)
    assert rows["bmk_middle/gallery/1.jpg"] == (None, 3, None)
    assert rows["bmk_coarse/gallery/6.jpg"] == (None, None, 2)
    assert all(len(b) > 0 for b in table.column("image").to_pylist())


def test_dyml_product_ingest_end_to_end(product, tmp_path):
    out = tmp_path / "manifest.parquet"
    report = ingest("dyml", {"root": str(product)}, out)
    assert report.images == 7 and report.counts["role"] == {"both": 7}
    table = read_manifest(out)
    assert table.column("label").to_pylist() == [1, 2, 0, 0, 3, 3, 4]
    assert table.column("label_coarse").to_pylist() == [1, 1, 0, 0, 2, 2, 3]
    assert read_info(out).num_classes("middle") == 4


def test_dyml_missing_image_is_a_bad_file_with_its_line(vehicle, tmp_path):
    (vehicle / "bmk_middle/gallery/1.jpg").unlink()
    with pytest.raises(DataError) as error:
        ingest("dyml", {"root": str(vehicle)}, tmp_path / "m.parquet")
    message = str(error.value)
    assert "1 bad file(s)" in message and "missing (no such file)" in message
    assert f"{vehicle / 'bmk_middle/gallery.csv'} line 2" in message
    report = ingest("dyml", {"root": str(vehicle)}, tmp_path / "m.parquet", on_bad="skip")
    assert report.quarantined == 1 and report.bad_files[0].image_id == "bmk_middle/gallery/1.jpg"


TRAIN_TEXT = _csv(LABEL_HEADER, TRAIN_ROWS).rstrip("\n") + "\n"  # rows on lines 1-4
FINE_QUERY = _csv(BMK_HEADER, BMK_ROWS["bmk_fine", "query"]).rstrip("\n") + "\n"  # lines 1-2
DYML_ERRORS = [  # (file under root, new text, expected message fragment)
    ("train/label.csv", TRAIN_TEXT + "3.jpg, 1, 2\n", "line 5: 3 fields, expected 4"),
    ("train/label.csv", TRAIN_TEXT + "3.jpg, 1, x, 7\n",
     r"line 5: label\(s\) \['x'\] are not integers"),
    ("train/label.csv", TRAIN_TEXT + "3.jpg, 1, 2.5, 7\n", r"line 5: label\(s\) \['2.5'\]"),
    ("train/label.csv", TRAIN_TEXT + ", 1, 3, 7\n", "line 5: empty file name"),
    ("train/label.csv", TRAIN_TEXT + "0.jpg, 1, 10, 100\n",
     "line 5: file name 0.jpg already on line 1"),  # the row glued to the header is line 1
    ("train/label.csv", TRAIN_TEXT + "../../x.jpg, 1, 10, 100\n",
     "line 5: file name '../../x.jpg' leaves the image folder"),
    ("train/label.csv", "fname, coarse_id, middle_id, fine_id, 0.jpg, 1, 10\n",
     "line 1: empty file name"),
    ("train/label.csv", TRAIN_TEXT.replace("fname", "name", 1), "line 1: expected the header "
     "'fname, coarse_id, middle_id, fine_id'"),
    ("train/label.csv", TRAIN_TEXT.replace("fine_id", "leaf_id", 1), "line 1: expected the"),
    ("train/label.csv", "0.jpg, 1, 10, 100\n1.jpg, 1, 10, 101\n", "line 1: expected the header"),
    ("train/label.csv", "", "line 1: expected the header"),
    ("train/label.csv", LABEL_HEADER + "\n\n", "no images"),
    ("train/label.csv", TRAIN_TEXT.replace("middle_id", "fine_id", 1),
     "line 1: the header .* does not give one column per scale"),
    ("bmk_fine/query.csv", FINE_QUERY + "2.jpg\n", "line 3: 1 fields, expected 2"),
    ("bmk_fine/query.csv", FINE_QUERY + "2.jpg, 5, 6\n", "line 3: 3 fields, expected 2"),
    ("bmk_fine/query.csv", FINE_QUERY + "1.jpg, 5\n", "line 3: file name 1.jpg already on line 2"),
    ("bmk_fine/query.csv", "fname, labels0.jpg, twelve\n", r"line 1: label\(s\) \['twelve'\]"),
    ("bmk_fine/query.csv", "fname, lables0.jpg, 12\n", "line 1: expected the header "
     "'fname, labels'"),
    ("bmk_fine/query.csv", "fname, coarse_id0.jpg, 12\n",
     "line 1: the label column is named 'coarse_id' but the file belongs to the 'fine'"),
]


@pytest.mark.parametrize(("name", "text", "message"), DYML_ERRORS,
                         ids=[f"{e[0]}:{e[2][:30]}" for e in DYML_ERRORS])
def test_dyml_errors_name_file_and_line(vehicle, name, text, message):
    (vehicle / name).write_text(text)
    with pytest.raises(DataError) as error:
        DymlSource(vehicle)
    assert str(error.value).startswith(str(vehicle / name))
    assert re.search(message, str(error.value)), str(error.value)


def test_dyml_problems_of_a_file_come_together(product):
    path = product / "mini-bmk_all_in_one/label.csv"
    path.write_text(_csv(LABEL_HEADER, PRODUCT_ROWS).rstrip("\n") + "\n4.jpg, 1\n5.jpg, a, 1, 1\n"
                    "0.jpg, 2, 30, 300\n")
    with pytest.raises(DataError) as error:
        DymlSource(product)
    message = str(error.value)
    assert message.startswith(f"{path}: 3 problem(s)")
    assert "line 4: 2 fields" in message and "line 5: label(s) ['a']" in message
    assert "line 6: file name 0.jpg already on line 1" in message


# ----------------------------------------------------------------------------- SOP

SOP_HEADER = "image_id class_id super_class_id path"
SOP_TRAIN = [  # (image id, class id, super class id, path)
    (1, 2, 1, "bicycle_final/111085122871_0.JPG"),
    (2, 2, 1, "bicycle_final/111085122871_1.JPG"),
    (3, 10, 4, "coffee_maker_final/121139340869_0.JPG"),
    (4, 10, 4, "coffee_maker_final/121139340869_3.JPG"),
]
SOP_TEST = [
    (1, 11319, 1, "bicycle_final/251952414262_0.JPG"),
    (2, 11319, 1, "bicycle_final/251952414262_2.JPG"),
    (3, 11320, 12, "toaster_final/171106166932_0.JPG"),
    (4, 11320, 12, "toaster_final/171106166932_1.JPG"),
]


def _list(rows) -> str:
    """A list file's text: header, rows on lines 2.. (no trailing blank line)."""
    return SOP_HEADER + "\n" + "".join(" ".join(str(f) for f in row) + "\n" for row in rows)


def _write_sop(parent):
    root = parent / "Stanford_Online_Products"
    root.mkdir(parents=True)
    for name, rows in (("Ebay_train.txt", SOP_TRAIN), ("Ebay_test.txt", SOP_TEST)):
        (root / name).write_text(_list(rows) + "\n")  # the release ends with a blank line
    (root / "Ebay_info.txt").write_text("not read\n")
    for seed, row in enumerate(SOP_TRAIN + SOP_TEST):
        _image(root / row[3], seed)
    return root


@pytest.fixture
def sop(tmp_path):
    return _write_sop(tmp_path)


def test_sop_records_and_info(sop):
    source = SOURCES.build("sop", root=str(sop))
    assert isinstance(source, Source) and isinstance(source, SopSource)
    records = list(source.records())
    assert [r["image_id"] for r in records] == [row[3] for row in SOP_TRAIN + SOP_TEST]
    assert [r["split"] for r in records] == ["train"] * 4 + ["test"] * 4
    assert all(r["role"] == "both" and r["domain"] == "photo" for r in records)
    assert [r["label"] for r in records] == [0, 0, 1, 1, 2, 2, 3, 3]
    assert [r["label_coarse"] for r in records] == [0, 0, 1, 1, 0, 0, 2, 2]
    assert records[0]["path"] == str(sop / SOP_TRAIN[0][3])
    assert records[5]["_origin"] == f"{sop / 'Ebay_test.txt'} line 3"
    info = source.info()
    assert info.source == "sop" and info.scales == ["fine", "coarse"]
    assert info.class_names == {"fine": ["2", "10", "11319", "11320"],
                                "coarse": ["bicycle", "coffee_maker", "toaster"]}
    assert info.options == {"root": str(sop)}


def test_sop_ingest_end_to_end(sop, tmp_path):
    out = tmp_path / "manifest.parquet"
    report = ingest("sop", {"root": str(sop)}, out)
    assert report.images == 8 and report.quarantined == 0
    assert report.counts["split"] == {"test": 4, "train": 4}
    assert report.counts["role"] == {"both": 8}
    assert report.classes == {"fine": 4, "coarse": 3}
    info = read_info(out)
    assert info.class_names["coarse"] == ["bicycle", "coffee_maker", "toaster"]
    table = read_manifest(out)
    assert table.column("image_id").to_pylist()[4] == SOP_TEST[0][3]
    assert table.column("label").to_pylist() == [0, 0, 1, 1, 2, 2, 3, 3]
    assert table.column("label_coarse").to_pylist() == [0, 0, 1, 1, 0, 0, 2, 2]
    assert all(len(b) > 0 for b in table.column("image").to_pylist())


def test_sop_missing_image_is_a_bad_file_with_its_line(sop, tmp_path):
    (sop / SOP_TEST[2][3]).unlink()
    with pytest.raises(DataError, match=re.escape(f"{sop / 'Ebay_test.txt'} line 4")):
        ingest("sop", {"root": str(sop)}, tmp_path / "m.parquet")
    report = ingest("sop", {"root": str(sop)}, tmp_path / "m.parquet", on_bad="skip")
    assert report.images == 7 and report.bad_files[0].reason == "missing (no such file)"


SOP_ERRORS = [  # (list file, new text, expected message fragment)
    ("Ebay_train.txt", _list(SOP_TRAIN).split("\n", 1)[1],
     f"line 1: expected the header '{SOP_HEADER}', got '1 2 1 bicycle_final"),
    ("Ebay_train.txt", "image_id class_id path\n", "line 1: expected the header"),
    ("Ebay_test.txt", "", "line 1: expected the header .*, got ''"),
    ("Ebay_train.txt", _list(SOP_TRAIN) + "5 3 1\n", "line 6: 3 fields, expected 4"),
    ("Ebay_train.txt", _list(SOP_TRAIN) + "5 3 1 bicycle_final/a.JPG x\n",
     "line 6: 5 fields, expected 4"),
    ("Ebay_train.txt", _list(SOP_TRAIN) + "x 3 1 bicycle_final/a.JPG\n",
     "line 6: image_id 'x': not a positive integer"),
    ("Ebay_train.txt", _list(SOP_TRAIN) + "5 3 one bicycle_final/a.JPG\n",
     "line 6: super_class_id 'one': not a positive integer"),
    ("Ebay_train.txt", _list(SOP_TRAIN) + "5 0 1 bicycle_final/a.JPG\n",
     "line 6: class_id '0': not a positive integer"),
    ("Ebay_train.txt", _list(SOP_TRAIN) + f"5 2 1 {SOP_TRAIN[1][3]}\n",
     f"line 6: path {SOP_TRAIN[1][3]} already on line 3"),
    ("Ebay_test.txt", _list(SOP_TEST) + f"5 11321 1 {SOP_TRAIN[0][3]}\n",
     f"line 6: path {SOP_TRAIN[0][3]} already on Ebay_train.txt line 2"),
    ("Ebay_test.txt", _list(SOP_TEST) + "5 10 4 coffee_maker_final/9_0.JPG\n",
     r"line 6: class id 10 is also in the train list \(Ebay_train.txt line 4\)"),
    ("Ebay_train.txt", _list(SOP_TRAIN) + "5 3 1 chair_final/5_0.JPG\n",
     "line 6: super class id 1 is in folder 'chair_final' here but in 'bicycle_final' on line 2"),
    ("Ebay_test.txt", _list(SOP_TEST) + "5 11321 4 kettle_final/5_0.JPG\n",
     "line 6: super class id 4 is in folder 'kettle_final' here but in 'coffee_maker_final' on "
     "Ebay_train.txt line 4"),
    ("Ebay_test.txt", _list(SOP_TEST) + "5 11321 5 toaster_final/5_0.JPG\n",
     "line 6: folder 'toaster_final' is super class id 12 on line 4, here 5"),
    ("Ebay_train.txt", _list(SOP_TRAIN) + "5 3 1 ../bicycle_final/a.JPG\n",
     "line 6: path '../bicycle_final/a.JPG' leaves the dataset folder"),
    ("Ebay_train.txt", _list(SOP_TRAIN) + "5 3 1 a.JPG\n",
     "line 6: path a.JPG is not in a '<super class>_final' folder"),
    ("Ebay_test.txt", SOP_HEADER + "\n\n", "no images"),
]


@pytest.mark.parametrize(("name", "text", "message"), SOP_ERRORS,
                         ids=[f"{e[0]}:{e[2][:30]}" for e in SOP_ERRORS])
def test_sop_errors_name_file_and_line(sop, name, text, message):
    (sop / name).write_text(text)
    with pytest.raises(DataError) as error:
        SopSource(sop)
    assert str(error.value).startswith(str(sop / name))
    assert re.search(message, str(error.value)), str(error.value)


def test_sop_missing_list_and_configuration(sop):
    with pytest.raises(ConfigError, match="unknown key.*datasets.<name>.options.test"):
        SOURCES.build("sop", where="datasets.<name>.options", root=str(sop), test=False)
    with pytest.raises(DataError, match="not a directory"):
        SOURCES.build("sop", root=str(sop / "nowhere"))
    (sop / "Ebay_test.txt").unlink()
    with pytest.raises(DataError, match="Ebay_test.txt does not exist .*Stanford_Online_Products"):
        SopSource(sop)
