"""What the trunk brings: raw pixels, a random trunk, the frozen ImageNet trunk, a head trained
on it, the trunk fine-tuned from ImageNet, the same trunk trained from scratch, and the small
CNN trained from scratch, on the test classes (never trained on) of one dataset.

    .venv/bin/python benchmarks/trunk_comparison.py --dataset shapes --seeds 0 1 2
    .venv/bin/python benchmarks/trunk_comparison.py --folder /usr/share/openclipart/png --min-images 20 --seeds 0 1 2

``--dataset`` names a dataset of params.yaml (``shapes``: the embedded demo set). ``--folder``
makes one of an image tree: every leaf folder of ROOT (no sub-folders) holding at least
``--min-images`` .png/.jpg files is a class, named by its path under ROOT with "/" as "_"; its
files (symbolic links left out: each image counted once, in its own folder) are copied into a
temporary ``<class>/<file>`` tree, ingested by the ``folder`` source (transparency on white,
stored at ``--image-size``) and split as params.yaml splits ``shapes`` (class-disjoint,
half the classes for testing), evaluated by self-retrieval.

Every variant is the experiment ``multi_similarity`` of params.yaml with a few overrides
(``VARIANTS``) and ``train.seed`` = the seed. A trained one holds out ``train.val_folds`` and
keeps its best epoch on them, as the train stage does; an untrained one (``train.epochs: 0``)
is the model training would start from. Each is scored as the evaluate stage scores it (MAP@R,
R@1 on the test rows) and timed (building or training, and embedding the test rows).

Writes benchmarks/results/trunk_comparison_<name>.json (``--out``; after each variant, so a cut
run keeps its rows): per-seed figures, their mean and 95% t interval, seconds, the processor,
torch threads, image size, class and image counts. Prints one line per variant: MAP@R and R@1
as mean ± half-width in %, and seconds per run.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import shutil
import statistics
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from recipe_sweep import CROP_FLIP, dataset_files

from dml.checks import check_run
from dml.config import (
    Component,
    DatasetConfig,
    ImagesConfig,
    Params,
    RunSpec,
    load_params,
    resolve_run,
)
from dml.data.dataset import ManifestDataset
from dml.data.rows import ManifestRows
from dml.data.manifest import read_info
from dml.embed import extract
from dml.evaluate.experiment import evaluate_test_split
from dml.evaluate.protocols import EvalRows, build_protocol
from dml.io import write_json_atomic
from dml.models import EmbeddingModel
from dml.preflight import preflight
from dml.pipeline.stage import print_notices
from dml.stats import t_interval
from dml.train.launch import initial_model, selected_weights, train_run, trained_model
from dml.train.training_data import DataSpec

EXPERIMENT = "multi_similarity"
METRICS = {"map@r": "MAP@R", "recall@1": "R@1"}
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
GENERIC_FOLDERS = {"png", "jpg", "jpeg", "images", "img"}
#: The name of ``--folder``'s dataset in the parameters the runs resolve against.
FOLDER_DATASET = "folder"


def variants(finetune_epochs: int) -> dict[str, dict[str, Any]]:
    """Each variant's dotted overrides of the experiment, in the order they are run."""
    schedule = {"train.lr": 1e-3, "train.warmup_epochs": 1, "train.schedule": "cosine",
                "train.epochs": finetune_epochs}
    return {
        "raw_pixels": {"model.backbone": "pixels", "model.weights": None, "model.embed_dim": None,
                       "train.epochs": 0},
        "random_trunk": {"model.weights": None, "model.embed_dim": None, "train.epochs": 0},
        "frozen_pretrained": {"model.embed_dim": None, "train.epochs": 0},
        "pretrained_head": {},  # params.yaml's own: the frozen trunk, a trained 64-d head
        "fine_tuned": {"train.freeze": 1, "train.trunk_lr": 3e-4,
                       "train.augment": [{"name": "RandomHorizontalFlip"}], **schedule},
        "from_scratch": {"model.weights": None, "train.freeze": 0, "train.augment": CROP_FLIP, **schedule},
        # the earlier default: the small CNN (GroupNorm, width 32) from scratch, crop and flip
        "small_cnn_scratch": {"model.backbone": "small_cnn", "model.weights": None, "train.freeze": 0,
                              "train.augment": CROP_FLIP, "train.epochs": 10},
    }


# ----------------------------------------------------------------------------- the folder dataset


def leaf_classes(root: Path, min_images: int) -> dict[str, list[Path]]:
    """Class name -> its image files, for every leaf folder of ``root`` with at least
    ``min_images`` images (symbolic links left out), named by its path under ``root``."""
    classes = {}
    for folder, dirs, files in os.walk(root):
        images = [Path(folder, name) for name in sorted(files)
                  if name.lower().endswith(IMAGE_SUFFIXES) and not Path(folder, name).is_symlink()]
        if not dirs and len(images) >= min_images:
            classes[Path(folder).relative_to(root).as_posix().replace("/", "_")] = images
    if len(classes) < 2:
        raise SystemExit(f"{root}: {len(classes)} leaf folder(s) with at least {min_images} images; "
                         "lower --min-images")
    return dict(sorted(classes.items()))


def copy_tree(classes: dict[str, list[Path]], out: Path) -> Path:
    """``out/<class>/<file>``: copies, as the folder source does not follow links."""
    for name, files in classes.items():
        (out / name).mkdir(parents=True)
        for file in files:
            shutil.copyfile(file, out / name / file.name)
    return out


def folder_dataset(tree: Path, params: Params, image_size: int) -> DatasetConfig:
    """The copied tree as a dataset split like ``shapes`` (class-disjoint), stored at
    ``image_size`` on white, evaluated by self-retrieval."""
    return DatasetConfig(source="folder", on_bad="skip", options={"root": str(tree)},
                         images=ImagesConfig(short_side=image_size), split=params.dataset("shapes").split,
                         protocol=Component(name="self_retrieval"))


def folder_name(root: Path) -> str:
    """The name results are filed under: the folder's, or its parent's where the folder is
    named for a file format (openclipart for /usr/share/openclipart/png)."""
    root = root.resolve()
    return root.parent.name if root.name.lower() in GENERIC_FOLDERS else root.name


def with_dataset(params: Params, name: str, cfg: DatasetConfig) -> Params:
    """``params`` with dataset ``name`` added and the experiment pointed at it."""
    experiment = params.experiment(EXPERIMENT).model_copy(update={"dataset": name})
    return params.model_copy(update={"datasets": {**params.datasets, name: cfg},
                                     "experiments": {**params.experiments, EXPERIMENT: experiment}})


# ----------------------------------------------------------------------------- one run


def run_spec(params: Params, overrides: dict[str, Any], seed: int, image_size: int) -> RunSpec:
    """The experiment with a variant's overrides, checked."""
    spec = resolve_run(params, EXPERIMENT, {**overrides, "model.image_size": image_size, "train.seed": seed})
    check_run(spec)
    return spec


def built_model(spec: RunSpec, data: DataSpec, storage: Path) -> tuple[EmbeddingModel, int | None]:
    """The model the train stage would export for ``spec`` (its initial model when it trains
    no epoch), and the selected epoch (None untrained)."""
    if spec.train.epochs == 0:
        return initial_model(spec, data)[0], None
    checked = preflight(spec, data, world_size=spec.train.num_workers)  # e.g. a batch the classes fill
    print_notices(checked.notices)
    state, _ = train_run(checked.spec, data, storage_path=storage)
    weights, epoch = selected_weights(checked.spec, state)
    return trained_model(checked.spec, state, weights)[0], epoch


def test_set(spec: RunSpec, data: DataSpec) -> ManifestDataset:
    """The rows the test ranks (:func:`dml.evaluate.experiment.test_rows`: the test split and
    any shared gallery), in the experiment's domains, without the training rows."""
    return ManifestDataset(data.manifest, data.splits, split="test", shared_gallery=True, domains=spec.domains,
                           image_size=spec.model.image_size)


def embedded(model: EmbeddingModel, dataset: ManifestDataset, protocol_spec: dict[str, Any]) -> np.ndarray:
    """The rows' vectors as the embed stage computes them: ``[N, D]``, or ``[N, V, D]`` with
    the protocol's other views (flip) stacked after the plain one."""
    protocol = build_protocol(protocol_spec)
    normalize = protocol.metric == "cosine"
    views = [extract(model, dataset, normalize=normalize, flip=view == "flip")[0]
             for view in ("plain", *protocol.views)]
    return views[0] if len(views) == 1 else np.stack(views, axis=1)


def run_once(params: Params, overrides: dict[str, Any], seed: int, data: DataSpec, storage: Path,
             image_size: int, ks: Sequence[int]) -> dict[str, Any]:
    """One (variant, seed): its test figures, seconds to build or train and to embed, and
    the selected epoch."""
    spec = run_spec(params, overrides, seed, image_size)
    started = time.perf_counter()
    model, epoch = built_model(spec, data, storage)
    trained = time.perf_counter()
    dataset = test_set(spec, data)
    vectors = embedded(model, dataset, spec.protocol)
    done = time.perf_counter()
    report = evaluate_test_split(EvalRows.from_rows(dataset.rows), vectors, build_protocol(spec.protocol), {},
                                 ks=ks, seed=seed)
    return {"seed": seed, **{key: report["float"][key] for key in METRICS}, "selected_epoch": epoch,
            "seconds": done - started, "train_seconds": trained - started, "embed_seconds": done - trained,
            "embed_dim": int(vectors.shape[-1]), "queries": report["queries"]}


# ----------------------------------------------------------------------------- figures


def finite(value: float) -> float | None:
    """``value``, or None where it is NaN (JSON has no NaN)."""
    return None if math.isnan(value) else value


def summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean and 95% t interval over the seeds of each metric, and the mean seconds per run."""
    out: dict[str, Any] = {"seconds": statistics.fmean(run["seconds"] for run in runs)}
    for key in METRICS:
        interval = t_interval([run[key] for run in runs])
        out[key] = {"mean": interval.mean, "low": finite(interval.low), "high": finite(interval.high),
                    "half_width": finite(interval.half_width), "n": interval.n}
    return out


def line(name: str, width: int, figures: dict[str, Any]) -> str:
    """``name  MAP@R m ± h%  R@1 m ± h%  (s per run)``."""
    def percent(figure: dict[str, Any]) -> str:
        half = figure["half_width"]
        return f"{100 * figure['mean']:5.1f} ± {'n/a' if half is None else f'{100 * half:.1f}'}%"

    shown = "  ".join(f"{label} {percent(figures[key])}" for key, label in METRICS.items())
    return f"{name:{width}s}  {shown}  ({figures['seconds']:.0f} s per run)"


def counts(data: DataSpec) -> dict[str, Any]:
    """Classes and images in all, in the training split and in the test split, and the names
    of the test classes."""
    rows = EvalRows.from_rows(ManifestRows(data.manifest, data.splits))
    out: dict[str, Any] = {"classes": {}, "images": {}}
    for part, mask in (("all", np.ones(len(rows), bool)), ("train", rows.split == "train"),
                       ("test", rows.split == "test")):
        out["classes"][part] = len(np.unique(rows.fine[mask]))
        out["images"][part] = int(mask.sum())
    info = read_info(data.manifest)
    out["test_classes"] = [info.class_names[info.fine][label] for label in np.unique(rows.fine[rows.split == "test"])]
    return out


def processor() -> str:
    """The CPU's model name (/proc/cpuinfo), else what :func:`platform.processor` says."""
    try:
        for text in Path("/proc/cpuinfo").read_text().splitlines():
            if text.startswith("model name"):
                return text.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


# ----------------------------------------------------------------------------- main


def parse_args(names: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--dataset", help="a dataset of params.yaml (default: the experiment's, shapes)")
    source.add_argument("--folder", type=Path, help="an image tree whose leaf folders are classes")
    parser.add_argument("--min-images", type=int, default=20, help="--folder: a leaf folder's least images")
    parser.add_argument("--image-size", type=int, default=64, help="the model's (and a folder's stored) size")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--variants", nargs="+", default=names, choices=names)
    parser.add_argument("--finetune-epochs", type=int, default=8)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--out", help="default: benchmarks/results/trunk_comparison_<name>.json")
    return parser.parse_args()


def main() -> None:
    names = list(variants(0))
    args = parse_args(names)
    params = load_params(args.params)
    chosen = {name: overrides for name, overrides in variants(args.finetune_epochs).items()
              if name in args.variants}
    with tempfile.TemporaryDirectory(prefix="dml-trunks-") as tmp:
        work = Path(tmp)
        if args.folder is not None:
            name = folder_name(args.folder)
            classes = leaf_classes(args.folder, args.min_images)
            cfg = folder_dataset(copy_tree(classes, work / "tree"), params, args.image_size)
            params = with_dataset(params, FOLDER_DATASET, cfg)
            data = dataset_files(cfg, FOLDER_DATASET, work)
            source: dict[str, Any] = {"folder": str(args.folder), "min_images": args.min_images,
                                      "class_names": list(classes)}
        else:
            name = args.dataset or params.experiment(EXPERIMENT).dataset
            params = with_dataset(params, name, params.dataset(name))
            data = dataset_files(params.dataset(name), name, work)
            source = {"dataset": name}
        sizes = counts(data)
        print(f"{name}: {sizes['classes']['all']} classes ({sizes['classes']['train']} train, "
              f"{sizes['classes']['test']} test), {sizes['images']['all']} images "
              f"({sizes['images']['test']} test), {args.image_size} px", flush=True)
        payload: dict[str, Any] = {
            **source, **sizes, "experiment": EXPERIMENT, "seeds": args.seeds, "image_size": args.image_size,
            "finetune_epochs": args.finetune_epochs, "processor": processor(),
            "torch_threads": torch.get_num_threads(), "metrics": list(METRICS), "variants": {}}
        out = args.out or f"benchmarks/results/trunk_comparison_{name}.json"
        width = max(map(len, chosen))
        for variant, overrides in chosen.items():
            runs = [run_once(params, overrides, seed, data, work / "runs", args.image_size, params.evaluate.ks)
                    for seed in args.seeds]
            figures = summary(runs)
            payload["variants"][variant] = {"overrides": overrides, "runs": runs, **figures}
            write_json_atomic(out, payload)  # after each variant: a cut run keeps its rows
            print(line(variant, width, figures), flush=True)
    print(f"-> {out}")


if __name__ == "__main__":
    main()
