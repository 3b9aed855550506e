"""Trunks that map images to feature vectors: a small CNN for CPUs and torchvision ResNets.

Every trunk is built with random weights; pretrained weights come only from a local file
(``model.weights`` in params.yaml), never from the network.
"""

from __future__ import annotations

import math

import torch
import torchvision
from torch import nn

from dml.errors import ConfigError
from dml.registry import Registry

BACKBONES: Registry[nn.Module] = Registry("backbone")


class SmallCNN(nn.Module):
    """Conv blocks (conv 3x3, norm, ReLU; max-pool between blocks), global average pooling.

    ``norm="group"`` (GroupNorm, 8 groups) is the default: a sample's output does not depend
    on the rest of its batch, so one worker and several workers compute the same function.
    ``norm="batch"`` (BatchNorm) normalizes over each worker's batch instead: often better
    generalisation, but a multi-worker run is no longer exactly a one-worker run.
    """

    def __init__(self, widths: tuple[int, ...] = (32, 64, 128, 256), norm: str = "group") -> None:
        super().__init__()
        layers: list[nn.Module] = []
        in_ch = 3
        for i, width in enumerate(widths):
            layers += [
                nn.Conv2d(in_ch, width, 3, padding=1, bias=False),
                nn.GroupNorm(math.gcd(8, width), width) if norm == "group" else nn.BatchNorm2d(width),
                nn.ReLU(inplace=True),
            ]
            if i < len(widths) - 1:
                layers.append(nn.MaxPool2d(2))
            in_ch = width
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.out_dim = in_ch

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.pool(self.features(images)).flatten(1)


@BACKBONES.register("small_cnn")
def small_cnn(width: int = 32, depth: int = 4, norm: str = "group") -> nn.Module:
    """The CPU default: ``depth`` blocks of ``width``, 2x``width``, 4x``width``, ... channels,
    normalized by ``norm`` (``group`` or ``batch``); fast enough to train the demo in minutes
    on two cores."""
    if width < 1 or not 1 <= depth <= 6:
        raise ConfigError(f"model.backbone_options: small_cnn needs width >= 1 and 1 <= depth <= 6, "
                          f"got width={width}, depth={depth}")
    if norm not in ("group", "batch"):
        raise ConfigError(f"model.backbone_options.norm: {norm!r} is not one of: group, batch")
    return SmallCNN(tuple(width * 2**i for i in range(depth)), norm=norm)


class Pixels(nn.Module):
    """The image itself as the feature vector: ``[B, 3, S, S] -> [B, 3·S·S]``."""

    def __init__(self, image_size: int) -> None:
        super().__init__()
        self.out_dim = 3 * image_size * image_size

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return images.flatten(1)


@BACKBONES.register("pixels")
def pixels(image_size: int) -> nn.Module:
    """No learned weights: the (resized, normalized) pixels. With ``embed_dim: null``, the
    reference row that says whether a trained model retrieves better than raw pixels."""
    return Pixels(image_size)


def _resnet(factory: object) -> nn.Module:
    trunk = factory(weights=None)  # type: ignore[operator]
    trunk.out_dim = trunk.fc.in_features
    trunk.fc = nn.Identity()
    return trunk


@BACKBONES.register("resnet18")
def resnet18() -> nn.Module:
    """torchvision ResNet-18 trunk (512-d features)."""
    return _resnet(torchvision.models.resnet18)


@BACKBONES.register("resnet34")
def resnet34() -> nn.Module:
    """torchvision ResNet-34 trunk (512-d features)."""
    return _resnet(torchvision.models.resnet34)


@BACKBONES.register("resnet50")
def resnet50() -> nn.Module:
    """torchvision ResNet-50 trunk (2048-d features)."""
    return _resnet(torchvision.models.resnet50)
