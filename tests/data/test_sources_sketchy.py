"""The Sketchy reader on tiny trees in the release layout and the DASE/MEMS layout."""

from __future__ import annotations

import re

import numpy as np
import pytest
from PIL import Image

from dml.data.sources import SOURCES, Source
from dml.data.sources.sketchy import SketchySource
from dml.data.ingest import ingest
from dml.data.manifest import read_info, read_manifest
from dml.errors import ConfigError, DataError

PLAIN = "tx_000000000000"
BBOX = "tx_000100000000"
CENTRED = "tx_000000000010"  # a sketch-only augmentation

# class -> photo stems and sketch names, in the release's naming
PHOTOS = {
    "airplane": ["n02691156_10151", "n02691156_196"],
    "car_(sedan)": ["n02958343_1001"],
    "hot-air_balloon": ["n03541923_1090"],
}
SKETCHES = {
    "airplane": ["n02691156_10151-1", "n02691156_10151-2", "n02691156_196-1"],
    "car_(sedan)": ["n02958343_1001-1", "n02958343_1001-10"],
    "hot-air_balloon": ["n03541923_1090-1", "n03541923_1090-2"],
}
# the other augmentations hold one sketch per photo
FIRST_SKETCHES = {name: [s for s in sketches if s.endswith("-1")]
                  for name, sketches in SKETCHES.items()}


def _image(path, seed: int) -> None:
    """A real 8x8 image, PNG or JPEG by the file's extension."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path, format="PNG" if path.suffix == ".png" else "JPEG")


def _files(folder, names: dict[str, list[str]], extension: str) -> None:
    for seed, (name, stems) in enumerate(names.items()):
        for k, stem in enumerate(stems):
            _image(folder / name / f"{stem}{extension}", 10 * seed + k)


def _release(parent):
    """A rendered_256x256 folder: three augmentations of sketches, two of photos, some
    clutter (a .DS_Store and a Thumbs.db)."""
    root = parent / "rendered_256x256"
    base = root / "256x256"
    _files(base / "photo" / PLAIN, PHOTOS, ".jpg")
    _files(base / "photo" / BBOX, PHOTOS, ".jpg")
    _files(base / "sketch" / PLAIN, SKETCHES, ".png")
    _files(base / "sketch" / BBOX, FIRST_SKETCHES, ".png")
    _files(base / "sketch" / CENTRED, FIRST_SKETCHES, ".png")
    (base / "sketch" / PLAIN / "airplane" / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    (base / "photo" / PLAIN / "car_(sedan)" / "Thumbs.db").write_bytes(b"\xd0\xcf\x11\xe0")
    return root


@pytest.fixture
def release(tmp_path):
    return _release(tmp_path)


def _rows(source):
    return [(r["image_id"], r["domain"], r["label"], r["instance_id"])
            for r in source.records()]


P, S = f"256x256/photo/{PLAIN}", f"256x256/sketch/{PLAIN}"
RELEASE_ROWS = [
    (f"{P}/airplane/n02691156_10151.jpg", "photo", 0, "n02691156_10151"),
    (f"{P}/airplane/n02691156_196.jpg", "photo", 0, "n02691156_196"),
    (f"{S}/airplane/n02691156_10151-1.png", "sketch", 0, "n02691156_10151"),
    (f"{S}/airplane/n02691156_10151-2.png", "sketch", 0, "n02691156_10151"),
    (f"{S}/airplane/n02691156_196-1.png", "sketch", 0, "n02691156_196"),
    (f"{P}/car_(sedan)/n02958343_1001.jpg", "photo", 1, "n02958343_1001"),
    (f"{S}/car_(sedan)/n02958343_1001-1.png", "sketch", 1, "n02958343_1001"),
    (f"{S}/car_(sedan)/n02958343_1001-10.png", "sketch", 1, "n02958343_1001"),
    (f"{P}/hot-air_balloon/n03541923_1090.jpg", "photo", 2, "n03541923_1090"),
    (f"{S}/hot-air_balloon/n03541923_1090-1.png", "sketch", 2, "n03541923_1090"),
    (f"{S}/hot-air_balloon/n03541923_1090-2.png", "sketch", 2, "n03541923_1090"),
]


def test_release_layout_records_and_info(release):
    source = SOURCES.build("sketchy", root=str(release))
    assert isinstance(source, Source) and isinstance(source, SketchySource)
    assert _rows(source) == RELEASE_ROWS
    records = list(source.records())
    assert records[0]["path"] == str(release / RELEASE_ROWS[0][0])
    assert all(set(r) == {"image_id", "path", "domain", "label", "instance_id"} for r in records)
    info = source.info()
    assert info.source == "sketchy" and info.scales == ["fine"]
    assert info.class_names == {"fine": ["airplane", "car_(sedan)", "hot-air_balloon"]}
    assert info.options == {"root": str(release), "layout": "release", "augmentation": PLAIN,
                            "extended_photos": None, "invalid": "keep", "info": None}
    # Thumbs.db is listed, .DS_Store (hidden) is not
    assert source.ignored == [f"{P}/car_(sedan)/Thumbs.db (not an image file)"]


def test_root_may_be_the_256x256_folder(release):
    rows = _rows(SketchySource(release / "256x256"))
    assert rows[0] == (f"photo/{PLAIN}/airplane/n02691156_10151.jpg", "photo", 0,
                       "n02691156_10151")
    assert [r[1:] for r in rows] == [r[1:] for r in RELEASE_ROWS]


def test_augmentation_option(release):
    bbox = _rows(SketchySource(release, augmentation=BBOX))
    assert [r[0] for r in bbox] == [
        f"256x256/photo/{BBOX}/airplane/n02691156_10151.jpg",
        f"256x256/photo/{BBOX}/airplane/n02691156_196.jpg",
        f"256x256/sketch/{BBOX}/airplane/n02691156_10151-1.png",
        f"256x256/sketch/{BBOX}/airplane/n02691156_196-1.png",
        f"256x256/photo/{BBOX}/car_(sedan)/n02958343_1001.jpg",
        f"256x256/sketch/{BBOX}/car_(sedan)/n02958343_1001-1.png",
        f"256x256/photo/{BBOX}/hot-air_balloon/n03541923_1090.jpg",
        f"256x256/sketch/{BBOX}/hot-air_balloon/n03541923_1090-1.png",
    ]
    # a sketch-only augmentation takes the unaugmented photos
    centred = SketchySource(release, augmentation=CENTRED)
    ids = [r[0] for r in _rows(centred)]
    assert ids[:3] == [f"256x256/photo/{PLAIN}/airplane/n02691156_10151.jpg",
                       f"256x256/photo/{PLAIN}/airplane/n02691156_196.jpg",
                       f"256x256/sketch/{CENTRED}/airplane/n02691156_10151-1.png"]
    assert centred.info().options["augmentation"] == CENTRED
    message = (r"sketch/tx_000000001110 does not exist \(augmentation folders there: "
               rf"{PLAIN}, {CENTRED}, {BBOX}; see datasets.<name>.options.augmentation\)")
    with pytest.raises(DataError, match=message):
        SketchySource(release, augmentation="tx_000000001110")
    with pytest.raises(ConfigError, match=r"datasets.<name>.options.augmentation: 'tx_1' is not one of"):
        SOURCES.build("sketchy", where="datasets.<name>.options", root=str(release), augmentation="tx_1")


def test_preprocessed_layout(tmp_path):
    """photos/ + sketches/ of the DASE/MEMS code: extended photos named ext_<n> in several
    classes link nothing; a sketch not named <photo>-<k> links nothing."""
    root = tmp_path / "sketchy"
    _files(root / "photos", {"bat": ["ext_1", "n02139199_1332"], "wading_bird": ["ext_1"]},
           ".jpg")
    _files(root / "sketches", {"bat": ["n02139199_1332-1", "n02139199_1332-5"],
                               "wading_bird": ["n02009912_1024-2", "heron"]}, ".png")
    source = SOURCES.build("sketchy", root=str(root))
    assert _rows(source) == [
        ("photos/bat/ext_1.jpg", "photo", 0, None),
        ("photos/bat/n02139199_1332.jpg", "photo", 0, "n02139199_1332"),
        ("sketches/bat/n02139199_1332-1.png", "sketch", 0, "n02139199_1332"),
        ("sketches/bat/n02139199_1332-5.png", "sketch", 0, "n02139199_1332"),
        ("photos/wading_bird/ext_1.jpg", "photo", 1, None),
        ("sketches/wading_bird/heron.png", "sketch", 1, None),
        # its photo is not in the data: the name still says which photo it was drawn from
        ("sketches/wading_bird/n02009912_1024-2.png", "sketch", 1, "n02009912_1024"),
    ]
    assert source.info().options["layout"] == "preprocessed"
    assert source.info().options["augmentation"] is None
    with pytest.raises(ConfigError, match="datasets.<name>.options.augmentation: .* release layout only"):
        SketchySource(root, augmentation=PLAIN)


def test_release_wins_when_both_layouts_are_there(release):
    _files(release / "photos", {"cat": ["a"]}, ".jpg")
    _files(release / "sketches", {"cat": ["a-1"]}, ".png")
    assert _rows(SketchySource(release)) == RELEASE_ROWS


def test_neither_layout_names_root_and_both_layouts(tmp_path):
    (tmp_path / "photos").mkdir()  # half of the preprocessed layout
    with pytest.raises(DataError) as error:
        SketchySource(tmp_path)
    message = str(error.value)
    assert f"root {tmp_path} holds neither Sketchy layout" in message
    assert "256x256/photo/<augmentation>/<class>/<photo>.jpg" in message
    assert "photos/<class>/<file> and sketches/<class>/<file>" in message
    with pytest.raises(DataError, match="root .*nowhere is not a directory"):
        SketchySource(tmp_path / "nowhere")


def test_photo_and_sketch_classes_must_agree(release):
    base = release / "256x256"
    _image(base / "photo" / PLAIN / "zebra" / "n02391049_1.jpg", 0)
    _image(base / "sketch" / PLAIN / "bat" / "n02139199_1-1.png", 0)
    with pytest.raises(DataError) as error:
        SketchySource(release)
    message = str(error.value)
    assert "photo and sketch class folders differ" in message
    assert f"only among the photos ({base / 'photo' / PLAIN}): zebra" in message
    assert f"only among the sketches ({base / 'sketch' / PLAIN}): bat" in message


def test_empty_class_is_an_error(release):
    (release / "256x256" / "sketch" / PLAIN / "zebra").mkdir()
    (release / "256x256" / "photo" / PLAIN / "zebra").mkdir()
    with pytest.raises(DataError, match="class 'zebra' has no photo in .*\n  class 'zebra' "
                                        "has no sketch in"):
        SketchySource(release)


def test_links_across_classes_are_errors(release):
    sketch_dir = release / "256x256" / "sketch" / PLAIN
    # a sketch of car_(sedan) named after an airplane photo
    _image(sketch_dir / "car_(sedan)" / "n02691156_196-7.png", 0)
    with pytest.raises(DataError) as error:
        SketchySource(release)
    message = str(error.value)
    assert "do not link up by name" in message
    assert f"{S}/car_(sedan)/n02691156_196-7.png names photo n02691156_196, which sketches of " \
           "class 'airplane' name too" in message
    # two photos of a class with the stem that sketches name
    (sketch_dir / "car_(sedan)" / "n02691156_196-7.png").unlink()
    _image(release / "256x256" / "photo" / PLAIN / "airplane" / "n02691156_196.png", 1)
    with pytest.raises(DataError, match=re.escape(
            f"photos {P}/airplane/n02691156_196.jpg and {P}/airplane/n02691156_196.png share "
            "the stem n02691156_196")):
        SketchySource(release)


def _write_info(folder, **lines) -> None:
    """The four invalid lists in ``folder``; ``lines`` maps a reason to the file's text."""
    folder.mkdir(parents=True, exist_ok=True)
    for reason in ("ambiguous", "context", "error", "pose"):
        (folder / f"invalid-{reason}.txt").write_bytes(lines.get(reason, "").encode())


def test_invalid_keep_and_drop(release):
    _write_info(release / "info",
                error="n02691156_10151-2\r\nn01234567_1-1\r\n",  # CRLF; the 2nd is not here
                pose="n02691156_10151-2\n",
                ambiguous="car_(sedan)/n02958343_1001-1.png\n\n",
                context="  hot-air_balloon/n03541923_1090-2  \n")
    kept = SketchySource(release)
    assert _rows(kept) == RELEASE_ROWS
    dropped = SketchySource(release, invalid="drop")
    ids = [r[0] for r in _rows(dropped)]
    gone = [f"{S}/airplane/n02691156_10151-2.png", f"{S}/car_(sedan)/n02958343_1001-1.png",
            f"{S}/hot-air_balloon/n03541923_1090-2.png"]
    assert ids == [r[0] for r in RELEASE_ROWS if r[0] not in gone]
    assert dropped.ignored[1:] == [f"{gone[0]} (invalid: error, pose)",
                                   f"{gone[1]} (invalid: ambiguous)",
                                   f"{gone[2]} (invalid: context)"]
    assert dropped.info().options["info"] == str(release / "info")


def test_invalid_class_prefix_restricts_the_line_to_that_class(release):
    _write_info(release / "info", error="car_(sedan)/n02691156_196-1\n")
    assert _rows(SketchySource(release, invalid="drop")) == RELEASE_ROWS


def test_invalid_lists_from_the_info_option(release, tmp_path):
    _write_info(tmp_path / "sketchy_info", pose="n03541923_1090-1.png\n")
    with pytest.raises(DataError) as error:
        SketchySource(release, invalid="drop")
    message = str(error.value)
    assert f"lists of invalid sketches in {release / 'info'}; missing: invalid-ambiguous.txt, " \
           "invalid-context.txt, invalid-error.txt, invalid-pose.txt" in message
    assert "datasets.<name>.options.info" in message
    source = SketchySource(release, invalid="drop", info=tmp_path / "sketchy_info")
    assert len(list(source.records())) == len(RELEASE_ROWS) - 1
    assert source.ignored[-1] == f"{S}/hot-air_balloon/n03541923_1090-1.png (invalid: pose)"


def test_invalid_list_problems_name_file_and_line(release):
    _write_info(release / "info",
                pose="n02691156_10151-2\nn02691156_10151\nzebra/n02391049_1-1\na/b/c-1\n")
    with pytest.raises(DataError) as error:
        SketchySource(release, invalid="drop")
    message = str(error.value)
    assert message.startswith(f"{release / 'info' / 'invalid-pose.txt'}: 3 problem(s)")
    assert "line 2: expected a sketch id such as n02691156_10151-3 (<photo>-<k>), got " \
           "'n02691156_10151'" in message
    assert "line 3: class 'zebra' is not a class of this data" in message
    assert "line 4: expected a sketch id" in message


def test_invalid_option_value(release):
    with pytest.raises(ConfigError, match=r"^datasets.<name>.options.invalid: 'remove' is not one of: "
                                          r"keep, drop$"):
        SOURCES.build("sketchy", where="datasets.<name>.options", root=str(release), invalid="remove")


def test_extended_photos(release, tmp_path):
    extended = tmp_path / "EXTEND_image_sketchy"
    _files(extended, {"airplane": ["ext_1", "ext_2", "n02691156_196"],  # the last: a release photo
                      "hot-air_balloon": ["ext_1"]}, ".jpg")
    source = SketchySource(release, extended_photos=extended)
    rows = _rows(source)
    assert rows[2:4] == [("extended_photos/airplane/ext_1.jpg", "photo", 0, None),
                         ("extended_photos/airplane/ext_2.jpg", "photo", 0, None)]
    assert rows[-3] == ("extended_photos/hot-air_balloon/ext_1.jpg", "photo", 2, None)
    assert len(rows) == len(RELEASE_ROWS) + 3
    assert rows[2][0] in {r["image_id"] for r in source.records()}
    assert source.ignored[-1] == (f"extended_photos/airplane/n02691156_196.jpg (the photo "
                                  f"{P}/airplane/n02691156_196.jpg again)")
    assert source.info().options["extended_photos"] == str(extended)
    # inside root, the ids are paths relative to root
    inside = release / "EXTEND_image_sketchy"
    _files(inside, {"car_(sedan)": ["ext_9"]}, ".jpg")
    assert ("EXTEND_image_sketchy/car_(sedan)/ext_9.jpg", "photo", 1, None) in _rows(
        SketchySource(release, extended_photos=inside))


def test_extended_photos_of_unknown_classes_are_errors(release, tmp_path):
    extended = tmp_path / "EXTEND_image_sketchy"
    _files(extended, {"airplane": ["ext_1"], "airplanes": ["ext_1"], "zebra": ["ext_1"]}, ".jpg")
    with pytest.raises(DataError) as error:
        SketchySource(release, extended_photos=extended)
    message = str(error.value)
    assert f"extended_photos {extended} has class folders that are not classes of the data" in \
        message
    assert "'airplanes' (closest: airplane)" in message and "\n  'zebra'" in message
    with pytest.raises(DataError, match="extended_photos .*nowhere is not a directory"):
        SketchySource(release, extended_photos=tmp_path / "nowhere")


def test_ingest_end_to_end(release, tmp_path):
    extended = tmp_path / "EXTEND_image_sketchy"
    _files(extended, {"car_(sedan)": ["ext_1"]}, ".jpg")
    _write_info(release / "info", error="n02691156_10151-2\n")
    out = tmp_path / "manifest.parquet"
    options = {"root": str(release), "invalid": "drop", "extended_photos": str(extended)}
    report = ingest("sketchy", options, out)
    assert report.images == 11 and report.quarantined == 0
    assert report.counts == {"domain": {"photo": 5, "sketch": 6}}
    assert report.classes == {"fine": 3}
    assert report.ignored_files == [f"{P}/car_(sedan)/Thumbs.db (not an image file)",
                                    f"{S}/airplane/n02691156_10151-2.png (invalid: error)"]
    table = read_manifest(out)
    assert table.column_names == ["image_id", "image", "path", "source_width", "source_height", "domain", "label", "instance_id"]
    rows = list(zip(*(table.column(c).to_pylist()
                      for c in ("image_id", "domain", "label", "instance_id")), strict=True))
    assert rows[4:7] == [  # airplane: 2 photos, 2 sketches (one dropped)
        (f"{P}/car_(sedan)/n02958343_1001.jpg", "photo", 1, "n02958343_1001"),
        ("extended_photos/car_(sedan)/ext_1.jpg", "photo", 1, None),
        (f"{S}/car_(sedan)/n02958343_1001-1.png", "sketch", 1, "n02958343_1001"),
    ]
    assert table.column("instance_id").to_pylist().count("n02691156_10151") == 2  # photo, sketch
    info = read_info(out)
    assert info.class_names["fine"] == ["airplane", "car_(sedan)", "hot-air_balloon"]
    assert info.options["invalid"] == "drop"


def test_registration_and_unknown_option(release):
    assert "sketchy" in SOURCES.names()
    with pytest.raises(ConfigError, match=r"unknown key\(s\) datasets.<name>.options.split .*valid keys: "
                                          "augmentation, extended_photos, info, invalid, root"):
        SOURCES.build("sketchy", where="datasets.<name>.options", root=str(release), split="zero-shot")


def test_category_level_and_zero_shot_splits_of_the_ingested_release(release, tmp_path):
    """The benchmark's two protocols on the reader's manifest: one held-out query sketch per
    class against every photo (all trained on), or unseen classes' sketches and photos."""
    from dml.data.splits import evaluated_rows, make_splits

    out = tmp_path / "manifest.parquet"
    ingest("sketchy", {"root": str(release)}, out)
    table = read_manifest(out, columns=["image_id", "label", "domain"])
    domain = np.array(table.column("domain").to_pylist())
    labels = table.column("label").to_numpy()
    category = make_splits(table, method="held_out_queries", queries_per_class=1, num_folds=1)
    split = np.array(category.column("split").to_pylist())
    role = np.array(category.column("role").to_pylist())
    assert sorted(labels[split == "test"].tolist()) == [0, 1, 2]
    assert (domain[split == "test"] == "sketch").all()
    assert (split[domain == "photo"] == "train").all()
    assert evaluated_rows(split, role).sum() == 3 + (domain == "photo").sum()
    zero_shot = make_splits(table, method="ordered", test_fraction=0.34, num_folds=1)
    split = np.array(zero_shot.column("split").to_pylist())
    assert set(labels[split == "test"].tolist()) == {2}  # hot-air_balloon: unseen in training
    assert set(domain[split == "test"].tolist()) == {"photo", "sketch"}
