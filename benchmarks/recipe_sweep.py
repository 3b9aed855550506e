"""The validation-fold sweep that chose the default training recipe of the embedded data.

    .venv/bin/python benchmarks/recipe_sweep.py [--experiments contrastive multi_similarity]
        [--seeds 0 1] [--recipes default "no augmentation" ...]

Each recipe is a set of dotted overrides of params.yaml (augmentation, which trunk and how
much of it trains, learning rate and schedule). Every (recipe, experiment, seed) is trained as the train stage trains
it, on the training classes of the experiment's dataset with ``train.val_folds`` held out, and
scored by its selected epoch's validation metric (``train.val_metric``): the test classes are
never read. A recipe's score is the mean over experiments and seeds, with a t interval over
the (experiment, seed) runs, and its paired difference against ``default`` over the same
(experiment, seed) pairs; the best recipe is the one params.yaml should carry.
Writes benchmarks/results/recipe_sweep.json and prints one line per recipe.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from dml.checks import check_run
from dml.config import DatasetConfig, Params, load_params, resolve_run
from dml.data.ingest import ingest
from dml.data.splits import make_splits
from dml.io import write_json_atomic
from dml.preflight import preflight
from dml.stats import paired_difference, t_interval
from dml.train.launch import selected_weights, train_run
from dml.train.training_data import DataSpec

CROP_FLIP = [{"name": "RandomResizedCrop", "scale": [0.7, 1.0]}, {"name": "RandomHorizontalFlip"}]
#: Each recipe changes one thing against params.yaml's own (``default``).
RECIPES: dict[str, dict[str, Any]] = {
    "default": {},
    "flip": {"train.augment": [{"name": "RandomHorizontalFlip"}]},
    "crop+flip": {"train.augment": CROP_FLIP},
    "last stage and head trained": {"train.freeze": 7, "train.trunk_lr": 0.0003},
    "lite2 trunk": {"model.backbone": "tf_efficientnet_lite2", "model.weights": "efficientnet_lite2"},
    "warm-up + cosine": {"train.warmup_epochs": 1, "train.schedule": "cosine"},
    "lr 0.003": {"train.lr": 0.003},
    "lr 0.0003": {"train.lr": 0.0003},
    # the head's size: a 64-d projection of the trunk's 1280 features may drop what they know
    "embedding 256": {"model.embed_dim": 256},
    "embedding 512": {"model.embed_dim": 512},
    # the head's first weights: the features' principal components instead of random ones
    "pca head": {"train.head_init": "pca"},
    # the earlier default: the small CNN from scratch, crop and flip, 10 epochs
    "small CNN from scratch": {"model.backbone": "small_cnn", "model.weights": None, "train.freeze": 0,
                               "train.augment": CROP_FLIP, "train.epochs": 10},
}


def dataset_files(cfg: DatasetConfig, name: str, work: Path) -> DataSpec:
    """Dataset ``name``'s manifest and splits as the ingest and preprocess stages make them."""
    manifest = work / "manifest.parquet"
    ingest(cfg.source, cfg.options, manifest, on_bad=cfg.on_bad, short_side=cfg.images.short_side,
           background=cfg.images.background, where=f"datasets.{name}")
    split = cfg.split
    splits = make_splits(pq.read_table(manifest), test_fraction=split.test_fraction, num_folds=split.num_folds,
                         seed=split.seed, method=split.method, query_fraction=split.query_fraction,
                         queries_per_class=split.queries_per_class, query_domain=split.query_domain)
    pq.write_table(splits, work / "splits.parquet")
    return DataSpec(manifest=str(manifest), splits=str(work / "splits.parquet"))


def validation_score(params: Params, experiment: str, overrides: dict[str, Any], seed: int, data: DataSpec,
                     storage: Path) -> tuple[float, int]:
    """The selected epoch's validation metric of one training run, and that epoch."""
    spec = resolve_run(params, experiment, {**overrides, "train.seed": seed})
    check_run(spec)
    spec = preflight(spec, data, world_size=spec.train.num_workers).spec   # as the train stage: a batch the classes fill
    state, _ = train_run(spec, data, storage_path=storage)
    _, epoch = selected_weights(spec, state)
    return float(state["history"][epoch][f"val_{spec.train.val_metric}"]), epoch


def by_run(runs: list[dict[str, Any]]) -> dict[tuple[str, int], float]:
    """Scores keyed by (experiment, seed): the pairs of a paired comparison."""
    return {(run["experiment"], run["seed"]): run["score"] for run in runs}


def main(recipes: dict[str, dict[str, Any]] = RECIPES, *, doc: str = __doc__,
         experiments: tuple[str, ...] = ("contrastive", "multi_similarity", "proxy_anchor"),
         out: str = "benchmarks/results/recipe_sweep.json") -> None:
    """The sweep over ``recipes`` (name -> dotted overrides, ``default`` first), each scored
    on validation folds against ``default``; the command line picks experiments and seeds."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--experiments", nargs="+", default=list(experiments))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--recipes", nargs="+", default=list(recipes), choices=list(recipes))
    parser.add_argument("--out", default=out)
    args = parser.parse_args()
    params = load_params(args.params)
    datasets = {params.experiment(name).dataset for name in args.experiments}
    if len(datasets) != 1:
        raise SystemExit(f"the experiments must share one dataset, got {sorted(datasets)}")
    dataset = datasets.pop()
    rows: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="dml-recipes-") as tmp:
        work = Path(tmp)
        data = dataset_files(params.dataset(dataset), dataset, work)
        for recipe in args.recipes:
            started = time.perf_counter()
            runs = [
                {"experiment": name, "seed": seed, "score": score, "epoch": epoch}
                for name in args.experiments for seed in args.seeds
                for score, epoch in [validation_score(params, name, recipes[recipe], seed, data,
                                                      work / "runs")]
            ]
            scores = [run["score"] for run in runs]
            interval = t_interval(scores)
            rows[recipe] = {"overrides": recipes[recipe], "mean": statistics.fmean(scores),
                            "low": interval.low, "high": interval.high, "runs": runs,
                            "seconds": time.perf_counter() - started}
            against = ""
            if recipe != "default" and "default" in rows:
                diff = paired_difference(by_run(runs), by_run(rows["default"]["runs"]))
                rows[recipe]["against_default"] = {"mean": diff.mean, "low": diff.low, "high": diff.high}
                against = f"; against default {diff.mean:+.4f} [{diff.low:+.4f}, {diff.high:+.4f}]"
            print(f"{recipe:{max(map(len, args.recipes))}s} val {params.train.val_metric} {rows[recipe]['mean']:.4f} "
                  f"[{interval.low:.4f}, {interval.high:.4f}] over {len(runs)} runs{against} "
                  f"({rows[recipe]['seconds']:.0f} s)", flush=True)
            best = max(rows, key=lambda r: rows[r]["mean"])
            write_json_atomic(args.out, {"dataset": dataset, "experiments": args.experiments, "seeds": args.seeds,
                                         "metric": f"val_{params.train.val_metric}", "best": best,
                                         "recipes": rows})  # after each recipe: a cut sweep keeps its rows
    print(f"best on validation: {best}")


if __name__ == "__main__":
    main()
