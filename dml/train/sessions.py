"""Who runs the training loop: the ``Session`` protocol it needs (rank, device, resume point,
where to report), and the single-process session of tests, benchmarks, in-process Tune trials
and the local launcher. Ray Train's session is in :mod:`dml.train.ray_trainer`."""

from __future__ import annotations

import os
import shutil
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn

from dml.io import atomic_path
from dml.train.checkpoints import CHECKPOINT_FILE


class Session(Protocol):
    """What the loop needs from whoever runs it."""

    rank: int
    world_size: int
    device: torch.device

    def checkpoint_dir(self) -> Path | None:
        """Folder of the checkpoint to resume from, or None for a fresh start."""

    def report(self, metrics: dict[str, float], checkpoint_dir: Path | None) -> None:
        """Publish one epoch's metrics and (on rank 0) its checkpoint folder."""

    def prepare(self, module: nn.Module) -> nn.Module:
        """Move to the device and wrap for data parallelism where needed."""

    def placement(self) -> dict[str, Any]:
        """Where this rank runs (node, host, process, device): recorded in checkpoints."""


@dataclass
class LocalSession:
    """A single process without Ray: for tests, benchmarks, in-process Tune trials and the
    local launcher.

    With ``storage`` (a run folder), every reported checkpoint is kept there as
    ``checkpoint_<epoch>/`` (written atomically; the last ``keep`` are kept) and a new session
    on the same folder resumes from the latest one, as a Ray Train run does from its storage.
    """

    resume_from: Path | None = None
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    rank: int = 0
    world_size: int = 1
    history: list[dict[str, float]] = field(default_factory=list)
    on_report: Callable[[dict[str, float], Path | None], None] | None = None
    storage: Path | None = None
    keep: int = 2

    def checkpoint_dir(self) -> Path | None:
        return self.resume_from or self.latest_checkpoint()

    def latest_checkpoint(self) -> Path | None:
        """The newest checkpoint kept in ``storage`` (None without storage or checkpoints)."""
        if self.storage is None or not self.storage.is_dir():
            return None
        kept = sorted(self.storage.glob("checkpoint_*"))
        return kept[-1] if kept else None

    def report(self, metrics: dict[str, float], checkpoint_dir: Path | None) -> None:
        self.history.append(dict(metrics))
        if self.storage is not None and checkpoint_dir is not None:
            epoch = int(metrics["epoch"])
            with atomic_path(self.storage / f"checkpoint_{epoch:06d}", directory=True) as tmp:
                shutil.copy2(checkpoint_dir / CHECKPOINT_FILE, tmp / CHECKPOINT_FILE)
            for old in sorted(self.storage.glob("checkpoint_*"))[: -self.keep]:
                shutil.rmtree(old, ignore_errors=True)
        if self.on_report is not None:
            self.on_report(metrics, checkpoint_dir)

    def prepare(self, module: nn.Module) -> nn.Module:
        return module.to(self.device)

    def placement(self) -> dict[str, Any]:
        return describe_process(self.rank, "local", self.device)


def describe_process(rank: int, node_id: str, device: torch.device) -> dict[str, Any]:
    """A rank's placement record: plain values, so checkpoints stay ``weights_only``-loadable."""
    return {"rank": rank, "node_id": node_id, "hostname": socket.gethostname(), "pid": os.getpid(),
            "device": str(device)}
