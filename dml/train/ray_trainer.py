"""Ray Train: the same loop on 1 CPU worker or N GPUs over many nodes, with resume.

A run is named by its experiment and a hash of everything that determines it: the resolved
parameters, the content of the manifest and splits, and the source of the ``dml`` package.
Starting the same run again after a crash or a killed `dvc repro` resumes from its latest
checkpoint in ``storage_path``; changed parameters, data or code start a fresh run (and
:mod:`dml.train.launch` never resumes a run that finished).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import ray
import ray.train
import ray.train.torch
from torch import nn

from dml.config import RunSpec
from dml.pipeline.quiet import quiet_frameworks
from dml.pipeline.run_naming import run_name
from dml.train.loop import fit
from dml.train.sessions import describe_process
from dml.train.training_data import DataSpec

class RayTrainSession:
    """Session adapter for a Ray Train worker."""

    def __init__(self) -> None:
        context = ray.train.get_context()
        self.rank = context.get_world_rank()
        self.world_size = context.get_world_size()
        self.node_rank = context.get_node_rank()
        self.device = ray.train.torch.get_device()
        self._stack = contextlib.ExitStack()

    def checkpoint_dir(self) -> Path | None:
        checkpoint = ray.train.get_checkpoint()
        if checkpoint is None:
            return None
        return Path(self._stack.enter_context(checkpoint.as_directory()))

    def report(self, metrics: dict[str, float], checkpoint_dir: Path | None) -> None:
        checkpoint = (
            ray.train.Checkpoint.from_directory(str(checkpoint_dir)) if checkpoint_dir else None
        )
        ray.train.report(
            {**metrics, "world_size": float(self.world_size)}, checkpoint=checkpoint
        )

    def prepare(self, module: nn.Module) -> nn.Module:
        # DDP when world_size > 1; gloo on CPU, NCCL on GPU (chosen by Ray from use_gpu).
        return ray.train.torch.prepare_model(module)

    def placement(self) -> dict[str, Any]:
        return describe_process(self.rank, ray.get_runtime_context().get_node_id(), self.device)


def train_worker(config: dict[str, Any]) -> None:
    """Entry point of every Ray Train worker."""
    quiet_frameworks()
    # Ray Train logs each report (the whole TrainingReport) on a logger named by its file's
    # path, which reaches the console through the root logger at INFO.
    logging.getLogger().setLevel(logging.WARNING)
    spec = RunSpec.model_validate(config["spec"])
    data = DataSpec(**config["data"])
    session = RayTrainSession()
    validate = config.get("validate")
    fit(spec, data, session, epochs=config["epochs"], validate=validate)


def make_trainer(
    spec: RunSpec,
    data: DataSpec,
    *,
    storage_path: Path,
    epochs: int | None = None,
    name: str | None = None,
    validate: Callable[[nn.Module], dict[str, float]] | None = None,
    callbacks: Sequence[Any] = (),
) -> ray.train.torch.TorchTrainer:
    """A TorchTrainer for ``spec`` with workers, GPUs and fault tolerance from its train config."""
    epochs = spec.train.epochs if epochs is None else epochs
    return ray.train.torch.TorchTrainer(
        train_worker,
        train_loop_config={
            "spec": spec.model_dump(mode="json"),
            "data": asdict(data),
            "epochs": epochs,
            "validate": validate,
        },
        scaling_config=ray.train.ScalingConfig(
            num_workers=spec.train.num_workers,
            use_gpu=spec.train.use_gpu,
            resources_per_worker={"CPU": spec.train.cpus_per_worker},
        ),
        run_config=ray.train.RunConfig(
            name=name or run_name(spec, data, epochs),
            storage_path=str(storage_path),
            failure_config=ray.train.FailureConfig(max_failures=spec.train.max_failures),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=2),
            callbacks=list(callbacks),
            # Ray Train's own records (each report, each checkpoint, its controller's polling)
            # stay in the session's log files; the console gets its errors and our lines.
            logging_config=ray.train.LoggingConfig(log_level="ERROR"),
        ),
    )


@contextlib.contextmanager
def latest_checkpoint(result: ray.train.Result) -> Iterator[Path]:
    """The folder of a finished run's latest checkpoint."""
    if result.checkpoint is None:
        raise RuntimeError(f"training run {result.path} reported no checkpoint")
    with result.checkpoint.as_directory() as folder:
        yield Path(folder)


def train_on_ray(spec: RunSpec, data: DataSpec, *, storage_path: Path, name: str | None = None,
                 validate: Callable[[nn.Module], dict[str, float]] | None = None) -> ray.train.Result:
    """Fit ``spec`` with Ray Train (resuming a run of the same name) and return its result;
    a worker's error is raised here."""
    result = make_trainer(spec, data, storage_path=storage_path, name=name, validate=validate).fit()
    if result.error is not None:
        raise result.error
    return result
