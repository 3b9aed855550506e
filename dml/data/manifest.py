"""The parquet contract: one row per image, names and provenance in the file's metadata.

A manifest is one parquet file or a directory of parquet shards with the same schema and
metadata (:mod:`dml.data.shards`: what ingest writes); every reader here takes either.

Columns (absent annotations are absent columns, never fake values):

=================  =============================================  ==============================
column             type                                           meaning
=================  =============================================  ==============================
``image_id``       string, unique, non-null                       stable id of the image
``image``          binary                                         encoded image as stored for
                                                                  training (see below)
``path``           string                                         source file (provenance, or
                                                                  where to read when no bytes)
``source_width``   int64 >= 1                                     the source image's size in
``source_height``  int64 >= 1                                     pixels, upright (provenance)
``split``          string: train / val / test                     when the source defines it
``role``           string: query / gallery / both                 when the source defines it
``domain``         string: photo / sketch
``label``          int64 in 0..C-1 (null: see below)              finest class id
``label_<scale>``  int64 (null: see below)                        one per coarser scale
``attributes``     list<uint8> of 0/1, length A (row may be null  binary attributes
                   where the domain cannot show them, e.g. a
                   sketch; an entry may be null where that
                   attribute is unknown for the image, e.g.
                   CUB's "not visible")
``object_counts``  list<struct<label: int64, count: int64>>       objects per fine class
``instance_id``    string                                         links a photo and its sketch
=================  =============================================  ==============================

At least one of ``image`` / ``path`` is present and every row has one of them. Ingest stores
``image`` as :func:`dml.data.images.store_image` makes it: upright, opaque RGB or grey (any
transparency composited onto the dataset's ``images.background``), the shorter side at most
``images.short_side`` pixels; the original file's bytes when they already are all that. The
file's key-value metadata holds, under the key ``dml``, the JSON of :class:`ManifestInfo`: the
source name and options, the scales (fine -> coarse), class names per scale and attribute
names.
The finest scale's labels live in ``label``; scale ``s`` of ``scales[1:]`` in ``label_<s>``.
A label may be null only on a test row (``split`` = ``test``): the image is labelled at some
scales and unknown at the others, as in DyML's per-scale benchmarks (an image of the coarse
benchmark has only a coarse label). Every labelled row has a label at one scale at least, and
training rows have every scale's label.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from collections.abc import Iterable
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from dml.data.shards import ManifestReader, manifest_files, open_parquet, write_shards
from dml.errors import DataError
from dml.io import atomic_path

#: Key of the JSON blob in the parquet key-value metadata.
METADATA_KEY = b"dml"
FORMAT_VERSION = 1

SPLITS = ("train", "val", "test")
ROLES = ("query", "gallery", "both")
DOMAINS = ("photo", "sketch")

OBJECT_COUNT_TYPE = pa.struct([("label", pa.int64()), ("count", pa.int64())])

#: Canonical type of every fixed-name column; ``label_<scale>`` columns are int64.
COLUMN_TYPES: dict[str, pa.DataType] = {
    "image_id": pa.string(),
    "image": pa.binary(),
    "path": pa.string(),
    "source_width": pa.int64(),
    "source_height": pa.int64(),
    "split": pa.string(),
    "role": pa.string(),
    "domain": pa.string(),
    "label": pa.int64(),
    "attributes": pa.list_(pa.uint8()),
    "object_counts": pa.list_(OBJECT_COUNT_TYPE),
    "instance_id": pa.string(),
}

_CATEGORICAL = {"split": SPLITS, "role": ROLES, "domain": DOMAINS}
_SHOW_ROWS = 5  # how many offending rows an error names


@dataclass(frozen=True)
class ManifestInfo:
    """What a manifest's metadata says about its columns.

    ``scales`` runs fine -> coarse; ``class_names[scale][i]`` names class id ``i`` at that
    scale; ``attribute_names[j]`` names position ``j`` of the ``attributes`` lists;
    ``options`` are the source's options (JSON-serializable) for provenance.
    """

    source: str
    scales: list[str] = field(default_factory=lambda: ["fine"])
    class_names: dict[str, list[str]] = field(default_factory=dict)
    attribute_names: list[str] = field(default_factory=list)
    options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.scales:
            raise DataError(f"source {self.source!r}: a manifest needs at least one scale")
        if len(set(self.scales)) != len(self.scales):
            raise DataError(f"source {self.source!r}: repeated scale names in {self.scales}")
        if set(self.class_names) != set(self.scales):
            raise DataError(
                f"source {self.source!r}: class_names has scales {sorted(self.class_names)}, "
                f"expected exactly {self.scales}"
            )
        if len(set(self.attribute_names)) != len(self.attribute_names):
            raise DataError(f"source {self.source!r}: repeated attribute names")

    @property
    def fine(self) -> str:
        """Name of the finest scale (its labels are the ``label`` column)."""
        return self.scales[0]

    def label_column(self, scale: str) -> str:
        """Column of ``scale``'s labels: ``label`` for the finest, else ``label_<scale>``."""
        if scale not in self.scales:
            raise DataError(f"unknown scale {scale!r}; scales: {', '.join(self.scales)}")
        return "label" if scale == self.scales[0] else f"label_{scale}"

    def num_classes(self, scale: str | None = None) -> int:
        """Number of classes at ``scale`` (default: the finest)."""
        return len(self.class_names[scale or self.fine])

    def to_json(self) -> str:
        payload = {"version": FORMAT_VERSION, **asdict(self)}
        return json.dumps(payload, sort_keys=True, default=_json_default)

    @classmethod
    def from_json(cls, text: str | bytes, *, where: str = "manifest") -> ManifestInfo:
        try:
            payload = json.loads(text)
            version = payload.pop("version", FORMAT_VERSION)
            if version != FORMAT_VERSION:
                raise DataError(f"{where}: metadata version {version}, expected {FORMAT_VERSION}")
            return cls(
                source=str(payload["source"]),
                scales=list(payload["scales"]),
                class_names={k: list(v) for k, v in payload["class_names"].items()},
                attribute_names=list(payload.get("attribute_names", [])),
                options=dict(payload.get("options", {})),
            )
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            if isinstance(exc, DataError):
                raise
            raise DataError(f"{where}: unreadable 'dml' metadata ({exc})") from None


def _json_default(value: Any) -> Any:
    if isinstance(value, (tuple, set, frozenset)):
        return list(value)
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON-serializable")


def column_type(name: str) -> pa.DataType | None:
    """Canonical type of column ``name``, or None for a name the contract does not know."""
    if name in COLUMN_TYPES:
        return COLUMN_TYPES[name]
    if name.startswith("label_") and len(name) > len("label_"):
        return pa.int64()
    return None


def manifest_schema(columns: list[str], info: ManifestInfo | None = None) -> pa.Schema:
    """Canonical schema for ``columns`` (in that order), with ``info`` as metadata if given."""
    fields = []
    for name in columns:
        kind = column_type(name)
        if kind is None:
            raise DataError(f"unknown manifest column {name!r}; known: {_known_columns()}")
        fields.append(pa.field(name, kind))
    metadata = {METADATA_KEY: info.to_json().encode()} if info is not None else None
    return pa.schema(fields, metadata=metadata)


def _known_columns() -> str:
    return ", ".join([*COLUMN_TYPES, "label_<scale>"])


# ----------------------------------------------------------------------------- validation


def _rows_text(table: pa.Table, rows: np.ndarray) -> str:
    """'rows 3 (id 'a'), 7 (id 'b') ...' for the first offending rows."""
    rows = np.asarray(rows)
    shown = rows[:_SHOW_ROWS]
    ids = table.column("image_id").take(pa.array(shown, pa.int64())).to_pylist() if (
        "image_id" in table.column_names
    ) else [None] * len(shown)
    parts = [f"{int(r)} (image_id {i!r})" for r, i in zip(shown, ids)]
    more = f" and {len(rows) - len(shown)} more" if len(rows) > len(shown) else ""
    return f"{len(rows)} row(s): " + ", ".join(parts) + more


def _fail(path: Any, column: str, problem: str, table: pa.Table, rows: np.ndarray) -> DataError:
    return DataError(f"{path}: column {column!r}: {problem}; {_rows_text(table, rows)}")


def _null_rows(array: pa.ChunkedArray) -> np.ndarray:
    return np.flatnonzero(array.is_null().to_numpy(zero_copy_only=False))


def _check_type(path: Any, name: str, actual: pa.DataType) -> None:
    wanted = column_type(name)
    ok = {
        "string": pa.types.is_string(actual) or pa.types.is_large_string(actual),
        "binary": pa.types.is_binary(actual) or pa.types.is_large_binary(actual),
        "int": pa.types.is_integer(actual),
    }
    if wanted == pa.string():
        good = ok["string"]
    elif wanted == pa.binary():
        good = ok["binary"]
    elif wanted == pa.int64():
        good = ok["int"]
    elif name == "attributes":
        good = (pa.types.is_list(actual) or pa.types.is_large_list(actual)) and (
            pa.types.is_integer(actual.value_type) or pa.types.is_boolean(actual.value_type)
        )
    else:  # object_counts
        good = (
            (pa.types.is_list(actual) or pa.types.is_large_list(actual))
            and pa.types.is_struct(actual.value_type)
            and {actual.value_type.field(i).name for i in range(actual.value_type.num_fields)}
            == {"label", "count"}
        )
    if not good:
        raise DataError(f"{path}: column {name!r} has type {actual}, expected {wanted}")


def validate_manifest(table: pa.Table, info: ManifestInfo, path: Any = "manifest") -> None:
    """Raise DataError naming ``path``, the column and the first offending rows, if ``table``
    breaks the contract; return None when it holds.

    Checks: known columns with usable types; unique non-null ``image_id``; an image or a path
    on every row; source sizes of at least one pixel; split/role/domain values; labels in range for their scale, null only on
    test rows and never at every scale;
    attribute lists of the right length holding 0/1; object counts with known labels and
    positive counts.
    """
    _check_columns(table, info, path)
    _check_ids(table, path)
    _check_image_sources(table, path)
    _check_source_sizes(table, path)
    _check_categoricals(table, path)
    _check_labels(table, info, path)
    _check_attributes(table, info, path)
    _check_object_counts(table, info, path)


def _check_columns(table: pa.Table, info: ManifestInfo, path: Any) -> None:
    """Every column is one the contract knows, with a usable type; a ``label_<scale>`` column
    names a coarser scale of ``info``."""
    names = table.column_names
    unknown = [n for n in names if column_type(n) is None]
    if unknown:
        raise DataError(f"{path}: unknown column(s) {unknown}; known: {_known_columns()}")
    for name in names:
        _check_type(path, name, table.schema.field(name).type)
    extra_scales = [n[len("label_"):] for n in names if n.startswith("label_")]
    for scale in extra_scales:
        if scale not in info.scales[1:]:
            raise DataError(
                f"{path}: column 'label_{scale}' is not a coarser scale of this manifest; "
                f"scales: {info.scales} (the finest one is the 'label' column)"
            )


def _check_ids(table: pa.Table, path: Any) -> None:
    """``image_id`` is present, non-null and unique: rows are joined on it (splits, embeddings)."""
    if "image_id" not in table.column_names:
        raise DataError(f"{path}: missing column 'image_id'")
    ids = table.column("image_id")
    bad = _null_rows(ids)
    if len(bad):
        raise _fail(path, "image_id", "null ids", table, bad)
    if table.num_rows:
        ids_np = np.asarray(ids.to_numpy(zero_copy_only=False), dtype=object)
        _, first, counts = np.unique(ids_np, return_index=True, return_counts=True)
        if (counts > 1).any():
            dup_values = set(ids_np[first[counts > 1]])
            rows = np.flatnonzero([v in dup_values for v in ids_np])
            raise _fail(path, "image_id", "duplicate ids", table, rows)


def _check_image_sources(table: pa.Table, path: Any) -> None:
    """Every row has image bytes or a path to read them from."""
    names = table.column_names
    if "image" not in names and "path" not in names:
        raise DataError(f"{path}: needs an 'image' or a 'path' column")
    missing = np.ones(table.num_rows, dtype=bool)
    for name in ("image", "path"):
        if name in names:
            missing &= table.column(name).is_null().to_numpy(zero_copy_only=False)
    if missing.any():
        which = "/".join(n for n in ("image", "path") if n in names)
        raise _fail(path, which, "rows with neither image bytes nor a path", table,
                    np.flatnonzero(missing))


def _check_source_sizes(table: pa.Table, path: Any) -> None:
    """Source sizes, where given, are at least one pixel on every row."""
    for name in ("source_width", "source_height"):
        if name in table.column_names:
            column = table.column(name)
            small = column.fill_null(0).to_numpy(zero_copy_only=False) < 1
            if small.any():
                raise _fail(path, name, "null or below 1 pixel", table, np.flatnonzero(small))


def _check_categoricals(table: pa.Table, path: Any) -> None:
    """split / role / domain, where present, hold one of their values on every row (an absent
    annotation is an absent column, never a null)."""
    for name, allowed in _CATEGORICAL.items():
        if name not in table.column_names:
            continue
        column = table.column(name)
        bad = _null_rows(column)
        if len(bad):
            raise _fail(path, name, "null values (absent annotations must be absent columns)",
                        table, bad)
        valid = pc.is_in(column, value_set=pa.array(allowed, column.type)).to_numpy(
            zero_copy_only=False)
        if not valid.all():
            rows = np.flatnonzero(~valid)
            values = sorted(set(column.take(pa.array(rows[:50])).to_pylist()))
            raise _fail(path, name, f"unknown value(s) {values}; valid: {', '.join(allowed)}",
                        table, rows)


def _check_labels(table: pa.Table, info: ManifestInfo, path: Any) -> None:
    """Each scale's labels are in range and null only on test rows; no row lacks a label at
    every scale."""
    names = table.column_names
    test_rows = (np.asarray(table.column("split").to_pylist(), dtype=object) == "test"
                 if "split" in names else np.zeros(table.num_rows, dtype=bool))
    label_names = [info.label_column(s) for s in info.scales if info.label_column(s) in names]
    unknown_everywhere = np.ones(table.num_rows, dtype=bool)
    for scale in info.scales:
        if info.label_column(scale) in names:
            unknown_everywhere &= _check_scale_labels(table, info, scale, test_rows, path)
    bad = np.flatnonzero(unknown_everywhere) if label_names else np.zeros(0, dtype=np.int64)
    if len(bad):
        raise _fail(path, "/".join(label_names), "no label at any scale", table, bad)


def _check_scale_labels(table: pa.Table, info: ManifestInfo, scale: str, test_rows: np.ndarray,
                        path: Any) -> np.ndarray:
    """Check the label column of ``scale`` (null only where ``test_rows``, else in range);
    return its null mask."""
    name = info.label_column(scale)
    column = table.column(name)
    null = column.is_null().to_numpy(zero_copy_only=False)
    bad = np.flatnonzero(null & ~test_rows)
    if len(bad):
        raise _fail(path, name, "null labels (a label may be unknown only on a test row, "
                    "split 'test', where a benchmark labels one scale)", table, bad)
    values = column.fill_null(0).to_numpy(zero_copy_only=False).astype(np.int64, copy=False)
    num = info.num_classes(scale)
    bad = np.flatnonzero((values < 0) | (values >= num))
    if len(bad):
        raise _fail(path, name, f"label out of range [0, {num}) for scale {scale!r}",
                    table, bad)
    return null


def _check_attributes(table: pa.Table, info: ManifestInfo, path: Any) -> None:
    """Attribute lists, where present, are named in the metadata, have one entry per name
    (or are null) and hold 0/1 (or null)."""
    if "attributes" not in table.column_names:
        return
    column = table.column("attributes").combine_chunks()
    n_attr = len(info.attribute_names)
    if n_attr == 0:
        raise DataError(f"{path}: column 'attributes' present but no attribute names in "
                        "the metadata")
    lengths = pc.list_value_length(column).to_numpy(zero_copy_only=False)
    valid_rows = ~column.is_null().to_numpy(zero_copy_only=False)
    lengths = np.where(valid_rows, lengths, n_attr)
    bad = np.flatnonzero(lengths != n_attr)
    if len(bad):
        raise _fail(path, "attributes",
                    f"attribute length mismatch (expected {n_attr}: "
                    f"{', '.join(info.attribute_names)})", table, bad)
    flat = pc.list_flatten(column).fill_null(0).to_numpy(zero_copy_only=False)
    if len(flat):
        flat_bad = (flat != 0) & (flat != 1)
        if flat_bad.any():
            parents = pc.list_parent_indices(column).to_numpy(zero_copy_only=False)
            raise _fail(path, "attributes", "values other than 0/1", table,
                        np.unique(parents[flat_bad]))


def _check_object_counts(table: pa.Table, info: ManifestInfo, path: Any) -> None:
    """Object counts, where present, list at least one object per row, each of a known fine
    class and a count of at least 1."""
    if "object_counts" not in table.column_names:
        return
    column = table.column("object_counts").combine_chunks()
    empty = np.flatnonzero(pc.fill_null(pc.list_value_length(column), 0)
                           .to_numpy(zero_copy_only=False) == 0)
    if len(empty):
        raise _fail(path, "object_counts", "no object at all (an image without any label "
                    "has no similarity to anything; leave it out)", table, empty)
    flat = pc.list_flatten(column)
    if not len(flat):
        return
    parents = pc.list_parent_indices(column).to_numpy(zero_copy_only=False)
    labels = flat.field("label").to_numpy(zero_copy_only=False)
    counts = flat.field("count").to_numpy(zero_copy_only=False)
    labels = np.where(np.isnan(labels.astype(float)), -1, labels)
    counts = np.where(np.isnan(counts.astype(float)), 0, counts)
    num = info.num_classes()
    bad = (labels < 0) | (labels >= num)
    if bad.any():
        raise _fail(path, "object_counts", f"object label out of range [0, {num})",
                    table, np.unique(parents[bad]))
    bad = counts < 1
    if bad.any():
        raise _fail(path, "object_counts", "object counts below 1", table,
                    np.unique(parents[bad]))


# ----------------------------------------------------------------------------- read / write


def conform(table: pa.Table, path: Any = "manifest") -> pa.Table:
    """Cast every column of ``table`` to its canonical type (int32 labels -> int64, ...)."""
    try:
        return table.cast(manifest_schema(table.column_names), safe=True)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as exc:
        raise DataError(f"{path}: columns do not cast to the manifest schema ({exc})") from None


def with_info(table: pa.Table, info: ManifestInfo) -> pa.Table:
    """``table`` with ``info`` stored in its schema metadata (other metadata kept)."""
    metadata = dict(table.schema.metadata or {})
    metadata[METADATA_KEY] = info.to_json().encode()
    return table.replace_schema_metadata(metadata)


def write_manifest(table: pa.Table, path: str | os.PathLike[str], info: ManifestInfo, *,
                   shard_rows: int | None = None) -> None:
    """Validate ``table`` against ``info``, cast to the canonical schema, write atomically: one
    parquet file, or with ``shard_rows`` a directory of shards of that many rows
    (:mod:`dml.data.shards`)."""
    validate_manifest(table, info, path)
    table = with_info(conform(table, path), info)
    if shard_rows is None:
        with atomic_path(path) as tmp:
            pq.write_table(table, tmp)
        return
    with atomic_path(path, directory=True) as tmp:
        write_shards(table, tmp, shard_rows=shard_rows)


def attribute_matrix(column: pa.Array | pa.ChunkedArray, width: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``attributes`` column as ``(values float32 [N, A], known bool [N, A])``.

    A null row (a sketch) and a null entry (an attribute unknown for that image) are both
    "unknown": held as 0 in ``values`` and False in ``known``, to be masked out, never read
    as "absent".

    >>> values, known = attribute_matrix(pa.array([[1, None], None], pa.list_(pa.uint8())), 2)
    >>> values.tolist(), known.tolist()
    ([[1.0, 0.0], [0.0, 0.0]], [[True, False], [False, False]])
    """
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    rows = ~column.is_null().to_numpy(zero_copy_only=False)
    values = np.zeros((len(column), width), dtype=np.float32)
    known = np.zeros((len(column), width), dtype=bool)
    if rows.any():
        flat = pc.list_flatten(column.filter(pa.array(rows)))
        known[rows] = ~flat.is_null().to_numpy(zero_copy_only=False).reshape(-1, width)
        values[rows] = flat.fill_null(0).to_numpy(zero_copy_only=False).reshape(-1, width)
    return values, known


def read_manifest(path: str | os.PathLike[str], columns: list[str] | None = None) -> pa.Table:
    """Read the manifest at ``path``, a file or a directory of shards (only ``columns`` if
    given); metadata stays on the schema."""
    files = manifest_files(path)
    if columns is not None:
        present = manifest_columns(path)
        missing = [c for c in columns if c not in present]
        if missing:
            raise DataError(f"{path}: no column(s) {missing}; columns: {', '.join(present)}")
    tables = []
    for file in files:
        try:
            tables.append(pq.read_table(file, columns=columns))
        except (pa.ArrowInvalid, OSError) as exc:
            raise DataError(f"{file}: unreadable manifest ({exc})") from None
    try:
        return pa.concat_tables(tables)
    except pa.ArrowInvalid as exc:
        raise DataError(f"{path}: shards with different columns ({exc})") from None


def read_info(path: str | os.PathLike[str]) -> ManifestInfo:
    """The :class:`ManifestInfo` stored in the metadata of the manifest at ``path`` (a file or a
    directory of shards, each of which carries it)."""
    file = manifest_files(path)[0]
    raw = (open_parquet(file).schema_arrow.metadata or {}).get(METADATA_KEY)
    if raw is None:
        raise DataError(f"{file}: not a manifest (no 'dml' key in the parquet metadata)")
    return ManifestInfo.from_json(raw, where=str(path))


def manifest_columns(path: str | os.PathLike[str]) -> list[str]:
    """Column names of the manifest at ``path`` (reads only a footer)."""
    return open_parquet(manifest_files(path)[0]).schema_arrow.names


class ImageLookup:
    """The stored image bytes of a manifest's rows by image id, read on demand by row group:
    the ids are read once, so a page that shows one image at a time (the browse page) pays
    one row group per image, not the whole id column each time."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        ids = read_manifest(path, columns=["image_id"]).column("image_id").to_pylist()
        self._positions = {image_id: n for n, image_id in enumerate(ids)}
        self._reader = ManifestReader(path, ["image_id", "image"])

    def read(self, image_ids: Iterable[str]) -> dict[str, bytes]:
        """The bytes of ``image_ids`` (those present with bytes); unknown ids are left out."""
        positions = [self._positions[i] for i in dict.fromkeys(image_ids) if i in self._positions]
        table = self._reader.read(positions)
        return {i: b for i, b in zip(*table.to_pydict().values()) if b is not None}


def read_images(path: str | os.PathLike[str], image_ids: Iterable[str]) -> dict[str, bytes]:
    """The stored image bytes of the rows ``image_ids`` (those present with bytes), reading only
    their row groups: a grid of a million-image manifest reads a few megabytes."""
    return ImageLookup(path).read(image_ids)
