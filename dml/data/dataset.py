"""A torch Dataset over a manifest, selected by split, validation folds and domain, whose
batches (:meth:`ManifestDataset.collate`) carry every annotation of the rows."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch
from torch.utils.data import Dataset

from dml.batch import DOMAIN_CODES, Batch
from dml.data.images import decode_rgb
from dml.data.manifest import (DOMAINS, SPLITS, attribute_matrix, manifest_columns, read_info,
                               read_manifest)
from dml.data.splits import align, read_splits, shared_gallery as shared_gallery_rows
from dml.data.transforms import TO_MODEL_INPUT, AugmentSpec, domain_augments, image_transforms
from dml.errors import ConfigError, DataError

#: Decoded images are cached up to this many bytes per dataset (per DataLoader worker).
DEFAULT_CACHE_BYTES = 1 << 30


def _as_tuple(value: str | Sequence[str] | None) -> tuple[str, ...] | None:
    if value is None:
        return None
    return (value,) if isinstance(value, str) else tuple(value)


class ManifestDataset(Dataset):
    """The selected rows of a manifest: items are ``(image [3, H, W] uint8, row index)`` and
    :meth:`collate` turns a list of items into a :class:`~dml.batch.Batch` with every
    annotation of those rows.

    Selection: rows of ``split`` (a name or several; from ``splits_path`` if given, else from
    the manifest's own ``split`` column), whose validation ``fold`` is in ``include_folds`` and
    not in ``exclude_folds`` (folds need ``splits_path``), and whose domain is in ``domains``
    (default: every domain; a manifest without a ``domain`` column counts as all photos).
    With ``shared_gallery``, also the training rows that are the gallery of every evaluation
    (role ``gallery``, whatever their fold; :func:`dml.data.splits.shared_gallery`): a
    validation fold's sketches are searched among them. Rows keep manifest order.

    Only the needed columns are read. Images decode lazily (to RGB, any transparency of a
    path-only row's file shown on white: :func:`dml.data.images.decode_rgb`) and the
    uint8 arrays are cached up to ``cache_bytes`` (without ``train``, the resized uint8 images,
    as evaluation transforms are deterministic). A path-only manifest row is read from its
    ``path`` (relative paths from the working directory).

    Annotations, one entry per selected row (absent in the manifest: None / empty):
    ``labels`` (int64 [N] fine ids), ``scale_labels`` (coarser scale -> int64 [N]), both -1
    where a test row is unlabelled at that scale (DyML's per-scale benchmarks),
    ``attributes`` (float32 [N, A], 0 where missing) with ``attribute_mask`` (bool [N, A]),
    ``counts`` (float32 [N, C] objects per fine class), ``domain_codes`` (int64 [N],
    ``DOMAIN_CODES``), ``instances`` (int64 [N], -1 when unknown). With ``relabel=True`` the
    labels of every scale are renumbered 0..C_s-1 over the selected rows' classes
    (``classes[scale]`` holds the original ids), as proxies and class heads need.

    Also: ``image_ids`` (list[str]), ``domains`` (str [N]), ``num_classes`` (fine classes of
    the whole manifest), ``info`` (ManifestInfo), ``table`` (pyarrow table of the selected
    rows' annotation columns plus split/role/fold when known; no image bytes).
    """

    def __init__(
        self,
        manifest_path: str | os.PathLike[str],
        splits_path: str | os.PathLike[str] | None = None,
        *,
        split: str | Sequence[str] | None = None,
        include_folds: Sequence[int] | None = None,
        exclude_folds: Sequence[int] | None = None,
        domains: Sequence[str] | None = None,
        image_size: int = 32,
        train: bool = False,
        relabel: bool = False,
        augment: AugmentSpec | Mapping[str, AugmentSpec] | None = None,
        cache_bytes: int = DEFAULT_CACHE_BYTES,
        shared_gallery: bool = False,
    ) -> None:
        self.manifest_path = Path(manifest_path)
        self.info = read_info(self.manifest_path)
        present = manifest_columns(self.manifest_path)
        wanted_splits = _as_tuple(split)
        wanted_domains = _as_tuple(domains) or DOMAINS
        for name in wanted_splits or ():
            if name not in SPLITS:
                raise ConfigError(f"split {name!r} is not one of: {', '.join(SPLITS)}")
        for name in wanted_domains:
            if name not in DOMAINS:
                raise ConfigError(f"domain {name!r} is not one of: {', '.join(DOMAINS)}")

        meta_columns = [
            c for c in present
            if c in ("image_id", "label", "domain", "split", "role", "instance_id", "attributes",
                     "object_counts")
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
        if shared_gallery:
            if split_values is None or role_values is None:
                raise DataError("shared_gallery needs a splits file (splits_path)")
            keep |= shared_gallery_rows(split_values, role_values)
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
        self.table = selected.drop_columns(
            [c for c in ("attributes", "object_counts") if c in selected.column_names]
        ).replace_schema_metadata(None)
        self.image_ids: list[str] = selected.column("image_id").to_pylist()
        self.domains = row_domains[self._rows].astype(str)
        self.domain_codes = np.asarray([DOMAIN_CODES[d] for d in self.domains], dtype=np.int64)
        self.num_classes = self.info.num_classes()
        self.image_size = image_size
        self.train = train
        recipes = domain_augments(augment, DOMAINS)
        self.transforms = {domain: image_transforms(image_size, train=train, augment=recipe)
                           for domain, recipe in recipes.items()}
        self._read_annotations(selected, relabel)

        self._image_columns = [c for c in ("image", "path") if c in present]
        self._bytes: pa.Array | None = None
        self._paths: list[str | None] | None = None
        self._stored_loaded = False
        self._cache: dict[int, np.ndarray] = {}
        self._ready: dict[int, torch.Tensor] = {}  # transformed images (evaluation only)
        self._cache_bytes = int(cache_bytes)
        self._cached = 0

    def _read_annotations(self, selected: pa.Table, relabel: bool) -> None:
        """Labels per scale, attributes with their mask, count vectors, instance ids."""
        names = selected.column_names
        self.labels: np.ndarray | None = None
        self.scale_labels: dict[str, np.ndarray] = {}
        self.classes: dict[str, np.ndarray] = {}
        for scale in self.info.scales:
            column = self.info.label_column(scale)
            if column not in names:
                continue
            values = selected.column(column)
            known = ~values.is_null().to_numpy(zero_copy_only=False)
            if self.train and not known.all():
                first = int(np.flatnonzero(~known)[0])
                raise DataError(f"{self.manifest_path}: image_id {self.image_ids[first]!r} has no "
                                f"{column} ({int((~known).sum())} such row(s)); training needs "
                                "every scale's label")
            labels = values.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64)
            if relabel:
                self.classes[scale], inverse = np.unique(labels[known], return_inverse=True)
                labels[known] = inverse
            if scale == self.info.fine:
                self.labels = labels
            else:
                self.scale_labels[scale] = labels

        self.attributes: np.ndarray | None = None
        self.attribute_mask: np.ndarray | None = None
        if "attributes" in names:
            width = len(self.info.attribute_names)
            column = selected.column("attributes").combine_chunks()
            self.attributes, self.attribute_mask = attribute_matrix(column, width)

        self.counts: np.ndarray | None = None
        if "object_counts" in names:
            column = selected.column("object_counts").combine_chunks()
            parents = pc.list_parent_indices(column).to_numpy(zero_copy_only=False)
            flat = pc.list_flatten(column)
            self.counts = np.zeros((selected.num_rows, self.num_classes), dtype=np.float32)
            np.add.at(self.counts, (parents, flat.field("label").to_numpy(zero_copy_only=False)),
                      flat.field("count").to_numpy(zero_copy_only=False))

        self.instances = np.full(selected.num_rows, -1, dtype=np.int64)
        if "instance_id" in names:
            ids = np.asarray(selected.column("instance_id").to_pylist(), dtype=object)
            known = ids != None  # noqa: E711 - elementwise comparison with None
            if known.any():
                self.instances[known] = np.unique(ids[known].astype(str), return_inverse=True)[1]

    def require_labels(self, who: str) -> np.ndarray:
        """The fine labels; a clear error naming ``who`` when the rows have none (scenes)."""
        if self.labels is None:
            raise DataError(f"{who} needs a fine class label per image, but {self.manifest_path} "
                            "has no 'label' column (multi-label scenes have object counts)")
        return self.labels

    def context_sizes(self) -> dict[str, Any]:
        """The data's part of a ``BuildContext``: class counts per scale, the fine -> coarser
        hierarchy, attribute and count-vector lengths (of these rows' label numbering)."""
        scale_classes: dict[str, int] = {}
        hierarchy: dict[str, tuple[int, ...]] = {}
        if self.labels is not None:
            num_fine = int(self.labels.max()) + 1 if len(self.labels) else 0
            scale_classes[self.info.fine] = num_fine
            for scale, labels in self.scale_labels.items():
                scale_classes[scale] = int(labels.max()) + 1 if len(labels) else 0
                parent = np.zeros(num_fine, dtype=np.int64)
                both = (self.labels >= 0) & (labels >= 0)
                parent[self.labels[both]] = labels[both]  # consistency is checked at preprocess
                hierarchy[scale] = tuple(int(v) for v in parent)
        return {
            "num_classes": scale_classes.get(self.info.fine, 0),
            "scale_classes": scale_classes,
            "hierarchy": hierarchy,
            "num_attributes": 0 if self.attributes is None else self.attributes.shape[1],
            "count_classes": 0 if self.counts is None else self.counts.shape[1],
        }

    def annotations(self, indices: np.ndarray | Sequence[int]) -> dict[str, Any]:
        """The :class:`Batch` fields (all but images) of rows ``indices``, as tensors."""
        idx = np.asarray(indices, dtype=np.int64)

        def take(values: np.ndarray | None) -> torch.Tensor | None:
            return None if values is None else torch.from_numpy(values[idx])

        return {
            "index": torch.from_numpy(idx),
            "labels": take(self.labels),
            "scales": {scale: torch.from_numpy(v[idx]) for scale, v in self.scale_labels.items()},
            "attributes": take(self.attributes),
            "attribute_mask": take(self.attribute_mask),
            "counts": take(self.counts),
            "domain": torch.from_numpy(self.domain_codes[idx]),
            "instance": torch.from_numpy(self.instances[idx]),
        }

    def collate(self, items: Sequence[tuple[torch.Tensor, int]]) -> Batch:
        """DataLoader ``collate_fn``: stack the uint8 images and convert them to the model's
        input in one op (:data:`~dml.data.transforms.TO_MODEL_INPUT`), gather the rows'
        annotations."""
        images = TO_MODEL_INPUT(torch.stack([image for image, _ in items]))
        return Batch(images=images, **self.annotations([index for _, index in items]))

    def __len__(self) -> int:
        return len(self._rows)

    def _load_stored(self) -> None:
        """Read the selected rows' image bytes (or paths) on first use: evaluation and
        statistics that only need annotations never pay for the pixels."""
        stored = read_manifest(self.manifest_path, columns=self._image_columns)
        take = pa.array(self._rows, pa.int64())
        if "image" in self._image_columns:
            self._bytes = stored.column("image").take(take).combine_chunks()
        if "path" in self._image_columns:
            self._paths = stored.column("path").take(take).to_pylist()
        self._stored_loaded = True

    def _encoded(self, index: int) -> bytes:
        if not self._stored_loaded:
            self._load_stored()
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

    def preload(self) -> None:
        """Decode now, in this process, every image that fits the cache: DataLoader workers
        forked afterwards share these arrays instead of each decoding its own every epoch."""
        for index in range(len(self)):
            if self._cached >= self._cache_bytes:
                break
            self.image_array(index)

    def image_array(self, index: int, *, keep: bool = True) -> np.ndarray:
        """The decoded uint8 RGB array [H, W, 3] of item ``index`` (cached if ``keep``)."""
        cached = self._cache.get(index)
        if cached is not None:
            return cached
        try:
            array = decode_rgb(self._encoded(index))
        except DataError:
            raise
        except Exception as exc:  # PIL raises many types for bad bytes
            raise DataError(f"{self.manifest_path}: image_id {self.image_ids[index]!r} does "
                            f"not decode ({type(exc).__name__}: {exc})") from None
        if keep and self._cached + array.nbytes <= self._cache_bytes:
            self._cache[index] = array
            self._cached += array.nbytes
        return array

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} items")
        index = int(index) % len(self)
        if self.train:  # random augmentation: a new view each time
            return self.transforms[self.domains[index]](self.image_array(index)), index
        # Evaluation transforms are deterministic: keep the resized image itself (validation
        # embeds the same images every epoch).
        ready = self._ready.get(index)
        if ready is None:
            ready = self.transforms[self.domains[index]](self.image_array(index, keep=False))
            size = ready.numel() * ready.element_size()
            if self._cached + size <= self._cache_bytes:
                self._ready[index] = ready
                self._cached += size
        return ready, index


def load_images(dataset: ManifestDataset, indices: Sequence[int] | np.ndarray) -> torch.Tensor:
    """The model's input for the images of ``indices``: float32 ``[K, 3, H, W]``."""
    if len(indices) == 0:
        size = dataset.image_size
        return torch.empty(0, 3, size, size)
    return TO_MODEL_INPUT(torch.stack([dataset[int(i)][0] for i in indices]))
