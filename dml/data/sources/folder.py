"""ImageFolder tree plus an optional annotations CSV ("folder").

Layout: ``root/<class_name>/<file>`` (files may sit in sub-folders of a class folder). Fine
labels are the class folder names, sorted, numbered 0..C-1. Files with an image extension
(``IMAGE_EXTENSIONS``, any case) are images; other files, hidden files and files directly
under ``root`` are listed in ``source.ignored`` (the ingest report shows them).

``annotations_csv`` (optional) has a ``path`` column (relative to ``root``, ``/``-separated)
and any of: ``split``, ``role``, ``domain``, ``label_<scale>`` (class *names* of a coarser
scale, in the order fine -> coarse given by the column order), ``attr_<name>`` (0/1). When the
CSV has any column besides ``path``, every image of the tree needs a row. Problems in the CSV
(missing ``path`` column, unknown columns, bad values, duplicate rows, rows outside class
folders, images without a row) raise one DataError naming the CSV and its line numbers. A row
naming a file that is not in the tree is yielded as a record whose file is missing, so that
ingest lists it, with its CSV line, among the bad files (``datasets.<name>.on_bad: skip``
leaves it out).

``folder_scales`` (optional) takes the scales from the folder levels instead: a list of scale
names, outermost level first, ending with ``fine``. ``[coarse, fine]`` reads
``root/<coarse>/<fine>/<file>``: a class at each level is its folder path from ``root``
(``animals/birds`` and ``signs/birds`` are two fine classes), so a user's own nested tree
needs no CSV for its hierarchy. Files above the class level are ignored (and listed); a CSV
may still add ``label_<scale>`` columns coarser than the folder levels, attributes, domains.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any, NamedTuple

from dml.data.sources import SOURCES
from dml.data.sources.problems import FileProblems
from dml.data.manifest import DOMAINS, ROLES, SPLITS, ManifestInfo
from dml.errors import ConfigError, DataError

IMAGE_EXTENSIONS = (
    ".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm", ".pbm",
)
_CATEGORICAL = {"split": SPLITS, "role": ROLES, "domain": DOMAINS}


def _is_image_name(name: str) -> bool:
    return name.lower().endswith(IMAGE_EXTENSIONS)


def scan_tree(root: Path, depth: int = 1) -> tuple[list[str], dict[str, list[str]], list[str]]:
    """(sorted class names, class -> sorted relative image paths, ignored relative paths).

    A class is a folder ``depth`` levels below ``root``, named by its relative path
    (``a/b`` at depth 2); files above that level are ignored. Broken symbolic links are
    listed like files: reading them fails later, in ingest. A linked folder is followed once.
    """
    classes: list[str] = []
    images: dict[str, list[str]] = {}
    ignored: list[str] = []
    for rel_class, path in _class_folders(root, depth, ignored):
        classes.append(rel_class)
        found: list[str] = []
        for folder, dirs, files in os.walk(path):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            sub = Path(folder).relative_to(path).as_posix()
            rel_folder = rel_class if sub == "." else f"{rel_class}/{sub}"
            for name in sorted(files):
                rel = f"{rel_folder}/{name}"
                if name.startswith("."):
                    continue
                (found if _is_image_name(name) else ignored).append(rel)
        images[rel_class] = sorted(found)
    return sorted(classes), images, sorted(ignored)


def _class_folders(root: Path, depth: int, ignored: list[str],
                   prefix: str = "", seen: frozenset[str] = frozenset()) -> list[tuple[str, str]]:
    """(relative path, path) of each folder ``depth`` levels below ``root``, in name order;
    files met above that level go to ``ignored``. A folder linked back into its own
    ancestors (a cycle) is not entered again."""
    found: list[tuple[str, str]] = []
    real = os.path.realpath(root)
    for entry in sorted(os.scandir(root), key=lambda e: e.name):
        if entry.name.startswith("."):
            continue
        rel = f"{prefix}{entry.name}"
        if not entry.is_dir():
            ignored.append(rel)
        elif depth == 1:
            found.append((rel, entry.path))
        elif os.path.realpath(entry.path) not in seen | {real}:
            found += _class_folders(Path(entry.path), depth - 1, ignored, f"{rel}/",
                                    seen | {real})
    return found


def _normalize(raw: str) -> str | None:
    """CSV path -> canonical relative posix path, or None if it leaves the tree."""
    text = raw.strip().replace("\\", "/")
    if not text or text.startswith("/"):
        return None
    parts = [p for p in PurePosixPath(text).parts if p not in (".", "")]
    if not parts or ".." in parts:
        return None
    return "/".join(parts)


class _Columns(NamedTuple):
    """The annotations CSV's header (stripped) and its label and attribute columns."""

    header: list[str]
    labels: list[str]  # label_<scale> columns, fine -> coarse
    attributes: list[str]  # attr_<name> columns
    scales: list[str]  # the scales the label columns name, in their order


def _csv_header(csv_path: Path, reader: csv.DictReader) -> list[str]:
    """The CSV's stripped column names (also set on ``reader``); DataError for a bad header."""
    header = [h.strip() for h in (reader.fieldnames or [])]
    if "path" not in header:
        raise DataError(f"{csv_path}: no 'path' column (header: {header or 'empty'})")
    bad_columns = [
        h for h in header
        if h != "path" and h not in _CATEGORICAL
        and not (h.startswith("label_") and len(h) > 6 and h != "label_fine")
        and not (h.startswith("attr_") and len(h) > 5)
    ]
    if bad_columns or len(set(header)) != len(header):
        raise DataError(
            f"{csv_path}: unknown or repeated column(s) {bad_columns or header}; allowed: "
            "path, split, role, domain, label_<scale> (coarser scales; fine labels are "
            "the folder names), attr_<name>"
        )
    reader.fieldnames = header
    return header


def _check_values(row: dict[str, str], line: int, columns: _Columns,
                  problems: FileProblems) -> None:
    """Add each bad split/role/domain, empty label or non-0/1 attribute to ``problems``."""
    for column, allowed in _CATEGORICAL.items():
        value = (row.get(column) or "").strip()
        if column in columns.header and value not in allowed:
            problems.add(line, f"{column} {value!r} is not one of {', '.join(allowed)}")
    for column in columns.labels:
        if not (row.get(column) or "").strip():
            problems.add(line, f"empty {column}")
    for column in columns.attributes:
        if (row.get(column) or "").strip() not in ("0", "1"):
            problems.add(line, f"{column} {row.get(column)!r} is not 0 or 1")


class FolderSource:
    """Records of an ImageFolder tree, annotated by an optional CSV (see module docstring)."""

    def __init__(self, root: str | os.PathLike[str], annotations_csv: str | None = None,
                 domain: str = "photo", folder_scales: list[str] | None = None) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise DataError(f"folder source: root {self.root} is not a directory")
        if domain not in DOMAINS:
            raise ConfigError(f"datasets.<name>.options.domain: {domain!r} is not one of: "
                              f"{', '.join(DOMAINS)}")
        self.domain = domain
        self.csv_path = Path(annotations_csv) if annotations_csv else None
        self.folder_scales = check_folder_scales(folder_scales)
        self.depth = len(self.folder_scales)
        self.classes, self.images, self.ignored = scan_tree(self.root, self.depth)
        if not self.classes:
            raise DataError(f"folder source: {self.root} has no class folders"
                            + (f" {self.depth} levels down" if self.depth > 1 else ""))
        self.class_index = {name: i for i, name in enumerate(self.classes)}
        # fine first, then the folder levels from the innermost out
        self.folder_levels = {scale: level for level, scale in enumerate(self.folder_scales)}
        self.scales = list(reversed(self.folder_scales))
        self.scale_names: dict[str, list[str]] = {
            scale: sorted({self._prefix(name, level) for name in self.classes})
            for scale, level in self.folder_levels.items()}
        self.attribute_names: list[str] = []
        self.annotation_columns: list[str] = []
        self.rows: dict[str, dict[str, Any]] = {}  # rel path -> annotations
        self.missing: list[tuple[str, int]] = []  # (rel path, csv line) of files not in the tree
        if self.csv_path is not None:
            self._read_csv()

    # -- CSV ----------------------------------------------------------------------------

    def _read_csv(self) -> None:
        """Check the annotations CSV whole (one DataError for all bad lines), then keep its rows."""
        csv_path = self.csv_path
        assert csv_path is not None
        if not csv_path.is_file():
            raise DataError(f"folder source: annotations_csv {csv_path} does not exist")
        with open(csv_path, newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            header = _csv_header(csv_path, reader)
            problems = FileProblems(csv_path)
            columns = self._csv_columns(csv_path, header)
            known = {rel for files in self.images.values() for rel in files}
            raw_rows, seen = self._check_rows(reader, columns, known, problems)
            if self.annotation_columns:
                for rel in sorted(known - set(seen)):
                    problems.add(None, f"{rel}: image has no row in the CSV")
            problems.check()
        self._store_rows(csv_path, columns, raw_rows)

    def _csv_columns(self, csv_path: Path, header: list[str]) -> _Columns:
        """The CSV's label and attribute columns; DataError for a scale the folders give."""
        label_cols = [h for h in header if h.startswith("label_")]
        attr_cols = [h for h in header if h.startswith("attr_")]
        self.annotation_columns = [h for h in header if h != "path"]
        clash = [h for h in label_cols if h[len("label_"):] in self.folder_levels]
        if clash:
            raise DataError(f"{csv_path}: column {clash[0]} names a scale that "
                            f"folder_scales already takes from the folders")
        csv_scales = [h[len("label_"):] for h in label_cols]
        self.scales = list(reversed(self.folder_scales)) + csv_scales
        self.attribute_names = [h[len("attr_"):] for h in attr_cols]
        return _Columns(header, label_cols, attr_cols, csv_scales)

    def _check_rows(self, reader: csv.DictReader, columns: _Columns, known: set[str],
                    problems: FileProblems,
                    ) -> tuple[list[tuple[int, str, dict[str, str]]], dict[str, int]]:
        """Usable rows as (line, path, row), and path -> line; absent files go to ``missing``."""
        seen: dict[str, int] = {}
        raw_rows: list[tuple[int, str, dict[str, str]]] = []
        for row in reader:
            line = reader.line_num
            rel = self._row_path(row, line, seen, problems)
            if rel is None:
                continue
            _check_values(row, line, columns, problems)
            raw_rows.append((line, rel, row))
            if rel not in known:
                self.missing.append((rel, line))
        return raw_rows, seen

    def _row_path(self, row: dict[str, str], line: int, seen: dict[str, int],
                  problems: FileProblems) -> str | None:
        """A row's relative image path (noted in ``seen``), or None once its problem is added."""
        raw = row.get("path") or ""
        rel = _normalize(raw)
        if rel is None:
            problems.add(line, f"path {raw!r} is empty or leaves the root")
            return None
        if rel in seen:
            problems.add(line, f"{rel} already annotated on line {seen[rel]}")
            return None
        seen[rel] = line
        if self._class_of(rel) not in self.class_index:
            problems.add(line, f"{rel} is not inside a class folder of {self.root}")
            return None
        return rel

    def _store_rows(self, csv_path: Path, columns: _Columns,
                    raw_rows: list[tuple[int, str, dict[str, str]]]) -> None:
        """Number the CSV scales' class names and keep each checked row's annotations by path."""
        header, label_cols, attr_cols, csv_scales = columns
        for column, scale in zip(label_cols, csv_scales):
            self.scale_names[scale] = sorted({row[column].strip() for _, _, row in raw_rows})
        index = {s: {n: i for i, n in enumerate(self.scale_names[s])} for s in csv_scales}
        for line, rel, row in raw_rows:
            annotations: dict[str, Any] = {"_origin": f"{csv_path} line {line}"}
            for column in ("split", "role", "domain"):
                if column in header:
                    annotations[column] = row[column].strip()
            for column, scale in zip(label_cols, csv_scales):
                annotations[column] = index[scale][row[column].strip()]
            if attr_cols:
                annotations["attributes"] = [int(row[c].strip()) for c in attr_cols]
            self.rows[rel] = annotations

    # -- Folder levels ------------------------------------------------------------------

    def _class_of(self, rel: str) -> str | None:
        """The class folder (relative path) an image path lies in; None above the classes."""
        parts = rel.split("/")
        return "/".join(parts[:self.depth]) if len(parts) > self.depth else None

    def _prefix(self, class_name: str, level: int) -> str:
        """A class's folder at ``level`` (0: the outermost), named by its path from the root."""
        return "/".join(class_name.split("/")[:level + 1])

    # -- Source -------------------------------------------------------------------------

    def _record(self, rel: str) -> dict[str, Any]:
        name = self._class_of(rel)
        assert name is not None
        record: dict[str, Any] = {
            "image_id": rel,
            "path": str(self.root / rel),
            "label": self.class_index[name],
            "domain": self.domain,
        }
        for scale, level in self.folder_levels.items():
            if scale != "fine":
                record[f"label_{scale}"] = self.scale_names[scale].index(self._prefix(name, level))
        record.update(self.rows.get(rel, {}))
        return record

    def records(self) -> Iterator[dict[str, Any]]:
        for name in self.classes:
            for rel in self.images[name]:
                yield self._record(rel)
        for rel, _ in self.missing:  # named by the CSV, absent from the tree: ingest reports them
            yield self._record(rel)

    def info(self) -> ManifestInfo:
        return ManifestInfo(
            source="folder",
            scales=list(self.scales),
            class_names={s: list(self.scale_names[s]) for s in self.scales},
            attribute_names=list(self.attribute_names),
            options={
                "root": str(self.root),
                "annotations_csv": str(self.csv_path) if self.csv_path else None,
                "domain": self.domain,
                "folder_scales": list(self.folder_scales) if self.depth > 1 else None,
            },
        )


def check_folder_scales(folder_scales: list[str] | None) -> list[str]:
    """``folder_scales`` as checked: distinct names, outermost first, ending with ``fine``."""
    if folder_scales is None:
        return ["fine"]
    key = "datasets.<name>.options.folder_scales"
    if (not isinstance(folder_scales, list) or not folder_scales
            or not all(isinstance(s, str) and s.isidentifier() for s in folder_scales)):
        raise ConfigError(f"{key}: a list of scale names, outermost folder level first, "
                          f"e.g. [coarse, fine]; got {folder_scales!r}")
    if folder_scales[-1] != "fine" or len(set(folder_scales)) != len(folder_scales):
        raise ConfigError(f"{key}: distinct names ending with fine (the class folders), "
                          f"e.g. [coarse, fine]; got {folder_scales!r}")
    return list(folder_scales)


@SOURCES.register("folder")
def folder_source(
    *, root: str, annotations_csv: str | None = None, domain: str = "photo",
    folder_scales: list[str] | None = None,
) -> FolderSource:
    """An ImageFolder tree ``root/<class>/<file>`` with optional per-image CSV annotations;
    ``domain`` is the domain of every image unless the CSV has a ``domain`` column;
    ``folder_scales`` takes coarser scales from the folder levels above the classes."""
    return FolderSource(root, annotations_csv, domain, folder_scales)
