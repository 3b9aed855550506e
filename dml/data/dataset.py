"""A torch Dataset over a manifest's selected rows: their annotations
(:class:`~dml.data.rows.ManifestRows`), their images (:class:`~dml.data.image_store.ImageStore`)
and the transforms, with batches (:meth:`ManifestDataset.collate`) that carry every annotation."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from dml.batch import Batch
from dml.data.image_store import DEFAULT_CACHE_BYTES, ImageStore
from dml.data.manifest import DOMAINS
from dml.data.rows import ManifestRows
from dml.data.transforms import TO_MODEL_INPUT, AugmentSpec, domain_augments, image_transforms


class ManifestDataset(Dataset):
    """Items ``(image [3, H, W] uint8, row index)`` of the selected rows; :meth:`collate` turns
    a list of items into a :class:`~dml.batch.Batch` with every annotation of those rows.

    ``rows``: the selection and its annotations (``selection``: the keyword arguments of
    :class:`~dml.data.rows.ManifestRows`, such as ``split``, ``include_folds``, ``domains`` or
    ``relabel``; with ``train`` every scale's label must be known).
    ``images``: the decoded images, cached up to ``cache_bytes``; without ``train`` the
    resized images themselves are kept within the same budget, as evaluation transforms are
    deterministic.
    """

    def __init__(
        self,
        manifest_path: str | os.PathLike[str],
        splits_path: str | os.PathLike[str] | None = None,
        *,
        image_size: int = 32,
        train: bool = False,
        augment: AugmentSpec | Mapping[str, AugmentSpec] | None = None,
        cache_bytes: int = DEFAULT_CACHE_BYTES,
        **selection: Any,
    ) -> None:
        self.rows = ManifestRows(manifest_path, splits_path, complete_labels=train, **selection)
        self.images = ImageStore(self.rows, cache_bytes)
        self.image_size = image_size
        self.train = train
        self.transforms = {domain: image_transforms(image_size, train=train, augment=recipe)
                           for domain, recipe in domain_augments(augment, DOMAINS).items()}
        self._ready: dict[int, torch.Tensor] = {}  # transformed images (evaluation only)

    def collate(self, items: Sequence[tuple[torch.Tensor, int]]) -> Batch:
        """DataLoader ``collate_fn``: stack the uint8 images and convert them to the model's
        input in one op (:data:`~dml.data.transforms.TO_MODEL_INPUT`), gather the rows'
        annotations."""
        images = TO_MODEL_INPUT(torch.stack([image for image, _ in items]))
        return Batch(images=images, **self.rows.annotations([index for _, index in items]))

    def __len__(self) -> int:
        return len(self.rows)

    def preload(self) -> None:
        """Decode every image that fits the cache now (:meth:`ImageStore.preload`)."""
        self.images.preload()

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} items")
        index = int(index) % len(self)
        if self.train:  # random augmentation: a new view each time
            return self.transforms[self.rows.domains[index]](self.images.image_array(index)), index
        # Evaluation transforms are deterministic: keep the resized image itself (validation
        # embeds the same images every epoch).
        ready = self._ready.get(index)
        if ready is None:
            ready = self.transforms[self.rows.domains[index]](self.images.image_array(index, keep=False))
            if self.images.reserve(ready.numel() * ready.element_size()):
                self._ready[index] = ready
        return ready, index


def load_images(dataset: ManifestDataset, indices: Sequence[int] | np.ndarray) -> torch.Tensor:
    """The model's input for the images of ``indices``: float32 ``[K, 3, H, W]``."""
    if len(indices) == 0:
        size = dataset.image_size
        return torch.empty(0, 3, size, size)
    return TO_MODEL_INPUT(torch.stack([dataset[int(i)][0] for i in indices]))
