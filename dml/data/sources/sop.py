"""Stanford Online Products as published ("sop").

Song et al., "Deep Metric Learning via Lifted Structured Feature Embedding" (CVPR 2016).
Layout under ``root`` (the ``Stanford_Online_Products`` folder):

- ``Ebay_train.txt`` and ``Ebay_test.txt``: line 1 the header
  ``image_id class_id super_class_id path``, then one line per image with the four fields
  separated by whitespace, e.g. ``1 1 1 bicycle_final/111085122871_0.JPG``. The training file
  holds classes 1-11318 (59,551 images), the test file classes 11319-22634 (60,502 images);
  ``image_id`` restarts at 1 in each file. Blank lines are skipped;
- ``Ebay_info.txt`` (all images in one list): not read;
- the images at the listed paths, relative to ``root``: one folder ``<super>_final`` per
  super class (bicycle, cabinet, chair, coffee_maker, fan, kettle, lamp, mug, sofa, stapler,
  table, toaster; super class ids 1-12).

Records: ``image_id`` the listed path, ``path`` the file, ``domain`` ``photo``, split ``train``
or ``test`` from the list file, role ``both`` (self-retrieval: every test image is a query
against all the others). Scales ``["fine", "coarse"]``: ``label`` the rank of the class id
among all class ids (class name: the id, e.g. ``"11319"``; ``class_id - 1`` for the release),
``label_coarse`` the rank of the super class id (class name: its folder without the
``_final`` suffix, e.g. ``"coffee_maker"``).

Problems (a missing or wrong header, a wrong number of fields, an id that is not a positive
integer, a path that is listed twice or leaves ``root`` or has no super class folder, a class
id in both files, a super class id whose paths disagree on the folder, two super class ids
sharing a folder) raise one DataError per file naming it and the line numbers. The reader does
not look at the images: ingest reports a missing or unreadable one with its file and line.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from dml.data.sources import SOURCES
from dml.data.sources.problems import FileProblems, relative_path
from dml.data.manifest import ManifestInfo
from dml.errors import DataError

#: (split, list file) in reading order.
LIST_FILES = (("train", "Ebay_train.txt"), ("test", "Ebay_test.txt"))
HEADER = ["image_id", "class_id", "super_class_id", "path"]
FOLDER_SUFFIX = "_final"


def _positive(text: str) -> int | None:
    value = int(text) if text.isdecimal() and text.isascii() else 0
    return value if value > 0 else None


class _Seen:
    """Where a path, class or super class was first met: (file name, line)."""

    def __init__(self) -> None:
        self.paths: dict[str, tuple[str, int]] = {}
        self.classes: dict[int, tuple[str, str, int]] = {}  # class id -> (split, file, line)
        self.supers: dict[int, tuple[str, str, int]] = {}  # super id -> (folder, file, line)
        self.folders: dict[str, int] = {}  # folder -> super id

    def clash(self, rel: str, class_id: int, super_id: int, split: str,
              name: str) -> str | None:
        """Why a well-formed line contradicts an earlier one (path, class, super id); else None."""
        folder = rel.split("/", 1)[0]
        if rel in self.paths:
            return f"path {rel} already on {_where(*self.paths[rel], name)}"
        first = self.classes.get(class_id)
        if first is not None and first[0] != split:
            return (f"class id {class_id} is also in the {first[0]} list "
                    f"({_where(*first[1:], name)})")
        known = self.supers.get(super_id)
        if known is not None and known[0] != folder:
            return (f"super class id {super_id} is in folder {folder!r} here but in "
                    f"{known[0]!r} on {_where(*known[1:], name)}")
        if known is None and self.folders.get(folder, super_id) != super_id:
            other = self.folders[folder]
            return (f"folder {folder!r} is super class id {other} on "
                    f"{_where(*self.supers[other][1:], name)}, here {super_id}")
        return None

    def add(self, rel: str, class_id: int, super_id: int, split: str, name: str,
            line: int) -> None:
        """Note where this path, and its class and super class if new, were first met."""
        folder = rel.split("/", 1)[0]
        self.paths[rel] = (name, line)
        self.classes.setdefault(class_id, (split, name, line))
        if super_id not in self.supers:
            self.supers[super_id] = (folder, name, line)
            self.folders[folder] = super_id


def _where(name: str, line: int, here: str) -> str:
    return f"line {line}" if name == here else f"{name} line {line}"


def _list_lines(path: Path) -> list[str]:
    """The lines of one list file; DataError when missing, not UTF-8 or without the header."""
    if not path.is_file():
        raise DataError(f"sop source: {path} does not exist (root must be the "
                        "Stanford_Online_Products folder of the release)")
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text ({exc})") from None
    header = lines[0].split() if lines else []
    if header != HEADER:
        raise DataError(f"{path}: line 1: expected the header {' '.join(HEADER)!r}, got "
                        f"{' '.join(header)!r}")
    return lines


def _parse_fields(fields: list[str]) -> tuple[str, int, int] | str:
    """(path, class id, super class id) of a line's fields, or the text of what is malformed."""
    if len(fields) != 4:
        return f"{len(fields)} fields, expected 4 ({' '.join(HEADER)}), got {' '.join(fields)!r}"
    ids = [_positive(f) for f in fields[:3]]
    rel = relative_path(fields[3])
    if None in ids:
        bad = [f"{h} {f!r}" for h, f, v in zip(HEADER, fields, ids) if v is None]
        return f"{', '.join(bad)}: not a positive integer"
    _, class_id, super_id = ids
    assert class_id is not None and super_id is not None
    if rel is None:
        return f"path {fields[3]!r} leaves the dataset folder"
    if "/" not in rel:
        return f"path {rel} is not in a '<super class>{FOLDER_SUFFIX}' folder"
    return rel, class_id, super_id


def _read_list(path: Path, split: str, seen: _Seen) -> list[tuple[int, str, int, int]]:
    """(line, relative path, class id, super class id) per image of one list file."""
    lines = _list_lines(path)
    name = path.name
    problems = FileProblems(path)
    rows: list[tuple[int, str, int, int]] = []
    body = [(n, t.split()) for n, t in enumerate(lines[1:], start=2) if t.strip()]
    for line, fields in body:
        parsed = _parse_fields(fields)
        if isinstance(parsed, str):
            problems.add(line, parsed)
            continue
        clash = seen.clash(*parsed, split, name)
        if clash is not None:
            problems.add(line, clash)
            continue
        seen.add(*parsed, split, name, line)
        rows.append((line, *parsed))
    if not body and not problems.count:
        problems.add(None, "no images")
    problems.check()
    return rows


def _coarse_name(folder: str) -> str:
    return folder[: -len(FOLDER_SUFFIX)] if folder.endswith(FOLDER_SUFFIX) else folder


class SopSource:
    """Records of a Stanford Online Products folder (see the module docstring)."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise DataError(f"sop source: root {self.root} is not a directory")
        seen = _Seen()
        # (split, list file, rows)
        self.lists = [(split, self.root / name, _read_list(self.root / name, split, seen))
                      for split, name in LIST_FILES]
        self.class_ids = sorted(seen.classes)
        self.super_ids = sorted(seen.supers)
        self.class_index = {c: i for i, c in enumerate(self.class_ids)}
        self.super_index = {s: i for i, s in enumerate(self.super_ids)}
        self.super_names = [_coarse_name(seen.supers[s][0]) for s in self.super_ids]

    def records(self) -> Iterator[dict[str, Any]]:
        for split, path, rows in self.lists:
            for line, rel, class_id, super_id in rows:
                yield {
                    "image_id": rel,
                    "path": str(self.root / rel),
                    "split": split,
                    "role": "both",
                    "domain": "photo",
                    "label": self.class_index[class_id],
                    "label_coarse": self.super_index[super_id],
                    "_origin": f"{path} line {line}",
                }

    def info(self) -> ManifestInfo:
        return ManifestInfo(
            source="sop",
            scales=["fine", "coarse"],
            class_names={"fine": [str(c) for c in self.class_ids],
                         "coarse": list(self.super_names)},
            options={"root": str(self.root)},
        )


@SOURCES.register("sop")
def sop_source(*, root: str) -> SopSource:
    """Stanford Online Products from the published ``Stanford_Online_Products`` folder
    ``root``: products are the fine classes and their 12 super classes the coarse ones; the
    training classes for training, the test classes for self-retrieval (role ``both``).
    """
    return SopSource(root)
