"""Validation on held-out training classes: the objective of hyperparameter search."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from dml.data.dataset import ManifestDataset
from dml.embed import embed_dataset
from dml.evaluate import retrieval_metrics


@dataclass(frozen=True)
class FoldValidator:
    """MAP@R and friends on the images of validation ``folds`` (class-disjoint from training).

    Picklable, so Ray can ship it to training workers. Queries are ranked against the other
    validation images (leave-one-out); test classes are never touched.
    """

    manifest: str
    splits: str
    folds: tuple[int, ...]
    image_size: int
    batch_size: int = 256

    def __call__(self, model: torch.nn.Module) -> dict[str, float]:
        dataset = ManifestDataset(
            self.manifest,
            self.splits,
            split="train",
            include_folds=list(self.folds),
            image_size=self.image_size,
            train=False,
        )
        device = next(model.parameters()).device
        vectors = embed_dataset(model, dataset, batch_size=self.batch_size, device=device)
        metrics = retrieval_metrics(vectors, dataset.labels, ks=(1,), nmi=False)
        model.train()
        return {f"val_{key}": float(value) for key, value in metrics.items()}
