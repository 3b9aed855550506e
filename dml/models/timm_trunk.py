"""Any timm architecture as a trunk: ``model.backbone: <timm model name>``.

The network is built with ``pretrained=False`` and no classifier (timm never reaches the
network); ImageNet weights come from an installed package or a local file
(:mod:`dml.models.weights`). The trunk returns timm's pooled features and exposes its stages
(timm's own coarse parameter groups: the stem, then one group per stage) for freezing.
With pretrained weights, the network's own input normalization runs inside its forward
(:mod:`dml.models.input_norm`).
"""

from __future__ import annotations

import functools
import re
from typing import Any

import torch
from torch import nn

from dml.errors import ConfigError
from dml.models.excitation import SqueezeExcitation, check_excitation
from dml.models.input_norm import InputNormalization


@functools.cache
def _timm() -> Any:
    import timm  # imported on first use: the small CNN never pays for it

    return timm


def is_timm_model(name: str) -> bool:
    """True when timm can build an architecture called ``name``."""
    return bool(_timm().is_model(name))


def check_timm_options(name: str, options: dict[str, Any], *, where: str) -> None:
    """Build ``name`` with ``options`` on the meta device (no memory, no weights): a bad
    option is an error naming ``where`` before any compute."""
    options = dict(options)
    try:
        check_excitation(options.pop("excitation", "none"))
        with torch.device("meta"):
            _timm().create_model(name, pretrained=False, num_classes=0, **options)
    except TypeError as err:
        unknown = re.search(r"unexpected keyword argument '(\w+)'", str(err))
        key = f"{where}.{unknown.group(1)}" if unknown else where
        raise ConfigError(f"{key}: not an option of timm's {name} ({err})") from None


class TimmTrunk(nn.Module):
    """A timm network without its classifier: ``images -> pooled features [B, out_dim]``.

    ``stages()`` lists the network's parameter groups in order (stem first), as timm groups
    them for layer-wise learning rates; :func:`dml.train.finetune.freeze_trunk` freezes a
    prefix. ``options.excitation`` (``none``, ``se``, ``dase``) adds SE or DASE blocks on the
    stages' outputs (:meth:`_add_excitations`); they are never frozen.
    """

    def __init__(self, name: str, options: dict[str, Any] | None = None) -> None:
        super().__init__()
        options = dict(options or {})
        excitation = options.pop("excitation", "none")
        check_excitation(excitation)
        self.name = name
        self.net = _timm().create_model(name, pretrained=False, num_classes=0, **options)
        self.out_dim = int(self.net.num_features)
        self.input_norm = InputNormalization()  # the identity unless pretrained weights say otherwise
        self.accepts_condition = excitation == "dase"
        self.condition: torch.Tensor | None = None
        # channels-last by default: 2-4x the images/s of the default layout for EfficientNet-Lite0
        # on this project's 2-core CPU (forward, 64 px), also faster on GPUs
        self.set_channels_last(True)
        self.excitations = nn.ModuleDict()
        if excitation != "none":
            self._add_excitations(excitation)

    def _add_excitations(self, excitation: str) -> None:
        """An SE block on the output of each stage that timm reports as a feature level
        (past the stem): DASE on all but the last, which keeps plain SE, as on the ResNets.
        They start as the identity, so the pretrained features are intact at the start."""
        levels = [info for info in self.net.feature_info if info["reduction"] >= 4]
        modules = dict(self.net.named_modules())
        for index, info in enumerate(levels):
            last = index == len(levels) - 1
            se = SqueezeExcitation(info["num_chs"], domain_aware=excitation == "dase" and not last,
                                   identity_init=True)
            self.excitations[info["module"].replace(".", "_")] = se
            modules[info["module"]].register_forward_hook(self._excite(se))

    def _excite(self, se: SqueezeExcitation):
        def hook(module: nn.Module, inputs: tuple, output: torch.Tensor) -> torch.Tensor:
            return se(output, self.condition)
        return hook

    def set_channels_last(self, on: bool) -> None:
        """Run the network (weights and inputs) in the channels-last memory layout, or not."""
        self.channels_last = on
        self.net.to(memory_format=torch.channels_last if on else torch.contiguous_format)

    def forward(self, images: torch.Tensor, condition: torch.Tensor | None = None) -> torch.Tensor:
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        self.condition = condition  # read by the DASE blocks while the network runs
        try:
            return self.net(self.input_norm(images))
        finally:
            self.condition = None

    def stages(self) -> list[list[nn.Module]]:
        """The network's modules grouped as timm groups its parameters (coarse): the stem,
        then each stage in order (the final convolution and norm join the last stage)."""
        return module_groups(self.net)


def module_groups(net: nn.Module) -> list[list[nn.Module]]:
    """The modules holding ``net``'s parameters, grouped as timm's
    ``group_matcher(coarse=True)`` groups the parameters, in group order."""
    groups = _timm().models.group_parameters(net, net.group_matcher(coarse=True))
    modules = dict(net.named_modules())
    out = []
    for _, names in sorted(groups.items()):
        owners = dict.fromkeys(name.rpartition(".")[0] for name in names)  # ordered, unique
        out.append([modules[owner] for owner in owners])
    return out
