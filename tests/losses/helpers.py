"""Shared test helpers: building any registered loss, and tiny random batches."""

from __future__ import annotations

from typing import Any

import torch

from dml.losses import LOSSES, MetricLoss, build_loss

#: Constructor arguments a registered loss needs beyond num_classes / embed_dim. A loss added to
#: LOSSES whose factory has other required arguments must get an entry here.
EXTRA_KWARGS: dict[str, dict[str, Any]] = {
    "embedding_norm": {"base": {"name": "contrastive"}, "weight": 0.1},
    "csl": {"margins": {"fine": 0.25}},  # single-scale here; tests/losses/test_csl.py has the scales
    # Its term reads the soft_pq head, which a bare loss call has not: tests/losses/test_quantized.py
    "quantized": {"base": {"name": "adaptive_triplet"}, "weight": 0.0},
    # Its term reads the trunk features and the model's embedding layer, which a bare loss call
    # has not: tests/losses/test_energy_confusion.py
    "energy_confusion": {"base": {"name": "binomial_deviance"}, "weight": 0.0},
}


def make_loss(name: str, num_classes: int, embed_dim: int, **kwargs: Any) -> MetricLoss:
    """Build ``name`` through the registry, passing num_classes / embed_dim where accepted."""
    accepted = LOSSES.parameters(name)
    args = dict(EXTRA_KWARGS.get(name, {}))
    if "num_classes" in accepted:
        args["num_classes"] = num_classes
    if "embed_dim" in accepted:
        args["embed_dim"] = embed_dim
    args.update(kwargs)
    missing = [k for k, p in accepted.items() if p.default is p.empty and k not in args]
    assert not missing, f"add constructor arguments {missing} for loss {name!r} to EXTRA_KWARGS"
    return build_loss(name, **args)


def random_batch(
    seed: int, batch: int, classes: int, dim: int = 3, *, singleton: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """Float64 embeddings ``[batch, dim]`` and int64 labels in ``[0, classes)``.

    With ``singleton``, the last sample gets class ``classes - 1`` and no other sample does.
    """
    gen = torch.Generator().manual_seed(seed)
    embeddings = torch.randn(batch, dim, generator=gen, dtype=torch.float64)
    if singleton:
        labels = torch.randint(0, classes - 1, (batch,), generator=gen)
        labels[-1] = classes - 1
    else:
        labels = torch.randint(0, classes, (batch,), generator=gen)
    return embeddings, labels


def embeddings_from_gram(gram: list[list[float]], norms: list[float]) -> torch.Tensor:
    """Float64 embeddings whose pairwise cosines are ``gram`` and whose lengths are ``norms``."""
    rows = torch.linalg.cholesky(torch.tensor(gram, dtype=torch.float64))
    return rows * torch.tensor(norms, dtype=torch.float64)[:, None]
