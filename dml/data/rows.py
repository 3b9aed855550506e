"""The selected rows of a manifest and their annotation arrays, without images or transforms.

Training (its sampler and the build context), evaluation and preflight read the same arrays:
labels per scale, attributes with their mask, object counts, domains and instance ids. Only
annotation columns are read; no pixel is decoded here (:mod:`dml.data.image_store` does that).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

from dml.batch import DOMAIN_CODES
from dml.data.manifest import DOMAINS, SPLITS, ManifestInfo, attribute_matrix, manifest_columns, read_info, read_manifest
from dml.data.splits import align, read_splits, shared_gallery as shared_gallery_rows
from dml.errors import ConfigError, DataError

#: The manifest columns that annotate a row (besides ``label_<scale>``); images are elsewhere.
ANNOTATION_COLUMNS = ("image_id", "label", "domain", "split", "role", "instance_id", "attributes",
                      "object_counts")


def _as_tuple(value: str | Sequence[str] | None) -> tuple[str, ...] | None:
    if value is None:
        return None
    return (value,) if isinstance(value, str) else tuple(value)


class ManifestRows:
    """The rows of a manifest selected by split, validation folds and domain, in manifest order.

    Selection: rows of ``split`` (a name or several; from ``splits_path`` if given, else from
    the manifest's own ``split`` column), whose validation ``fold`` is in ``include_folds`` and
    not in ``exclude_folds`` (folds need ``splits_path``), and whose domain is in ``domains``
    (default: every domain; a manifest without a ``domain`` column counts as all photos).
    With ``shared_gallery``, also the training rows that are the gallery of every evaluation
    (role ``gallery``, whatever their fold; :func:`dml.data.splits.shared_gallery`): a
    validation fold's sketches are searched among them.

    Annotations, one entry per selected row (absent in the manifest: None / empty):
    ``labels`` (int64 [N] fine ids), ``scale_labels`` (coarser scale -> int64 [N]), both -1
    where a test row is unlabelled at that scale (DyML's per-scale benchmarks),
    ``attributes`` (float32 [N, A], 0 where missing) with ``attribute_mask`` (bool [N, A]),
    ``counts`` (float32 [N, C] objects per fine class), ``domain_codes`` (int64 [N],
    ``DOMAIN_CODES``), ``instances`` (int64 [N], -1 when unknown). With ``relabel=True`` the
    labels of every scale are renumbered 0..C_s-1 over the selected rows' classes
    (``classes[scale]`` holds the original ids), as proxies and class heads need; with
    ``complete_labels`` a row without a label at some scale is an error naming it (training).

    Also: ``positions`` (the rows' indices in the manifest), ``image_ids`` (list[str]),
    ``domains`` (str [N]), ``num_classes`` (fine classes of the whole manifest), ``info``
    (ManifestInfo), ``table`` (pyarrow table of the rows' annotation columns plus
    split/role/fold when known; no image bytes).
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
        shared_gallery: bool = False,
        relabel: bool = False,
        complete_labels: bool = False,
    ) -> None:
        self.manifest_path = Path(manifest_path)
        self.info: ManifestInfo = read_info(self.manifest_path)
        self.present = manifest_columns(self.manifest_path)
        wanted_splits = _as_tuple(split)
        wanted_domains = _as_tuple(domains) or DOMAINS
        _check_names(wanted_splits or (), wanted_domains)
        meta = read_manifest(self.manifest_path, columns=[
            c for c in self.present if c in ANNOTATION_COLUMNS or c.startswith("label_")])
        split_values, role_values, fold_values = self._assignments(meta, splits_path)
        row_domains = (np.asarray(meta.column("domain").to_pylist(), dtype=object) if "domain" in self.present
                       else np.full(meta.num_rows, "photo", dtype=object))
        keep = self._selected(meta.num_rows, split_values, role_values, fold_values, wanted_splits,
                              include_folds, exclude_folds, shared_gallery)
        self.positions = np.flatnonzero(keep & np.isin(row_domains, wanted_domains))

        selected = meta.take(pa.array(self.positions, pa.int64()))
        if split_values is not None and splits_path is not None:
            selected = self._with_assignments(selected, split_values, role_values, fold_values)
        self.table = selected.drop_columns(
            [c for c in ("attributes", "object_counts") if c in selected.column_names]
        ).replace_schema_metadata(None)
        self.image_ids: list[str] = selected.column("image_id").to_pylist()
        self.domains = row_domains[self.positions].astype(str)
        self.domain_codes = np.asarray([DOMAIN_CODES[d] for d in self.domains], dtype=np.int64)
        self.num_classes = self.info.num_classes()
        self._read_labels(selected, relabel, complete_labels)
        self._read_attributes_and_counts(selected)
        self._read_instances(selected)

    def _assignments(self, meta: pa.Table, splits_path: str | os.PathLike[str] | None
                     ) -> tuple[np.ndarray | None, np.ndarray | None, np.ndarray | None]:
        """Each manifest row's split, role and fold: from the splits file, else the manifest's
        own ``split``/``role`` columns (no folds), else none."""
        if splits_path is not None:
            splits = read_splits(splits_path)
            rows = align(meta, splits, where=str(splits_path))
            return (np.asarray(splits.column("split").to_pylist(), dtype=object)[rows],
                    np.asarray(splits.column("role").to_pylist(), dtype=object)[rows],
                    splits.column("fold").to_numpy(zero_copy_only=False)[rows])
        if "split" in self.present:
            roles = np.asarray(meta.column("role").to_pylist(), dtype=object) if "role" in self.present else None
            return np.asarray(meta.column("split").to_pylist(), dtype=object), roles, None
        return None, None, None

    def _selected(self, n: int, split_values: np.ndarray | None, role_values: np.ndarray | None,
                  fold_values: np.ndarray | None, wanted_splits: tuple[str, ...] | None,
                  include_folds: Sequence[int] | None, exclude_folds: Sequence[int] | None,
                  shared_gallery: bool) -> np.ndarray:
        """Mask of the manifest rows in the wanted splits and folds (plus the shared gallery)."""
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
        return keep

    def _with_assignments(self, selected: pa.Table, split_values: np.ndarray, role_values: np.ndarray,
                          fold_values: np.ndarray) -> pa.Table:
        """``selected`` with the splits file's split, role and fold columns (replacing the
        manifest's own)."""
        for name, values, kind in (("split", split_values, pa.string()),
                                   ("role", role_values, pa.string()),
                                   ("fold", fold_values, pa.int64())):
            column = pa.array(values[self.positions].tolist(), kind)
            if name in selected.column_names:
                selected = selected.set_column(selected.column_names.index(name), name, column)
            else:
                selected = selected.append_column(name, column)
        return selected

    def _read_labels(self, selected: pa.Table, relabel: bool, complete: bool) -> None:
        """Labels per scale (-1 where unknown), renumbered with ``relabel``."""
        self.labels: np.ndarray | None = None
        self.scale_labels: dict[str, np.ndarray] = {}
        self.classes: dict[str, np.ndarray] = {}
        for scale in self.info.scales:
            column = self.info.label_column(scale)
            if column not in selected.column_names:
                continue
            values = selected.column(column)
            known = ~values.is_null().to_numpy(zero_copy_only=False)
            if complete and not known.all():
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

    def _read_attributes_and_counts(self, selected: pa.Table) -> None:
        """Attribute vectors with their mask, and object-count vectors."""
        names = selected.column_names
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

    def _read_instances(self, selected: pa.Table) -> None:
        """Instance ids numbered 0.. (-1 where unknown)."""
        self.instances = np.full(selected.num_rows, -1, dtype=np.int64)
        if "instance_id" in selected.column_names:
            ids = np.asarray(selected.column("instance_id").to_pylist(), dtype=object)
            known = ids != None  # noqa: E711 - elementwise comparison with None
            if known.any():
                self.instances[known] = np.unique(ids[known].astype(str), return_inverse=True)[1]

    def __len__(self) -> int:
        return len(self.positions)

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
        """The :class:`~dml.batch.Batch` fields (all but images) of rows ``indices``, as tensors."""
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


def _check_names(splits: Sequence[str], domains: Sequence[str]) -> None:
    """ConfigError for a split or domain name that does not exist."""
    for name in splits:
        if name not in SPLITS:
            raise ConfigError(f"split {name!r} is not one of: {', '.join(SPLITS)}")
    for name in domains:
        if name not in DOMAINS:
            raise ConfigError(f"domain {name!r} is not one of: {', '.join(DOMAINS)}")
