"""What a run trains on: which images (``DataSpec``), the training rows, the global-batch
sampler for this rank, and the DataLoader over them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from dml.config import RunSpec
from dml.context import build_with_context
from dml.data.dataset import ManifestDataset
from dml.data.samplers import SAMPLERS, GlobalBatchSampler
from dml.train.feature_cache import CachedFeatures


@dataclass(frozen=True)
class DataSpec:
    """Which images train and (optionally) validate a run.

    Paths are made absolute: Ray workers do not share the driver's working directory.
    """

    manifest: str
    splits: str
    train_exclude_folds: tuple[int, ...] = ()
    val_folds: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "manifest", str(Path(self.manifest).resolve()))
        object.__setattr__(self, "splits", str(Path(self.splits).resolve()))
        object.__setattr__(self, "train_exclude_folds", tuple(self.train_exclude_folds))
        object.__setattr__(self, "val_folds", tuple(self.val_folds))


def build_sampler(spec: RunSpec, dataset: ManifestDataset, *, rank: int,
                  world_size: int) -> GlobalBatchSampler:
    """The sampler named in ``spec.train.sampler`` over ``dataset``, for this rank."""
    cfg = spec.train.sampler
    return build_with_context(SAMPLERS, cfg.name, cfg.knobs(), None,
                              where=f"experiments.{spec.experiment}.train.sampler",
                              rows=dataset.rows, batch_size=spec.train.batch_size, rank=rank,
                              world_size=world_size, seed=spec.train.seed)


def training_set(spec: RunSpec, data: DataSpec) -> ManifestDataset:
    """The training rows of ``spec`` (its domains, minus held-out folds), labels renumbered."""
    return ManifestDataset(
        data.manifest,
        data.splits,
        split="train",
        exclude_folds=list(data.train_exclude_folds) or None,
        domains=spec.domains,
        image_size=spec.model.image_size,
        train=True,
        relabel=True,
        augment=spec.train.augment,
        cache_bytes=spec.train.image_cache_mb << 20,
    )


def training_loader(train_set: ManifestDataset | CachedFeatures, sampler: GlobalBatchSampler, workers: int,
                    pin_memory: bool | str, device: torch.device) -> DataLoader:
    """The epoch's batches: ``workers`` processes decode and augment (0: this process).

    Workers start afresh each epoch (not persistent): their random seeds then derive from the
    generator the loop seeds with (seed, epoch, rank), so augmentation is reproducible and a
    resumed run draws what the uninterrupted one drew. The batch sampler stays in this process.
    """
    pin = device.type == "cuda" if pin_memory == "auto" else bool(pin_memory)
    if isinstance(train_set, CachedFeatures):
        workers = 0  # features in memory: nothing to decode
    if workers:
        train_set.preload()
    return DataLoader(train_set, batch_sampler=sampler, num_workers=workers, collate_fn=train_set.collate,
                      pin_memory=pin and torch.cuda.is_available())
