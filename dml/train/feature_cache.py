"""A frozen trunk's features, computed once per training image and view.

When the whole trunk stays frozen (``train.freeze: all``), every epoch would feed the same
network the same images: the features are computed ahead instead and the heads train on them,
so an epoch costs the heads, not the trunk. With deterministic transforms one view per image
gives exactly what the uncached loop computes; with random augmentation ``train.feature_views``
views are drawn per image (view ``v`` seeded by (seed, v)) and epoch ``e`` reads view
``e mod views``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch.utils.data import Dataset
from tqdm import tqdm

from dml.batch import Batch
from dml.data.dataset import ManifestDataset
from dml.models import EmbeddingModel


def deterministic(train_set: ManifestDataset) -> bool:
    """True when the training transforms draw nothing at random (no augmentation)."""
    from torchvision.transforms import v2

    random_free = (v2.ToImage, v2.Resize, v2.ToDtype, v2.Normalize, v2.ToPureTensor)
    return all(isinstance(step, random_free)
               for compose in train_set.transforms.values() for step in compose.transforms)


@torch.no_grad()
def trunk_features(model: EmbeddingModel, train_set: ManifestDataset, *, views: int, seed: int,
                   device: torch.device, batch_size: int = 128, channels_last: bool = False,
                   progress: str | None = None) -> torch.Tensor:
    """``[views, N, F]`` trunk features of every training image (eval mode, no gradient)."""
    was_training = model.training
    model.eval()
    out = torch.empty(views, len(train_set), model.trunk.out_dim)
    bar = tqdm(total=views * len(train_set), desc=progress, unit="img", leave=False,
               disable=True if progress is None else None)
    for view in range(views):
        torch.manual_seed(seed * 1_000_003 + view * 7_919)  # view v draws the same on every run
        for start in range(0, len(train_set), batch_size):
            rows = range(start, min(start + batch_size, len(train_set)))
            batch = train_set.collate([train_set[i] for i in rows]).to(device)
            if channels_last:
                batch = batch.replace(images=batch.images.contiguous(memory_format=torch.channels_last))
            condition = batch.require(model.condition, "model.condition") if model.condition else None
            out[view, start:start + len(rows)] = model.forward_features(batch.images, condition).float().cpu()
            bar.update(len(rows))
    bar.close()
    model.train(was_training)
    return out


class CachedFeatures(Dataset):
    """The training set with each image replaced by its cached trunk features (the view of
    the current epoch): what the training loader reads under ``train.freeze: all``."""

    def __init__(self, train_set: ManifestDataset, features: torch.Tensor) -> None:
        self.train_set = train_set
        self.features = features
        self.view = 0

    def set_epoch(self, epoch: int) -> None:
        """Read view ``epoch mod views`` from now on."""
        self.view = epoch % self.features.shape[0]

    def __len__(self) -> int:
        return len(self.train_set)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.features[self.view, index], int(index)

    def collate(self, items: Sequence[tuple[torch.Tensor, int]]) -> Batch:
        """Stack the features, gather the rows' annotations (no images)."""
        return Batch(images=None, features=torch.stack([f for f, _ in items]),
                     **self.train_set.rows.annotations([index for _, index in items]))
