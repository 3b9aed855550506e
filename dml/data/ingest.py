"""Raw files -> a sharded manifest: every image decoded once, every bad file named.

The manifest is self-contained: files named by ``path`` are read into the ``image`` column
(``path`` stays as provenance), stored for training by :func:`dml.data.images.store_image`
(the shorter side at most ``short_side`` pixels, transparency composited onto a background,
the original bytes when nothing had to change) with the source's size in ``source_width`` and
``source_height``.

The source's listing (paths and annotations, no pixels) is made here; the images are read,
decoded, checked and re-encoded shard by shard (:data:`~dml.data.shards.SHARD_ROWS` records
each): as parallel Ray Data tasks when there are several shards (a local Ray instance on one
machine, every CPU of a cluster otherwise), in this process by a few threads when there is one.
Each task writes its shard into a temporary directory that replaces the manifest only when every
shard succeeded, so a failed or interrupted ingest leaves an existing manifest as it was, and the
bad files of every shard are named in one error.
"""

from __future__ import annotations

import functools
import itertools
import os
import pickle
import warnings
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import closing, contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image, UnidentifiedImageError

from dml.data.sources import DATASET_KEY, SOURCES
from dml.data.images import RGB, StoredImage, parse_colour, store_image
from dml.data.manifest import ManifestInfo, conform, manifest_schema, validate_manifest
from dml.data.shards import ROW_GROUP_ROWS, SHARD_ROWS, shard_name
from dml.errors import ConfigError, DataError
from dml.io import atomic_path, write_json_atomic

ON_BAD = ("fail", "skip")
_ROW_GROUP_BYTES = 16 << 20
_MAX_THREADS = 8  # each decodes one image at full size at a time
#: Images submitted and not yet written, per thread. Results come back in order, so one large
#: image at the head would idle the other threads if few could queue behind it; a queued image
#: holds nothing until a thread reads it, and a finished one only its stored (small) bytes.
_IN_FLIGHT = 16
_MIN_SHORT_SIDE = 8
#: Columns ingest adds to every record besides the source's own.
_ADDED = ("image", "source_width", "source_height")
_T = TypeVar("_T")
_R = TypeVar("_R")


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
    resized: int  # shorter side reduced to short_side
    flattened: int  # transparency composited onto the background
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


def prepare_image(data: bytes | None, path: str | os.PathLike[str] | None, *, short_side: int,
                  background: RGB) -> StoredImage | str:
    """What the manifest stores for an image given as bytes (else read from ``path``), or the
    reason it cannot: missing, empty, truncated, corrupt, not an image, too large."""
    if data is None:
        if path is None:
            return "neither image bytes nor a path"
        data, reason = read_image_bytes(path)
        if reason is not None:
            return reason
    if not data:
        return "empty file"
    try:
        stored = store_image(data, short_side=short_side, background=background)
    except UnidentifiedImageError:
        return "not an image (unrecognized format)"
    except Image.DecompressionBombError as exc:
        return f"too large to decode safely ({exc})"
    except (OSError, SyntaxError, ValueError, EOFError, IndexError, TypeError) as exc:
        text = str(exc) or type(exc).__name__
        if "truncated" in text.lower() or isinstance(exc, EOFError):
            return f"truncated ({text})"
        return f"corrupt ({type(exc).__name__}: {text})"
    if stored.width < 1 or stored.height < 1:
        return "image has no pixels"
    return stored


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
    fixed = ["image_id", "image", "path", "source_width", "source_height", "split", "role",
             "domain", "label"]
    scales = [f"label_{s}" for s in info.scales[1:]]
    tail = ["attributes", "object_counts", "instance_id"]
    keys = set(keys)
    ordered = [k for k in fixed + scales + tail if k in keys]
    return ordered + sorted(keys - set(ordered))  # unknown keys: the schema rejects them


def _threads() -> int:
    """Decoding threads: one per CPU this process may use, at most ``_MAX_THREADS``."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, min(cpus or 1, _MAX_THREADS))


@contextmanager
def _decoders(threads: int) -> Iterator[ThreadPoolExecutor | None]:
    """A pool of ``threads`` decoding threads (None for one: decode in this thread).

    ``warnings.catch_warnings`` swaps process-wide filters, so the threads' own overlapping
    blocks could leave PIL's warnings silenced (or shown) after ingest; one block around the
    whole pool restores the filters when it ends.
    """
    if threads < 2:
        yield None
        return
    with warnings.catch_warnings(), ThreadPoolExecutor(threads) as pool:
        warnings.simplefilter("ignore")
        yield pool


def _in_order(function: Callable[[_T], _R], items: Iterable[_T],
              pool: ThreadPoolExecutor | None, in_flight: int) -> Iterator[tuple[_T, _R]]:
    """``(item, function(item))`` in the order of ``items``, computed by ``pool`` (if any) with
    at most ``in_flight`` items submitted and not yet yielded: memory stays bounded however
    many items there are."""
    if pool is None:
        for item in items:
            yield item, function(item)
        return
    flight: deque[tuple[_T, Future[_R]]] = deque()
    for item in items:
        flight.append((item, pool.submit(function, item)))
        if len(flight) >= in_flight:
            done, future = flight.popleft()
            yield done, future.result()
    while flight:
        done, future = flight.popleft()
        yield done, future.result()


def _records(source: str,
             records: Iterable[dict[str, Any]]) -> Iterator[tuple[dict[str, Any], str | None]]:
    """``(record, origin)`` without the private ``_`` keys; every record has the first's keys."""
    expected: set[str] | None = None
    for number, record in enumerate(records):
        origin = record.pop("_origin", None)
        record = {k: v for k, v in record.items() if not k.startswith("_")}
        keys = set(record) | {"image"}
        if expected is None:
            expected = keys
        elif keys != expected:
            raise DataError(
                f"source {source!r}: record {number} ({record.get('image_id')!r}) has "
                f"keys {sorted(keys)}, the first record had {sorted(expected)}"
            )
        yield record, origin


def _file_name(record: dict[str, Any]) -> str:
    """How a bad file is named: its path when it was read from one, else its image_id."""
    if record.get("image") is None and record.get("path") is not None:
        return str(record["path"])
    return str(record.get("image_id"))


def _image_options(short_side: int, background: str, where: str) -> RGB:
    """Check ``short_side``; ``background`` as (r, g, b)."""
    if isinstance(short_side, bool) or not isinstance(short_side, int) or (
            short_side < _MIN_SHORT_SIDE):
        raise ConfigError(f"{where}.images.short_side: {short_side!r} is not a whole number of "
                          f"pixels >= {_MIN_SHORT_SIDE}")
    return parse_colour(background, f"{where}.images.background")


def _names_dataset_keys(function: Callable[..., _R]) -> Callable[..., _R]:
    """Sources name their options as ``datasets.<name>.options.<key>`` (:data:`DATASET_KEY`):
    they do not know the dataset's name. The call's ``where`` (``datasets.mine``) replaces it
    in the errors the decorated ``function`` raises."""
    @functools.wraps(function)
    def named(*args: Any, where: str = DATASET_KEY, **kwargs: Any) -> _R:
        try:
            return function(*args, where=where, **kwargs)
        except (ConfigError, DataError) as err:
            text = str(err)
            if where == DATASET_KEY or DATASET_KEY not in text:
                raise
            raise type(err)(text.replace(DATASET_KEY, where)) from None

    return named


@_names_dataset_keys
def ingest(
    source: str,
    options: dict[str, Any],
    out_path: str | os.PathLike[str],
    *,
    on_bad: str = "fail",
    short_side: int = 256,
    background: str = "white",
    where: str = DATASET_KEY,
    report_path: str | os.PathLike[str] | None = None,
    shard_rows: int = SHARD_ROWS,
) -> IngestReport:
    """Read ``source`` (a SOURCES name) built with ``options`` into the manifest ``out_path``.

    Every image is decoded once and stored with its shorter side at most ``short_side``
    pixels, transparency composited onto ``background`` (:func:`dml.data.images.store_image`).
    Bad files (missing, empty, truncated, corrupt, not an image, too large) are collected;
    with ``on_bad="fail"`` one DataError lists them all and nothing is written, with
    ``on_bad="skip"`` they are left out and listed in the report. The report (JSON: counts per
    split and domain, images resized and flattened, bad and ignored files) goes to
    ``report_path`` if given. The manifest is a directory of shards of ``shard_rows`` records
    (:mod:`dml.data.shards`), written by parallel tasks when there are several. ``where`` is the dataset's key in params.yaml (``datasets.mine``),
    named by configuration errors: the sources name their options as
    ``datasets.<name>.options.<key>`` (:data:`DATASET_KEY`), and ``where`` replaces that.
    """
    if on_bad not in ON_BAD:
        raise ConfigError(f"{where}.on_bad: {on_bad!r} is not one of: {', '.join(ON_BAD)}")
    colour = _image_options(short_side, background, where)
    built = SOURCES.build(source, where=f"{where}.options", **dict(options or {}))
    info = built.info()
    out_path = Path(out_path)
    records = _records(source, built.records())
    first = next(records, None)
    if first is None:
        raise DataError(f"source {source!r}: no readable images; nothing was written "
                        f"to {out_path}")
    columns = _column_order(set(first[0]) | set(_ADDED), info)
    job = _ShardJob(source=source, schema=manifest_schema(columns, info), short_side=short_side,
                    background=colour)
    chunks = _pickled_chunks(itertools.chain([first], records), shard_rows)
    with atomic_path(out_path, directory=True) as tmp:
        kept = _Kept.merge(_write_shards(job, chunks, tmp))
        _check_kept(kept, source, info, out_path, on_bad=on_bad, where=where)
    report = _report(kept, source, out_path, info, on_bad=on_bad,
                     ignored=list(getattr(built, "ignored", [])))
    if report_path is not None:
        write_json_atomic(report_path, report.to_dict())
    return report


def _prepare_record(item: tuple[dict[str, Any], str | None], *, short_side: int,
                    background: RGB) -> StoredImage | str:
    """:func:`prepare_image` of a ``(record, origin)`` pair: what a decoding thread runs."""
    record = item[0]
    return prepare_image(record.get("image"), record.get("path"), short_side=short_side,
                         background=background)


@dataclass
class _Kept:
    """What ingest kept of the records: the good images' columns but the bytes, as Arrow columns
    once a shard is done (for validation and the report's counts: a few bytes per image), the
    bad files, and the images resized / flattened."""

    meta: dict[str, list[Any]] = field(default_factory=dict)
    columns: pa.Table | None = None
    bad: list[BadFile] = field(default_factory=list)
    images: int = 0
    resized: int = 0
    flattened: int = 0

    def add(self, record: dict[str, Any], stored: StoredImage) -> None:
        """Put the stored image into ``record`` and count it."""
        record.update(image=stored.data, source_width=stored.width, source_height=stored.height)
        self.resized += stored.resized
        self.flattened += stored.flattened
        for column in self.meta:
            self.meta[column].append(record.get(column))
        self.images += 1

    def seal(self, schema: pa.Schema) -> _Kept:
        """The shard's columns as Arrow (``schema`` without the image), the lists let go."""
        self.columns = pa.Table.from_pydict(self.meta, schema=pa.schema([schema.field(c) for c in self.meta]))
        self.meta = {}
        return self

    @classmethod
    def merge(cls, parts: list[_Kept]) -> _Kept:
        """The shards' kept records, in shard order."""
        return cls(columns=pa.concat_tables([part.columns for part in parts]),
                   bad=[bad for part in parts for bad in part.bad],
                   images=sum(part.images for part in parts),
                   resized=sum(part.resized for part in parts),
                   flattened=sum(part.flattened for part in parts))


@dataclass(frozen=True)
class _ShardJob:
    """How every shard is made: the source's name (for errors), the manifest's schema (with
    its metadata) and how images are stored."""

    source: str
    schema: pa.Schema
    short_side: int
    background: RGB

    def write(self, number: int, items: list[tuple[dict[str, Any], str | None]], directory: Path,
              threads: int) -> _Kept:
        """Decode ``items`` in order (``threads`` threads) into the shard ``number`` of
        ``directory``, in row groups of :data:`~dml.data.shards.ROW_GROUP_ROWS`; the bad ones
        listed. A shard without a good image is not written."""
        kept = _Kept(meta={c: [] for c in self.schema.names if c != "image"})
        prepare = functools.partial(_prepare_record, short_side=self.short_side,
                                    background=self.background)
        with closing(_RowGroups(directory / shard_name(number), self.source, self.schema)) as groups, \
                _decoders(threads) as pool:
            for (record, origin), stored in _in_order(prepare, items, pool, _IN_FLIGHT * threads):
                if isinstance(stored, str):
                    kept.bad.append(BadFile(file=_file_name(record),
                                            image_id=str(record.get("image_id")),
                                            reason=stored, origin=origin))
                    continue
                kept.add(record, stored)
                groups.add(record, len(stored.data))
            groups.flush()
        return kept.seal(self.schema)


def _pickled_chunks(records: Iterable[tuple[dict[str, Any], str | None]], size: int) -> list[bytes]:
    """The listing in chunks of ``size`` records, each pickled as soon as it is full: the
    driver holds a few hundred bytes per image, not the records' Python objects."""
    chunks, chunk = [], []
    for item in records:
        chunk.append(item)
        if len(chunk) == size:
            chunks.append(pickle.dumps(chunk))
            chunk = []
    if chunk:
        chunks.append(pickle.dumps(chunk))
    return chunks


def _write_shards(job: _ShardJob, chunks: list[bytes], directory: Path) -> list[_Kept]:
    """Each chunk of records (pickled) written as one shard into ``directory``: by Ray Data
    tasks (one CPU each) when there are several, else in this process; what each kept, in
    chunk order."""
    if len(chunks) == 1:
        return [job.write(0, pickle.loads(chunks[0]), directory, _threads())]
    import ray
    from tqdm import tqdm

    from dml.pipeline.quiet import quiet_ray_data
    from dml.pipeline.ray_cluster import ray_session

    def write(row: dict[str, Any]) -> dict[str, Any]:
        try:  # a record that does not fit the schema: its one-line error, not a Ray traceback
            kept, error = job.write(row["shard"], pickle.loads(row["items"]), directory, threads=1), ""
        except DataError as exc:
            kept, error = None, str(exc)
        return {"shard": row["shard"], "kept": pickle.dumps(kept), "error": error}

    with ray_session():
        quiet_ray_data()
        items = [{"shard": number, "items": chunk} for number, chunk in enumerate(chunks)]
        dataset = ray.data.from_items(items, override_num_blocks=len(items)).map(write, num_cpus=1)
        del items
        done: dict[int, _Kept] = {}
        for row in tqdm(dataset.iter_rows(), total=len(chunks), desc="ingest", unit="shard",
                        leave=False, disable=None):
            if row["error"]:
                raise DataError(row["error"])
            done[row["shard"]] = pickle.loads(row["kept"])
    return [done[number] for number in range(len(chunks))]


class _RowGroups:
    """Records buffered into parquet row groups of the file ``path``: memory stays bounded by one
    group. The writer opens at the first group written; :meth:`close` closes it."""

    def __init__(self, path: Path, source: str, schema: pa.Schema) -> None:
        self.path, self.source, self.schema = path, source, schema
        self.writer: pq.ParquetWriter | None = None
        self.pending: list[dict[str, Any]] = []
        self.pending_bytes = 0

    def add(self, record: dict[str, Any], size: int) -> None:
        """Buffer ``record`` (``size`` bytes of image); write a full group."""
        self.pending.append(record)
        self.pending_bytes += size
        if len(self.pending) >= ROW_GROUP_ROWS or self.pending_bytes >= _ROW_GROUP_BYTES:
            self.flush()

    def flush(self) -> None:
        """Write the buffered records as one row group; DataError if one does not fit."""
        if not self.pending:
            return
        try:
            batch = pa.Table.from_pydict(
                {c: [r.get(c) for r in self.pending] for c in self.schema.names}, schema=self.schema
            )
        except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, OverflowError) as exc:
            raise DataError(f"source {self.source!r}: a record does not fit the manifest "
                            f"schema ({exc})") from None
        if self.writer is None:
            self.writer = pq.ParquetWriter(self.path, self.schema)
        self.writer.write_table(batch, row_group_size=ROW_GROUP_ROWS)
        self.pending, self.pending_bytes = [], 0

    def close(self) -> None:
        """Close the parquet file, if one was opened."""
        if self.writer is not None:
            self.writer.close()


def _check_kept(kept: _Kept, source: str, info: ManifestInfo, out_path: Path, *, on_bad: str,
                where: str) -> None:
    """Refuse, before the file appears, bad files under ``on_bad="fail"`` (all listed), no
    image at all, or columns (all but the bytes, already decoded) that break the manifest."""
    if kept.bad and on_bad == "fail":
        listing = "\n  ".join(b.describe() for b in kept.bad)
        raise DataError(
            f"source {source!r}: {len(kept.bad)} bad file(s); nothing was written to "
            f"{out_path} (set {where}.on_bad: skip to leave them out):\n  {listing}"
        )
    if kept.images == 0:
        raise DataError(f"source {source!r}: no readable images; nothing was written "
                        f"to {out_path}")
    check = kept.columns.append_column("image", pa.repeat(pa.scalar(b"", pa.binary()), kept.images))
    check = conform(check, out_path)
    validate_manifest(check, info, out_path)


def _report(kept: _Kept, source: str, out_path: Path, info: ManifestInfo, *, on_bad: str,
            ignored: list[str]) -> IngestReport:
    """The report of a finished ingest: counts per split, domain and role, classes per scale."""
    counts = {
        column: dict(sorted(Counter(kept.columns.column(column).to_pylist()).items()))
        for column in ("split", "domain", "role")
        if column in kept.columns.column_names
    }
    return IngestReport(
        source=source,
        manifest=str(out_path),
        images=kept.images,
        counts=counts,
        classes={s: info.num_classes(s) for s in info.scales},
        on_bad=on_bad,
        resized=kept.resized,
        flattened=kept.flattened,
        bad_files=kept.bad,
        ignored_files=ignored,
    )


def unwatched_paths(options: dict[str, Any]) -> list[str]:
    """The options, ``root`` aside, that name an existing file or folder outside ``root``:
    dvc.yaml watches a dataset's root alone, so an edit there would not re-run ingest."""
    root = options.get("root")
    if not isinstance(root, str) or not Path(root).is_dir():
        return []
    inside = Path(root).resolve()
    found = []
    for key, value in sorted(options.items()):
        if key == "root" or not isinstance(value, str) or not value or not Path(value).exists():
            continue
        if not Path(value).resolve().is_relative_to(inside):
            found.append(key)
    return found
