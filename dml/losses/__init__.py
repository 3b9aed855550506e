"""Metric losses, one file per loss, each registered in ``LOSSES`` under its params.yaml name.

>>> import torch
>>> loss = build_loss("triplet", margin=0.1, mining="hard")
>>> loss(torch.randn(8, 16), torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])).shape
torch.Size([])
"""

from __future__ import annotations

from typing import Any

from dml.losses.base import LOSSES, MetricLoss, ProxyLoss, pair_masks

# Importing each loss module registers it in LOSSES.
from dml.losses.binomial_deviance import BinomialDevianceLoss
from dml.losses.contrastive import ContrastiveLoss
from dml.losses.cosface import CosFaceLoss
from dml.losses.multi_similarity import MultiSimilarityLoss
from dml.losses.normalized_softmax import NormalizedSoftmaxLoss
from dml.losses.proxy_anchor import ProxyAnchorLoss
from dml.losses.triplet import TripletLoss

__all__ = [
    "LOSSES",
    "BinomialDevianceLoss",
    "ContrastiveLoss",
    "CosFaceLoss",
    "MetricLoss",
    "MultiSimilarityLoss",
    "NormalizedSoftmaxLoss",
    "ProxyAnchorLoss",
    "ProxyLoss",
    "TripletLoss",
    "build_loss",
    "pair_masks",
]


def build_loss(name: str, **kwargs: Any) -> MetricLoss:
    """Build the loss registered as ``name`` with constructor ``kwargs`` (params.yaml knobs).

    Unknown names and unknown keys raise ``ConfigError`` listing the valid ones (keys are
    reported as ``loss.<key>``).
    """
    return LOSSES.build(name, where="loss", **kwargs)
