"""Validation on held-out training classes with the experiment's own evaluation protocol: the
objective of hyperparameter search and the criterion of model selection."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch

from dml.config import RunSpec
from dml.data.dataset import ManifestDataset
from dml.embed import embed_dataset
from dml.errors import ConfigError
from dml.evaluate.protocols import EvalRows, build_protocol
from dml.train.training_data import DataSpec


def validation_selection(folds: Sequence[int]) -> dict[str, Any]:
    """The rows that validation folds ``folds`` rank, as selection arguments of
    :class:`~dml.data.rows.ManifestRows`: the training split's rows of those folds, and the
    shared gallery that the test also searches (the photos of the category-level sketch
    protocol; none in a class-disjoint split)."""
    return {"split": "train", "include_folds": list(folds), "shared_gallery": True}


def validation_set(manifest: str, splits: str, folds: Sequence[int], *,
                   domains: Sequence[str] | None = None, image_size: int = 32) -> ManifestDataset:
    """The images of :func:`validation_selection` in ``domains``, for embedding."""
    return ManifestDataset(manifest, splits, domains=domains, image_size=image_size, train=False,
                           **validation_selection(folds))


@dataclass(frozen=True)
class FoldValidator:
    """The protocol's metrics on the images of validation ``folds`` (class-disjoint from
    training), as ``val_<key>``.

    Picklable, so Ray can ship it to training workers. The rows are :func:`validation_set`'s;
    test classes and test queries are never touched.
    """

    manifest: str
    splits: str
    folds: tuple[int, ...]
    image_size: int
    protocol: dict[str, Any]
    domains: tuple[str, ...] | None = None
    batch_size: int = 256

    def __call__(self, model: torch.nn.Module) -> dict[str, float]:
        dataset = validation_set(self.manifest, self.splits, self.folds, domains=self.domains,
                                 image_size=self.image_size)
        protocol = build_protocol(self.protocol)
        device = next(model.parameters(), torch.empty(0)).device  # (a pixels model has none)
        vectors = embed_dataset(model, dataset, batch_size=self.batch_size, device=device,
                                normalize=protocol.geometry.normalized)
        metrics = protocol.evaluate(EvalRows.from_rows(dataset.rows), vectors, ks=(1,), nmi=False)
        model.train()
        return {f"val_{key}": float(value) for key, value in metrics.items()}


def held_out(spec: RunSpec, data: DataSpec) -> tuple[DataSpec, FoldValidator | None]:
    """The run's data with its validation folds (``train.val_folds``) held out of training,
    and the validator of those folds; ``(data, None)`` when the run validates on no fold."""
    folds = tuple(spec.train.val_folds)
    if not folds:
        return data, None
    validator = FoldValidator(data.manifest, data.splits, folds, image_size=spec.model.image_size,
                              protocol=spec.protocol, domains=spec.domains)
    return replace(data, train_exclude_folds=folds, val_folds=folds), validator


def monitored(spec: RunSpec) -> str:
    """The history key that model selection and Tune maximise: ``val_<train.val_metric>``."""
    if not spec.train.val_folds:
        raise ConfigError(f"experiments.{spec.experiment}.train.val_folds is empty: nothing to validate on")
    return f"val_{spec.train.val_metric}"
