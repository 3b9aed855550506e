"""DyML-Vehicle, DyML-Animal and DyML-Product as published ("dyml").

The Dynamic Metric Learning benchmarks (Sun et al., CVPR 2021) label every image at three
scales, fine -> middle -> coarse. Layout under ``root`` (one dataset folder, e.g.
``dyml_vehicle``):

- ``train/label.csv`` and the images ``train/imgs/<fname>``;
- DyML-Vehicle and DyML-Animal test: one benchmark per scale, ``bmk_<scale>/query.csv`` and
  ``bmk_<scale>/gallery.csv`` for ``<scale>`` in ``fine``, ``middle``, ``coarse``, with the
  images at ``bmk_<scale>/query/<fname>`` and ``bmk_<scale>/gallery/<fname>``. Each row has two
  fields: the file name and its label *at that benchmark's scale only*;
- DyML-Product test: ``mini-bmk_all_in_one/label.csv`` with all three scales, images at
  ``mini-bmk_all_in_one/imgs/<fname>``.

Fields are separated by ``", "``. Line 1 is a header: ``fname, coarse_id, middle_id, fine_id``
in a ``label.csv`` (the columns are fname, coarse, middle, fine), ``fname, labels`` in a query
or gallery file. The released files lack the newline after the header, so the header is glued
to the first row: ``fname, coarse_id, middle_id, fine_id0.jpg, 5, 2, 17`` is the header followed
by the row ``0.jpg, 5, 2, 17``, and ``fname, labels0.jpg, 12`` the header followed by
``0.jpg, 12``. The reader takes that row back out of line 1 (reading the file as a plain CSV
would lose it) and reads a clean file, with the header on a line of its own, alike. A label
column's header may be ``coarse_id``, ``middle_id``, ``fine_id``, ``labels`` or ``label``; in a
``label.csv`` the columns go by their header names when these name scales, by position
(coarse, middle, fine) otherwise. Whitespace around fields and blank lines (the files end
with one) are ignored. When a glued header could be split two ways (``label`` + ``s0.jpg`` or
``labels`` + ``0.jpg``) the longer header name wins, as the release spells ``labels``.

Records: ``image_id`` is the image's path relative to ``root`` (``train/imgs/0.jpg``,
``bmk_fine/query/0.jpg``), ``path`` the file, ``domain`` ``photo``; scales
``["fine", "middle", "coarse"]`` in ``label``, ``label_middle``, ``label_coarse``.

- ``train`` rows: split ``train``, role ``both``, all three labels;
- Vehicle/Animal benchmark rows: split ``test``, role ``query`` or ``gallery`` (from the file
  name), the label of the benchmark's scale and None (unknown) at the two other scales;
- Product benchmark rows: split ``test``, role ``both``, all three labels.

The release does not say whether test ids share the training numbering, so they are kept
apart: a training id ``5`` is the class ``"5"``, a test id ``3`` of a benchmark folder the
class ``"<folder>:3"`` (``"bmk_coarse:3"``, ``"mini-bmk_all_in_one:3"``); the query and
gallery of one benchmark share their classes. ``class_names[scale]`` lists the names seen at
that scale, training names first, each group in numeric order of the ids; a label is the
index of its name. With ``test: false`` the benchmarks are not read.

Problems in a file (missing or unknown header, wrong number of fields, a label that is not an
integer, an empty file name or one leaving the dataset folder, a file name listed twice)
raise one DataError per file naming it and the line numbers. The reader does not look at the
images: ingest reports a missing or unreadable one with its file and line. Whether every fine
class has one middle and one coarse parent is left to the preprocessing checks.
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

SCALES = ["fine", "middle", "coarse"]
TRAIN_LABELS = "train/label.csv"
TRAIN_IMAGES = "train/imgs"
PRODUCT_FOLDER = "mini-bmk_all_in_one"
#: Vehicle/Animal benchmark folders and their scale.
BENCHMARKS = {f"bmk_{scale}": scale for scale in SCALES}
#: Role of the images of a benchmark's query / gallery file.
BENCHMARK_FILES = {"query": "query", "gallery": "gallery"}
#: Header names of a label column -> the scale it names (None: generic, placed by position).
HEADER_NAMES: dict[str, str | None] = {"coarse_id": "coarse", "middle_id": "middle",
                                       "fine_id": "fine", "labels": None, "label": None}
#: Scales of a label.csv's columns when the header does not name them.
POSITIONAL = ("coarse", "middle", "fine")
_LONGEST_FIRST = sorted(HEADER_NAMES, key=len, reverse=True)


def _integer(text: str) -> int | None:
    digits = text[1:] if text[:1] in "+-" else text
    return int(text) if digits.isdecimal() and digits.isascii() else None


def _split_glued(token: str) -> tuple[str, str] | None:
    """(header name, first file name) of the glued field, or None if no name starts it."""
    for name in _LONGEST_FIRST:
        if token.lower().startswith(name):
            return name, token[len(name):].strip()
    return None


def _column_scales(path: Path, names: list[str], scale: str | None) -> list[str]:
    """Scale of each label column, from the header ``names`` (lowercase, all known)."""
    if scale is not None:  # a benchmark file: its one column is the benchmark's scale
        named = HEADER_NAMES[names[0]]
        if named not in (None, scale):
            raise DataError(f"{path}: line 1: the label column is named {names[0]!r} but the "
                            f"file belongs to the {scale!r} benchmark")
        return [scale]
    scales = [HEADER_NAMES[n] or POSITIONAL[i] for i, n in enumerate(names)]
    if sorted(scales) != sorted(POSITIONAL):
        raise DataError(f"{path}: line 1: the header {', '.join(names)!r} does not give one "
                        f"column per scale (coarse, middle, fine)")
    return scales


def _read_csv(path: Path, scale: str | None) -> tuple[list[str], list[tuple[int, str, list[int]]]]:
    """(scale of each label column, (line, file name, labels) per row) of a DyML csv.

    ``scale`` None: a ``label.csv`` with three label columns; else a query or gallery file
    whose one label column is at ``scale``.
    """
    width = 2 if scale is not None else 4  # fields per row: fname and the labels
    expected = "fname, labels" if scale is not None else "fname, coarse_id, middle_id, fine_id"
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text ({exc})") from None
    names, first_row = _read_header(path, lines, width, expected)
    scales = _column_scales(path, names, scale)
    body = [(n, [f.strip() for f in t.split(",")]) for n, t in enumerate(lines[1:], start=2)
            if t.strip()]
    if first_row is not None:
        body.insert(0, (1, first_row))
    return scales, _read_rows(path, body, width, expected)


def _read_header(path: Path, lines: list[str], width: int,
                 expected: str) -> tuple[list[str], list[str] | None]:
    """(label column names, fields of a row glued to line 1 or None); DataError for a bad header."""
    head = [f.strip() for f in lines[0].split(",")] if lines else []
    lowered = [f.lower() for f in head]
    first_row: list[str] | None = None
    if (len(head) in (width, 2 * width - 1) and lowered[0] == "fname"
            and all(n in HEADER_NAMES for n in lowered[1:width - 1])):
        if len(head) == width and lowered[-1] in HEADER_NAMES:
            names = lowered[1:]
        elif len(head) == 2 * width - 1 and (glued := _split_glued(head[width - 1])):
            names = [*lowered[1:width - 1], glued[0]]
            first_row = [glued[1], *head[width:]]
        else:
            names = []
    else:
        names = []
    if not names:
        shown = lines[0] if lines else ""
        raise DataError(f"{path}: line 1: expected the header {expected!r} (the release glues "
                        f"the first row to it), got {shown!r}")
    return names, first_row


def _read_rows(path: Path, body: list[tuple[int, list[str]]], width: int,
               expected: str) -> list[tuple[int, str, list[int]]]:
    """(line, file name, labels) of each row of ``body``; one DataError naming every bad line."""
    problems = FileProblems(path)
    rows: list[tuple[int, str, list[int]]] = []
    seen: dict[str, int] = {}
    for line, fields in body:
        parsed = _parse_row(fields, width, expected, seen)
        if isinstance(parsed, str):
            problems.add(line, parsed)
            continue
        rel, labels = parsed
        seen[rel] = line
        rows.append((line, rel, labels))
    if not body and not problems.count:
        problems.add(None, "no images")
    problems.check()
    return rows


def _parse_row(fields: list[str], width: int, expected: str,
               seen: dict[str, int]) -> tuple[str, list[int]] | str:
    """(file name, labels) of one row's fields, or the text of what is wrong with them."""
    if len(fields) != width:
        return f"{len(fields)} fields, expected {width} ({expected}), got {', '.join(fields)!r}"
    labels = [_integer(f) for f in fields[1:]]
    rel = relative_path(fields[0])
    if not fields[0]:
        return "empty file name"
    if rel is None:
        return f"file name {fields[0]!r} leaves the image folder"
    if None in labels:
        bad = [f for f, v in zip(fields[1:], labels) if v is None]
        return f"label(s) {bad} are not integers"
    if rel in seen:
        return f"file name {rel} already on line {seen[rel]}"
    return rel, [v for v in labels if v is not None]


def _name_key(name: str) -> tuple[str, int]:
    folder, _, number = name.rpartition(":")
    return folder, int(number)


class DymlSource:
    """Records of a DyML dataset folder (see the module docstring)."""

    def __init__(self, root: str | os.PathLike[str], test: bool = True) -> None:
        if not isinstance(test, bool):
            raise ConfigError(f"datasets.<name>.options.test: {test!r} is not true or false")
        self.root = Path(root)
        if not self.root.is_dir():
            raise DataError(f"dyml source: root {self.root} is not a directory")
        self.use_test = test
        # (csv path, image folder relative to root, split, role, benchmark folder or None,
        #  benchmark scale or None for a three-scale file)
        files: list[tuple[Path, str, str, str, str | None, str | None]] = []
        if (self.root / TRAIN_LABELS).is_file():
            files.append((self.root / TRAIN_LABELS, TRAIN_IMAGES, "train", "both", None, None))
        tests = self._test_files()
        if not files and not tests:
            wanted = [TRAIN_LABELS, f"{PRODUCT_FOLDER}/label.csv",
                      *(f"{b}/query.csv" for b in BENCHMARKS)]
            raise DataError(f"dyml source: {self.root} has none of {', '.join(wanted)}; root "
                            "must be a DyML dataset folder (e.g. dyml_vehicle) of the release")
        if not files and not test:
            raise DataError(f"dyml source: {self.root / TRAIN_LABELS} does not exist and "
                            "datasets.<name>.options.test is false: nothing to read")
        if test:
            files.extend(tests)

        # rows: (origin, image_id, split, role, {scale: class name})
        self.rows: list[tuple[str, str, str, str, dict[str, str]]] = []
        names: dict[str, set[str]] = {s: set() for s in SCALES}
        for path, folder, split, role, bench, scale in files:
            scales, rows = _read_csv(path, scale)
            for line, rel, labels in rows:
                named = {s: str(v) if bench is None else f"{bench}:{v}"
                         for s, v in zip(scales, labels)}
                for s, name in named.items():
                    names[s].add(name)
                self.rows.append((f"{path} line {line}", f"{folder}/{rel}", split, role, named))
        self.class_names = {s: sorted(names[s], key=_name_key) for s in SCALES}
        self.class_index = {s: {n: i for i, n in enumerate(self.class_names[s])}
                            for s in SCALES}

    def _test_files(self) -> list[tuple[Path, str, str, str, str | None, str | None]]:
        found: list[tuple[Path, str, str, str, str | None, str | None]] = []
        for bench, scale in BENCHMARKS.items():
            pair = {kind: self.root / bench / f"{kind}.csv" for kind in BENCHMARK_FILES}
            present = [kind for kind, p in pair.items() if p.is_file()]
            if len(present) == 1:
                have, lack = pair[present[0]], pair["gallery" if present[0] == "query" else
                                                    "query"]
                raise DataError(f"dyml source: {have} exists but {lack} does not; a benchmark "
                                "needs both its query and its gallery")
            for kind in present:
                found.append((pair[kind], f"{bench}/{kind}", "test", BENCHMARK_FILES[kind],
                              bench, scale))
        product = self.root / PRODUCT_FOLDER / "label.csv"
        if product.is_file():
            found.append((product, f"{PRODUCT_FOLDER}/imgs", "test", "both", PRODUCT_FOLDER,
                          None))
        return found

    def records(self) -> Iterator[dict[str, Any]]:
        for origin, image_id, split, role, named in self.rows:
            labels = {s: self.class_index[s][named[s]] if s in named else None for s in SCALES}
            yield {
                "image_id": image_id,
                "path": str(self.root / image_id),
                "split": split,
                "role": role,
                "domain": "photo",
                "label": labels["fine"],
                "label_middle": labels["middle"],
                "label_coarse": labels["coarse"],
                "_origin": origin,
            }

    def info(self) -> ManifestInfo:
        return ManifestInfo(
            source="dyml",
            scales=list(SCALES),
            class_names={s: list(self.class_names[s]) for s in SCALES},
            options={"root": str(self.root), "test": self.use_test},
        )


@SOURCES.register("dyml")
def dyml_source(*, root: str, test: bool = True) -> DymlSource:
    """DyML-Vehicle, DyML-Animal or DyML-Product from the published dataset folder ``root``:
    three scales (fine, middle, coarse), the ``train`` images for training and the test
    benchmarks (one query/gallery pair per scale for Vehicle and Animal, one three-scale
    set for Product) for evaluation. ``test``: read the benchmarks (default true).
    """
    return DymlSource(root, test)
