"""The NUS-WIDE reader on a tiny tree in the published layout."""

from __future__ import annotations

import re

import numpy as np
import pytest
from PIL import Image

from dml.data.sources import SOURCES, Source
from dml.data.sources.nuswide import NuswideSource, image_path, nuswide_source
from dml.data.ingest import ingest
from dml.data.manifest import read_info, read_manifest
from dml.errors import ConfigError, DataError

CONCEPTS = ["animal", "beach", "clouds", "dog"]
# (listed path, concepts labelled 1). Frequencies over both lists: animal 1, beach 2 (test
# only), clouds 3, dog 2 (train only).
TRAIN = [
    ("actor\\0001_1.jpg", {"clouds"}),
    ("C:\\ImageData\\Flickr\\actor\\0002_2.jpg", {"clouds", "dog"}),  # Imagelist.txt style
    ("beach\\0001_3.jpg", {"clouds", "dog"}),
    ("dog\\0001_4.jpg", set()),  # no concept at all
]
TEST = [
    ("beach\\0002_5.jpg", {"beach"}),
    ("dog\\0002_6.jpg", {"beach"}),
    ("dog\\0003_7.jpg", {"animal"}),
]
IDS = ["Flickr/actor/0001_1.jpg", "Flickr/actor/0002_2.jpg", "Flickr/beach/0001_3.jpg",
       "Flickr/dog/0001_4.jpg", "Flickr/beach/0002_5.jpg", "Flickr/dog/0002_6.jpg",
       "Flickr/dog/0003_7.jpg"]
TRAIN_LIST = "ImageList/TrainImagelist.txt"
TEST_LIST = "ImageList/TestImagelist.txt"


def _crlf(lines) -> bytes:
    return "".join(f"{line}\r\n" for line in lines).encode()


def _labels(rows, concept: str) -> bytes:
    """A label file as released: ``0 `` / ``1 `` lines with CRLF."""
    return _crlf(f"{int(concept in wanted)} " for _, wanted in rows)


def _write(root, name: str, data: bytes) -> None:
    (root / name).parent.mkdir(parents=True, exist_ok=True)
    (root / name).write_bytes(data)


@pytest.fixture
def nus(tmp_path):
    root = tmp_path / "NUS-WIDE"
    _write(root, "Concepts81.txt", _crlf(CONCEPTS + [""]))
    _write(root, TRAIN_LIST, _crlf(p for p, _ in TRAIN))
    _write(root, TEST_LIST, _crlf(p for p, _ in TEST))
    _write(root, "ImageList/Imagelist.txt", b"not read\r\n")
    for concept in CONCEPTS:
        _write(root, f"TrainTestLabels/Labels_{concept}_Train.txt", _labels(TRAIN, concept))
        _write(root, f"TrainTestLabels/Labels_{concept}_Test.txt", _labels(TEST, concept))
    for seed, image_id in enumerate(IDS):
        pixels = np.random.default_rng(seed).integers(0, 256, (8, 8, 3), dtype=np.uint8)
        (root / image_id).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).save(root / image_id, format="JPEG")
    return root


def _counts(records) -> dict[str, list[int]]:
    return {r["image_id"]: [o["label"] for o in r["object_counts"]] for r in records}


@pytest.mark.parametrize(("text", "expected"), [
    ("actor\\0001_2124494179.jpg", "Flickr/actor/0001_2124494179.jpg"),
    ("C:\\ImageData\\Flickr\\actor\\0001_2124494179.jpg ", "Flickr/actor/0001_2124494179.jpg"),
    ("d:\\imagedata\\flickr\\actor\\a.jpg", "Flickr/actor/a.jpg"),
    ("Flickr\\actor\\a.jpg", "Flickr/actor/a.jpg"),
    ("flickr\\a.jpg", "Flickr/flickr/a.jpg"),  # a folder that happens to be named flickr
    ("actor/a.jpg", "Flickr/actor/a.jpg"),
    ("a.jpg", None), ("x\\actor\\a.jpg", None), ("..\\actor\\a.jpg", None), ("", None),
])
def test_image_path_reads_windows_paths(text, expected):
    assert image_path(text) == expected


def test_importing_the_module_registers_the_reader():
    assert "nuswide" in SOURCES and SOURCES.get("nuswide") is nuswide_source
    assert set(SOURCES.parameters("nuswide")) == {"root", "concepts", "unlabelled"}


def test_records_and_info(nus):
    source = SOURCES.build("nuswide", root=str(nus))
    assert isinstance(source, Source) and isinstance(source, NuswideSource)
    records = list(source.records())
    assert [r["image_id"] for r in records] == IDS[:3] + IDS[4:]
    assert all(set(r) == {"image_id", "path", "split", "domain", "object_counts", "_origin"}
               for r in records)
    assert [r["split"] for r in records] == ["train"] * 3 + ["test"] * 3
    assert all(r["domain"] == "photo" for r in records)
    assert _counts(records) == {IDS[0]: [2], IDS[1]: [2, 3], IDS[2]: [2, 3], IDS[4]: [1],
                                IDS[5]: [1], IDS[6]: [0]}
    assert all(o["count"] == 1 for r in records for o in r["object_counts"])
    assert records[1]["path"] == str(nus / "Flickr/actor/0002_2.jpg")
    assert records[1]["_origin"] == f"{nus / TRAIN_LIST} line 2"
    assert records[4]["_origin"] == f"{nus / TEST_LIST} line 2"
    assert source.ignored == ["Flickr/dog/0001_4.jpg (no concept among the 4 kept)"]
    info = source.info()
    assert info.source == "nuswide" and info.scales == ["fine"]
    assert info.class_names == {"fine": CONCEPTS}
    assert info.options == {"root": str(nus), "concepts": 81, "unlabelled": "skip"}


def test_ingest_end_to_end(nus, tmp_path):
    out = tmp_path / "manifest.parquet"
    report = ingest("nuswide", {"root": str(nus)}, out)
    assert report.images == 6 and report.quarantined == 0
    assert report.counts["split"] == {"test": 3, "train": 3}
    assert report.classes == {"fine": 4}
    assert report.ignored_files == ["Flickr/dog/0001_4.jpg (no concept among the 4 kept)"]
    assert read_info(out).class_names == {"fine": CONCEPTS}
    table = read_manifest(out)
    assert "label" not in table.column_names and "role" not in table.column_names
    assert table.column("image_id").to_pylist() == IDS[:3] + IDS[4:]
    assert table.column("object_counts").to_pylist()[1] == [{"label": 2, "count": 1},
                                                           {"label": 3, "count": 1}]
    assert all(len(b) > 0 for b in table.column("image").to_pylist())


def test_most_frequent_concepts_over_both_lists(nus, tmp_path):
    # clouds (3) first; beach and dog tie at 2 (beach only from the test labels): beach wins
    # by concept order.
    source = NuswideSource(nus, concepts=2)
    assert source.info().class_names == {"fine": ["beach", "clouds"]}
    assert _counts(source.records()) == {IDS[0]: [1], IDS[1]: [1], IDS[2]: [1], IDS[4]: [0],
                                         IDS[5]: [0]}
    assert source.ignored == [f"{IDS[3]} (no concept among the 2 kept)",
                              f"{IDS[6]} (no concept among the 2 kept)"]
    assert NuswideSource(nus, concepts=1).info().class_names == {"fine": ["clouds"]}
    assert NuswideSource(nus, concepts=3).info().class_names == {"fine": ["beach", "clouds",
                                                                          "dog"]}
    assert NuswideSource(nus, concepts=4).info().class_names == {"fine": CONCEPTS}
    out = tmp_path / "m.parquet"
    report = ingest("nuswide", {"root": str(nus), "concepts": 2}, out)
    assert report.images == 5 and len(report.ignored_files) == 2
    assert read_info(out).options["concepts"] == 2
    assert read_manifest(out).column("object_counts").to_pylist()[3] == [{"label": 0,
                                                                          "count": 1}]


def test_named_concepts(nus):
    # Only the named concepts' label files are read.
    (nus / "TrainTestLabels/Labels_beach_Train.txt").unlink()
    source = NuswideSource(nus, concepts=["dog", "animal"])
    assert source.info().class_names == {"fine": ["animal", "dog"]}  # concept order
    assert source.info().options["concepts"] == ["dog", "animal"]
    assert _counts(source.records()) == {IDS[1]: [1], IDS[2]: [1], IDS[6]: [0]}
    assert [i.split(" ")[0] for i in source.ignored] == [IDS[0], IDS[3], IDS[4], IDS[5]]
    with pytest.raises(ConfigError, match=r"datasets.<name>.options.concepts: unknown concept\(s\) "
                                          r"'cat', 'Dog'; Concepts81.txt lists: animal, beach"):
        NuswideSource(nus, concepts=["cat", "dog", "Dog"])


def test_unlabelled_fail_names_the_images(nus):
    with pytest.raises(DataError, match=re.escape(
            "1 image(s) show no class (set datasets.<name>.options.unlabelled: skip to leave them out): "
            "Flickr/dog/0001_4.jpg (no concept among the 4 kept)")):
        NuswideSource(nus, unlabelled="fail")
    with pytest.raises(DataError, match=re.escape(
            "6 image(s) show no class (set datasets.<name>.options.unlabelled: skip to leave them out): "
            + ", ".join(f"{i} (no concept among the 1 kept)" for i in IDS[:5]) + " and 1 more")):
        # the first five named
        NuswideSource(nus, concepts=["animal"], unlabelled="fail")
    (nus / "TrainTestLabels/Labels_animal_Train.txt").write_bytes(_crlf(["1 "] * 4))
    assert len(list(NuswideSource(nus, unlabelled="fail").records())) == 7


def test_missing_image_is_a_bad_file_with_its_line(nus, tmp_path):
    (nus / IDS[5]).unlink()
    with pytest.raises(DataError, match=re.escape(f"{nus / TEST_LIST} line 2")):
        ingest("nuswide", {"root": str(nus)}, tmp_path / "m.parquet")
    report = ingest("nuswide", {"root": str(nus)}, tmp_path / "m.parquet", on_bad="skip")
    assert report.images == 5 and report.bad_files[0].image_id == IDS[5]
    assert report.bad_files[0].reason == "missing (no such file)"


def _train_text(*extra: str) -> bytes:
    return _crlf([p for p, _ in TRAIN] + list(extra))


ERRORS = [  # (file under root, new contents, expected message fragment)
    ("TrainTestLabels/Labels_dog_Train.txt", _crlf(["0 ", "1 ", "1 ", "0 ", "0 "]),
     r"line 5: beyond the 4 images of TrainImagelist.txt \(the file has 5 lines"),
    ("TrainTestLabels/Labels_dog_Test.txt", _crlf(["0 ", "0 "]),
     r"2 lines, but TestImagelist.txt lists 3 images \(no label for its lines 3-3\)"),
    ("TrainTestLabels/Labels_dog_Train.txt", _crlf(["0 ", "1 ", "2", "0 "]),
     "line 3: '2' is not 0 or 1"),
    ("TrainTestLabels/Labels_dog_Train.txt", _crlf(["0 ", "", "1 ", "0 "]),
     "line 2: '' is not 0 or 1"),
    ("Concepts81.txt", _crlf(["animal", "beach", "animal"]),
     "line 3: concept 'animal' already on line 1"),
    ("Concepts81.txt", _crlf(["animal", "sea beach"]), "line 2: 'sea beach' is not a concept"),
    ("Concepts81.txt", b"\r\n\r\n", "no concepts"),
    (TRAIN_LIST, _train_text("actor\\0001_1.jpg"),
     "line 5: image Flickr/actor/0001_1.jpg already on line 1"),
    (TRAIN_LIST, _train_text("C:\\ImageData\\Flickr\\beach\\0001_3.jpg"),
     "line 5: image Flickr/beach/0001_3.jpg already on line 3"),
    (TEST_LIST, _crlf([p for p, _ in TEST] + ["beach\\0001_3.jpg"]),
     "line 4: image Flickr/beach/0001_3.jpg already on TrainImagelist.txt line 3"),
    (TRAIN_LIST, _train_text("0005.jpg"), r"line 5: '0005.jpg' is not a path '<folder>\\<file>'"),
    (TRAIN_LIST, _train_text("..\\x\\0005.jpg"), r"line 5: '..\\\\x\\\\0005.jpg' is not a path"),
    (TEST_LIST, b"\r\n", "no images"),
]


@pytest.mark.parametrize(("name", "data", "message"), ERRORS,
                         ids=[f"{e[0].split('/')[-1]}:{e[2][:30]}" for e in ERRORS])
def test_errors_name_file_and_line(nus, name, data, message):
    (nus / name).write_bytes(data)
    with pytest.raises(DataError) as error:
        NuswideSource(nus)
    assert str(error.value).startswith(str(nus / name))
    assert re.search(message, str(error.value)), str(error.value)


def test_missing_files(nus, tmp_path):
    with pytest.raises(DataError, match="not a directory"):
        NuswideSource(nus / "nowhere")
    (nus / "TrainTestLabels/Labels_clouds_Test.txt").unlink()
    (nus / "TrainTestLabels/Labels_dog_Train.txt").unlink()
    with pytest.raises(DataError, match=re.escape(
            f"2 label file(s) missing: {nus / 'TrainTestLabels/Labels_dog_Train.txt'} "
            f"(concept 'dog'), {nus / 'TrainTestLabels/Labels_clouds_Test.txt'} "
            "(concept 'clouds') (root must be the NUS-WIDE folder")):
        NuswideSource(nus)
    (nus / TEST_LIST).unlink()
    with pytest.raises(DataError, match=re.escape(f"{nus / TEST_LIST} does not exist (root "
                                                  "must be the NUS-WIDE folder of the release")):
        NuswideSource(nus)
    (nus / "Concepts81.txt").unlink()
    with pytest.raises(DataError, match=f"{re.escape(str(nus / 'Concepts81.txt'))} does not "
                                        "exist .*Concepts81.txt, ImageList/ and TrainTestLabels/"):
        NuswideSource(nus)


@pytest.mark.parametrize(("options", "message"), [
    ({"unlabelled": "drop"}, "datasets.<name>.options.unlabelled: 'drop' is not one of: skip, fail"),
    ({"concepts": 0}, "datasets.<name>.options.concepts: 0 is not a positive number"),
    ({"concepts": -3}, "datasets.<name>.options.concepts: -3 is not"),
    ({"concepts": True}, "datasets.<name>.options.concepts: True is not"),
    ({"concepts": "21"}, "datasets.<name>.options.concepts: '21' is not"),
    ({"concepts": 2.0}, "datasets.<name>.options.concepts: 2.0 is not"),
    ({"concepts": []}, r"datasets.<name>.options.concepts: \[\] is not a non-empty list"),
    ({"concepts": ["dog", 3]}, "datasets.<name>.options.concepts: .* is not a non-empty list"),
    ({"concepts": ["dog", "cat", "dog"]}, "datasets.<name>.options.concepts: dog named twice"),
])
def test_bad_options(nus, options, message):
    with pytest.raises(ConfigError, match=message):
        SOURCES.build("nuswide", root=str(nus), **options)


def test_unknown_option_key(nus):
    with pytest.raises(ConfigError, match="unknown key.*datasets.<name>.options.split"):
        SOURCES.build("nuswide", where="datasets.<name>.options", root=str(nus), split="classes")
