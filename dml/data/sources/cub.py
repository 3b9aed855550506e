"""Caltech-UCSD Birds-200-2011 as published in ``CUB_200_2011.tgz`` ("cub").

Layout under ``root`` (the ``CUB_200_2011`` folder); ids are positive integers, fields are
separated by whitespace, blank lines are skipped:

- ``images.txt``: ``<image_id> <path under images/>``, e.g.
  ``1 001.Black_footed_Albatross/Black_Footed_Albatross_0046_18.jpg``;
- ``image_class_labels.txt``: ``<image_id> <class_id>``, one line per image;
- ``classes.txt``: ``<class_id> <class_name>``, e.g. ``1 001.Black_footed_Albatross``;
- ``images/<class folder>/<file>``: the images;
- ``attributes/image_attribute_labels.txt`` (optional): ``<image_id> <attribute_id>
  <is_present> <certainty_id> <time>``, 312 lines per image in the release. Some lines of the
  released file carry more fields than five (loaders read it with extra dummy columns or
  ``truncate_ragged_lines``), so fields after the fourth are ignored; the first four are
  checked;
- ``attributes.txt``: ``<attribute_id> <name>``, e.g. ``1 has_bill_shape::curved_(up_or_down)``.
  The release puts it *beside* ``CUB_200_2011/``; ``root/attributes/attributes.txt`` and
  ``root/attributes.txt`` are looked at first (in that order), then ``root/../attributes.txt``.
- ``train_test_split.txt`` is not read: the metric-learning protocol splits by class.

Records: ``image_id`` is the path under ``images/`` (stable across copies), ``label`` the rank of
the class id among those of ``classes.txt`` (``class_id - 1`` for the release), class names
from ``classes.txt``, ``domain`` ``photo``. With ``split="classes"`` (the zero-shot protocol of
deep metric learning papers) classes 1-100 are ``train`` and classes 101-200 ``test``; with
``split="none"`` there is no split column and the pipeline's own split applies. ``role`` is
left out (every image is both a query and a gallery item).

Attributes (when ``attributes`` is true and the labels file exists): a list of 0/1/None per
image in attribute-id order, None meaning "unknown for this image": the worker marked the part
"not visible" (certainty 1, always unknown), gave a certainty below ``min_certainty``, or the
file has no line for that attribute. An image without any attribute line gets a null row. When
the labels file exists but no names file does, the reader fails (set ``attributes: false`` or
copy ``attributes.txt`` into ``root``) rather than invent names.

Every problem in a file (malformed line, unknown or repeated id, class id not in
``classes.txt``, image without a class, attribute id out of range, bad value) is reported in
one DataError naming the file and the line numbers.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from dml.data.sources import SOURCES
from dml.data.sources.problems import SHOWN, FileProblems, relative_path
from dml.data.manifest import ManifestInfo
from dml.errors import ConfigError, DataError

#: CUB's certainty ids (``attributes/certainties.txt``).
CERTAINTIES = {1: "not visible", 2: "guessing", 3: "probably", 4: "definitely"}
SPLIT_CHOICES = ("classes", "none")
#: With ``split="classes"``, class ids up to this one are train, the others test.
LAST_TRAIN_CLASS = 100
ATTRIBUTE_LABELS = "attributes/image_attribute_labels.txt"
ATTRIBUTE_NAMES = ("attributes/attributes.txt", "attributes.txt", "../attributes.txt")
_NO_LINE, _UNKNOWN = 3, 2  # attribute codes besides 0/1, decoded to None
_DECODE = (0, 1, None, None)


def _lines(path: Path, maxsplit: int = -1) -> Iterator[tuple[int, list[str]]]:
    """(line number, whitespace-separated fields) of the non-blank lines of ``path``."""
    if not path.is_file():
        raise DataError(f"cub source: {path} does not exist (root must be the CUB_200_2011 "
                        "folder of the release)")
    try:
        with open(path, encoding="utf-8-sig") as handle:
            for number, text in enumerate(handle, start=1):
                fields = text.split(None, maxsplit)
                if fields and maxsplit >= 0:
                    fields[-1] = fields[-1].strip()  # the remainder keeps the line end
                if fields:
                    yield number, fields
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text ({exc})") from None


def _positive(text: str) -> int | None:
    value = int(text) if text.isdecimal() else 0
    return value if value > 0 else None


def _read_id_names(path: Path, kind: str, layout: str,
                   problems: FileProblems) -> dict[int, tuple[str, int]]:
    """The ``<id> <name>`` lines of ``path`` (classes.txt, attributes.txt): id -> (name, line).
    Malformed lines and repeated ids are recorded in ``problems``."""
    table: dict[int, tuple[str, int]] = {}
    for line, fields in _lines(path, 1):
        item_id = _positive(fields[0])
        if len(fields) != 2 or item_id is None:
            problems.add(line, f"expected '{layout}', got {' '.join(fields)!r}")
        elif item_id in table:
            problems.add(line, f"{kind} id {item_id} already on line {table[item_id][1]}")
        else:
            table[item_id] = fields[1], line
    return table


def _read_classes(path: Path) -> dict[int, str]:
    problems = FileProblems(path)
    entries = _read_id_names(path, "class", "<class_id> <class_name>", problems)
    classes = {class_id: name for class_id, (name, _) in entries.items()}
    if not classes and not problems.count:
        problems.add(None, "no classes")
    problems.check()
    return dict(sorted(classes.items()))


def _read_images(path: Path) -> dict[int, tuple[str, int]]:
    """image id -> (path under images/, line), in file order."""
    problems = FileProblems(path)
    images: dict[int, tuple[str, int]] = {}
    paths: dict[str, int] = {}
    for line, fields in _lines(path, 1):
        image_id = _positive(fields[0])
        rel = relative_path(fields[1]) if len(fields) == 2 else None
        if image_id is None or len(fields) != 2:
            problems.add(line, f"expected '<image_id> <path>', got {' '.join(fields)!r}")
        elif rel is None:
            problems.add(line, f"path {fields[1]!r} leaves the images/ folder")
        elif image_id in images:
            problems.add(line, f"image id {image_id} already on line {images[image_id][1]}")
        elif rel in paths:
            problems.add(line, f"path {rel} already on line {paths[rel]}")
        else:
            images[image_id], paths[rel] = (rel, line), line
    if not images and not problems.count:
        problems.add(None, "no images")
    problems.check()
    return images


def _read_image_classes(path: Path, images: dict[int, tuple[str, int]],
                        classes: dict[int, str], images_path: Path) -> dict[int, int]:
    """image id -> class id, for every image of images.txt."""
    problems = FileProblems(path)
    found: dict[int, int] = {}
    lines: dict[int, int] = {}
    mentioned: set[int] = set()  # images with any line, right or wrong
    for line, fields in _lines(path):
        image_id = _positive(fields[0])
        class_id = _positive(fields[1]) if len(fields) == 2 else None
        if image_id in images:
            mentioned.add(image_id)
        if len(fields) != 2 or image_id is None or class_id is None:
            problems.add(line, f"expected '<image_id> <class_id>', got {' '.join(fields)!r}")
        elif image_id not in images:
            problems.add(line, f"image id {image_id} is not in {images_path.name}")
        elif class_id not in classes:
            problems.add(line, f"class id {class_id} is not in classes.txt")
        elif image_id in found:
            problems.add(line, f"image id {image_id} already on line {lines[image_id]}")
        else:
            found[image_id], lines[image_id] = class_id, line
    for image_id, (rel, line) in images.items():
        if image_id not in mentioned:
            problems.add(None, f"image id {image_id} ({rel}, {images_path.name} line {line}) "
                               "has no class line")
    problems.check()
    return found


def _names_file(root: Path) -> Path | None:
    for place in ATTRIBUTE_NAMES:
        if (root / place).is_file():
            return root / place
    return None


def _read_attribute_names(path: Path) -> list[str]:
    problems = FileProblems(path)
    names: dict[int, str] = {}
    name_lines: dict[str, int] = {}
    entries = _read_id_names(path, "attribute", "<attribute_id> <name>", problems)
    for attribute_id, (name, line) in entries.items():  # in file order
        if name in name_lines:
            problems.add(line, f"attribute name {name!r} already on line {name_lines[name]}")
        else:
            names[attribute_id], name_lines[name] = name, line
    last = max(names, default=0)
    missing = sorted(set(range(1, last + 1)) - set(names))
    if missing:
        problems.add(None, f"attribute ids must run from 1 to {last} without gaps; missing "
                           f"{missing[:SHOWN]}")
    if not names and not problems.count:
        problems.add(None, "no attributes")
    problems.check()
    return [names[i] for i in range(1, len(names) + 1)]


def _read_attribute_labels(path: Path, images: dict[int, tuple[str, int]], num: int,
                           min_certainty: int) -> dict[int, bytearray]:
    """image id -> attribute codes (0, 1, _UNKNOWN, _NO_LINE) for images with any line."""
    problems = FileProblems(path)
    codes: dict[int, bytearray] = {}
    for line, fields in _lines(path):
        if len(fields) < 4:
            problems.add(line, "expected '<image_id> <attribute_id> <is_present> "
                               f"<certainty_id> <time>', got {' '.join(fields)!r}")
            continue
        image_id, attribute_id = _positive(fields[0]), _positive(fields[1])
        present, certainty = fields[2], fields[3]
        if image_id is None or image_id not in images:
            problems.add(line, f"image id {fields[0]!r} is not in images.txt")
        elif attribute_id is None or attribute_id > num:
            problems.add(line, f"attribute id {fields[1]!r} is not in 1..{num} (the ids of the "
                               "attribute names file)")
        elif present not in ("0", "1"):
            problems.add(line, f"is_present {present!r} is not 0 or 1")
        elif certainty not in ("1", "2", "3", "4"):
            problems.add(line, f"certainty_id {certainty!r} is not one of 1, 2, 3, 4")
        else:
            row = codes.get(image_id)
            if row is None:
                row = codes[image_id] = bytearray([_NO_LINE]) * num
            if row[attribute_id - 1] != _NO_LINE:
                problems.add(line, f"image {image_id} attribute {attribute_id} is repeated")
                continue
            level = int(certainty)
            known = level > 1 and level >= min_certainty
            row[attribute_id - 1] = int(present) if known else _UNKNOWN
    problems.check()
    return codes


class CubSource:
    """Records of a CUB-200-2011 folder (see the module docstring)."""

    def __init__(self, root: str | os.PathLike[str], attributes: bool = True,
                 min_certainty: int = 2, split: str = "classes") -> None:
        if not isinstance(attributes, bool):
            raise ConfigError(f"datasets.<name>.options.attributes: {attributes!r} is not true or false")
        if type(min_certainty) is not int or min_certainty not in CERTAINTIES:
            raise ConfigError(f"datasets.<name>.options.min_certainty: {min_certainty!r} is not one of "
                              + ", ".join(f"{k} ({v})" for k, v in CERTAINTIES.items()))
        if split not in SPLIT_CHOICES:
            raise ConfigError(f"datasets.<name>.options.split: {split!r} is not one of: "
                              f"{', '.join(SPLIT_CHOICES)}")
        self.root = Path(root)
        if not self.root.is_dir():
            raise DataError(f"cub source: root {self.root} is not a directory")
        self.use_attributes, self.min_certainty, self.split = attributes, min_certainty, split
        self.images_path = self.root / "images.txt"
        self.classes = _read_classes(self.root / "classes.txt")
        self.class_index = {class_id: i for i, class_id in enumerate(self.classes)}
        self.images = _read_images(self.images_path)
        self.image_classes = _read_image_classes(self.root / "image_class_labels.txt",
                                                 self.images, self.classes, self.images_path)
        self.attribute_names: list[str] = []
        self.attribute_codes: dict[int, bytearray] | None = None
        self.attribute_names_file: Path | None = None
        labels_path = self.root / ATTRIBUTE_LABELS
        if attributes and labels_path.is_file():
            names_path = _names_file(self.root)
            if names_path is None:
                places = ", ".join(str(self.root / p) for p in ATTRIBUTE_NAMES)
                raise DataError(f"cub source: {labels_path} exists but no attribute names file "
                                f"does (looked for {places}); copy the release's attributes.txt "
                                "into the root or set datasets.<name>.options.attributes: false")
            self.attribute_names_file = names_path
            self.attribute_names = _read_attribute_names(names_path)
            self.attribute_codes = _read_attribute_labels(
                labels_path, self.images, len(self.attribute_names), min_certainty)

    def _attributes(self, image_id: int) -> list[int | None] | None:
        assert self.attribute_codes is not None
        row = self.attribute_codes.get(image_id)
        return None if row is None else [_DECODE[code] for code in row]

    def records(self) -> Iterator[dict[str, Any]]:
        for image_id, (rel, line) in self.images.items():
            class_id = self.image_classes[image_id]
            record: dict[str, Any] = {
                "image_id": rel,
                "path": str(self.root / "images" / rel),
                "label": self.class_index[class_id],
                "domain": "photo",
                "_origin": f"{self.images_path} line {line}",
            }
            if self.split == "classes":
                record["split"] = "train" if class_id <= LAST_TRAIN_CLASS else "test"
            if self.attribute_codes is not None:
                record["attributes"] = self._attributes(image_id)
            yield record

    def info(self) -> ManifestInfo:
        return ManifestInfo(
            source="cub",
            scales=["fine"],
            class_names={"fine": list(self.classes.values())},
            attribute_names=list(self.attribute_names),
            options={
                "root": str(self.root),
                "attributes": self.use_attributes,
                "min_certainty": self.min_certainty,
                "split": self.split,
            },
        )


@SOURCES.register("cub")
def cub_source(
    *, root: str, attributes: bool = True, min_certainty: int = 2, split: str = "classes"
) -> CubSource:
    """CUB-200-2011 from the published ``CUB_200_2011`` folder ``root``.

    ``attributes``: read the 312 per-image attribute labels when the release has them.
    ``min_certainty`` (1-4, default 2 = "guessing"): an attribute label whose worker certainty
    is below it becomes None (unknown); "not visible" (1) is always unknown, so 1 and 2 behave
    alike. The default keeps every label a worker gave after seeing the part: a guess is still
    a judgement made from the image, and every label turned unknown is coverage lost to the
    attribute metrics; 3 keeps only "probably" and "definitely" for cleaner, sparser labels.
    ``split``: ``classes`` (classes 1-100 train, 101-200 test, the zero-shot protocol of deep
    metric learning) or ``none`` (no split column: the pipeline's own split applies).
    """
    return CubSource(root, attributes, min_certainty, split)
