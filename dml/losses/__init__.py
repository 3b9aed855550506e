"""Metric losses, one file per loss, each registered in ``LOSSES`` under its params.yaml name.

>>> import torch
>>> loss = build_loss("triplet", margin=0.1, mining="hard")
>>> loss(torch.randn(8, 16), torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])).shape
torch.Size([])
>>> wrapped = build_loss({"name": "embedding_norm", "weight": 0.1, "base": {"name": "contrastive"}})
>>> type(wrapped.base).__name__
'ContrastiveLoss'
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from dml.context import BuildContext, inject
from dml.errors import ConfigError
from dml.losses.base import LOSSES, MetricLoss, ProxyLoss, WrapperLoss, pair_masks

# Importing each loss module registers it in LOSSES.
from dml.losses.adaptive_triplet import AdaptiveTripletLoss
from dml.losses.binomial_deviance import BinomialDevianceLoss
from dml.losses.contrastive import ContrastiveLoss
from dml.losses.cosface import CosFaceLoss
from dml.losses.cross_scale import CrossScaleLoss
from dml.losses.embedding_norm import EmbeddingNormLoss
from dml.losses.energy_confusion import EnergyConfusionLoss
from dml.losses.mems import MemsLoss
from dml.losses.multi_similarity import MultiSimilarityLoss
from dml.losses.normalized_softmax import NormalizedSoftmaxLoss
from dml.losses.proxy_anchor import ProxyAnchorLoss
from dml.losses.quantized import QuantizedLoss
from dml.losses.soft_binomial_deviance import SoftBinomialDevianceLoss
from dml.losses.triplet import TripletLoss

__all__ = [
    "LOSSES",
    "AdaptiveTripletLoss",
    "BinomialDevianceLoss",
    "ContrastiveLoss",
    "CosFaceLoss",
    "CrossScaleLoss",
    "EmbeddingNormLoss",
    "EnergyConfusionLoss",
    "MemsLoss",
    "MetricLoss",
    "MultiSimilarityLoss",
    "NormalizedSoftmaxLoss",
    "ProxyAnchorLoss",
    "ProxyLoss",
    "QuantizedLoss",
    "SoftBinomialDevianceLoss",
    "TripletLoss",
    "WrapperLoss",
    "build_loss",
    "is_wrapper",
    "pair_masks",
]

#: The knob of a wrapper loss that holds its base loss (itself a ``{name: ..., ...}`` tree).
BASE_KNOB = "base"


def is_wrapper(name: str) -> bool:
    """Whether the loss registered as ``name`` wraps a base loss (its ``base`` knob)."""
    factory = LOSSES.get(name)
    return isinstance(factory, type) and issubclass(factory, WrapperLoss)


def build_loss(spec: str | Mapping[str, Any], /, *, context: BuildContext | None = None,
               where: str = "loss", **knobs: Any) -> MetricLoss:
    """Build a loss from its name and knobs, or from a ``{"name": ..., <knob>: ...}`` tree.

    A wrapper loss's ``base`` knob is itself such a tree and is built first, recursively.
    With a ``context``, sizes the factory asks for (``num_classes``, ``embed_dim``, ...) are
    filled in from it and may not appear among the knobs. Unknown names and knobs raise
    ``ConfigError`` naming the dotted key under ``where`` and listing the valid ones.
    """
    if isinstance(spec, str):
        name = spec
    else:
        spec = dict(spec)
        if "name" not in spec:
            raise ConfigError(f"{where}.name is missing; valid choices: {', '.join(LOSSES.names())}")
        name = spec.pop("name")
        knobs = {**spec, **knobs}
    parameters = LOSSES.parameters(name, where=where)
    if is_wrapper(name):
        base = knobs.get(BASE_KNOB)
        if not isinstance(base, Mapping):
            raise ConfigError(f"{where}.{BASE_KNOB}: the wrapper loss {name!r} needs a base loss "
                              f"({{name: ..., <knobs>}}), got {base!r}")
        knobs[BASE_KNOB] = build_loss(base, context=context, where=f"{where}.{BASE_KNOB}")
    if context is not None:
        knobs = inject(parameters, knobs, context, where=where)
    return LOSSES.build(name, where=where, **knobs)
