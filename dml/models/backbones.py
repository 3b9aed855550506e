"""Trunks that map images to feature vectors: a small CNN for CPUs and torchvision ResNets.

Every trunk is built with random weights; pretrained weights come only from a local file
(``model.weights`` in params.yaml), never from the network.
"""

from __future__ import annotations

import torch
import torchvision
from torch import nn

from dml.registry import Registry

BACKBONES: Registry[nn.Module] = Registry("backbone")


class SmallCNN(nn.Module):
    """Four conv blocks with GroupNorm, global average pooling; ~0.3 M parameters.

    GroupNorm rather than BatchNorm: the output of a sample does not depend on the rest of its
    batch, so training on one worker or several workers computes the same function.
    """

    def __init__(self, widths: tuple[int, ...] = (32, 64, 128, 256)) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        in_ch = 3
        for i, width in enumerate(widths):
            layers += [
                nn.Conv2d(in_ch, width, 3, padding=1, bias=False),
                nn.GroupNorm(8, width),
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
def small_cnn(width: int = 32) -> nn.Module:
    """The CPU default: fast enough to train the demo in minutes on two cores."""
    return SmallCNN(tuple(width * 2**i for i in range(4)))


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
