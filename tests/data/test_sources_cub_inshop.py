"""The CUB-200-2011 and DeepFashion In-Shop readers on tiny trees in the published layouts."""

from __future__ import annotations

import re

import numpy as np
import pytest
from PIL import Image

from dml.data.sources import SOURCES, Source
from dml.data.sources.cub import CubSource
from dml.data.sources.inshop import InShopSource
from dml.data.ingest import ingest
from dml.data.manifest import attribute_matrix, read_info, read_manifest
from dml.errors import ConfigError, DataError


def _jpeg(path, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path, format="JPEG")


# ----------------------------------------------------------------------------- CUB

CUB_IMAGES = [  # (image id, class id, path under images/)
    (1, 1, "001.Black_footed_Albatross/Black_Footed_Albatross_0046_18.jpg"),
    (2, 1, "001.Black_footed_Albatross/Black_Footed_Albatross_0009_34.jpg"),
    (3, 2, "002.Laysan_Albatross/Laysan_Albatross_0002_1027.jpg"),
    (4, 2, "002.Laysan_Albatross/Laysan_Albatross_0003_1033.jpg"),
    (5, 101, "101.White_Pelican/White_Pelican_0025_97604.jpg"),
    (6, 101, "101.White_Pelican/White_Pelican_0032_97739.jpg"),
    (7, 102, "102.Western_Wood_Pewee/Western_Wood_Pewee_0002_795045.jpg"),
]
CUB_CLASSES = "1 001.Black_footed_Albatross\n2 002.Laysan_Albatross\n101 101.White_Pelican\n" \
              "102 102.Western_Wood_Pewee\n"
CUB_ATTRIBUTES = "1 has_bill_shape::curved_(up_or_down)\n2 has_wing_color::blue\n" \
                 "3 has_size::small_(5_-_9_in)\n"
# <image_id> <attribute_id> <is_present> <certainty_id> <time>; image 7 has no line at all.
# Quirks of the release: some lines carry extra trailing fields, one here has no time.
CUB_LABELS = (
    "1 1 1 4 3.563\n1 2 0 3 3.563\n1 3 1 2 3.563\n"
    "2 1 0 1 7.001\n2 2 1 4 7.001 0 0\n2 3 0 3 7.001\n"  # attribute 1: not visible
    "3 1 1 3 2.5\n3 2 0 2 2.5 0\n3 3 1 4\n"
    "4 1 0 4 1.0\n4 2 0 4 1.0\n4 3 0 4 1.0\n"
    "5 1 1 4 1.0\n5 2 1 3 1.0\n5 3 0 2 1.0\n"
    "6 1 0 2 1.0\n6 2 1 2 1.0\n6 3 1 4 1.0\n"
)


def _write_cub(parent, labels: str = CUB_LABELS, names_at: str = "../attributes.txt"):
    """A CUB_200_2011 folder under ``parent`` in the release layout; returns its path."""
    root = parent / "CUB_200_2011"
    (root / "attributes").mkdir(parents=True)
    for image_id, _, rel in CUB_IMAGES:
        _jpeg(root / "images" / rel, image_id)
    (root / "images.txt").write_text("".join(f"{i} {rel}\n" for i, _, rel in CUB_IMAGES))
    (root / "image_class_labels.txt").write_text("".join(f"{i} {c}\n" for i, c, _ in CUB_IMAGES))
    (root / "classes.txt").write_text(CUB_CLASSES)
    (root / "train_test_split.txt").write_text("".join(f"{i} {i % 2}\n" for i, _, _ in
                                                       CUB_IMAGES))
    (root / names_at).write_text(CUB_ATTRIBUTES)
    (root / "attributes" / "certainties.txt").write_text(
        "1 not visible\n2 guessing\n3 probably\n4 definitely\n")
    (root / "attributes" / "image_attribute_labels.txt").write_text(labels)
    return root


@pytest.fixture
def cub(tmp_path):
    return _write_cub(tmp_path)


def _by_id(source):
    return {r["image_id"]: r for r in source.records()}


def test_cub_records_and_info(cub):
    source = SOURCES.build("cub", root=str(cub))
    assert isinstance(source, Source) and isinstance(source, CubSource)
    records = list(source.records())
    assert [r["image_id"] for r in records] == [rel for _, _, rel in CUB_IMAGES]
    assert [r["label"] for r in records] == [0, 0, 1, 1, 2, 2, 3]
    assert [r["split"] for r in records] == ["train"] * 4 + ["test"] * 3
    assert all("role" not in r and r["domain"] == "photo" for r in records)
    assert records[0]["path"] == str(cub / "images" / CUB_IMAGES[0][2])
    assert records[2]["_origin"] == f"{cub / 'images.txt'} line 3"
    info = source.info()
    assert info.source == "cub" and info.scales == ["fine"]
    assert info.class_names == {"fine": ["001.Black_footed_Albatross", "002.Laysan_Albatross",
                                         "101.White_Pelican", "102.Western_Wood_Pewee"]}
    assert info.attribute_names == ["has_bill_shape::curved_(up_or_down)",
                                    "has_wing_color::blue", "has_size::small_(5_-_9_in)"]
    assert info.options == {"root": str(cub), "attributes": True, "min_certainty": 2,
                            "split": "classes"}


def test_cub_attributes_follow_certainty(cub):
    attributes = [r["attributes"] for r in CubSource(cub).records()]
    assert attributes == [
        [1, 0, 1],  # a guess (certainty 2) is kept by default
        [None, 1, 0],  # "not visible" is unknown; extra trailing fields are ignored
        [1, 0, 1],  # a line without <time> is read
        [0, 0, 0],
        [1, 1, 0],
        [0, 1, 1],
        None,  # no attribute line at all: a null row
    ]
    strict = [r["attributes"] for r in CubSource(cub, min_certainty=3).records()]
    assert strict[0] == [1, 0, None] and strict[2] == [1, None, 1] and strict[5] == [None, None, 1]
    lenient = [r["attributes"] for r in CubSource(cub, min_certainty=1).records()]
    assert lenient[1] == [None, 1, 0]  # not visible stays unknown
    definite = [r["attributes"] for r in CubSource(cub, min_certainty=4).records()]
    assert definite[4] == [1, None, None] and definite[6] is None


def test_cub_missing_attribute_lines_are_unknown(tmp_path):
    root = _write_cub(tmp_path, labels="1 1 1 4 1.0\n1 3 0 4 1.0\n")
    attributes = [r["attributes"] for r in CubSource(root).records()]
    assert attributes[0] == [1, None, 0] and attributes[1:] == [None] * 6


def test_cub_options(cub):
    records = list(CubSource(cub, attributes=False, split="none").records())
    assert all("attributes" not in r and "split" not in r for r in records)
    assert CubSource(cub, attributes=False).info().attribute_names == []
    (cub / "attributes" / "image_attribute_labels.txt").unlink()  # no labels: no column
    assert all("attributes" not in r for r in CubSource(cub).records())


def test_cub_attribute_names_inside_root_win(tmp_path):
    root = _write_cub(tmp_path, names_at="attributes/attributes.txt")
    assert CubSource(root).info().attribute_names[1] == "has_wing_color::blue"
    (root / "attributes.txt").write_text(CUB_ATTRIBUTES.replace("blue", "grey"))
    (root / "attributes" / "attributes.txt").unlink()
    assert CubSource(root).info().attribute_names[1] == "has_wing_color::grey"
    (root / "attributes.txt").unlink()
    with pytest.raises(DataError, match="no attribute names file.*attributes: false"):
        CubSource(root)
    assert CubSource(root, attributes=False).info().attribute_names == []


def test_cub_ingest_end_to_end(tmp_path):
    clean = "".join(f"{i} {a} {(i + a) % 2} {2 + (i + a) % 3} 1.0\n"
                    for i in range(1, 7) for a in (1, 2, 3))
    root = _write_cub(tmp_path, labels=clean)
    out = tmp_path / "manifest.parquet"
    report = ingest("cub", {"root": str(root), "min_certainty": 1}, out)
    assert report.images == 7 and report.quarantined == 0
    assert report.counts["split"] == {"test": 3, "train": 4}
    info = read_info(out)
    assert info.source == "cub" and info.num_classes() == 4 and len(info.attribute_names) == 3
    assert info.options["min_certainty"] == 1
    table = read_manifest(out)
    assert table.column("image_id").to_pylist() == [rel for _, _, rel in CUB_IMAGES]
    assert table.column("label").to_pylist() == [0, 0, 1, 1, 2, 2, 3]
    attributes = table.column("attributes").to_pylist()
    assert attributes[0] == [0, 1, 0] and attributes[6] is None
    assert all(len(table.column("image")[i].as_py()) > 0 for i in range(7))


def _replace(path, text: str, append: bool = False) -> None:
    path.write_text((path.read_text() if append else "") + text)


CUB_ERRORS = [  # (file under root, new text, append?, expected message fragment)
    ("images.txt", "8\n", True, "line 8: expected '<image_id> <path>'"),
    ("images.txt", f"3 {CUB_IMAGES[0][2]}x\n", True, "line 8: image id 3 already on line 3"),
    ("images.txt", f"8 {CUB_IMAGES[1][2]}\n", True, "line 8: path .* already on line 2"),
    ("images.txt", "8 ../secret.jpg\n", True, "line 8: path '../secret.jpg' leaves"),
    ("classes.txt", "2 002.Again\n", True, "line 5: class id 2 already on line 2"),
    ("classes.txt", "x 003.Bird\n", True, "line 5: expected '<class_id> <class_name>'"),
    ("image_class_labels.txt", "9 1\n", True, "line 8: image id 9 is not in images.txt"),
    ("image_class_labels.txt", "1 1\n", True, "line 8: image id 1 already on line 1"),
    ("image_class_labels.txt", "1 1 1\n", True, "line 8: expected '<image_id> <class_id>'"),
    ("image_class_labels.txt", "".join(f"{i} {c}\n" for i, c, _ in CUB_IMAGES[:6]), False,
     r"image id 7 \(102.Western.*images.txt line 7\) has no class line"),
    ("image_class_labels.txt", "".join(f"{i} {3 if i == 2 else c}\n"
                                       for i, c, _ in CUB_IMAGES), False,
     "line 2: class id 3 is not in classes.txt"),
    ("attributes/image_attribute_labels.txt", "7 4 1 4 1.0\n", True,
     r"line 19: attribute id '4' is not in 1..3"),
    ("attributes/image_attribute_labels.txt", "8 1 1 4 1.0\n", True,
     "line 19: image id '8' is not in images.txt"),
    ("attributes/image_attribute_labels.txt", "7 1 2 4 1.0\n", True,
     "line 19: is_present '2' is not 0 or 1"),
    ("attributes/image_attribute_labels.txt", "7 1 1 5 1.0\n", True,
     "line 19: certainty_id '5' is not one of"),
    ("attributes/image_attribute_labels.txt", "7 1 1\n", True,
     "line 19: expected '<image_id> <attribute_id> <is_present>"),
    ("attributes/image_attribute_labels.txt", "1 2 1 4 1.0\n", True,
     "line 19: image 1 attribute 2 is repeated"),
    ("../attributes.txt", "2 has_wing_color::red\n", True, "line 4: attribute id 2 already on"),
    ("../attributes.txt", "5 has_size::large\n", True, r"missing \[4\]"),
]


@pytest.mark.parametrize(("name", "text", "append", "message"), CUB_ERRORS,
                         ids=[f"{e[0]}:{e[3][:30]}" for e in CUB_ERRORS])
def test_cub_errors_name_file_and_line(cub, name, text, append, message):
    _replace(cub / name, text, append)
    with pytest.raises(DataError) as error:
        CubSource(cub)
    assert str(error.value).startswith(str(cub / name))
    assert re.search(message, str(error.value)), str(error.value)


def test_cub_wrong_class_line_is_not_also_a_missing_one(cub):
    _replace(cub / "image_class_labels.txt", "".join(
        f"{i} {'x' if i == 1 else 9 if i == 2 else c}\n" for i, c, _ in CUB_IMAGES))
    with pytest.raises(DataError) as error:
        CubSource(cub)
    message = str(error.value)
    assert "2 problem(s)" in message and "line 1: expected" in message
    assert "line 2: class id 9" in message and "no class line" not in message


def test_cub_configuration_errors(cub):
    with pytest.raises(ConfigError, match="unknown key.*datasets.<name>.options.colour"):
        SOURCES.build("cub", where="datasets.<name>.options", root=str(cub), colour="red")
    with pytest.raises(ConfigError, match="datasets.<name>.options.min_certainty"):
        SOURCES.build("cub", root=str(cub), min_certainty=5)
    for wrong in (True, 2.0, "2"):
        with pytest.raises(ConfigError, match="datasets.<name>.options.min_certainty"):
            SOURCES.build("cub", root=str(cub), min_certainty=wrong)
    with pytest.raises(ConfigError, match="datasets.<name>.options.split: 'random'"):
        SOURCES.build("cub", root=str(cub), split="random")
    with pytest.raises(ConfigError, match="datasets.<name>.options.attributes"):
        SOURCES.build("cub", root=str(cub), attributes="yes")
    with pytest.raises(DataError, match="not a directory"):
        SOURCES.build("cub", root=str(cub / "nowhere"))
    (cub / "classes.txt").unlink()
    with pytest.raises(DataError, match="classes.txt does not exist"):
        CubSource(cub)
    assert SOURCES.get("cub") is not None


# ----------------------------------------------------------------------------- In-Shop

INSHOP_IMAGES = [  # (image name, item id, status)
    ("img/WOMEN/Blouses_Shirts/id_00000001/02_1_front.jpg", "id_00000001", "train"),
    ("img/WOMEN/Blouses_Shirts/id_00000001/02_2_side.jpg", "id_00000001", "train"),
    ("img/MEN/Denim/id_00000080/01_1_front.jpg", "id_00000080", "train"),
    ("img/MEN/Denim/id_00000080/01_7_additional.jpg", "id_00000080", "train"),
    ("img/WOMEN/Dresses/id_00000002/02_1_front.jpg", "id_00000002", "query"),
    ("img/WOMEN/Dresses/id_00000002/02_2_side.jpg", "id_00000002", "gallery"),
    ("img/MEN/Tees_Tanks/id_00000007/01_1_front.jpg", "id_00000007", "query"),
    ("img/MEN/Tees_Tanks/id_00000007/01_3_back.jpg", "id_00000007", "gallery"),
]
INSHOP_NAMES = "3\nattribute_name\nfloral\ncap sleeve\ndenim\n"
# One item line repeated word for word (tolerated), id_00000007 without a line, a 0 = unknown.
INSHOP_ITEMS = ("3\nitem_id attribute_labels\nid_00000001 1 -1 -1\nid_00000002 -1 1 0\n"
                "id_00000080 -1 -1 1\nid_00000080 -1 -1 1\n")


def _partition(rows=INSHOP_IMAGES) -> str:
    # The release pads the image name column with spaces.
    return f"{len(rows)}\nimage_name item_id evaluation_status\n" + "".join(
        f"{name:<60}{item} {status}\n" for name, item, status in rows)


def _write_inshop(parent, items: str | None = INSHOP_ITEMS, nested: bool = False):
    """An In-shop folder under ``parent``; ``nested``: the partition file at the root, the
    images under Img/ and the attribute files under Anno/attributes/, as later copies have."""
    root = parent / "In-shop Clothes Retrieval Benchmark"
    images = root / "Img" if nested else root
    for seed, (name, _, _) in enumerate(INSHOP_IMAGES):
        _jpeg(images / name, seed)
    partition = root / ("list_eval_partition.txt" if nested else "Eval/list_eval_partition.txt")
    partition.parent.mkdir(parents=True, exist_ok=True)
    partition.write_text(_partition())
    if items is not None:
        anno = root / ("Anno/attributes" if nested else "Anno")
        anno.mkdir(parents=True)
        (anno / "list_attr_cloth.txt").write_text(INSHOP_NAMES)
        (anno / "list_attr_items.txt").write_text(items)
    return root


@pytest.fixture
def inshop(tmp_path):
    return _write_inshop(tmp_path)


def test_inshop_records_and_info(inshop):
    source = SOURCES.build("inshop", root=str(inshop))
    assert isinstance(source, Source) and isinstance(source, InShopSource)
    records = list(source.records())
    assert [r["image_id"] for r in records] == [name for name, _, _ in INSHOP_IMAGES]
    assert [r["label"] for r in records] == [0, 0, 3, 3, 1, 1, 2, 2]
    assert [r["split"] for r in records] == ["train"] * 4 + ["test"] * 4
    assert [r["role"] for r in records] == ["both"] * 4 + ["query", "gallery"] * 2
    assert all(r["domain"] == "photo" for r in records)
    assert records[0]["path"] == str(inshop / INSHOP_IMAGES[0][0])
    assert records[4]["_origin"] == f"{inshop / 'Eval/list_eval_partition.txt'} line 7"
    assert [r["attributes"] for r in records] == [
        [1, 0, 0], [1, 0, 0], [0, 0, 1], [0, 0, 1], [0, 1, None], [0, 1, None], None, None]
    info = source.info()
    assert info.source == "inshop" and info.scales == ["fine"]
    assert info.class_names == {"fine": ["id_00000001", "id_00000002", "id_00000007",
                                         "id_00000080"]}
    assert info.attribute_names == ["floral", "cap sleeve", "denim"]
    assert info.options == {"root": str(inshop), "attributes": True}


def test_inshop_later_layout_and_typed_names(tmp_path):
    root = _write_inshop(tmp_path, nested=True)
    (root / "Anno/attributes/list_attr_cloth.txt").write_text(
        "3\nattribute_name  attribute_type\nfloral                 1\ncap sleeve             3\n"
        "denim                  2\n")
    source = InShopSource(root)
    assert source.info().attribute_names == ["floral", "cap sleeve", "denim"]
    records = list(source.records())
    assert records[0]["path"] == str(root / "Img" / INSHOP_IMAGES[0][0])
    assert records[0]["_origin"].endswith("list_eval_partition.txt line 3")
    assert records[0]["attributes"] == [1, 0, 0]


def test_inshop_without_attribute_files(tmp_path):
    root = _write_inshop(tmp_path, items=None)
    source = InShopSource(root)
    assert all("attributes" not in r for r in source.records())
    assert source.info().attribute_names == []
    full = _write_inshop(tmp_path / "full")
    assert all("attributes" not in r for r in InShopSource(full, attributes=False).records())


def test_inshop_ingest_end_to_end(tmp_path):
    items = "4\nitem_id attribute_labels\n" + "".join(
        f"{item} {' '.join(pattern)}\n" for item, pattern in [
            ("id_00000001", ("1", "-1", "-1")), ("id_00000002", ("-1", "1", "1")),
            ("id_00000007", ("1", "1", "-1")), ("id_00000080", ("-1", "-1", "1"))])
    root = _write_inshop(tmp_path, items=items)
    out = tmp_path / "manifest.parquet"
    report = ingest("inshop", {"root": str(root)}, out)
    assert report.images == 8 and report.quarantined == 0
    assert report.counts["split"] == {"test": 4, "train": 4}
    assert report.counts["role"] == {"both": 4, "gallery": 2, "query": 2}
    info = read_info(out)
    assert info.source == "inshop" and info.num_classes() == 4
    assert info.attribute_names == ["floral", "cap sleeve", "denim"]
    table = read_manifest(out)
    assert table.column("label").to_pylist() == [0, 0, 3, 3, 1, 1, 2, 2]
    assert table.column("role").to_pylist()[4:] == ["query", "gallery"] * 2
    assert table.column("attributes").to_pylist()[6] == [1, 1, 0]


INSHOP_PARTITION = "Eval/list_eval_partition.txt"
INSHOP_ERRORS = [  # (file under root, new text, expected message fragment)
    (INSHOP_PARTITION, "eight\n" + _partition().split("\n", 1)[1],
     "line 1: expected the number of entries, got 'eight'"),
    (INSHOP_PARTITION, _partition().split("\n", 1)[0] + "\n" + _partition().split("\n", 2)[2],
     "line 2: expected a header"),
    (INSHOP_PARTITION, "8\nimage_name item status\n", "line 2: expected the header"),
    (INSHOP_PARTITION, _partition() + "img/x.jpg id_00000009\n", "line 11: expected '<image_name>"),
    (INSHOP_PARTITION, _partition() + "img/x.jpg id_00000009 val\n",
     "line 11: evaluation status 'val' is not one of train, query, gallery"),
    (INSHOP_PARTITION, _partition() + f"{INSHOP_IMAGES[2][0]} id_00000080 train\n",
     "line 11: image img/MEN/Denim/id_00000080/01_1_front.jpg already listed on line 5"),
    (INSHOP_PARTITION, _partition(INSHOP_IMAGES[:7]).replace("7\n", "8\n", 1),
     "line 1: says 8 images but the file lists 7"),
    ("Anno/list_attr_items.txt", INSHOP_ITEMS + "id_00000007 1 1\n",
     "line 7: 2 attribute labels, expected 3"),
    ("Anno/list_attr_items.txt", INSHOP_ITEMS + "id_00000007 1 2 -1\n",
     r"line 7: attribute labels \['2'\] are not 1, -1 or 0"),
    ("Anno/list_attr_items.txt", INSHOP_ITEMS + "id_00000001 1 1 -1\n",
     "line 7: item id_00000001 already on line 3 with other labels"),
    ("Anno/list_attr_items.txt", INSHOP_ITEMS.replace("3\n", "x3\n", 1), "line 1: expected the"),
    ("Anno/list_attr_items.txt", INSHOP_ITEMS.replace("3\n", "9\n", 1), "line 1: says 9 items"),
    ("Anno/list_attr_cloth.txt", INSHOP_NAMES + "floral\n", "line 6: attribute 'floral' already"),
    ("Anno/list_attr_cloth.txt", INSHOP_NAMES.replace("3\n", "4\n", 1),
     "line 1: says 4 attributes"),
    ("Anno/list_attr_cloth.txt", "3\nname\nfloral\n", "line 2: expected a header starting with"),
]


@pytest.mark.parametrize(("name", "text", "message"), INSHOP_ERRORS,
                         ids=[f"{e[0]}:{e[2][:30]}" for e in INSHOP_ERRORS])
def test_inshop_errors_name_file_and_line(inshop, name, text, message):
    (inshop / name).write_text(text)
    with pytest.raises(DataError) as error:
        InShopSource(inshop)
    assert str(error.value).startswith(str(inshop / name))
    assert re.search(message, str(error.value)), str(error.value)


def test_inshop_configuration_and_missing_files(inshop):
    with pytest.raises(ConfigError, match="unknown key.*datasets.<name>.options.split"):
        SOURCES.build("inshop", where="datasets.<name>.options", root=str(inshop), split="classes")
    with pytest.raises(ConfigError, match="datasets.<name>.options.attributes"):
        SOURCES.build("inshop", root=str(inshop), attributes=1)
    (inshop / "Anno/list_attr_items.txt").unlink()
    with pytest.raises(DataError, match="list_attr_cloth.txt exists but .*list_attr_items.txt"):
        InShopSource(inshop)
    (inshop / "Eval/list_eval_partition.txt").unlink()
    with pytest.raises(DataError, match="no partition file"):
        InShopSource(inshop, attributes=False)


# ----------------------------------------------------------------------------- unknown entries


def test_unknown_attributes_survive_ingest_and_are_masked(tmp_path):
    """CUB's "not visible" and In-Shop's 0 reach the manifest as unknown entries, and the
    training rows mask them out (a BCE or a granularity never reads them as 0)."""
    cub_out, shop_out = tmp_path / "cub.parquet", tmp_path / "shop.parquet"
    ingest("cub", {"root": str(_write_cub(tmp_path / "c"))}, cub_out)
    ingest("inshop", {"root": str(_write_inshop(tmp_path / "s"))}, shop_out)
    cub_rows = read_manifest(cub_out).column("attributes").to_pylist()
    assert cub_rows[1] == [None, 1, 0]  # image 2's attribute 1 is not visible
    assert cub_rows[6] is None  # image 7 has no attribute line
    _, known = attribute_matrix(read_manifest(cub_out).column("attributes"), 3)
    assert known[1].tolist() == [False, True, True] and not known[6].any()
    shop_rows = read_manifest(shop_out).column("attributes").to_pylist()
    assert shop_rows[4] == [0, 1, None]  # id_00000002's third attribute is 0 = unknown
