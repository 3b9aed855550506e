"""The training loop, free of any framework: Ray Train, Ray Tune and plain calls all drive it.

A ``Session`` says who we are (rank, world size, device), where to resume from and where to
report to; ``fit`` runs the epochs. Checkpoints hold everything needed to continue exactly:
model, loss parameters, optimizer, sampler position and the metric history (augmentation RNGs
are re-seeded from (seed, epoch, rank)), plus where the ranks ran and at which epochs the run
was resumed.
"""

from __future__ import annotations

import math
import os
import shutil
import socket
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from dml.batch import Batch
from dml.config import RunSpec
from dml.context import BuildContext, build_with_context
from dml.data.dataset import ManifestDataset
from dml.data.samplers import SAMPLERS, GlobalBatchSampler
from dml.errors import ConfigError, IntegrityError
from dml.io import atomic_path
from dml.losses import MetricLoss, build_loss
from dml.models import EmbeddingModel, build_model
from dml.models.trunk_memo import TrunkMemo
from dml.train.distributed import gather_global_batch, gather_objects, take_communication_seconds
from dml.train.feature_cache import CachedFeatures, deterministic, trunk_features
from dml.train.head_init import init_head_from_features
from dml.train.finetune import (apply_channels_last, freeze_trunk, frozen_at, frozen_count, lr_schedule, parameter_groups,
                                trunk_never_trains, use_channels_last)

CHECKPOINT_FILE = "state.pt"


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


@dataclass(frozen=True)
class DataSpec:
    """Which images train and (optionally) validate a run.

    Paths are made absolute: Ray workers do not share the driver's working directory.
    """

    manifest: str
    splits: str
    train_exclude_folds: tuple[int, ...] = ()
    val_folds: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "manifest", str(Path(self.manifest).resolve()))
        object.__setattr__(self, "splits", str(Path(self.splits).resolve()))
        object.__setattr__(self, "train_exclude_folds", tuple(self.train_exclude_folds))
        object.__setattr__(self, "val_folds", tuple(self.val_folds))


class MetricLearner(nn.Module):
    """Model plus loss in one module, so DDP synchronises trunk, heads and proxies together.

    ``learner(batch)``: the model runs on the batch's images (with its conditioning signal),
    the outputs and annotations of every rank are gathered into the global batch, and the
    loss reads both (``forward_batch``). With ``autocast_dtype`` (bf16) the model runs under
    autocast; its outputs are cast back to float32 before the all-gather and the loss, whose
    exponentials need the range.
    """

    def __init__(self, model: EmbeddingModel, loss: MetricLoss, autocast_dtype: torch.dtype | None = None) -> None:
        super().__init__()
        self.model = model
        self.loss = loss
        self.autocast_dtype = autocast_dtype

    def forward(self, batch: Batch) -> torch.Tensor:
        with torch.autocast(batch.index.device.type, dtype=self.autocast_dtype or torch.bfloat16,
                            enabled=self.autocast_dtype is not None):
            output = self.model.forward_batch(batch)
        output, batch = gather_global_batch(output.float(), batch)
        return self.loss.forward_batch(output, batch)


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for ``train.precision`` on ``device`` (None: full float32)."""
    if precision == "bf16":
        return torch.bfloat16
    if precision == "auto" and device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return None


def build_learner(
    spec: RunSpec, context: BuildContext, *, autocast_dtype: torch.dtype | None = None
) -> MetricLearner:
    """The model and loss of ``spec``, sizes (classes, attributes, embed dim) from ``context``."""
    model = build_model(spec.model, context)
    context = BuildContext(**{**context.values(), "embed_dim": model.embed_dim,
                              "feature_dim": model.trunk.out_dim, "image_size": spec.model.image_size,
                              "embedding_head": model.head})
    if spec.loss is None:
        raise ConfigError(f"experiments.{spec.experiment}.loss: missing; nothing to train with")
    loss = build_loss(spec.loss, context=context, where=f"experiments.{spec.experiment}.loss")
    return MetricLearner(model, loss, autocast_dtype)


def build_sampler(spec: RunSpec, dataset: ManifestDataset, *, rank: int,
                  world_size: int) -> GlobalBatchSampler:
    """The sampler named in ``spec.train.sampler`` over ``dataset``, for this rank."""
    cfg = spec.train.sampler
    return build_with_context(SAMPLERS, cfg.name, cfg.knobs(), None,
                              where=f"experiments.{spec.experiment}.train.sampler",
                              dataset=dataset, batch_size=spec.train.batch_size, rank=rank,
                              world_size=world_size, seed=spec.train.seed)


def training_set(spec: RunSpec, data: DataSpec) -> ManifestDataset:
    """The training rows of ``spec`` (its domains, minus held-out folds), labels renumbered."""
    return ManifestDataset(
        data.manifest,
        data.splits,
        split="train",
        exclude_folds=list(data.train_exclude_folds) or None,
        domains=spec.domains,
        image_size=spec.model.image_size,
        train=True,
        relabel=True,
        augment=spec.train.augment,
    )


def build_optimizer(learner: MetricLearner, spec: RunSpec) -> torch.optim.Optimizer:
    """AdamW over the trunk, the heads and the loss's parameters, each group with its own
    learning rate (:func:`dml.train.finetune.parameter_groups`)."""
    return torch.optim.AdamW(parameter_groups(learner.model, learner.loss, spec.train),
                             weight_decay=spec.train.weight_decay)


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


def unwrap(module: nn.Module) -> MetricLearner:
    """The learner inside a DDP wrapper (or the learner itself)."""
    return module.module if hasattr(module, "module") else module  # type: ignore[return-value]


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
    context = BuildContext(**train_set.context_sizes(), embed_dim=spec.model.embed_dim)
    sampler = build_sampler(spec, train_set, rank=session.rank, world_size=session.world_size)
    learner = build_learner(
        spec, context, autocast_dtype=autocast_dtype(cfg.precision, session.device)
    )
    frozen = frozen_count(cfg, learner.model.trunk) if cfg.freeze else 0
    channels_last = use_channels_last(cfg, learner.model.trunk)
    apply_channels_last(learner, learner.model.trunk, channels_last)
    optimizer = build_optimizer(learner, spec)
    schedule = lr_schedule(optimizer, len(sampler), cfg, epochs)
    history: list[dict[str, float]] = []
    resumes: list[int] = []  # epochs at which this run restarted from a checkpoint
    selection = BestEpoch(f"val_{cfg.val_metric}", cfg.patience) if validate is not None else None
    start_epoch = 0
    resume = session.checkpoint_dir()
    if resume is not None:
        state = load_checkpoint(resume)
        learner.load_state_dict(state["learner"])
        optimizer.load_state_dict(state["optimizer"])
        schedule.load_state_dict(state["schedule"])
        sampler.load_state_dict(state["sampler"])
        history = list(state["history"])
        start_epoch = int(state["epoch"]) + 1
        resumes = [*state["resumes"], start_epoch]
        if selection is not None:
            selection.load_state_dict(state.get("best"))
        if selection is not None and selection.should_stop(start_epoch - 1):
            return learner  # the run had stopped early; nothing left to do
        if session.rank == 0:
            print(f"{spec.experiment}: resuming at epoch {start_epoch} from {resume}", flush=True)
    freeze_trunk(learner.model, frozen if frozen_at(cfg, start_epoch) else 0)
    module = session.prepare(learner)
    workers = gather_objects(session.placement())
    source: ManifestDataset | CachedFeatures = train_set
    never_trains = trunk_never_trains(cfg, learner.model)
    if never_trains and start_epoch < epochs:
        views = 1 if deterministic(train_set) else cfg.feature_views
        source = CachedFeatures(train_set, trunk_features(
            learner.model, train_set, views=views, seed=cfg.seed, device=session.device,
            channels_last=channels_last,
            progress=f"{spec.experiment} trunk features" if session.rank == 0 else None))
    if cfg.head_init == "pca" and resume is None and epochs > 0 and isinstance(learner.model.head, nn.Linear):
        if isinstance(source, CachedFeatures):
            features = source.features[0]
        else:  # one pass of the trunk over the training images
            features = trunk_features(learner.model, train_set, views=1, seed=cfg.seed, device=session.device,
                                      channels_last=channels_last,
                                      progress=f"{spec.experiment} head init" if session.rank == 0 else None)[0]
        init_head_from_features(learner.model.head, features)
    if never_trains:
        learner.model.trunk_memo = TrunkMemo()  # validation embeds the same images each epoch
    loader = training_loader(source, sampler, cfg.loader_workers, cfg.pin_memory, session.device)
    clock = TrainingClock(steps_per_epoch=len(sampler), epochs=epochs)

    for epoch in range(start_epoch, epochs):
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
        history.append(metrics)
        with tempfile.TemporaryDirectory(prefix="dml-ckpt-") as tmp:
            folder = None
            if session.rank == 0:
                folder = Path(tmp)
                save_checkpoint(
                    folder,
                    {
                        "learner": unwrap(module).state_dict(),
                        "optimizer": optimizer.state_dict(),
                        "schedule": schedule.state_dict(),
                        "sampler": sampler.state_dict(),
                        "history": history,
                        "epoch": epoch,
                        "context": context.values(),
                        "workers": workers,
                        "resumes": resumes,
                        "best": selection.state_dict() if selection is not None else None,
                    },
                )
            session.report(metrics, folder)
        if selection is not None and selection.should_stop(epoch):
            if session.rank == 0:
                print(f"{spec.experiment}: stopping early after epoch {epoch}: no gain in "
                      f"{selection.metric} since epoch {selection.epoch}", flush=True)
            break
    unwrap(module).model.trunk_memo = None
    return unwrap(module)


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


def training_loader(train_set: ManifestDataset | CachedFeatures, sampler: GlobalBatchSampler, workers: int,
                    pin_memory: bool | str, device: torch.device) -> DataLoader:
    """The epoch's batches: ``workers`` processes decode and augment (0: this process).

    Workers start afresh each epoch (not persistent): their random seeds then derive from the
    generator the loop seeds with (seed, epoch, rank), so augmentation is reproducible and a
    resumed run draws what the uninterrupted one drew. The batch sampler stays in this process.
    """
    pin = device.type == "cuda" if pin_memory == "auto" else bool(pin_memory)
    if isinstance(train_set, CachedFeatures):
        workers = 0  # features in memory: nothing to decode
    if workers:
        train_set.preload()
    return DataLoader(train_set, batch_sampler=sampler, num_workers=workers, collate_fn=train_set.collate,
                      pin_memory=pin and torch.cuda.is_available())


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
    loss_module = unwrap(module).loss
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
        loss = module(batch)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"loss became {loss.item()} at step {steps}")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if schedule is not None:
            schedule.step()
        total += float(loss.detach())
        for name, value in loss_module.pop_terms().items():
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
