"""The training loop, free of any framework: Ray Train, Ray Tune and plain calls all drive it.

A :class:`~dml.train.sessions.Session` says who we are (rank, world size, device), where to
resume from and where to report to; ``fit`` runs the epochs, ``train_one_epoch`` the steps.
"""

from __future__ import annotations

import math
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from dml.batch import Batch
from dml.config import RunSpec
from dml.context import BuildContext
from dml.data.dataset import ManifestDataset
from dml.data.samplers import GlobalBatchSampler
from dml.models import EmbeddingModel
from dml.models.trunk_memo import TrunkMemo
from dml.precision import autocast_dtype
from dml.train.checkpoints import BestEpoch, load_checkpoint, save_checkpoint
from dml.train.distributed import gather_objects, take_communication_seconds
from dml.train.feature_cache import CachedFeatures, deterministic, trunk_features
from dml.train.finetune import (apply_channels_last, freeze_trunk, frozen_at, frozen_count, lr_schedule,
                                trunk_never_trains, use_channels_last)
from dml.train.head_init import init_head_from_features
from dml.train.learner import MetricLearner, build_learner, build_optimizer, unwrap
from dml.train.sessions import Session
from dml.train.training_data import DataSpec, build_sampler, training_loader, training_set


def fit(
    spec: RunSpec,
    data: DataSpec,
    session: Session,
    *,
    epochs: int | None = None,
    validate: Callable[[EmbeddingModel], dict[str, float]] | None = None,
) -> MetricLearner:
    """Train ``spec`` on ``data`` for ``epochs`` (default ``spec.train.epochs``).

    Resumes from ``session.checkpoint_dir()`` when given. Each epoch ends with one
    ``session.report`` carrying the epoch's metrics (plus ``validate``'s, if given) and a
    checkpoint written by rank 0. With ``validate``, the checkpoint also keeps the weights of
    the best epoch by ``val_<train.val_metric>`` (key ``best``: what ``train.select: best``
    exports), and training stops once ``train.patience`` epochs pass without improvement.
    """
    cfg = spec.train
    epochs = cfg.epochs if epochs is None else epochs
    torch.manual_seed(cfg.seed)  # same initial weights on every rank
    train_set = training_set(spec, data)
    context = BuildContext(**train_set.rows.context_sizes(), embed_dim=spec.model.embed_dim)
    sampler = build_sampler(spec, train_set, rank=session.rank, world_size=session.world_size)
    learner = build_learner(spec, context, autocast_dtype=autocast_dtype(cfg.precision, session.device))
    frozen = frozen_count(cfg, learner.model.trunk) if cfg.freeze else 0
    channels_last = use_channels_last(cfg, learner.model.trunk)
    apply_channels_last(learner, learner.model.trunk, channels_last)
    optimizer = build_optimizer(learner, spec)
    schedule = lr_schedule(optimizer, len(sampler), cfg, epochs)
    selection = BestEpoch(f"val_{cfg.val_metric}", cfg.patience) if validate is not None else None
    run = RunProgress()
    resume = session.checkpoint_dir()
    if resume is not None:
        run = restore(load_checkpoint(resume), learner, optimizer, schedule, sampler, selection)
        if selection is not None and selection.should_stop(run.start_epoch - 1):
            return learner  # the run had stopped early; nothing left to do
        if session.rank == 0:
            print(f"{spec.experiment}: resuming at epoch {run.start_epoch} from {resume}", flush=True)
    freeze_trunk(learner.model, frozen if frozen_at(cfg, run.start_epoch) else 0)
    module = session.prepare(learner)
    workers = gather_objects(session.placement())
    title = spec.experiment if session.rank == 0 else None
    never_trains = trunk_never_trains(cfg, learner.model)
    source = train_set
    if never_trains and run.start_epoch < epochs:
        source = cached_trunk_features(learner, train_set, spec, session.device, channels_last, title)
    if cfg.head_init == "pca" and resume is None and epochs > 0 and isinstance(learner.model.head, nn.Linear):
        init_head(learner, source, cfg.seed, session.device, channels_last, title)
    if never_trains:
        learner.model.trunk_memo = TrunkMemo()  # validation embeds the same images each epoch
    loader = training_loader(source, sampler, cfg.loader_workers, cfg.pin_memory, session.device)
    clock = TrainingClock(steps_per_epoch=len(sampler), epochs=epochs)

    for epoch in range(run.start_epoch, epochs):
        if frozen and epoch == cfg.unfreeze_after:
            freeze_trunk(unwrap(module).model, 0)  # everything trains from here on
            module = session.prepare(unwrap(module))  # a data-parallel wrapper syncs them too
        # Augmentation draws from a generator seeded by (seed, epoch, rank): reproducible runs.
        torch.manual_seed(cfg.seed * 1_000_003 + epoch * 1_009 + session.rank)
        sampler.set_epoch(epoch)
        if isinstance(source, CachedFeatures):
            source.set_epoch(epoch)
        bar = f"{spec.experiment} epoch {epoch + 1}/{epochs}" if session.rank == 0 else None
        metrics = train_one_epoch(module, loader, optimizer, session.device, clock=clock, epoch=epoch,
                                  progress=bar, schedule=schedule, channels_last=channels_last)
        metrics["epoch"] = float(epoch)
        if validate is not None:
            unwrap(module).model.eval()
            metrics.update(validate(unwrap(module).model))
        if selection is not None:
            selection.update(epoch, metrics, unwrap(module))
        run.history.append(metrics)
        state = {"learner": unwrap(module).state_dict(), "optimizer": optimizer.state_dict(),
                 "schedule": schedule.state_dict(), "sampler": sampler.state_dict(), "history": run.history,
                 "epoch": epoch, "context": context.values(), "workers": workers, "resumes": run.resumes,
                 "best": selection.state_dict() if selection is not None else None}
        report_epoch(session, metrics, state)
        if selection is not None and selection.should_stop(epoch):
            if session.rank == 0:
                print(f"{spec.experiment}: stopping early after epoch {epoch}: no gain in "
                      f"{selection.metric} since epoch {selection.epoch}", flush=True)
            break
    unwrap(module).model.trunk_memo = None
    return unwrap(module)


@dataclass
class RunProgress:
    """How far a run got: each finished epoch's metrics, the epochs at which it restarted from a
    checkpoint, and the epoch to train next."""

    history: list[dict[str, float]] = field(default_factory=list)
    resumes: list[int] = field(default_factory=list)
    start_epoch: int = 0


def restore(state: dict[str, Any], learner: MetricLearner, optimizer: torch.optim.Optimizer,
            schedule: torch.optim.lr_scheduler.LRScheduler, sampler: GlobalBatchSampler,
            selection: BestEpoch | None) -> RunProgress:
    """Load a checkpoint's ``state`` into the run's parts; where the run continues."""
    learner.load_state_dict(state["learner"])
    optimizer.load_state_dict(state["optimizer"])
    schedule.load_state_dict(state["schedule"])
    sampler.load_state_dict(state["sampler"])
    if selection is not None:
        selection.load_state_dict(state.get("best"))
    start_epoch = int(state["epoch"]) + 1
    return RunProgress(list(state["history"]), [*state["resumes"], start_epoch], start_epoch)


def cached_trunk_features(learner: MetricLearner, train_set: ManifestDataset, spec: RunSpec,
                          device: torch.device, channels_last: bool, title: str | None) -> CachedFeatures:
    """The training set as trunk features, computed once (a trunk that never trains): one view
    per image, or ``train.feature_views`` augmented views where augmentation is random."""
    views = 1 if deterministic(train_set) else spec.train.feature_views
    return CachedFeatures(train_set, trunk_features(
        learner.model, train_set, views=views, seed=spec.train.seed, device=device, channels_last=channels_last,
        progress=f"{title} trunk features" if title else None))


def init_head(learner: MetricLearner, source: ManifestDataset | CachedFeatures, seed: int, device: torch.device,
              channels_last: bool, title: str | None) -> None:
    """``train.head_init: pca``: the embedding head from the training set's trunk features
    (the cached ones, else one pass of the trunk over the training images)."""
    if isinstance(source, CachedFeatures):
        features = source.features[0]
    else:
        features = trunk_features(learner.model, source, views=1, seed=seed, device=device,
                                  channels_last=channels_last, progress=f"{title} head init" if title else None)[0]
    init_head_from_features(learner.model.head, features)


def report_epoch(session: Session, metrics: dict[str, float], state: dict[str, Any]) -> None:
    """One ``session.report`` of the epoch's metrics, with rank 0's checkpoint of ``state`` in
    a temporary folder that lives until the session has taken it."""
    with tempfile.TemporaryDirectory(prefix="dml-ckpt-") as tmp:
        folder = None
        if session.rank == 0:
            folder = Path(tmp)
            save_checkpoint(folder, state)
        session.report(metrics, folder)


@dataclass(frozen=True)
class TrainingClock:
    """Where a step sits in the run: global step and progress for losses with schedules."""

    steps_per_epoch: int
    epochs: int

    def stamp(self, batch: Batch, epoch: int, step_in_epoch: int) -> Batch:
        """``batch`` with its global step, epoch and progress (fraction done, in [0, 1))."""
        step = epoch * self.steps_per_epoch + step_in_epoch
        total = max(1, self.steps_per_epoch * self.epochs)
        return batch.replace(step=step, epoch=epoch, progress=min(1.0, step / total))


def train_one_epoch(
    module: nn.Module,
    loader: DataLoader,
    optimizer: torch.optim.Optimizer,
    device: torch.device,
    *,
    clock: TrainingClock | None = None,
    epoch: int = 0,
    progress: str | None = None,
    schedule: torch.optim.lr_scheduler.LRScheduler | None = None,
    channels_last: bool = False,
) -> dict[str, float]:
    """One pass over ``loader``: the mean loss (and the mean of each term the loss logs, as
    ``loss/<term>``), images per second, steps, and the share of the epoch's time spent in the
    global-batch all-gather (0 on one process).

    ``progress``: the title of a progress bar with the running loss and images/s, shown on a
    terminal only (and cleared when the epoch ends).
    """
    module.train()
    total, steps, images_seen = 0.0, 0, 0
    terms: dict[str, float] = {}
    take_communication_seconds()
    start = time.perf_counter()
    bar = tqdm(loader, desc=progress, unit="step", leave=False, dynamic_ncols=True,
               disable=True if progress is None else None)
    for batch in bar:
        if clock is not None:
            batch = clock.stamp(batch, epoch, steps)
        batch = batch.to(device, non_blocking=True)
        if channels_last and batch.images is not None:
            batch = batch.replace(images=batch.images.contiguous(memory_format=torch.channels_last))
        loss, logged = module(batch)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"loss became {loss.item()} at step {steps}")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if schedule is not None:
            schedule.step()
        total += float(loss.detach())
        for name, value in logged.items():
            terms[name] = terms.get(name, 0.0) + value
        steps += 1
        images_seen += len(batch)
        bar.set_postfix(loss=f"{total / steps:.4f}",
                        img_s=f"{images_seen / max(time.perf_counter() - start, 1e-9):.0f}", refresh=False)
    bar.close()
    elapsed = time.perf_counter() - start
    return {
        "loss": total / max(steps, 1),
        **{f"loss/{name}": value / max(steps, 1) for name, value in terms.items()},
        "images_per_s": images_seen / elapsed if elapsed > 0 else math.nan,
        "steps": float(steps),
        "gather_share": take_communication_seconds() / elapsed if elapsed > 0 else math.nan,
    }
