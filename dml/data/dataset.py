"""A torch Dataset over a manifest, selected by split, validation folds and domain."""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch
from PIL import Image
from torch.utils.data import Dataset

from dml.data.manifest import DOMAINS, SPLITS, manifest_columns, read_info, read_manifest
from dml.data.splits import align, read_splits
from dml.data.transforms import build_transforms
from dml.errors import ConfigError, DataError

#: Decoded images are cached up to this many bytes per dataset (per DataLoader worker).
DEFAULT_CACHE_BYTES = 1 << 30


def _as_tuple(value: str | Sequence[str] | None) -> tuple[str, ...] | None:
    if value is None:
        return None
    return (value,) if isinstance(value, str) else tuple(value)


class ManifestDataset(Dataset):
    """``(image [3, H, W] float32, fine label)`` for the selected rows of a manifest.

    Selection: rows of ``split`` (a name or several; from ``splits_path`` if given, else from
    the manifest's own ``split`` column), whose validation ``fold`` is in ``include_folds`` and
    not in ``exclude_folds`` (folds need ``splits_path``), and whose domain is in ``domains``
    (a manifest without a ``domain`` column counts as all photos). Rows keep manifest order.

    Only the needed columns are read. Images decode lazily (PIL, converted to RGB) and the
    uint8 arrays are cached up to ``cache_bytes``. A path-only manifest row is read from its
    ``path`` (relative paths from the working directory).

    Attributes: ``labels`` (int64 [N], fine ids of the whole manifest's numbering),
    ``image_ids`` (list[str]), ``domains`` (str array [N], per row), ``num_classes`` (fine
    classes of the whole manifest), ``info`` (ManifestInfo), ``table`` (pyarrow table of the
    selected rows' annotation columns plus split/role/fold when known; no image bytes).
    """

    def __init__(
        self,
        manifest_path: str | os.PathLike[str],
        splits_path: str | os.PathLike[str] | None = None,
        *,
        split: str | Sequence[str] | None = None,
        include_folds: Sequence[int] | None = None,
        exclude_folds: Sequence[int] | None = None,
        domains: Sequence[str] = ("photo",),
        image_size: int = 32,
        train: bool = False,
        cache_bytes: int = DEFAULT_CACHE_BYTES,
    ) -> None:
        self.manifest_path = Path(manifest_path)
        self.info = read_info(self.manifest_path)
        present = manifest_columns(self.manifest_path)
        if "label" not in present:
            raise DataError(
                f"{self.manifest_path}: no 'label' column (a multi-label scene manifest?); "
                "ManifestDataset serves single-label images"
            )
        wanted_splits = _as_tuple(split)
        wanted_domains = _as_tuple(domains) or ()
        for name in wanted_splits or ():
            if name not in SPLITS:
                raise ConfigError(f"split {name!r} is not one of: {', '.join(SPLITS)}")
        for name in wanted_domains:
            if name not in DOMAINS:
                raise ConfigError(f"domain {name!r} is not one of: {', '.join(DOMAINS)}")

        meta_columns = [
            c for c in present
            if c in ("image_id", "label", "domain", "split", "role", "instance_id")
            or c.startswith("label_")
        ]
        meta = read_manifest(self.manifest_path, columns=meta_columns)
        n = meta.num_rows

        split_values = role_values = fold_values = None
        if splits_path is not None:
            splits = read_splits(splits_path)
            rows = align(meta, splits, where=str(splits_path))
            split_values = np.asarray(splits.column("split").to_pylist(), dtype=object)[rows]
            role_values = np.asarray(splits.column("role").to_pylist(), dtype=object)[rows]
            fold_values = splits.column("fold").to_numpy(zero_copy_only=False)[rows]
        elif "split" in present:
            split_values = np.asarray(meta.column("split").to_pylist(), dtype=object)
            if "role" in present:
                role_values = np.asarray(meta.column("role").to_pylist(), dtype=object)

        keep = np.ones(n, dtype=bool)
        if wanted_splits is not None:
            if split_values is None:
                raise DataError(f"split={list(wanted_splits)} asked for, but "
                                f"{self.manifest_path} has no 'split' column and no splits "
                                "file was given")
            keep &= np.isin(split_values, wanted_splits)
        if include_folds is not None or exclude_folds is not None:
            if fold_values is None:
                raise DataError("include_folds/exclude_folds need a splits file (splits_path)")
            if include_folds is not None:
                keep &= np.isin(fold_values, np.asarray(list(include_folds), dtype=np.int64))
            if exclude_folds is not None:
                keep &= ~np.isin(fold_values, np.asarray(list(exclude_folds), dtype=np.int64))
        if "domain" in present:
            row_domains = np.asarray(meta.column("domain").to_pylist(), dtype=object)
        else:
            row_domains = np.full(n, "photo", dtype=object)
        keep &= np.isin(row_domains, wanted_domains)
        self._rows = np.flatnonzero(keep)

        selected = meta.take(pa.array(self._rows, pa.int64()))
        if split_values is not None and splits_path is not None:
            for name, values, kind in (("split", split_values, pa.string()),
                                       ("role", role_values, pa.string()),
                                       ("fold", fold_values, pa.int64())):
                column = pa.array(values[self._rows].tolist(), kind)
                if name in selected.column_names:
                    selected = selected.set_column(selected.column_names.index(name), name, column)
                else:
                    selected = selected.append_column(name, column)
        self.table = selected.replace_schema_metadata(None)
        self.image_ids: list[str] = selected.column("image_id").to_pylist()
        label_column = selected.column("label")
        if label_column.null_count:
            first = int(np.flatnonzero(label_column.is_null().to_numpy(zero_copy_only=False))[0])
            raise DataError(f"{self.manifest_path}: image_id {self.image_ids[first]!r} has a "
                            f"null label ({label_column.null_count} such row(s))")
        self.labels = label_column.to_numpy(zero_copy_only=False).astype(np.int64)
        self.domains = row_domains[self._rows].astype(str)
        self.num_classes = self.info.num_classes()
        self.image_size = image_size
        self.train = train
        self.transform = build_transforms(image_size, train=train)

        image_columns = [c for c in ("image", "path") if c in present]
        stored = read_manifest(self.manifest_path, columns=image_columns)
        take = pa.array(self._rows, pa.int64())
        self._bytes = (stored.column("image").take(take).combine_chunks()
                       if "image" in image_columns else None)
        self._paths = (stored.column("path").take(take).to_pylist()
                       if "path" in image_columns else None)
        self._cache: dict[int, np.ndarray] = {}
        self._cache_bytes = int(cache_bytes)
        self._cached = 0

    def __len__(self) -> int:
        return len(self._rows)

    def _encoded(self, index: int) -> bytes:
        data = self._bytes[index].as_py() if self._bytes is not None else None
        if data is None and self._paths is not None and self._paths[index] is not None:
            try:
                data = Path(self._paths[index]).read_bytes()
            except OSError as exc:
                raise DataError(f"{self.manifest_path}: image_id {self.image_ids[index]!r}: "
                                f"cannot read {self._paths[index]} ({exc})") from None
        if data is None:
            raise DataError(f"{self.manifest_path}: image_id {self.image_ids[index]!r} has "
                            "neither image bytes nor a path")
        return data

    def image_array(self, index: int) -> np.ndarray:
        """The decoded uint8 RGB array [H, W, 3] of item ``index`` (cached)."""
        cached = self._cache.get(index)
        if cached is not None:
            return cached
        try:
            with Image.open(io.BytesIO(self._encoded(index))) as image:
                array = np.array(image.convert("RGB"), dtype=np.uint8)
        except DataError:
            raise
        except Exception as exc:  # PIL raises many types for bad bytes
            raise DataError(f"{self.manifest_path}: image_id {self.image_ids[index]!r} does "
                            f"not decode ({type(exc).__name__}: {exc})") from None
        if self._cached + array.nbytes <= self._cache_bytes:
            self._cache[index] = array
            self._cached += array.nbytes
        return array

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} items")
        index = int(index) % len(self)
        return self.transform(self.image_array(index)), int(self.labels[index])


def load_images(dataset: ManifestDataset, indices: Sequence[int] | np.ndarray) -> torch.Tensor:
    """Stack the transformed images of ``indices`` into one tensor [K, 3, H, W]."""
    if len(indices) == 0:
        size = dataset.image_size
        return torch.empty(0, 3, size, size)
    return torch.stack([dataset[int(i)][0] for i in indices])
