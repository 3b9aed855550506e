"""NUS-WIDE as published by NUS ("nuswide"), a multi-label retrieval benchmark.

Chua et al., "NUS-WIDE: A Real-World Web Image Database from National University of
Singapore" (CIVR 2009). Layout under ``root`` (the NUS-WIDE folder of the release):

- ``Concepts81.txt``: the 81 concept names, one per line (``airport``, ``animal``, ...); the
  line order is the concept order. Blank lines are skipped;
- ``ImageList/TrainImagelist.txt`` (161,789 images) and ``ImageList/TestImagelist.txt``
  (107,859): one image per line as a Windows path relative to the ``Flickr`` folder, e.g.
  ``actor\\0001_2124494179.jpg``. ``ImageList/Imagelist.txt`` (all 269,648 images, written
  ``C:\\ImageData\\Flickr\\actor\\0001_2124494179.jpg``) is not read: the two lists partition it;
- ``TrainTestLabels/Labels_<concept>_Train.txt`` and ``..._Test.txt``: one ``0`` or ``1`` per
  line, aligned line for line with the training / test list;
- the images at ``Flickr/<folder>/<file>``.

Quirks: paths use backslashes and may carry a drive and the ``ImageData\\Flickr\\`` prefix of
``Imagelist.txt`` (dropped: every path becomes ``Flickr/<folder>/<file>``); lines end with CRLF
and label lines with a space (``0 ``); trailing blank lines are dropped. Many downloads lack
part of the images: the reader does not look at them, ingest reports a missing one with its
list file and line (``datasets.<name>.on_bad: skip`` leaves them out).

Options: ``concepts`` keeps ``k`` concepts, the most frequent ones over the training and test
labels (ties: concept order; ``k`` at least the number listed, such as the default 81, keeps
them all; the common protocol keeps 21), or the concepts of a list of names (only their label
files are read). Many images have none of the kept concepts; the literature drops them:
``unlabelled: skip`` (default) lists them in ``source.ignored``, ``unlabelled: fail`` raises.

Records: ``image_id`` the path ``Flickr/<folder>/<file>``, ``path`` the file, ``domain``
``photo``, split ``train`` or ``test`` from the list, ``object_counts`` one ``{label, count: 1}``
per kept concept of the image (labels are ranks among the kept concepts); no ``label`` column
and no role. Class names: the kept concepts, in concept order.

Problems (a malformed or repeated path, an image in both lists, a label other than 0/1, a
label file whose length differs from its list, a repeated concept name) raise one DataError
per file naming it and the line numbers; missing files raise a DataError naming them.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from dml.data.sources import SOURCES
from dml.data.sources.problems import SHOWN, FileProblems, check_unlabelled, leave_out_unlabelled
from dml.data.manifest import ManifestInfo
from dml.errors import ConfigError, DataError

CONCEPTS_FILE = "Concepts81.txt"
#: (split, image list, part of the label file names) in reading order.
LISTS = (("train", "ImageList/TrainImagelist.txt", "Train"),
         ("test", "ImageList/TestImagelist.txt", "Test"))
LABELS = "TrainTestLabels/Labels_{concept}_{part}.txt"
IMAGES = "Flickr"
_LAYOUT = ("root must be the NUS-WIDE folder of the release, holding Concepts81.txt, "
           "ImageList/ and TrainTestLabels/")
_DRIVE = re.compile(r"^[A-Za-z]:")
_BITS = bytes.maketrans(b"01", b"\x00\x01")


def _lines(path: Path) -> list[str]:
    """The lines of ``path`` without their ends, trailing blank lines dropped."""
    if not path.is_file():
        raise DataError(f"nuswide source: {path} does not exist ({_LAYOUT})")
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text ({exc})") from None
    while lines and not lines[-1].strip():
        lines.pop()
    return lines


def image_path(text: str) -> str | None:
    """``Flickr/<folder>/<file>`` of a listed Windows path, or None if it is not one (like
    :func:`~dml.data.sources.problems.relative_path`, which is too slow for 270k lines)."""
    parts = [p for p in _DRIVE.sub("", text.strip()).replace("\\", "/").split("/")
             if p not in ("", ".")]
    if ".." in parts:
        return None
    for prefix in ("imagedata", "flickr"):
        if len(parts) > 2 and parts[0].lower() == prefix:
            parts = parts[1:]
    return f"{IMAGES}/{parts[0]}/{parts[1]}" if len(parts) == 2 else None


def _read_concepts(path: Path) -> list[str]:
    problems = FileProblems(path)
    names: dict[str, int] = {}
    for line, text in enumerate(_lines(path), start=1):
        name = text.strip()
        if not name:
            continue
        if name in names:
            problems.add(line, f"concept {name!r} already on line {names[name]}")
        elif re.search(r"[\s/\\]", name):
            problems.add(line, f"{name!r} is not a concept name (it cannot name a label file)")
        else:
            names[name] = line
    if not names and not problems.count:
        problems.add(None, "no concepts")
    problems.check()
    return list(names)


def _read_list(path: Path, seen: dict[str, tuple[str, int]]) -> list[tuple[int, str]]:
    """(line, image id) per line of an image list; ``seen``: image id -> (list name, line)."""
    problems = FileProblems(path)
    rows: list[tuple[int, str]] = []
    for line, text in enumerate(_lines(path), start=1):
        rel = image_path(text)
        if rel is None:
            problems.add(line, f"{text.strip()!r} is not a path '<folder>\\<file>' (optionally "
                               "after C:\\ImageData\\Flickr\\)")
        elif rel in seen:
            name, first = seen[rel]
            where = f"line {first}" if name == path.name else f"{name} line {first}"
            problems.add(line, f"image {rel} already on {where}")
        else:
            seen[rel] = (path.name, line)
            rows.append((line, rel))
    if not rows and not problems.count:
        problems.add(None, "no images")
    problems.check()
    return rows


def _read_labels(path: Path, images: int, list_name: str) -> bytes:
    """One 0/1 per image of the list ``list_name`` that has ``images`` lines."""
    values = list(map(str.strip, _lines(path)))
    problems = FileProblems(path)
    if not set(values) <= {"0", "1"}:
        for line, value in enumerate(values, start=1):
            if value not in ("0", "1"):
                problems.add(line, f"{value!r} is not 0 or 1")
    if len(values) > images:
        problems.add(images + 1, f"beyond the {images} images of {list_name} (the file has "
                                 f"{len(values)} lines; they are aligned line for line)")
    elif len(values) < images:
        problems.add(None, f"{len(values)} lines, but {list_name} lists {images} images (no "
                           f"label for its lines {len(values) + 1}-{images})")
    problems.check()
    return "".join(values).encode().translate(_BITS)


def _check_options(concepts: Any, unlabelled: Any) -> None:
    check_unlabelled(unlabelled)
    if isinstance(concepts, (list, tuple)):
        if not concepts or not all(isinstance(c, str) and c for c in concepts):
            raise ConfigError(f"datasets.<name>.options.concepts: {concepts!r} is not a non-empty list "
                              "of concept names")
        repeated = sorted({c for i, c in enumerate(concepts) if c in concepts[:i]})
        if repeated:
            raise ConfigError(f"datasets.<name>.options.concepts: {', '.join(repeated)} named twice")
    elif type(concepts) is not int or concepts < 1:
        raise ConfigError(f"datasets.<name>.options.concepts: {concepts!r} is not a positive number of "
                          "concepts or a list of concept names")


class NuswideSource:
    """Records of a NUS-WIDE folder (see the module docstring)."""

    def __init__(self, root: str | os.PathLike[str], concepts: int | list[str] = 81,
                 unlabelled: str = "skip") -> None:
        _check_options(concepts, unlabelled)
        self.root = Path(root)
        if not self.root.is_dir():
            raise DataError(f"nuswide source: root {self.root} is not a directory")
        self.concepts_option = list(concepts) if isinstance(concepts, (list, tuple)) else concepts
        self.unlabelled = unlabelled
        all_names = _read_concepts(self.root / CONCEPTS_FILE)
        if isinstance(concepts, int):
            wanted = all_names
        else:
            unknown = [c for c in concepts if c not in all_names]
            if unknown:
                raise ConfigError(f"datasets.<name>.options.concepts: unknown concept(s) "
                                  f"{', '.join(map(repr, unknown))}; {CONCEPTS_FILE} lists: "
                                  f"{', '.join(all_names)}")
            wanted = [c for c in all_names if c in concepts]
        seen: dict[str, tuple[str, int]] = {}
        lists = [(split, self.root / name, part, _read_list(self.root / name, seen))
                 for split, name, part in LISTS]
        files = {(c, part): self.root / LABELS.format(concept=c, part=part)
                 for _, _, part, _ in lists for c in wanted}
        missing = [f"{p} (concept {c!r})" for (c, _), p in files.items() if not p.is_file()]
        if missing:
            more = f" ... and {len(missing) - SHOWN} more" if len(missing) > SHOWN else ""
            raise DataError(f"nuswide source: {len(missing)} label file(s) missing: "
                            f"{', '.join(missing[:SHOWN])}{more} ({_LAYOUT})")
        labels = {(c, part): _read_labels(files[c, part], len(rows), path.name)
                  for _, path, part, rows in lists for c in wanted}
        if isinstance(concepts, int) and concepts < len(all_names):
            frequency = {c: sum(labels[c, part].count(1) for _, _, part, _ in lists)
                         for c in all_names}
            top = sorted(all_names, key=lambda c: (-frequency[c], all_names.index(c)))[:concepts]
            wanted = [c for c in all_names if c in top]
        self.class_names = wanted
        # rows: (origin, image id, split, kept labels)
        self.rows: list[tuple[str, str, str, list[int]]] = []
        unlabelled_ids: list[str] = []
        for split, path, part, rows in lists:
            columns = [labels[c, part] for c in wanted]
            for index, (line, rel) in enumerate(rows):
                kept = [k for k, column in enumerate(columns) if column[index]]
                if kept:
                    self.rows.append((f"{path} line {line}", rel, split, kept))
                else:
                    unlabelled_ids.append(rel)
        self.ignored = leave_out_unlabelled(
            "nuswide", [(rel, f"no concept among the {len(wanted)} kept") for rel in unlabelled_ids],
            unlabelled)

    def records(self) -> Iterator[dict[str, Any]]:
        for origin, image_id, split, kept in self.rows:
            yield {
                "image_id": image_id,
                "path": str(self.root / image_id),
                "split": split,
                "domain": "photo",
                "object_counts": [{"label": k, "count": 1} for k in kept],
                "_origin": origin,
            }

    def info(self) -> ManifestInfo:
        return ManifestInfo(
            source="nuswide",
            scales=["fine"],
            class_names={"fine": list(self.class_names)},
            options={"root": str(self.root), "concepts": self.concepts_option,
                     "unlabelled": self.unlabelled},
        )


@SOURCES.register("nuswide")
def nuswide_source(*, root: str, concepts: int | list[str] = 81,
                   unlabelled: str = "skip") -> NuswideSource:
    """NUS-WIDE from the published folder ``root``: multi-label images (``object_counts``, one
    per concept present) split by the release's training and test lists. ``concepts``: how
    many of the most frequent concepts to keep (default 81: all; the usual protocol keeps 21)
    or a list of concept names. ``unlabelled``: ``skip`` (default) or ``fail`` on images with
    none of the kept concepts.
    """
    return NuswideSource(root, concepts, unlabelled)
