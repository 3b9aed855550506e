"""The embedding head's starting point: the principal subspace of the trunk's features.

A linear head at random weights projects a pretrained trunk's features (1280 for
EfficientNet-Lite0) onto random directions. ``train.head_init: pca`` starts it instead as the
projection onto the top principal components of the training images' features, centred by
their mean: the best rank-d linear summary of the features, which training then adapts.

Whether that helps depends on where the classes lie. On the validation folds of the real
sets (benchmarks/recipe_sweep.py, recipe "pca head", 3 seeds, against the random start) it
gains on clip art (+0.009 MAP@R [+0.001, +0.018]) and loses on Wesnoth units (-0.034
[-0.065, -0.002]) and on cards (-0.109 [-0.142, -0.076]), whose largest components follow
each deck's drawing style rather than the card: the default stays ``random``.
"""

from __future__ import annotations

import torch
from torch import nn


def principal_directions(features: torch.Tensor, count: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The top ``count`` principal directions ``[count, F]`` of ``features`` ``[N, F]`` (unit
    rows, largest variance first) and the features' mean ``[F]``.

    Computed exactly (float64 eigendecomposition of the covariance) so that every worker
    finds the same directions; each direction's sign is fixed by making its largest
    component positive. ``count`` may not exceed ``F``.
    """
    if count > features.shape[1]:
        raise ValueError(f"{count} principal directions asked of {features.shape[1]}-d features")
    x = features.double()
    mean = x.mean(dim=0)
    centred = x - mean
    covariance = centred.T @ centred / max(len(x) - 1, 1)
    _, vectors = torch.linalg.eigh(covariance)  # ascending eigenvalues
    top = vectors[:, -count:].flip(1).T.contiguous()
    largest = top.gather(1, top.abs().argmax(dim=1, keepdim=True))
    top = top * torch.where(largest < 0, -1.0, 1.0)
    return top.to(features.dtype), mean.to(features.dtype)


@torch.no_grad()
def init_head_from_features(head: nn.Linear, features: torch.Tensor) -> None:
    """Set ``head`` to ``W (f - mean)`` with ``W`` the top principal directions of
    ``features`` ``[N, in_features]``; rows beyond the feature size keep their weights."""
    count = min(head.out_features, head.in_features)
    directions, mean = principal_directions(features.to(head.weight.dtype).cpu(), count)
    head.weight[:count] = directions.to(head.weight.device)
    head.bias[:count] = -(directions @ mean).to(head.bias.device)
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        for tensor in (head.weight, head.bias):  # the same start on every worker, bit for bit
            torch.distributed.broadcast(tensor, src=0)
