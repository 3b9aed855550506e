"""The TU-Berlin reader on a tiny tree in the published layout (sketches_png.zip's png/ and the
TU-Berlin Extension photos)."""

from __future__ import annotations

import re

import numpy as np
import pytest
from PIL import Image

from dml.data.sources import SOURCES, Source
from dml.data.sources.tuberlin import TuBerlinSource, match_photo_folders, photo_key
from dml.data.ingest import ingest
from dml.data.manifest import read_info, read_manifest
from dml.errors import ConfigError, DataError

# sketch class -> sketch numbers (numbered over all classes, as in the release)
SKETCHES = {
    "airplane": [1, 2],
    "bear (animal)": [81, 82],
    "giraffe": [161],
    "ice-cream-cone": [241],
    "pipe (for smoking)": [321],
}
# photo folder -> files, named as the TU-Berlin Extension names them
PHOTOS = {
    "airplane": ["a1.jpg"],  # exact
    "bearanimal": ["b1.jpg", "b2.jpg"],  # normalised
    "griaffe": ["g1.jpg"],  # misspelt in the release
    "icecreamcone": ["i1.jpg"],  # normalised
    "pipe": ["p1.jpg"],  # shortened in the release
}
FILELIST = "".join(f"{name}/{n}.png\r\n" for name, numbers in SKETCHES.items() for n in numbers)


def _image(path, seed: int) -> None:
    """A real 8x8 image, PNG or JPEG by the file's extension."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path, format="PNG" if path.suffix == ".png" else "JPEG")


def _tree(root, filelist: str | None = FILELIST, sketches: str = "png"):
    for name, numbers in SKETCHES.items():
        for n in numbers:
            _image(root / sketches / name / f"{n}.png", n)
    for seed, (folder, files) in enumerate(PHOTOS.items()):
        for k, name in enumerate(files):
            _image(root / "photos" / folder / name, 100 + 10 * seed + k)
    if filelist is not None:
        (root / sketches / "filelist.txt").write_text(filelist, newline="")
    return root


@pytest.fixture
def tuberlin(tmp_path):
    return _tree(tmp_path / "tuberlin")


def _rows(source):
    return [(r["image_id"], r["domain"], r["label"]) for r in source.records()]


ROWS = [
    ("photos/airplane/a1.jpg", "photo", 0),
    ("png/airplane/1.png", "sketch", 0),
    ("png/airplane/2.png", "sketch", 0),
    ("photos/bearanimal/b1.jpg", "photo", 1),
    ("photos/bearanimal/b2.jpg", "photo", 1),
    ("png/bear (animal)/81.png", "sketch", 1),
    ("png/bear (animal)/82.png", "sketch", 1),
    ("photos/griaffe/g1.jpg", "photo", 2),
    ("png/giraffe/161.png", "sketch", 2),
    ("photos/icecreamcone/i1.jpg", "photo", 3),
    ("png/ice-cream-cone/241.png", "sketch", 3),
    ("photos/pipe/p1.jpg", "photo", 4),
    ("png/pipe (for smoking)/321.png", "sketch", 4),
]
CLASSES = ["airplane", "bear (animal)", "giraffe", "ice-cream-cone", "pipe (for smoking)"]


def test_tuberlin_records_and_info(tuberlin):
    source = SOURCES.build("tuberlin", root=str(tuberlin))
    assert isinstance(source, Source) and isinstance(source, TuBerlinSource)
    assert _rows(source) == ROWS
    records = list(source.records())
    assert records[5]["path"] == str(tuberlin / "png" / "bear (animal)" / "81.png")
    assert all(set(r) == {"image_id", "path", "domain", "label"} for r in records)
    assert source.ignored == []  # filelist.txt is read, not ignored
    info = source.info()
    assert info.source == "tuberlin" and info.scales == ["fine"]
    assert info.class_names == {"fine": CLASSES}
    assert info.options == {
        "root": str(tuberlin), "sketches": str(tuberlin / "png"),
        "photos": str(tuberlin / "photos"), "filelist": str(tuberlin / "png" / "filelist.txt"),
        "photo_folders": {"bear (animal)": "bearanimal", "giraffe": "griaffe",
                          "ice-cream-cone": "icecreamcone", "pipe (for smoking)": "pipe"},
    }


def test_photo_key():
    assert photo_key("bear (animal)") == "bearanimal"
    assert photo_key("ice-cream-cone") == "icecreamcone"
    assert photo_key("T-Shirt") == "tshirt"
    assert photo_key("flower with stem") == "flowerwithstem"


def test_match_photo_folders_rules():
    classes = ["beer-mug", "car (sedan)", "giraffe", "mouse (animal)", "computer-mouse",
               "space shuttle", "wrist-watch", "diamond", "spider", "t-shirt", "trombone",
               "chandelier", "pipe (for smoking)", "bear (animal)"]
    folders = ["beermug", "carsedan", "griaffe", "mouse", "computermouse", "spacesshuttle",
               "wristwatching", "diamod", "spidar", "tshirt", "tromobone", "chandeler", "pipe",
               "bearanimal"]
    matched, problems = match_photo_folders(classes, folders)
    assert problems == []
    assert matched == dict(zip(classes, folders, strict=True))
    # the exact name first, the normalised name before the table
    matched, problems = match_photo_folders(["mouse (animal)", "pipe"], ["mouseanimal", "pipe"])
    assert matched == {"mouse (animal)": "mouseanimal", "pipe": "pipe"} and problems == []


def test_match_photo_folders_problems():
    matched, problems = match_photo_folders(["giraffe", "t-shirt", "airplane"],
                                            ["girafe", "t shirt", "T-Shirt", "airplane", "zebra"])
    assert matched == {"airplane": "airplane"}
    assert problems == [
        "sketch class 'giraffe' has no photo folder (tried 'giraffe', 'griaffe'; closest photo "
        "folders: girafe, airplane)",
        "sketch class 't-shirt': photo folders t shirt, T-Shirt all read as 'tshirt'",
        "photo folders matching no sketch class: girafe, t shirt, T-Shirt, zebra (the photos "
        "are not the TU-Berlin Extension of these sketches)",
    ]
    # two classes on one folder
    matched, problems = match_photo_folders(["bear (animal)", "bear animal"], ["bearanimal"])
    assert problems == ["photo folder 'bearanimal' matches the sketch classes 'bear (animal)', "
                        "'bear animal'"]


def test_missing_photo_folder_names_class_tries_and_closest(tuberlin):
    (tuberlin / "photos" / "griaffe").rename(tuberlin / "photos" / "girafe")
    with pytest.raises(DataError) as error:
        TuBerlinSource(tuberlin)
    message = str(error.value)
    assert message.startswith(f"tuberlin source: sketches in {tuberlin / 'png'} and photos in "
                              f"{tuberlin / 'photos'} do not match:")
    assert "sketch class 'giraffe' has no photo folder (tried 'giraffe', 'griaffe'; closest " \
           "photo folders: girafe, airplane)" in message
    assert "photo folders matching no sketch class: girafe" in message


def test_unmatched_photo_folder_is_an_error(tuberlin):
    _image(tuberlin / "photos" / "zebra" / "z1.jpg", 0)
    with pytest.raises(DataError, match=r"photo folders matching no sketch class: zebra \(the "
                                        "photos are not the TU-Berlin Extension"):
        TuBerlinSource(tuberlin)


def test_filelist_leaves_out_unlisted_files(tuberlin):
    _image(tuberlin / "png" / "airplane" / "3.png", 3)
    (tuberlin / "png" / "airplane" / "notes.txt").write_text("drawn on a tablet")
    source = TuBerlinSource(tuberlin)
    assert _rows(source) == ROWS
    assert source.ignored == ["png/airplane/notes.txt (not an image file)",
                              "png/airplane/3.png (not in filelist.txt)"]
    # without the list (or with filelist: false) the folders are scanned
    scanned = TuBerlinSource(tuberlin, filelist=False)
    assert ("png/airplane/3.png", "sketch", 0) in _rows(scanned)
    assert scanned.info().options["filelist"] is None
    assert scanned.ignored == ["png/airplane/notes.txt (not an image file)",
                               "png/filelist.txt (not an image file)"]
    (tuberlin / "png" / "filelist.txt").unlink()
    assert _rows(TuBerlinSource(tuberlin)) == _rows(scanned)
    with pytest.raises(DataError, match=r"filelist .*png/filelist.txt does not exist"):
        TuBerlinSource(tuberlin, filelist=True)


def test_filelist_order_and_path_option(tuberlin, tmp_path):
    other = tmp_path / "mine.txt"
    other.write_text("giraffe/161.png\nairplane/2.png\nairplane/1.png\nbear (animal)/82.png\n"
                     "bear (animal)/81.png\nice-cream-cone/241.png\npipe (for smoking)/321.png\n")
    source = TuBerlinSource(tuberlin, filelist=str(other))
    sketches = [r[0] for r in _rows(source) if r[1] == "sketch"]
    assert sketches[:2] == ["png/airplane/2.png", "png/airplane/1.png"]
    assert source.info().options["filelist"] == str(other)
    # the default list in the tree is then an ordinary non-image file
    assert source.ignored == ["png/filelist.txt (not an image file)"]


def test_filelist_problems_name_file_and_line(tuberlin):
    path = tuberlin / "png" / "filelist.txt"
    path.write_text(FILELIST + "airplane/99.png\n\nairplane/1.png\nlonely.png\n"
                    "../png/airplane/2.png\n")
    with pytest.raises(DataError) as error:
        TuBerlinSource(tuberlin)
    message = str(error.value)
    assert message.startswith(f"{path}: 4 problem(s)")
    assert f"line 8: airplane/99.png is not an image file in {tuberlin / 'png'}" in message
    assert "line 10: airplane/1.png already on line 1" in message
    assert "line 11: expected '<class>/<file>', got 'lonely.png'" in message
    assert "line 12: expected '<class>/<file>', got '../png/airplane/2.png'" in message


def test_class_without_listed_sketch_is_an_error(tuberlin):
    path = tuberlin / "png" / "filelist.txt"
    path.write_text(FILELIST.replace("giraffe/161.png\r\n", ""))
    with pytest.raises(DataError, match=re.escape(
            f"sketch class 'giraffe' has no sketch listed in {path}")):
        TuBerlinSource(tuberlin)


def test_sketches_folder_and_photos_option(tmp_path):
    root = _tree(tmp_path / "TU-Berlin", sketches="sketches")
    photos = tmp_path / "ImageResized"
    (root / "photos").rename(photos)
    with pytest.raises(DataError, match=re.escape(
            f"photo folder {root / 'photos'} is not a directory")):
        TuBerlinSource(root)
    source = TuBerlinSource(root, photos=str(photos))
    rows = _rows(source)
    # photos outside root are named photos/<folder>/<file>
    assert rows[:2] == [("photos/airplane/a1.jpg", "photo", 0),
                        ("sketches/airplane/1.png", "sketch", 0)]
    assert source.info().options["sketches"] == str(root / "sketches")
    (root / "sketches").rename(root / "drawings")
    with pytest.raises(DataError) as error:
        TuBerlinSource(root, photos=str(photos))
    assert f"neither {root / 'png'} nor {root / 'sketches'} is a directory" in str(error.value)


def test_ingest_end_to_end(tuberlin, tmp_path):
    out = tmp_path / "manifest.parquet"
    report = ingest("tuberlin", {"root": str(tuberlin)}, out)
    assert report.images == 13 and report.quarantined == 0
    assert report.counts == {"domain": {"photo": 6, "sketch": 7}}
    assert report.classes == {"fine": 5}
    table = read_manifest(out)
    assert table.column_names == ["image_id", "image", "path", "source_width", "source_height", "domain", "label"]
    columns = (table.column(c).to_pylist() for c in ("image_id", "domain", "label"))
    rows = list(zip(*columns, strict=True))
    assert rows == ROWS
    assert read_info(out).class_names["fine"] == CLASSES


def test_registration_and_option_errors(tuberlin):
    assert "tuberlin" in SOURCES.names()
    with pytest.raises(ConfigError, match=r"unknown key\(s\) datasets.<name>.options.instances .*valid "
                                          "keys: filelist, photos, root"):
        SOURCES.build("tuberlin", where="datasets.<name>.options", root=str(tuberlin), instances=True)
    with pytest.raises(ConfigError, match=r"^datasets.<name>.options.filelist: 3 is not a path, true or "
                                          "false$"):
        SOURCES.build("tuberlin", where="datasets.<name>.options", root=str(tuberlin), filelist=3)
    with pytest.raises(DataError, match="tuberlin source: root .*nowhere is not a directory"):
        TuBerlinSource(tuberlin / "nowhere")
