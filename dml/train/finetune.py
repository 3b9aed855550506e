"""Fine-tuning as the field does it: frozen early stages, separate learning rates, a warm-up.

- ``train.freeze``: the first N parameter groups of the trunk (``trunk.stages()``: the stem,
  then each stage) get no gradient and their BatchNorm layers stay in eval mode, so neither
  their weights nor their running statistics move; ``all`` freezes the whole trunk.
  ``train.unfreeze_after``: from that epoch on, everything trains.
- Learning rates: the trunk ``train.trunk_lr`` (default ``lr``), the embedding and extra heads
  ``lr``, the loss's own parameters (proxies, centres) ``loss_lr``.
- Schedule, per optimizer step: a linear warm-up from 0 over ``warmup_epochs``, then constant
  or a cosine decay to 0 at the end of training.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from dml.config import TrainConfig
from dml.errors import ConfigError
from dml.models import EmbeddingModel


def trunk_stages(trunk: nn.Module) -> list[list[nn.Module]]:
    """The trunk's parameter groups in order, the stem first (empty: nothing to freeze)."""
    stages = getattr(trunk, "stages", None)
    if stages is None:
        raise ConfigError(f"train.freeze: the trunk {type(trunk).__name__} does not list its stages")
    return stages()


def frozen_count(cfg: TrainConfig, trunk: nn.Module) -> int:
    """How many of the trunk's groups ``train.freeze`` freezes (checked against their number)."""
    groups = len(trunk_stages(trunk))
    if cfg.freeze == "all":
        return groups
    if cfg.freeze > groups:
        raise ConfigError(f"train.freeze: {cfg.freeze} groups asked, the trunk has {groups} "
                          f"(the stem and {groups - 1} stages); 'all' freezes it whole")
    return cfg.freeze


def frozen_at(cfg: TrainConfig, epoch: int) -> bool:
    """True while the frozen groups stay frozen at ``epoch``."""
    return cfg.unfreeze_after is None or epoch < cfg.unfreeze_after


def trunk_never_trains(cfg: TrainConfig, model: EmbeddingModel) -> bool:
    """The whole trunk stays frozen throughout (and holds no block that trains anyway, such as
    an SE block inserted into it): its features can be computed once."""
    return (cfg.freeze == "all" and cfg.unfreeze_after is None
            and not any(p.requires_grad for p in model.trunk.parameters()))


def freeze_trunk(model: EmbeddingModel, count: int) -> None:
    """Freeze the first ``count`` groups of the trunk (0: unfreeze everything): no gradient,
    BatchNorm in eval mode (``EmbeddingModel.train`` keeps them there)."""
    stages = trunk_stages(model.trunk)
    for index, group in enumerate(stages):
        for module in group:
            for parameter in module.parameters():
                parameter.requires_grad_(index >= count)
    # the whole trunk frozen: all of it in eval mode (dropout and stochastic depth too)
    model.frozen = [model.trunk] if count and count == len(stages) else \
        [module for group in stages[:count] for module in group]
    model.train(model.training)


def parameter_groups(model: EmbeddingModel, loss: nn.Module, cfg: TrainConfig) -> list[dict]:
    """Optimizer groups: trunk (``trunk_lr`` or ``lr``), heads (``lr``), loss (``loss_lr``).
    Frozen parameters are in their group too: AdamW skips a parameter without a gradient (no
    decay either), and they train once unfrozen."""
    trunk = list(model.trunk.parameters())
    trunk_ids = {id(p) for p in trunk}
    heads = [p for p in model.parameters() if id(p) not in trunk_ids]
    groups = [{"params": trunk, "lr": cfg.trunk_lr or cfg.lr, "name": "trunk"},
              {"params": heads, "lr": cfg.lr, "name": "heads"},
              {"params": list(loss.parameters()), "lr": cfg.loss_lr, "name": "loss"}]
    return [group for group in groups if group["params"]]


def lr_factor(step: int, steps_per_epoch: int, cfg: TrainConfig, epochs: int) -> float:
    """The multiplier of every base learning rate at optimizer ``step`` (from 0)."""
    warmup = cfg.warmup_epochs * steps_per_epoch
    if step < warmup:
        return (step + 1) / warmup
    if cfg.schedule == "constant":
        return 1.0
    total = max(epochs * steps_per_epoch - warmup, 1)
    return 0.5 * (1.0 + math.cos(math.pi * min(step - warmup, total) / total))


def lr_schedule(optimizer: torch.optim.Optimizer, steps_per_epoch: int, cfg: TrainConfig,
                epochs: int) -> torch.optim.lr_scheduler.LambdaLR:
    """The per-step schedule of :func:`lr_factor` (stepped after every optimizer step) over a
    run of ``epochs``; a run resumes only under its own name, which holds its epochs, so a
    checkpoint's schedule always continues the same shape."""
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, steps_per_epoch, cfg, epochs))


def use_channels_last(cfg: TrainConfig, trunk: nn.Module) -> bool:
    """``train.channels_last``; auto: on for timm trunks (measured faster on CPU and GPU)."""
    if cfg.channels_last == "auto":
        return hasattr(trunk, "set_channels_last")
    return bool(cfg.channels_last)


def apply_channels_last(learner: nn.Module, trunk: nn.Module, on: bool) -> None:
    """Put the learner's weights in the channels-last layout (or back in the default one);
    a trunk that converts its own inputs is told too."""
    learner.to(memory_format=torch.channels_last if on else torch.contiguous_format)
    if hasattr(trunk, "set_channels_last"):
        trunk.set_channels_last(on)
