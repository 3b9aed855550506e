"""The peer side of the reality check: pytorch-metric-learning's (PML) own plain training loop
on the images the pipeline prepared, scored by the project's evaluation.

    .venv/bin/python benchmarks/peer_pml.py --params params.yaml --project . \\
        --experiment multi_similarity --seeds 0 1 2 [--scratch] --out results.json

The model is the one the project builds for ``--experiment`` (its timm trunk, ``embed_dim``,
image size and input normalisation; the project's ImageNet weights loaded as the project loads
them, or ``model.weights: null`` with ``--scratch``), with the same initial weights (the
project seeds torch with ``train.seed`` before building it, and so does this). It is trained
as PML's examples train one: everything trains (trunk and head, no freezing, BatchNorm in
train mode), ``torch.optim.Adam(lr=train.lr, weight_decay=train.weight_decay)``,
``losses.MultiSimilarityLoss(alpha, beta, base)`` on the pairs of
``miners.MultiSimilarityMiner(epsilon)`` (the experiment's loss values), batches from
``samplers.MPerClassSampler(labels, m, batch_size, length_before_new_iter=<training rows>)``,
for ``train.epochs`` epochs on every training-class row (no validation fold, no selection,
no refit). The images are the manifest and splits of ``<project>/data/<dataset>/`` read
through the project's own training set (:func:`dml.train.training_data.training_set`: its transforms,
``train.augment`` included). The batch is ``train.batch_size`` where the training classes
fill it, else :func:`peer_batch_size`.

The trained model embeds the test rows (the test split and any shared gallery, with the
protocol's views) and :func:`dml.evaluate.experiment.evaluate_test_split` scores them, as
``benchmarks/trunk_comparison.py`` scores the project's own models.

PML is imported inside the functions that use it: ``pytorch_metric_learning.losses`` imports
``faiss.contrib.torch_utils``, which replaces faiss's Python methods process-wide.

Writes ``--out`` (JSON, atomically, after each run): the experiment, the recipe as run, and
per seed MAP@R, R@1 and seconds (training and embedding the test rows). Prints one line per
run.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from dml.checks import check_run
from dml.config import Params, RunSpec, load_params, resolve_run
from dml.context import BuildContext
from dml.data.dataset import ManifestDataset
from dml.data.rows import ManifestRows
from dml.embed import extract
from dml.errors import ConfigError
from dml.evaluate.experiment import evaluate_test_split
from dml.evaluate.protocols import EvalRows, build_protocol
from dml.io import write_json_atomic
from dml.models import EmbeddingModel, build_model
from dml.train.training_data import DataSpec, training_set

LIBRARY = "pytorch-metric-learning"
#: The loss and sampler of the project's experiment that PML's loop reproduces.
LOSS = "multi_similarity"
SAMPLER = "m_per_class"
DEFAULT_M = 4
METRICS = {"map@r": "MAP@R", "recall@1": "R@1"}


def peer_batch_size(batch_size: int, m: int, n_classes: int) -> int:
    """The batch PML's ``MPerClassSampler`` can serve: at most ``batch_size``, at most ``m``
    images of each of ``n_classes`` classes, a multiple of ``m``.

    >>> peer_batch_size(64, 4, 100), peer_batch_size(64, 4, 10), peer_batch_size(66, 4, 100)
    (64, 40, 64)
    """
    if m < 1:
        raise ValueError(f"m must be at least 1, got {m}")
    size = min(int(batch_size), int(m) * int(n_classes))
    size -= size % m
    if size < m:
        raise ValueError(f"no batch of m={m} images per class fits batch_size {batch_size} "
                         f"with {n_classes} class(es)")
    return size


def data_files(data_dir: Path) -> DataSpec:
    """The manifest and splits the pipeline's ingest and preprocess stages wrote in
    ``data_dir`` (``data/<dataset>/``)."""
    data_dir = Path(data_dir)
    files = {name: data_dir / f"{name}.parquet" for name in ("manifest", "splits")}
    missing = [str(path) for path in files.values() if not path.exists()]  # a manifest: shards
    if missing:
        raise FileNotFoundError(f"{', '.join(missing)} missing: run the pipeline's ingest and "
                                "preprocess stages (dvc repro) first")
    return DataSpec(manifest=str(files["manifest"]), splits=str(files["splits"]))


def peer_spec(params: Params, experiment: str, *, seed: int, pretrained: bool) -> RunSpec:
    """The experiment as the project resolves it (``train.seed`` = ``seed``; without
    ``pretrained``, ``model.weights: null``), checked to be a multi-similarity experiment
    with an m-per-class sampler, the recipe PML's loop reproduces."""
    overrides: dict[str, Any] = {"train.seed": seed}
    if not pretrained:
        overrides["model.weights"] = None
    spec = resolve_run(params, experiment, overrides)
    check_run(spec)
    where = f"experiments.{experiment}"
    if pretrained and not spec.model.weights:
        raise ConfigError(f"{where}.model.weights: null, yet a pretrained run was asked for")
    if spec.loss is None or spec.loss.get("name") != LOSS:
        raise ConfigError(f"{where}.loss: PML's peer loop reproduces {LOSS!r} only, "
                          f"not {spec.loss and spec.loss.get('name')!r}")
    if spec.train.sampler.name != SAMPLER:
        raise ConfigError(f"{where}.train.sampler: PML's peer loop reproduces {SAMPLER!r} only, "
                          f"not {spec.train.sampler.name!r}")
    return spec


def sampler_m(spec: RunSpec) -> int:
    """The experiment's images per class in a batch (``train.sampler.m``)."""
    return int(spec.train.sampler.knobs().get("m", DEFAULT_M))


def seed_everything(seed: int) -> None:
    """Python's, numpy's global (PML's sampler draws from ``np.random``) and torch's."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def train_peer(params: Params, experiment: str, *, data_dir: Path, seed: int, pretrained: bool,
               progress: bool = False) -> EmbeddingModel:
    """The project's model for ``experiment`` trained by PML's plain loop on every
    training-class row of ``data_dir`` (see the module docstring); in eval mode, on the CPU."""
    from pytorch_metric_learning import losses, miners, samplers

    spec = peer_spec(params, experiment, seed=seed, pretrained=pretrained)
    data = data_files(data_dir)
    cfg, loss_cfg = spec.train, spec.loss
    assert loss_cfg is not None
    seed_everything(cfg.seed)
    train_set = training_set(spec, data)  # all training rows: no fold held out
    labels = train_set.rows.require_labels("PML's MPerClassSampler")
    m = sampler_m(spec)
    batch_size = peer_batch_size(cfg.batch_size, m, len(np.unique(labels)))
    # built right after seeding, as the project's loop builds it: the same initial weights
    model = build_model(spec.model, BuildContext(**train_set.rows.context_sizes()))
    loss_fn = losses.MultiSimilarityLoss(alpha=loss_cfg["alpha"], beta=loss_cfg["beta"], base=loss_cfg["base"])
    miner = miners.MultiSimilarityMiner(epsilon=loss_cfg["epsilon"])
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sampler = samplers.MPerClassSampler(labels, m, batch_size=batch_size,
                                        length_before_new_iter=max(len(train_set), batch_size))
    if cfg.loader_workers:
        train_set.preload()  # decoded once here, shared by the forked workers
    loader = DataLoader(train_set, batch_size=batch_size, sampler=sampler, num_workers=cfg.loader_workers,
                        collate_fn=train_set.collate)
    for epoch in range(cfg.epochs):
        model.train()
        bar = tqdm(loader, desc=f"PML {experiment} epoch {epoch + 1}/{cfg.epochs}", unit="step",
                   leave=False, disable=None if progress else True)
        for batch in bar:
            embeddings = model.forward_batch(batch).embeddings  # with its domain flag if conditioned
            pairs = miner(embeddings, batch.labels)
            loss = loss_fn(embeddings, batch.labels, pairs)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            bar.set_postfix(loss=f"{float(loss.detach()):.4f}", refresh=False)
        bar.close()
    return model.eval()


def test_set(spec: RunSpec, data: DataSpec) -> ManifestDataset:
    """The rows the test ranks (the test split and any shared gallery) in the experiment's
    domains, as ``benchmarks/trunk_comparison.py`` embeds them."""
    return ManifestDataset(data.manifest, data.splits, split="test", shared_gallery=True, domains=spec.domains,
                           image_size=spec.model.image_size)


def embedded(model: EmbeddingModel, dataset: ManifestDataset, protocol_spec: dict[str, Any]) -> np.ndarray:
    """The rows' vectors as the embed stage computes them: ``[N, D]``, or ``[N, V, D]`` with
    the protocol's other views (flip) after the plain one."""
    protocol = build_protocol(protocol_spec)
    normalize = protocol.metric == "cosine"
    views = [extract(model, dataset, normalize=normalize, flip=view == "flip")[0]
             for view in ("plain", *protocol.views)]
    return views[0] if len(views) == 1 else np.stack(views, axis=1)


def dataset_dir(project: Path, spec: RunSpec) -> Path:
    """Where the pipeline keeps the experiment's dataset: ``<project>/data/<dataset>``."""
    return Path(project) / "data" / spec.dataset


def peer_run(params_path: Path, experiment: str, *, project: Path, seed: int,
             pretrained: bool) -> dict[str, float]:
    """One PML run of ``experiment`` on its dataset in ``project``, scored on the test rows:
    ``{"map@r", "recall@1", "seconds"}`` (seconds: training and embedding the test rows)."""
    params = load_params(params_path)
    spec = peer_spec(params, experiment, seed=seed, pretrained=pretrained)
    data_dir = dataset_dir(project, spec)
    started = time.perf_counter()
    model = train_peer(params, experiment, data_dir=data_dir, seed=seed, pretrained=pretrained)
    dataset = test_set(spec, data_files(data_dir))
    vectors = embedded(model, dataset, spec.protocol)
    seconds = time.perf_counter() - started
    report = evaluate_test_split(EvalRows.from_rows(dataset.rows), vectors, build_protocol(spec.protocol), {},
                                 ks=tuple(params.evaluate.ks), seed=seed)
    missing = [key for key in METRICS if key not in report["float"]]
    if missing:
        raise ConfigError(f"experiments.{experiment}: its protocol {spec.protocol.get('name')!r} gives no "
                          f"{', '.join(missing)}; it gives {', '.join(sorted(report['float']))}")
    return {**{key: float(report["float"][key]) for key in METRICS}, "seconds": float(seconds)}


def recipe(params: Params, experiment: str, *, project: Path, pretrained: bool) -> dict[str, Any]:
    """What PML's loop runs with, for the results file: trunk, weights, sizes, loss, optimizer,
    sampler, epochs, and the batch (as asked and as served) over the training rows."""
    spec = peer_spec(params, experiment, seed=0, pretrained=pretrained)
    data = data_files(dataset_dir(project, spec))
    rows = ManifestRows(data.manifest, data.splits, split="train", domains=spec.domains)
    labels = rows.require_labels("PML's MPerClassSampler")
    m = sampler_m(spec)
    return {
        "dataset": spec.dataset, "backbone": spec.model.backbone, "weights": spec.model.weights,
        "embed_dim": spec.model.embed_dim, "image_size": spec.model.image_size, "trained": "everything",
        "loss": dict(spec.loss or {}), "optimizer": {"name": "Adam", "lr": spec.train.lr,
                                                      "weight_decay": spec.train.weight_decay},
        "sampler": {"name": "MPerClassSampler", "m": m, "length_before_new_iter": len(rows)},
        "epochs": spec.train.epochs, "augment": spec.train.augment,
        "batch_size": {"asked": spec.train.batch_size,
                       "served": peer_batch_size(spec.train.batch_size, m, len(np.unique(labels)))},
        "train_rows": len(rows), "train_classes": len(np.unique(labels)),
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--project", type=Path, default=Path("."),
                        help="the folder whose data/<dataset>/ holds the pipeline's manifest and splits")
    parser.add_argument("--experiment", default="multi_similarity")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--scratch", action="store_true", help="random trunk weights (model.weights: null)")
    parser.add_argument("--out", type=Path, required=True, help="the results (JSON)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    import pytorch_metric_learning

    args = parse_args(argv)
    pretrained = not args.scratch
    params = load_params(args.params)
    payload: dict[str, Any] = {
        "library": LIBRARY, "version": pytorch_metric_learning.__version__, "experiment": args.experiment,
        "pretrained": pretrained, "seeds": args.seeds, "torch_threads": torch.get_num_threads(),
        "recipe": recipe(params, args.experiment, project=args.project, pretrained=pretrained), "runs": [],
    }
    for seed in args.seeds:
        figures = peer_run(args.params, args.experiment, project=args.project, seed=seed, pretrained=pretrained)
        payload["runs"].append({"seed": seed, **figures})
        write_json_atomic(args.out, payload)  # after each run: a cut run keeps its rows
        shown = "  ".join(f"{label} {100 * figures[key]:5.1f}%" for key, label in METRICS.items())
        print(f"PML {args.experiment} {'pretrained' if pretrained else 'scratch'} seed {seed}: {shown}  "
              f"({figures['seconds']:.0f} s)", flush=True)
    print(f"-> {args.out}")


if __name__ == "__main__":
    sys.exit(main())
