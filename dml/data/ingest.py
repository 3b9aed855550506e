"""Raw files -> manifest.parquet: every image decoded once, every bad file named.

The manifest is self-contained: files named by ``path`` are read into the ``image`` column
(``path`` stays as provenance). Records stream into parquet row groups inside a temporary
file that replaces ``out_path`` only when everything succeeded, so memory stays bounded by one
row group and a failed ingest leaves an existing manifest as it was.
"""

from __future__ import annotations

import io
import os
import warnings
from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image, UnidentifiedImageError

from dml.data.formats import FORMATS
from dml.data.manifest import ManifestInfo, conform, manifest_schema, validate_manifest
from dml.errors import ConfigError, DataError
from dml.io import atomic_path, write_json_atomic

ON_BAD = ("fail", "skip")
_ROW_GROUP_ROWS = 4096
_ROW_GROUP_BYTES = 64 << 20


@dataclass
class BadFile:
    file: str  # the path, or the image_id for in-memory images
    image_id: str
    reason: str
    origin: str | None = None  # e.g. "annotations.csv line 7"

    def describe(self) -> str:
        where = f" ({self.origin})" if self.origin else ""
        return f"{self.file}{where}: {self.reason}"


@dataclass
class IngestReport:
    """What ingest wrote and what it left out; ``to_dict`` is the report JSON."""

    source: str
    manifest: str
    images: int
    counts: dict[str, dict[str, int]]
    classes: dict[str, int]
    on_bad: str
    bad_files: list[BadFile] = field(default_factory=list)
    ignored_files: list[str] = field(default_factory=list)

    @property
    def quarantined(self) -> int:
        """How many bad files were skipped."""
        return len(self.bad_files)

    def to_dict(self) -> dict[str, Any]:
        payload = asdict(self)
        payload["quarantined"] = self.quarantined
        return payload


def check_image(data: bytes) -> str | None:
    """None if ``data`` decodes as an image, else the reason it does not."""
    if not data:
        return "empty file"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(io.BytesIO(data)) as image:
                image.load()
                if image.width < 1 or image.height < 1:
                    return "image has no pixels"
    except UnidentifiedImageError:
        return "not an image (unrecognized format)"
    except Image.DecompressionBombError as exc:
        return f"too large to decode safely ({exc})"
    except (OSError, SyntaxError, ValueError, EOFError, IndexError, TypeError) as exc:
        text = str(exc) or type(exc).__name__
        if "truncated" in text.lower() or isinstance(exc, EOFError):
            return f"truncated ({text})"
        return f"corrupt ({type(exc).__name__}: {text})"
    return None


def read_image_bytes(path: str | os.PathLike[str]) -> tuple[bytes | None, str | None]:
    """(bytes, None) or (None, reason) for the file at ``path``."""
    try:
        return Path(path).read_bytes(), None
    except FileNotFoundError:
        return None, "missing (no such file)"
    except IsADirectoryError:
        return None, "not a file (a directory)"
    except OSError as exc:
        return None, f"unreadable ({exc.strerror or exc})"


def _column_order(keys: Iterable[str], info: ManifestInfo) -> list[str]:
    fixed = ["image_id", "image", "path", "split", "role", "domain", "label"]
    scales = [f"label_{s}" for s in info.scales[1:]]
    tail = ["attributes", "object_counts", "instance_id"]
    keys = set(keys)
    ordered = [k for k in fixed + scales + tail if k in keys]
    return ordered + sorted(keys - set(ordered))  # unknown keys: the schema rejects them


def ingest(
    source: str,
    options: dict[str, Any],
    out_path: str | os.PathLike[str],
    *,
    on_bad: str = "fail",
    report_path: str | os.PathLike[str] | None = None,
) -> IngestReport:
    """Read ``source`` (a FORMATS name) built with ``options`` into the manifest ``out_path``.

    Every image is decoded once. Bad files (missing, empty, truncated, corrupt, not an image)
    are collected; with ``on_bad="fail"`` one DataError lists them all and nothing is written,
    with ``on_bad="skip"`` they are left out and listed in the report. The report (JSON:
    counts per split and domain, bad and ignored files) goes to ``report_path`` if given.
    """
    if on_bad not in ON_BAD:
        raise ConfigError(f"ingest.on_bad: {on_bad!r} is not one of: {', '.join(ON_BAD)}")
    built = FORMATS.build(source, where="ingest.options", **dict(options or {}))
    info = built.info()
    out_path = Path(out_path)

    columns: list[str] | None = None
    schema: pa.Schema | None = None
    expected_keys: set[str] | None = None
    bad: list[BadFile] = []
    meta: dict[str, list[Any]] = {}
    pending: list[dict[str, Any]] = []
    pending_bytes = 0
    images = 0

    with atomic_path(out_path) as tmp:
        writer: pq.ParquetWriter | None = None

        def flush() -> None:
            nonlocal writer, pending, pending_bytes
            if not pending:
                return
            assert schema is not None and columns is not None
            try:
                batch = pa.Table.from_pydict(
                    {c: [r.get(c) for r in pending] for c in columns}, schema=schema
                )
            except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, OverflowError) as exc:
                raise DataError(f"source {source!r}: a record does not fit the manifest "
                                f"schema ({exc})") from None
            if writer is None:
                writer = pq.ParquetWriter(tmp, schema)
            writer.write_table(batch)
            pending, pending_bytes = [], 0

        try:
            for number, record in enumerate(built.records()):
                origin = record.pop("_origin", None)
                record = {k: v for k, v in record.items() if not k.startswith("_")}
                keys = set(record) | {"image"}
                if expected_keys is None:
                    expected_keys = keys
                    columns = _column_order(keys, info)
                    schema = manifest_schema(columns, info)
                    meta = {c: [] for c in columns if c != "image"}
                elif keys != expected_keys:
                    raise DataError(
                        f"source {source!r}: record {number} ({record.get('image_id')!r}) has "
                        f"keys {sorted(keys)}, the first record had {sorted(expected_keys)}"
                    )
                image_id = str(record.get("image_id"))
                data = record.get("image")
                name = image_id
                reason = None
                if data is None:
                    if record.get("path") is None:
                        reason = "neither image bytes nor a path"
                    else:
                        name = str(record["path"])
                        data, reason = read_image_bytes(record["path"])
                if reason is None:
                    reason = check_image(data)
                if reason is not None:
                    bad.append(BadFile(file=name, image_id=image_id, reason=reason, origin=origin))
                    continue
                record["image"] = data
                for column in meta:
                    meta[column].append(record.get(column))
                pending.append(record)
                pending_bytes += len(data)
                images += 1
                if len(pending) >= _ROW_GROUP_ROWS or pending_bytes >= _ROW_GROUP_BYTES:
                    if not (bad and on_bad == "fail"):  # no point writing what will be dropped
                        flush()
                    else:
                        pending, pending_bytes = [], 0

            if bad and on_bad == "fail":
                listing = "\n  ".join(b.describe() for b in bad)
                raise DataError(
                    f"source {source!r}: {len(bad)} bad file(s); nothing was written to "
                    f"{out_path} (set ingest.on_bad: skip to leave them out):\n  {listing}"
                )
            if images == 0:
                raise DataError(f"source {source!r}: no readable images; nothing was written "
                                f"to {out_path}")
            assert schema is not None
            # Validate every column but the bytes (already decoded) before the file appears.
            check = pa.Table.from_pydict(
                {**meta, "image": pa.repeat(pa.scalar(b"", pa.binary()), images)}
            )
            check = conform(check, out_path)
            validate_manifest(check, info, out_path)
            flush()
        finally:
            if writer is not None:
                writer.close()

    counts = {
        column: dict(sorted(Counter(meta[column]).items()))
        for column in ("split", "domain", "role")
        if column in meta
    }
    report = IngestReport(
        source=source,
        manifest=str(out_path),
        images=images,
        counts=counts,
        classes={s: info.num_classes(s) for s in info.scales},
        on_bad=on_bad,
        bad_files=bad,
        ignored_files=list(getattr(built, "ignored", [])),
    )
    if report_path is not None:
        write_json_atomic(report_path, report.to_dict())
    return report
