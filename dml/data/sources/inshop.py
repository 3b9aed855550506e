"""DeepFashion In-shop Clothes Retrieval Benchmark as published ("inshop").

Layout under ``root`` (the ``In-shop Clothes Retrieval Benchmark`` folder); fields are
separated by whitespace (the release pads columns with spaces), blank lines are skipped:

- ``Eval/list_eval_partition.txt`` (or ``root/list_eval_partition.txt``, as some copies have
  it): line 1 the number of images, line 2 the header
  ``image_name item_id evaluation_status``, then one line per image, e.g.
  ``img/WOMEN/Blouses_Shirts/id_00000001/02_1_front.jpg id_00000001 train``, with status
  ``train``, ``query`` or ``gallery`` (25,882 / 14,218 / 12,612 images in the release);
- images at the listed paths, relative to ``root`` (``img/`` from ``Img/img.zip``); a copy
  that keeps them under ``root/Img/img/...`` is read from there;
- attributes (release 1.3 and later), in ``Anno/`` or ``Anno/attributes/``:
  ``list_attr_cloth.txt`` (line 1 the number of attributes, line 2 the header starting with
  ``attribute_name``, then one name per line; a header ``attribute_name attribute_type`` means
  each line ends with an integer type, which is dropped) and ``list_attr_items.txt`` (line 1 the
  number of items, line 2 the header starting with ``item_id``, then
  ``<item_id> <label> ...`` with 1 = positive, -1 = negative, 0 = unknown). A line repeated
  word for word is read once; two different lines for one item are an error.

Records: ``image_id`` and ``path`` from the image name, ``label`` the rank of the item id among
the sorted item ids (``class_names``), ``domain`` ``photo``; ``train`` lines get split
``train`` and role ``both``, ``query`` / ``gallery`` lines split ``test`` and role ``query`` /
``gallery``. Evaluation then ranks the gallery for each query: the dataset's entry in
params.yaml says ``protocol: {name: query_gallery}``.

Attributes are per item: every image of an item gets its vector (1, 0, or None for unknown);
an item absent from ``list_attr_items.txt`` gets a null row. Without the two files (or with
``attributes: false``) there is no attributes column. Problems (bad count line, missing header,
wrong number of fields, unknown status or value, an image listed twice, a vector of the wrong
length) raise one DataError per file naming it and the line numbers.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from dml.data.sources import SOURCES
from dml.data.sources.problems import FileProblems, relative_path
from dml.data.manifest import ManifestInfo
from dml.errors import ConfigError, DataError

PARTITION_FILES = ("Eval/list_eval_partition.txt", "list_eval_partition.txt")
PARTITION_HEADER = ["image_name", "item_id", "evaluation_status"]
ATTRIBUTE_DIRS = ("Anno", "Anno/attributes")
ATTRIBUTE_NAMES, ATTRIBUTE_ITEMS = "list_attr_cloth.txt", "list_attr_items.txt"
#: evaluation status -> (split, role)
STATUSES = {"train": ("train", "both"), "query": ("test", "query"),
            "gallery": ("test", "gallery")}
_VALUES: dict[str, int | None] = {"1": 1, "-1": 0, "0": None}


def _counted(path: Path, header: str) -> tuple[int, list[str], list[tuple[int, str]]]:
    """(count of line 1, header fields of line 2, (line, text) of the non-blank lines after).

    Raises DataError naming the line when line 1 is not a count or line 2 does not start with
    ``header``.
    """
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text ({exc})") from None
    lines = text.splitlines()
    first = lines[0].strip() if lines else ""
    if not first.isdecimal():
        raise DataError(f"{path}: line 1: expected the number of entries, got {first!r}")
    fields = lines[1].split() if len(lines) > 1 else []
    if not fields or fields[0] != header:
        raise DataError(f"{path}: line 2: expected a header starting with {header!r}, got "
                        f"{' '.join(fields)!r}")
    body = [(n, t.strip()) for n, t in enumerate(lines[2:], start=3) if t.strip()]
    return int(first), fields, body


def _read_partition(path: Path) -> list[tuple[int, str, str, str]]:
    """(line, image name, item id, status) per image, in file order."""
    count, header, body = _counted(path, PARTITION_HEADER[0])
    if header != PARTITION_HEADER:
        raise DataError(f"{path}: line 2: expected the header {' '.join(PARTITION_HEADER)!r}, "
                        f"got {' '.join(header)!r}")
    problems = FileProblems(path)
    rows: list[tuple[int, str, str, str]] = []
    seen: dict[str, int] = {}
    for line, text in body:
        fields = text.split()
        rel = relative_path(fields[0]) if len(fields) == 3 else None
        if len(fields) != 3:
            problems.add(line, f"expected '<image_name> <item_id> <evaluation_status>', got "
                               f"{text!r}")
        elif fields[2] not in STATUSES:
            problems.add(line, f"evaluation status {fields[2]!r} is not one of "
                               f"{', '.join(STATUSES)}")
        elif rel is None:
            problems.add(line, f"image name {fields[0]!r} leaves the dataset folder")
        elif rel in seen:
            problems.add(line, f"image {rel} already listed on line {seen[rel]}")
        else:
            seen[rel] = line
            rows.append((line, rel, fields[1], fields[2]))
    if not problems.count and count != len(body):
        problems.add(1, f"says {count} images but the file lists {len(body)}")
    if not body and not problems.count:
        problems.add(None, "no images")
    problems.check()
    return rows


def _read_attribute_names(path: Path) -> list[str]:
    count, header, body = _counted(path, "attribute_name")
    typed = len(header) > 1  # "attribute_name attribute_type": each line ends with the type
    problems = FileProblems(path)
    names: list[str] = []
    seen: dict[str, int] = {}
    for line, text in body:
        fields = text.split()
        if typed and (len(fields) < 2 or not fields[-1].lstrip("-").isdecimal()):
            problems.add(line, f"expected '<attribute_name> <attribute_type>', got {text!r}")
            continue
        name = " ".join(fields[:-1] if typed else fields)
        if name in seen:
            problems.add(line, f"attribute {name!r} already on line {seen[name]}")
        else:
            seen[name] = line
            names.append(name)
    if not problems.count and count != len(body):
        problems.add(1, f"says {count} attributes but the file lists {len(body)}")
    if not body and not problems.count:
        problems.add(None, "no attributes")
    problems.check()
    return names


def _read_item_attributes(path: Path, num: int) -> dict[str, list[int | None]]:
    count, _, body = _counted(path, "item_id")
    problems = FileProblems(path)
    items: dict[str, list[int | None]] = {}
    lines: dict[str, int] = {}
    for line, text in body:
        item, *labels = text.split()
        if len(labels) != num:
            problems.add(line, f"{len(labels)} attribute labels, expected {num} (one per "
                               f"attribute of {ATTRIBUTE_NAMES})")
            continue
        bad = sorted({v for v in labels if v not in _VALUES})
        if bad:
            problems.add(line, f"attribute labels {bad} are not 1, -1 or 0")
            continue
        vector = [_VALUES[v] for v in labels]
        if item in items:
            if items[item] != vector:
                problems.add(line, f"item {item} already on line {lines[item]} with other labels")
            continue  # a repeated identical line is harmless
        items[item], lines[item] = vector, line
    if not problems.count and count not in (len(body), len(items)):
        problems.add(1, f"says {count} items but the file lists {len(items)}")
    problems.check()
    return items


class InShopSource:
    """Records of an In-shop Clothes Retrieval Benchmark folder (see the module docstring)."""

    def __init__(self, root: str | os.PathLike[str], attributes: bool = True) -> None:
        if not isinstance(attributes, bool):
            raise ConfigError(f"datasets.<name>.options.attributes: {attributes!r} is not true or false")
        self.root = Path(root)
        if not self.root.is_dir():
            raise DataError(f"inshop source: root {self.root} is not a directory")
        self.use_attributes = attributes
        found = [self.root / p for p in PARTITION_FILES if (self.root / p).is_file()]
        if not found:
            places = " or ".join(str(self.root / p) for p in PARTITION_FILES)
            raise DataError(f"inshop source: no partition file ({places}); root must be the "
                            "'In-shop Clothes Retrieval Benchmark' folder of the release")
        self.partition_path = found[0]
        self.rows = _read_partition(self.partition_path)
        self.items = sorted({item for _, _, item, _ in self.rows})
        self.item_index = {item: i for i, item in enumerate(self.items)}
        self.attribute_names: list[str] = []
        self.item_attributes: dict[str, list[int | None]] | None = None
        if attributes:
            self._read_attributes()
        self._bases: dict[str, Path] = {}

    def _read_attributes(self) -> None:
        for folder in ATTRIBUTE_DIRS:
            names_path = self.root / folder / ATTRIBUTE_NAMES
            items_path = self.root / folder / ATTRIBUTE_ITEMS
            if not (names_path.is_file() or items_path.is_file()):
                continue
            if not (names_path.is_file() and items_path.is_file()):
                have, lack = (names_path, items_path) if names_path.is_file() else (
                    items_path, names_path)
                raise DataError(f"inshop source: {have} exists but {lack} does not; restore it "
                                "or set datasets.<name>.options.attributes: false")
            self.attribute_names = _read_attribute_names(names_path)
            self.item_attributes = _read_item_attributes(items_path, len(self.attribute_names))
            return

    def _path(self, rel: str) -> Path:
        """Where image ``rel`` lies: under root, or under root/Img when only that has it."""
        top = rel.split("/", 1)[0]
        if top not in self._bases:
            nested = self.root / "Img"
            use_nested = not (self.root / top).exists() and (nested / top).exists()
            self._bases[top] = nested if use_nested else self.root
        return self._bases[top] / rel

    def records(self) -> Iterator[dict[str, Any]]:
        for line, rel, item, status in self.rows:
            split, role = STATUSES[status]
            record: dict[str, Any] = {
                "image_id": rel,
                "path": str(self._path(rel)),
                "split": split,
                "role": role,
                "domain": "photo",
                "label": self.item_index[item],
                "_origin": f"{self.partition_path} line {line}",
            }
            if self.item_attributes is not None:
                vector = self.item_attributes.get(item)
                record["attributes"] = None if vector is None else list(vector)
            yield record

    def info(self) -> ManifestInfo:
        return ManifestInfo(
            source="inshop",
            scales=["fine"],
            class_names={"fine": list(self.items)},
            attribute_names=list(self.attribute_names),
            options={"root": str(self.root), "attributes": self.use_attributes},
        )


@SOURCES.register("inshop")
def inshop_source(*, root: str, attributes: bool = True) -> InShopSource:
    """DeepFashion In-shop Clothes Retrieval from the published folder ``root``: items are the
    classes, train images for training, query against gallery for evaluation (use
    ``protocol: {name: query_gallery}``). ``attributes``: read the per-item attribute labels
    (``Anno/list_attr_cloth.txt`` and ``Anno/list_attr_items.txt``) when the release has them.
    """
    return InShopSource(root, attributes)
