"""Trunks that map images to feature vectors: a small CNN for CPUs and torchvision ResNets
(any timm architecture is a trunk too: :mod:`dml.models.timm_trunk`).

Every trunk is built with random weights; pretrained weights come from an installed package or
a local file (``model.weights``, :mod:`dml.models.weights`), never from the network. Each
trunk lists its ``stages()`` (parameter groups, the stem first) for freezing.
"""

from __future__ import annotations

import math

import torch
import torchvision
from torchvision.models.resnet import BasicBlock, Bottleneck
from torch import nn

from dml.errors import ConfigError
from dml.models.excitation import SqueezeExcitation, check_excitation
from dml.models.input_norm import InputNormalization
from dml.registry import Registry

BACKBONES: Registry[nn.Module] = Registry("backbone")


def _excitation(excitation: str, channels: int, last_stage: bool) -> SqueezeExcitation | None:
    """The SE block of a stage's block under ``excitation`` (None: none)."""
    if excitation == "none":
        return None
    return SqueezeExcitation(channels, domain_aware=excitation == "dase" and not last_stage)


class SmallCNN(nn.Module):
    """Conv blocks (conv 3x3, norm, [SE], ReLU; max-pool between blocks), global average
    pooling.

    ``norm="group"`` (GroupNorm, 8 groups) is the default: a sample's output does not depend
    on the rest of its batch, so one worker and several workers compute the same function.
    ``norm="batch"`` (BatchNorm) normalizes over each worker's batch instead: often better
    generalisation, but a multi-worker run is no longer exactly a one-worker run.
    ``excitation`` (:data:`EXCITATIONS`) adds a squeeze-and-excitation block after each
    block's normalization; with ``dase`` the trunk takes each sample's domain flag
    (``model.condition: domain``).
    """

    def __init__(self, widths: tuple[int, ...] = (32, 64, 128, 256), norm: str = "group",
                 excitation: str = "none") -> None:
        super().__init__()
        check_excitation(excitation)
        layers: list[nn.Module] = []
        in_ch = 3
        for i, width in enumerate(widths):
            se = _excitation(excitation, width, last_stage=i == len(widths) - 1)
            layers += [
                nn.Conv2d(in_ch, width, 3, padding=1, bias=False),
                nn.GroupNorm(math.gcd(8, width), width) if norm == "group" else nn.BatchNorm2d(width),
                *([se] if se is not None else []),
                nn.ReLU(inplace=True),
            ]
            if i < len(widths) - 1:
                layers.append(nn.MaxPool2d(2))
            in_ch = width
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.out_dim = in_ch
        self.accepts_condition = excitation == "dase"

    def stages(self) -> list[list[nn.Module]]:
        """One group per block (convolution, normalization, SE), the first block first."""
        groups: list[list[nn.Module]] = []
        for layer in self.features:
            if isinstance(layer, nn.Conv2d):
                groups.append([])
            if any(True for _ in layer.parameters()):
                groups[-1].append(layer)
        return groups

    def forward(self, images: torch.Tensor, condition: torch.Tensor | None = None) -> torch.Tensor:
        x = images
        for layer in self.features:
            x = layer(x, condition) if isinstance(layer, SqueezeExcitation) else layer(x)
        return self.pool(x).flatten(1)


@BACKBONES.register("small_cnn")
def small_cnn(width: int = 32, depth: int = 4, norm: str = "group", excitation: str = "none") -> nn.Module:
    """The CPU default: ``depth`` blocks of ``width``, 2x``width``, 4x``width``, ... channels,
    normalized by ``norm`` (``group`` or ``batch``); fast enough to train the demo in minutes
    on two cores. ``excitation``: ``none``, ``se`` or ``dase`` (:data:`EXCITATIONS`)."""
    if width < 1 or not 1 <= depth <= 6:
        raise ConfigError(f"model.backbone_options: small_cnn needs width >= 1 and 1 <= depth <= 6, "
                          f"got width={width}, depth={depth}")
    if norm not in ("group", "batch"):
        raise ConfigError(f"model.backbone_options.norm: {norm!r} is not one of: group, batch")
    return SmallCNN(tuple(width * 2**i for i in range(depth)), norm=norm, excitation=excitation)


class Pixels(nn.Module):
    """The image itself as the feature vector: ``[B, 3, S, S] -> [B, 3·S·S]``."""

    def __init__(self, image_size: int) -> None:
        super().__init__()
        self.out_dim = 3 * image_size * image_size

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return images.flatten(1)

    def stages(self) -> list[list[nn.Module]]:
        """None: nothing to freeze."""
        return []


@BACKBONES.register("pixels")
def pixels(image_size: int) -> nn.Module:
    """No learned weights: the (resized, normalized) pixels. With ``embed_dim: null``, the
    reference row that says whether a trained model retrieves better than raw pixels."""
    return Pixels(image_size)


class ResNetTrunk(torchvision.models.ResNet):
    """A torchvision ResNet without its classifier (``fc`` is the identity), optionally with
    an SE block after the last normalization of every residual block, before the residual
    addition, as in SE-ResNet (``excitation``: :data:`EXCITATIONS`; DASE in the first three
    stages, plain SE in the fourth).

    The SE blocks live in ``excitations`` and run as forward hooks of those normalizations,
    so the torchvision parameter names are unchanged and a local ImageNet state dict still
    loads (the SE blocks start at random). torchvision's blocks take one tensor: a DASE
    trunk holds each forward's domain flags while its blocks run.
    """

    def __init__(self, block: type[nn.Module], layers: list[int], excitation: str = "none") -> None:
        super().__init__(block, layers)  # type: ignore[arg-type]
        check_excitation(excitation)
        self.out_dim = self.fc.in_features
        self.fc = nn.Identity()
        self.input_norm = InputNormalization()  # ImageNet statistics once local weights load
        self.condition: torch.Tensor | None = None
        self.accepts_condition = excitation == "dase"
        self.excitations = nn.ModuleDict()
        for stage in range(1, 5):
            for index, residual in enumerate(getattr(self, f"layer{stage}")):
                norm = residual.bn3 if hasattr(residual, "bn3") else residual.bn2
                se = _excitation(excitation, norm.num_features, last_stage=stage == 4)
                if se is not None:
                    self.excitations[f"layer{stage}_{index}"] = se
                    norm.register_forward_hook(self._excite(se))

    def _excite(self, se: SqueezeExcitation):
        def hook(module: nn.Module, inputs: tuple, output: torch.Tensor) -> torch.Tensor:
            return se(output, self.condition)
        return hook

    def stages(self) -> list[list[nn.Module]]:
        """The stem (``conv1``, ``bn1``), then ``layer1`` ... ``layer4`` with their SE blocks."""
        groups: list[list[nn.Module]] = [[self.conv1, self.bn1]]
        for stage in range(1, 5):
            groups.append([getattr(self, f"layer{stage}"),
                           *(se for key, se in self.excitations.items() if key.startswith(f"layer{stage}_"))])
        return groups

    def forward(self, images: torch.Tensor, condition: torch.Tensor | None = None) -> torch.Tensor:
        self.condition = condition
        try:
            return super().forward(self.input_norm(images))
        finally:
            self.condition = None


@BACKBONES.register("resnet18")
def resnet18(excitation: str = "none") -> nn.Module:
    """torchvision ResNet-18 trunk (512-d features); ``excitation``: none, se or dase."""
    return ResNetTrunk(BasicBlock, [2, 2, 2, 2], excitation)


@BACKBONES.register("resnet34")
def resnet34(excitation: str = "none") -> nn.Module:
    """torchvision ResNet-34 trunk (512-d features); ``excitation``: none, se or dase."""
    return ResNetTrunk(BasicBlock, [3, 4, 6, 3], excitation)


@BACKBONES.register("resnet50")
def resnet50(excitation: str = "none") -> nn.Module:
    """torchvision ResNet-50 trunk (2048-d features); ``excitation``: none, se or dase."""
    return ResNetTrunk(Bottleneck, [3, 4, 6, 3], excitation)
