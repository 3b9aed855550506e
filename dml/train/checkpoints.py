"""Checkpoints and model selection: a run's state written atomically and read back without
unpickling code, and the best epoch on validation with early stopping.

A checkpoint holds everything needed to continue exactly: model, loss parameters, optimizer,
schedule, sampler position and the metric history (augmentation RNGs are re-seeded from (seed,
epoch, rank)), plus where the ranks ran and at which epochs the run was resumed.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
from torch import nn

from dml.errors import ConfigError, IntegrityError
from dml.io import atomic_path

CHECKPOINT_FILE = "state.pt"


def save_checkpoint(folder: Path, state: dict[str, Any]) -> None:
    """Write ``state`` to ``folder/state.pt`` atomically (tensors and plain values only)."""
    with atomic_path(folder / CHECKPOINT_FILE) as tmp:
        torch.save(state, tmp)


def load_checkpoint(folder: Path) -> dict[str, Any]:
    """Read a checkpoint written by ``save_checkpoint``; never unpickles code.

    ``weights_only`` loading accepts tensors and plain values only: a pickle that would import
    or call anything is refused before it runs. A missing, truncated or such file raises
    IntegrityError naming it.
    """
    path = Path(folder) / CHECKPOINT_FILE
    if not path.is_file():
        raise IntegrityError(f"checkpoint {path} is missing")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - torch raises several types for bad files
        reason = next(iter(str(err).splitlines()), "")  # an empty file raises EOFError("")
        raise IntegrityError(
            f"checkpoint {path} is refused: truncated, corrupt, or holds more than tensors and "
            f"plain values ({type(err).__name__}: {reason})"
        ) from None


class BestEpoch:
    """Model selection on validation: the best epoch by ``metric`` (maximised; the earliest on
    ties; a NaN never counts) with its weights, and early stopping after ``patience`` epochs
    without improvement."""

    def __init__(self, metric: str, patience: int | None = None) -> None:
        self.metric = metric
        self.patience = patience
        self.epoch = -1
        self.value = -math.inf
        self.weights: dict[str, torch.Tensor] | None = None

    def update(self, epoch: int, metrics: dict[str, float], learner: nn.Module) -> bool:
        """Record ``epoch``'s validation ``metrics``; keep ``learner``'s weights if it is the
        best so far. True when it is."""
        if self.metric not in metrics:
            raise ConfigError(f"train.val_metric: the validation gives no {self.metric!r}; "
                              f"it gives: {', '.join(sorted(k for k in metrics if k.startswith('val_')))}")
        value = float(metrics[self.metric])
        if not value > self.value:  # also False for NaN
            return False
        self.epoch, self.value = epoch, value
        self.weights = {k: v.detach().to("cpu", copy=True) for k, v in learner.state_dict().items()}
        return True

    def should_stop(self, epoch: int) -> bool:
        """True when ``patience`` epochs have passed since the best one, as of ``epoch``."""
        return self.patience is not None and self.epoch >= 0 and epoch - self.epoch >= self.patience

    def state_dict(self) -> dict[str, Any]:
        return {"metric": self.metric, "epoch": self.epoch, "value": self.value, "learner": self.weights}

    def load_state_dict(self, state: dict[str, Any] | None) -> None:
        if state:
            self.epoch, self.value, self.weights = int(state["epoch"]), float(state["value"]), state["learner"]
