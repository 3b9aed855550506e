"""The images of a manifest's selected rows: encoded bytes (or files) read on demand, row group
by row group (:class:`~dml.data.shards.ManifestReader`), decoded to uint8 RGB arrays and cached
up to a byte budget: a process's memory does not grow with the number of images."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from dml.data.images import decode_rgb
from dml.data.rows import ManifestRows
from dml.data.shards import DEFAULT_GROUP_CACHE_BYTES, ManifestReader
from dml.errors import DataError

#: Decoded images are cached up to this many bytes per dataset (per DataLoader worker).
DEFAULT_CACHE_BYTES = 1 << 30


class ImageStore:
    """Decoded images of ``rows`` by position (0..N-1), cached up to ``cache_bytes``.

    Images decode lazily (to RGB, any transparency of a path-only row's file shown on white:
    :func:`dml.data.images.decode_rgb`). A path-only manifest row is read from its ``path``
    (relative paths from the working directory). :meth:`reserve` lets a caller keep other
    per-image data (the evaluation's resized images) within the same budget.
    """

    def __init__(self, rows: ManifestRows, cache_bytes: int = DEFAULT_CACHE_BYTES) -> None:
        self.rows = rows
        self._columns = [c for c in ("image", "path") if c in rows.present]
        self._reader: ManifestReader | None = None
        self._cache: dict[int, np.ndarray] = {}
        self._budget = int(cache_bytes)
        self._used = 0

    def reserve(self, nbytes: int) -> bool:
        """Count ``nbytes`` against the budget if they fit; whether they did."""
        if self._used + nbytes > self._budget:
            return False
        self._used += nbytes
        return True

    @property
    def reader(self) -> ManifestReader:
        """The manifest's image bytes (or paths) by row group, opened on first use: evaluation
        and statistics that only need annotations never pay for the pixels."""
        if self._reader is None:
            self._reader = ManifestReader(self.rows.manifest_path, self._columns,
                                          cache_bytes=min(DEFAULT_GROUP_CACHE_BYTES, self._budget))
        return self._reader

    def encoded(self, index: int) -> bytes:
        """The stored (encoded) image of row ``index``; DataError naming it when absent."""
        where = f"{self.rows.manifest_path}: image_id {self.rows.image_ids[index]!r}"
        row = self.reader.read([self.rows.positions[index]]).to_pylist()[0]
        data, path = row.get("image"), row.get("path")
        if data is None and path is not None:
            try:
                data = Path(path).read_bytes()
            except OSError as exc:
                raise DataError(f"{where}: cannot read {path} ({exc})") from None
        if data is None:
            raise DataError(f"{where} has neither image bytes nor a path")
        return data

    def image_array(self, index: int, *, keep: bool = True) -> np.ndarray:
        """The decoded uint8 RGB array [H, W, 3] of row ``index`` (cached if ``keep``)."""
        cached = self._cache.get(index)
        if cached is not None:
            return cached
        try:
            array = decode_rgb(self.encoded(index))
        except DataError:
            raise
        except Exception as exc:  # PIL raises many types for bad bytes
            raise DataError(f"{self.rows.manifest_path}: image_id {self.rows.image_ids[index]!r} does "
                            f"not decode ({type(exc).__name__}: {exc})") from None
        if keep and self.reserve(array.nbytes):
            self._cache[index] = array
        return array

    def preload(self) -> None:
        """Decode now, in this process, every image that fits the cache: DataLoader workers
        forked afterwards share these arrays instead of each decoding its own every epoch."""
        for index in range(len(self.rows)):
            if self._used >= self._budget:
                break
            self.image_array(index)
