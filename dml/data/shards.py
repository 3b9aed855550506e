"""Where a manifest's rows live on disk: one parquet file, or a directory of parquet shards
(``part-00000.parquet``, ...), and random access to any rows of either by row group.

A sharded manifest holds at most :data:`SHARD_ROWS` rows per shard in row groups of
:data:`ROW_GROUP_ROWS` rows: at the stored size of an image (a shorter side of 256 pixels,
about 20 KB) a shard is about 80 MB and a row group about 2.5 MB, the most one random image
read costs. Every shard carries the manifest's schema and metadata; shard ``k`` holds the rows
after those of shards ``0..k-1`` in order, so a row's position is the same in the sharded and
the single-file form of a manifest.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from dml.errors import DataError

#: Rows per shard (the last shard holds the rest).
SHARD_ROWS = 4096
#: Rows per parquet row group: the unit of a random read.
ROW_GROUP_ROWS = 128
#: Encoded row groups a reader keeps, by default (bytes).
DEFAULT_GROUP_CACHE_BYTES = 64 << 20
#: File names of the shards of a sharded parquet directory (a manifest, embeddings).
SHARD_PATTERN = "part-*.parquet"


def shard_name(index: int) -> str:
    """The file name of shard ``index`` (sorting by name sorts by index)."""
    return f"part-{index:05d}.parquet"


def shard_files(directory: Path, what: str) -> list[Path]:
    """The shards of ``directory`` (a sharded ``what``: manifest, embeddings) in row order;
    DataError naming it when it holds none."""
    shards = sorted(directory.glob(SHARD_PATTERN))
    if not shards:
        raise DataError(f"{directory} is a directory without {what} shards ({SHARD_PATTERN})")
    return shards


def manifest_files(path: str | os.PathLike[str]) -> list[Path]:
    """The parquet files of the manifest at ``path``, in row order: the file itself, or a
    directory's shards; DataError naming ``path`` when there is neither."""
    path = Path(path)
    if path.is_file():
        return [path]
    if path.is_dir():
        return shard_files(path, "manifest")
    raise DataError(f"manifest {path} does not exist")


def open_parquet(file: Path) -> pq.ParquetFile:
    """``file`` opened for reading; DataError naming it when it is not parquet."""
    try:
        return pq.ParquetFile(file)
    except (pa.ArrowInvalid, OSError) as exc:
        raise DataError(f"{file}: unreadable manifest ({exc})") from None


def write_shards(table: pa.Table, directory: Path, *, shard_rows: int = SHARD_ROWS,
                 row_group_rows: int = ROW_GROUP_ROWS) -> None:
    """Write ``table`` (schema and metadata kept) into the empty ``directory`` as shards of
    ``shard_rows`` rows in row groups of ``row_group_rows``; one empty shard for no rows."""
    for index, start in enumerate(range(0, max(table.num_rows, 1), shard_rows)):
        pq.write_table(table.slice(start, shard_rows), directory / shard_name(index),
                       row_group_size=row_group_rows)


class ManifestReader:
    """Columns of any rows of a manifest (single file or shards), read by row group.

    Only the row groups holding the asked rows are read, and the last ones read are kept up
    to ``cache_bytes`` (least recently used first out): memory stays bounded however many rows
    the manifest has. Files open on first use and again in a forked process (a DataLoader
    worker), which must not share the parent's readers.
    """

    def __init__(self, path: str | os.PathLike[str], columns: Sequence[str], *,
                 cache_bytes: int = DEFAULT_GROUP_CACHE_BYTES) -> None:
        self.path = Path(path)
        self.columns = list(columns)
        self.files = manifest_files(self.path)
        sizes: list[int] = []
        self._groups: list[tuple[int, int]] = []  # (file, row group) of each global group
        for number, file in enumerate(self.files):
            metadata = open_parquet(file).metadata
            for group in range(metadata.num_row_groups):
                sizes.append(metadata.row_group(group).num_rows)
                self._groups.append((number, group))
        #: First global row of each row group, then the number of rows.
        self.starts = np.concatenate([[0], np.cumsum(sizes, dtype=np.int64)])
        self._cache: OrderedDict[int, pa.Table] = OrderedDict()
        self._cache_bytes = int(cache_bytes)
        self._cached = 0
        self._open: dict[int, pq.ParquetFile] = {}
        self._pid = os.getpid()

    @property
    def num_rows(self) -> int:
        """Rows in the manifest."""
        return int(self.starts[-1])

    def read(self, positions: Sequence[int] | np.ndarray) -> pa.Table:
        """The reader's columns of the rows at ``positions`` (manifest row numbers), in that
        order; DataError naming the manifest for a position out of range."""
        positions = np.asarray(positions, dtype=np.int64).reshape(-1)
        if len(positions) and (positions.min() < 0 or positions.max() >= self.num_rows):
            bad = positions[(positions < 0) | (positions >= self.num_rows)][0]
            raise DataError(f"{self.path}: row {int(bad)} out of range for {self.num_rows} rows")
        groups = np.searchsorted(self.starts, positions, side="right") - 1
        parts, order = [], []
        for group in np.unique(groups):
            mine = np.flatnonzero(groups == group)
            local = positions[mine] - self.starts[group]
            parts.append(self._group(int(group)).take(pa.array(local, pa.int64())))
            order.append(mine)
        if not parts:
            return self._empty()
        table = pa.concat_tables(parts)
        return table.take(pa.array(np.argsort(np.concatenate(order), kind="stable"), pa.int64()))

    def _empty(self) -> pa.Table:
        schema = open_parquet(self.files[0]).schema_arrow
        return schema.empty_table().select(self.columns)

    def _group(self, group: int) -> pa.Table:
        """Row group ``group`` (global number), from the cache or the file."""
        table = self._cache.get(group)
        if table is not None:
            self._cache.move_to_end(group)
            return table
        number, local = self._groups[group]
        try:
            table = self._file(number).read_row_group(local, columns=self.columns)
        except (pa.ArrowInvalid, OSError) as exc:
            raise DataError(f"{self.files[number]}: unreadable row group {local} ({exc})") from None
        self._cache[group] = table
        self._cached += table.nbytes
        while self._cached > self._cache_bytes and len(self._cache) > 1:
            _, dropped = self._cache.popitem(last=False)
            self._cached -= dropped.nbytes
        return table

    def _file(self, number: int) -> pq.ParquetFile:
        if os.getpid() != self._pid:  # forked: open files of our own
            self._open, self._pid = {}, os.getpid()
        handle = self._open.get(number)
        if handle is None:
            if len(self._open) >= 16:  # at most a few shards open at once
                self._open.pop(next(iter(self._open)))
            handle = self._open[number] = open_parquet(self.files[number])
        return handle
