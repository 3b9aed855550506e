"""Image transforms (torchvision.transforms.v2): uint8 HWC array or PIL image -> float tensor.

Training applies the run's augmentation (``train.augment``: torchvision.transforms.v2
transforms by class name with their arguments, for every domain or per domain), then a resize
to ``image_size`` x ``image_size``; evaluation only the resize. Both end as float32 in [-1, 1]
(mean = std = 0.5 per channel). Random draws use torch's global generator: the training loop
seeds it per epoch and rank.

Two parts: :func:`image_transforms` (per image, to uint8 ``[3, S, S]``) and :data:`TO_MODEL_INPUT`
(float conversion and normalization, for one image or a whole batch at once: a dataset
collates uint8 images and converts the batch in one op). :func:`build_transforms` is both.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torchvision.transforms import v2

from dml.errors import ConfigError

MEAN = (0.5, 0.5, 0.5)
STD = (0.5, 0.5, 0.5)

#: The recipe when params.yaml names none: a mild random resized crop and a horizontal flip.
DEFAULT_AUGMENT: tuple[dict[str, Any], ...] = (
    {"name": "RandomResizedCrop", "scale": [0.7, 1.0]},
    {"name": "RandomHorizontalFlip"},
)

# Transforms that only convert or wrap others: the pipeline adds the conversions itself.
_NOT_AUGMENTATIONS = {"Compose", "RandomApply", "RandomChoice", "RandomOrder", "Identity", "Lambda",
                      "ToImage", "ToPILImage", "ToPureTensor", "ToDtype", "ConvertImageDtype",
                      "Normalize", "Transform", "LinearTransformation", "SanitizeBoundingBoxes",
                      "ClampBoundingBoxes", "ClampKeyPoints", "ConvertBoundingBoxFormat",
                      "PILToTensor", "UniformTemporalSubsample", "CutMix", "MixUp"}

AugmentSpec = Sequence[Mapping[str, Any]]


def augmentation_names() -> list[str]:
    """Every torchvision.transforms.v2 transform usable in ``train.augment``."""
    return sorted(
        name for name, obj in vars(v2).items()
        if inspect.isclass(obj) and issubclass(obj, v2.Transform) and not name.startswith("_")
        and name not in _NOT_AUGMENTATIONS
    )


def build_augmentation(spec: Mapping[str, Any], image_size: int, *, where: str) -> v2.Transform:
    """One transform from ``{"name": <v2 class>, <argument>: ...}``; a ``size`` it requires
    and is not given is ``image_size``. Unknown names and arguments are errors naming
    ``where`` and listing the valid ones."""
    knobs = dict(spec)
    name = knobs.pop("name", None)
    valid = augmentation_names()
    if name not in valid:
        raise ConfigError(f"{where}.name: unknown transform {name!r}; valid choices: {', '.join(valid)}")
    cls = getattr(v2, name)
    parameters = inspect.signature(cls).parameters
    if "size" in parameters and parameters["size"].default is inspect.Parameter.empty:
        knobs.setdefault("size", image_size)
    accepted = [p for p in parameters if p not in ("self", "args", "kwargs")]
    unknown = sorted(set(knobs) - set(accepted))
    if unknown:
        raise ConfigError(f"{where}: {name} has no argument {', '.join(map(repr, unknown))}; "
                          f"valid arguments: {', '.join(accepted)}")
    try:
        return cls(**knobs)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{where}: {name}({', '.join(f'{k}={v!r}' for k, v in knobs.items())}): {err}") from None


#: uint8 images (``[3, S, S]`` or a batch ``[B, 3, S, S]``) -> the model's float32 input in [-1, 1].
TO_MODEL_INPUT = v2.Compose([v2.ToDtype(torch.float32, scale=True), v2.Normalize(MEAN, STD)])


def image_transforms(image_size: int, *, train: bool, augment: AugmentSpec | None = None,
                     where: str = "train.augment") -> v2.Compose:
    """Per-image part of the transform for training (``augment``, default
    :data:`DEFAULT_AUGMENT`) or evaluation (resize only): uint8 ``[3, image_size, image_size]``."""
    steps: list[v2.Transform] = []
    if train:
        recipe = DEFAULT_AUGMENT if augment is None else augment
        steps = [build_augmentation(spec, image_size, where=f"{where}[{i}]") for i, spec in enumerate(recipe)]
    return v2.Compose([v2.ToImage(), *steps, v2.Resize((image_size, image_size), antialias=True), v2.ToPureTensor()])


def build_transforms(image_size: int, *, train: bool, augment: AugmentSpec | None = None,
                     where: str = "train.augment") -> v2.Compose:
    """The whole transform of one image: :func:`image_transforms`, then :data:`TO_MODEL_INPUT`."""
    return v2.Compose([image_transforms(image_size, train=train, augment=augment, where=where), TO_MODEL_INPUT])


def domain_augments(augment: AugmentSpec | Mapping[str, AugmentSpec] | None,
                    domains: Sequence[str]) -> dict[str, AugmentSpec | None]:
    """The recipe of each domain from ``train.augment`` (one list for all domains, or a list
    per domain; a domain it does not name gets the default)."""
    if augment is None or not isinstance(augment, Mapping):
        return {domain: augment for domain in domains}
    return {domain: augment.get(domain) for domain in domains}


def check_augment(augment: AugmentSpec | Mapping[str, AugmentSpec] | None, image_size: int, *,
                  where: str) -> None:
    """Build every recipe of ``train.augment`` once: unknown transforms or arguments fail here,
    named by their key (``<where>[1].scale``, ``<where>.sketch[0]``)."""
    if isinstance(augment, Mapping):
        for domain, recipe in augment.items():
            build_transforms(image_size, train=True, augment=recipe, where=f"{where}.{domain}")
    else:
        build_transforms(image_size, train=True, augment=augment, where=where)
