"""Where a training run executes, and which earlier work it may resume.

``train.launcher``: ``ray`` runs the loop in Ray Train workers (one or many, CPU or GPU, on a
cluster when ``RAY_ADDRESS`` is set); ``local`` runs the same loop in this process, with
checkpoints kept in the same run folder so that a killed run resumes too; ``auto`` picks Ray
Train when a cluster, several workers or a GPU are asked for and the local loop otherwise (on
a small machine, starting Ray Train's controller and worker processes takes longer than a
small model's whole training).

A run folder ``<storage>/<run name>`` is named by everything that determines the run (see
:func:`run_name`): parameters, data and the package source. Starting
the same run again resumes an unfinished one; a finished one (its model was exported) is
trained again from scratch, so no stage ever hands back a model of other inputs or code.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import torch

from dml.config import RunSpec, TrainConfig
from dml.context import BuildContext
from dml.io import write_json_atomic
from dml.models import EmbeddingModel, build_model
from dml.pipeline.ray_cluster import check_fits_a_node, ray_session
from dml.pipeline.run_naming import run_name
from dml.train.checkpoints import load_checkpoint
from dml.train.learner import build_learner
from dml.train.loop import fit
from dml.train.sessions import LocalSession
from dml.train.training_data import DataSpec, training_set
from dml.held_out import held_out

#: Written into a run's folder once its model is exported: such a run is never resumed.
FINISHED_MARKER = "dml-finished.json"


def launcher(cfg: TrainConfig) -> str:
    """``ray`` or ``local`` for ``train.launcher`` (``auto`` resolved)."""
    if cfg.launcher != "auto":
        return cfg.launcher
    wants_ray = bool(os.environ.get("RAY_ADDRESS")) or cfg.num_workers > 1 or cfg.use_gpu
    return "ray" if wants_ray else "local"


def discard_if_finished(run_folder: Path) -> bool:
    """Remove a finished run's folder so that it trains again from scratch; True if removed."""
    if (run_folder / FINISHED_MARKER).is_file():
        shutil.rmtree(run_folder)
        return True
    return False


def selected_weights(spec: RunSpec, state: dict[str, Any]) -> tuple[dict[str, Any], int]:
    """The learner weights that ``train.select`` exports from a run's last checkpoint, and
    their epoch."""
    if spec.train.select == "best" and state.get("best") and state["best"]["learner"] is not None:
        return state["best"]["learner"], int(state["best"]["epoch"])
    return state["learner"], int(state["epoch"])


def refit_spec(spec: RunSpec, epochs: int) -> RunSpec:
    """``spec`` retrained on every training class (no validation fold held out) for
    ``epochs``, its last epoch exported: ``train.refit`` after selection on the folds."""
    train = spec.train.model_copy(update={"epochs": epochs, "val_folds": [], "select": "last",
                                          "patience": None})
    return spec.model_copy(update={"train": train})


def trained_model(spec: RunSpec, state: dict[str, Any], weights: dict[str, Any]) -> tuple[EmbeddingModel, BuildContext]:
    """The model of a run's checkpoint ``state`` with ``weights`` (a learner state dict)."""
    context = BuildContext(**state["context"])
    learner = build_learner(spec, context)
    learner.load_state_dict(weights)
    return learner.model, context


def initial_model(spec: RunSpec, data: DataSpec) -> tuple[EmbeddingModel, BuildContext]:
    """The model a run of ``spec`` starts from (same seed, same sizes), untrained."""
    torch.manual_seed(spec.train.seed)  # as fit() does before building the learner
    train_set = training_set(spec, held_out(spec, data)[0])
    context = BuildContext(**train_set.rows.context_sizes())
    return build_model(spec.model, context), context


def mark_finished(run_folder: Path, **details: Any) -> None:
    """Record that the run's model was exported (so a later start does not resume it)."""
    write_json_atomic(run_folder / FINISHED_MARKER, details)


def train_run(spec: RunSpec, data: DataSpec, *, storage_path: Path) -> tuple[dict[str, Any], Path]:
    """Train ``spec`` (resuming an unfinished run of the same name) with its launcher, its
    validation folds held out of training and validated every epoch; the last checkpoint's
    state (with the best epoch's weights under ``best``) and the run folder."""
    data, validate = held_out(spec, data)
    name = run_name(spec, data, spec.train.epochs)
    folder = storage_path / name
    if discard_if_finished(folder):
        print(f"{spec.experiment}: run {name} had finished; training it again", flush=True)
    if launcher(spec.train) == "local":
        session = LocalSession(storage=folder)
        fit(spec, data, session, validate=validate)
        checkpoint = session.latest_checkpoint()
        assert checkpoint is not None
        return load_checkpoint(checkpoint), folder
    from dml.train.ray_trainer import latest_checkpoint, train_on_ray

    with ray_session():
        check_fits_a_node("train.cpus_per_worker", spec.train.cpus_per_worker)
        result = train_on_ray(spec, data, storage_path=storage_path, name=name, validate=validate)
        with latest_checkpoint(result) as checkpoint:
            return load_checkpoint(checkpoint), folder
