"""Image transforms (torchvision.transforms.v2): uint8 HWC array or PIL image -> float tensor.

Training: RandomResizedCrop(scale=(0.7, 1)) and a horizontal flip; evaluation: a resize to
``image_size`` x ``image_size``. Both end as float32 in [-1, 1] (mean = std = 0.5 per channel).
Random draws use torch's global generator: the training loop seeds it per epoch and rank.
"""

from __future__ import annotations

import torch
from torchvision.transforms import v2

MEAN = (0.5, 0.5, 0.5)
STD = (0.5, 0.5, 0.5)


def build_transforms(image_size: int, *, train: bool) -> v2.Compose:
    """Transform for training (random crop + flip) or evaluation (resize) at ``image_size``."""
    if train:
        geometry = [
            v2.RandomResizedCrop(image_size, scale=(0.7, 1.0), antialias=True),
            v2.RandomHorizontalFlip(),
        ]
    else:
        geometry = [v2.Resize((image_size, image_size), antialias=True)]
    return v2.Compose(
        [
            v2.ToImage(),
            *geometry,
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(MEAN, STD),
            v2.ToPureTensor(),
        ]
    )
