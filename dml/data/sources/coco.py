"""MS-COCO instance annotations as published ("coco"), for multi-object retrieval.

Lin et al., "Microsoft COCO: Common Objects in Context" (ECCV 2014). Layout under ``root``
(the COCO folder):

- ``annotations/instances_train2017.json`` and ``annotations/instances_val2017.json``
  (option ``year: 2017``, the default), or ``annotations/instances_train2014.json`` and
  ``annotations/instances_val2014.json`` (``year: 2014``); the other annotation files
  (captions, keypoints, ...) are not read;
- the images in ``train2017/`` and ``val2017/`` (``train2014/``, ``val2014/``), named by each
  image entry's ``file_name``: ``000000000139.jpg``, in 2014 ``COCO_val2014_000000000139.jpg``.

Each JSON file is one object: ``info`` and ``licenses`` (not read), ``images`` (``id``,
``file_name``, ``width``, ``height``, ...), ``annotations`` (one per object instance: ``id``,
``image_id``, ``category_id``, ``iscrowd``, ``bbox``, ``area``, ``segmentation``) and
``categories`` (``id``, ``name``, ``supercategory``). Quirks:

- category ids are not contiguous (80 categories, ids 1-90 with gaps): a label is the rank of
  the category id, ``class_names["fine"]`` the category names in id order. Both files must
  list the same categories (ids and names), in any order;
- ``iscrowd: 1`` marks a crowd region, one annotation for many objects (a crowd of people):
  not counted unless ``count_crowd: true`` (then as one object);
- some images have no annotation at all (about 1% of train2017), a few only crowd ones. With
  ``unlabelled: skip`` (the default; the multi-label retrieval literature drops them) these
  images are left out and listed, with the reason, in ``source.ignored`` (the ingest report
  shows them); with ``unlabelled: fail`` they are an error naming them.

Records, in the files' order (train file first): ``image_id`` ``<image folder>/<file_name>``
(``val2017/000000000139.jpg``), ``path`` the file, ``domain`` ``photo``, split ``train`` for the
train file's images and ``test`` for the val file's (the val images are the retrieval test
set), ``object_counts`` one ``{"label", "count"}`` per category present in the image, sorted by
label (count: its counted instances). No ``label`` column (an image holds several classes) and
no role (the pipeline assigns roles).

Problems in a file (not JSON, a missing top-level key, an image without an integer ``id`` or a
``file_name``, a repeated image id or file name, a file name leaving the image folder, a
category without an integer id or a name, a repeated category id, an annotation whose
``image_id`` is not an image of the file, whose ``category_id`` is not a category or whose
``iscrowd`` is not 0 or 1) raise one DataError per file naming it and, the file being JSON
rather than lines, the entry: ``annotations[7] (id 1234): ...``. The reader does not look at
the images: ingest reports a missing or unreadable one with its JSON entry. A file is read
whole: the 2017 train file (448 MB) takes a few GB of memory while it is parsed.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from dml.data.sources import SOURCES
from dml.data.sources.problems import (UNLABELLED_SHOWN, FileProblems, check_unlabelled,
                                        leave_out_unlabelled, relative_path)
from dml.data.manifest import ManifestInfo
from dml.errors import ConfigError, DataError

#: (split, stem of the annotation file and image folder) in reading order.
SPLIT_FILES = (("train", "train"), ("test", "val"))
YEARS = (2014, 2017)
REQUIRED_KEYS = ("images", "annotations", "categories")

#: One image of a file: (origin, image_id, counted objects per category id, crowd annotations).
_Image = tuple[str, str, Counter[int], int]


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _entries(data: dict[str, Any], key: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """(``key[i] (id N)``, entry) per entry of the list ``data[key]``; non-objects read as {}."""
    for index, entry in enumerate(data[key]):
        entry = entry if isinstance(entry, dict) else {}
        ident = _int(entry.get("id"))
        yield f"{key}[{index}]" + (f" (id {ident})" if ident is not None else ""), entry


def _load(path: Path) -> dict[str, Any]:
    try:
        with path.open(encoding="utf-8-sig") as handle:
            data = json.load(handle)
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError
        raise DataError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise DataError(f"{path}: expected a JSON object with the keys "
                        f"{', '.join(REQUIRED_KEYS)}, got a {type(data).__name__}")
    for key in REQUIRED_KEYS:
        if not isinstance(data.get(key), list):
            problem = "no" if key not in data else "not a list under the"
            raise DataError(f"{path}: {problem} key {key!r} (a COCO instances file has the "
                            f"lists {', '.join(REQUIRED_KEYS)})")
    return data


def _read_file(path: Path, folder: str, count_crowd: bool) -> tuple[dict[int, str], list[_Image]]:
    """(category id -> name, the images) of one instances file; ``folder`` its image folder."""
    data = _load(path)
    problems = FileProblems(path)
    categories: dict[int, str] = {}
    for where, entry in _entries(data, "categories"):
        ident, name = _int(entry.get("id")), entry.get("name")
        if ident is None or not isinstance(name, str) or not name:
            problems.add(None, f"{where}: needs an integer 'id' and a 'name'")
        elif ident in categories:
            problems.add(None, f"{where}: category id {ident} is listed twice")
        else:
            categories[ident] = name
    images: dict[int, tuple[str, str]] = {}  # image id -> (where, file name)
    names: dict[str, str] = {}  # file name -> where
    for where, entry in _entries(data, "images"):
        ident, file_name = _int(entry.get("id")), entry.get("file_name")
        rel = relative_path(file_name) if isinstance(file_name, str) else None
        if ident is None or not isinstance(file_name, str):
            problems.add(None, f"{where}: needs an integer 'id' and a 'file_name'")
        elif rel is None:
            problems.add(None, f"{where}: file_name {file_name!r} leaves the image folder")
        elif ident in images:
            problems.add(None, f"{where}: image id {ident} is also {images[ident][0]}")
        elif rel in names:
            problems.add(None, f"{where}: file_name {rel} is also {names[rel]}")
        else:
            images[ident], names[rel] = (where, rel), where
    counts: dict[int, Counter[int]] = {ident: Counter() for ident in images}
    crowds: Counter[int] = Counter()
    for where, entry in _entries(data, "annotations"):
        image, category = entry.get("image_id"), entry.get("category_id")
        crowd = entry.get("iscrowd", 0)
        if _int(image) not in images:
            problems.add(None, f"{where}: image_id {image!r} is not an image of this file")
        elif _int(category) not in categories:
            problems.add(None, f"{where}: category_id {category!r} is not a category of this "
                               "file")
        elif _int(crowd) not in (0, 1):
            problems.add(None, f"{where}: iscrowd {crowd!r} is not 0 or 1")
        elif crowd and not count_crowd:
            crowds[image] += 1
        else:
            counts[image][category] += 1
    if not images and not problems.count:
        problems.add(None, "no images")
    problems.check()
    return categories, [(f"{path} {where}", f"{folder}/{rel}", counts[ident], crowds[ident])
                        for ident, (where, rel) in images.items()]


def _category_difference(a: Path, a_names: dict[int, str], b: Path,
                         b_names: dict[int, str]) -> DataError:
    def name(names: dict[int, str], ident: int) -> str:
        return repr(names[ident]) if ident in names else "absent"

    diffs = [f"id {i}: {name(a_names, i)} vs {name(b_names, i)}"
             for i in sorted(set(a_names) | set(b_names)) if a_names.get(i) != b_names.get(i)]
    more = f" and {len(diffs) - UNLABELLED_SHOWN} more" if len(diffs) > UNLABELLED_SHOWN else ""
    return DataError(f"coco source: {a} and {b} list different categories (they must be the "
                     f"same): {'; '.join(diffs[:UNLABELLED_SHOWN])}{more}")


class CocoSource:
    """Records of a COCO folder's instance annotations (see the module docstring)."""

    def __init__(self, root: str | os.PathLike[str], year: int = 2017,
                 count_crowd: bool = False, unlabelled: str = "skip") -> None:
        if _int(year) not in YEARS:
            raise ConfigError(f"datasets.<name>.options.year: {year!r} is not one of: "
                              f"{', '.join(map(str, YEARS))}")
        if not isinstance(count_crowd, bool):
            raise ConfigError(f"datasets.<name>.options.count_crowd: {count_crowd!r} is not true or false")
        check_unlabelled(unlabelled)
        self.root = Path(root)
        if not self.root.is_dir():
            raise DataError(f"coco source: root {self.root} is not a directory")
        self.year, self.count_crowd, self.unlabelled = year, count_crowd, unlabelled
        files = [(split, self.root / f"annotations/instances_{stem}{year}.json", f"{stem}{year}")
                 for split, stem in SPLIT_FILES]
        for _, path, folder in files:
            self._check_exists(path, folder)
        read = [(split, path, *_read_file(path, folder, count_crowd))
                for split, path, folder in files]
        (_, train, train_names, _), (_, val, val_names, _) = read
        if train_names != val_names:
            raise _category_difference(train, train_names, val, val_names)
        self.category_ids = sorted(train_names)
        self.class_names = [train_names[i] for i in self.category_ids]
        rank = {ident: label for label, ident in enumerate(self.category_ids)}

        # rows: (origin, image_id, split, object_counts)
        self.rows: list[tuple[str, str, str, list[dict[str, int]]]] = []
        unlabelled_images: list[tuple[str, str]] = []
        for split, _, _, images in read:
            for origin, image_id, counts, crowds in images:
                if not counts:
                    why = "only crowd annotations" if crowds else "no object annotation"
                    unlabelled_images.append((image_id, why))
                    continue
                objects = sorted((rank[c], n) for c, n in counts.items())
                self.rows.append((origin, image_id, split,
                                  [{"label": label, "count": n} for label, n in objects]))
        self.ignored = leave_out_unlabelled("coco", unlabelled_images, unlabelled)

    def _check_exists(self, path: Path, folder: str) -> None:
        if not path.is_file():
            other = YEARS[1 - YEARS.index(self.year)]
            hint = (f"; the {other} files are there: set datasets.<name>.options.year: {other}"
                    if (self.root / f"annotations/instances_val{other}.json").is_file() else "")
            raise DataError(f"coco source: {path} does not exist (root must be the COCO folder "
                            f"holding annotations/instances_{{train,val}}{self.year}.json and "
                            f"the image folders train{self.year}/, val{self.year}/){hint}")
        if not (self.root / folder).is_dir():
            raise DataError(f"coco source: image folder {self.root / folder} does not exist "
                            f"(unzip {folder}.zip into {self.root})")

    def records(self) -> Iterator[dict[str, Any]]:
        for origin, image_id, split, objects in self.rows:
            yield {
                "image_id": image_id,
                "path": str(self.root / image_id),
                "split": split,
                "domain": "photo",
                "object_counts": [dict(o) for o in objects],
                "_origin": origin,
            }

    def info(self) -> ManifestInfo:
        return ManifestInfo(
            source="coco",
            scales=["fine"],
            class_names={"fine": list(self.class_names)},
            options={"root": str(self.root), "year": self.year, "count_crowd": self.count_crowd,
                     "unlabelled": self.unlabelled},
        )


@SOURCES.register("coco")
def coco_source(*, root: str, year: int = 2017, count_crowd: bool = False,
                unlabelled: str = "skip") -> CocoSource:
    """MS-COCO instance annotations from the COCO folder ``root``: the train images for
    training and the val images as the retrieval test set, each image with its objects per
    category. ``year``: 2017 (default) or 2014 release; ``count_crowd``: count crowd regions
    as objects (default false); ``unlabelled``: ``skip`` (default) or ``fail`` on images
    without a counted object.
    """
    return CocoSource(root, year, count_crowd, unlabelled)
