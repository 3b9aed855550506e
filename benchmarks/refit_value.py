"""What ``train.refit`` is worth, measured on the training classes alone.

    .venv/bin/python benchmarks/refit_value.py [--experiments multi_similarity contrastive] [--seeds 0 1 2]

The training classes' validation folds play every part: fold 2 is a stand-in test set that
nothing trains or selects on; fold 0 selects the epoch; the model is trained on fold 1 alone
(``refit: false``), or trained so, then trained again on folds 0 and 1 for the selected
epochs (``refit: true``); batches of 32, as fold 1 alone holds 8 classes. Both are scored on fold 2 with the experiment's protocol, and the
paired difference over (experiment, seed) says whether refitting helps. The test classes are
never read. Writes benchmarks/results/refit_value.json and prints one line per setting.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from recipe_sweep import dataset_files

from dml.checks import check_run
from dml.config import Params, load_params, resolve_run
from dml.io import write_json_atomic
from dml.stats import paired_difference, t_interval
from dml.train.launch import refit_spec, selected_weights, train_run, trained_model
from dml.train.checkpoints import load_checkpoint
from dml.train.loop import fit
from dml.train.sessions import LocalSession
from dml.train.training_data import DataSpec
from dml.held_out import FoldValidator

SELECT, STAND_IN_TEST = 0, 2


def scores(params: Params, experiment: str, seed: int, data: DataSpec, storage: Path) -> dict[str, float]:
    """The stand-in test metric without and with refit, for one (experiment, seed)."""
    # a batch of 32 (8 classes of 4): fold 1 alone holds a third of the training classes
    spec = resolve_run(params, experiment, {"train.seed": seed, "train.val_folds": [SELECT], "train.batch_size": 32})
    check_run(spec)
    metric = f"val_{spec.train.val_metric}"
    test = FoldValidator(data.manifest, data.splits, (STAND_IN_TEST,), image_size=spec.model.image_size,
                         protocol=spec.protocol, domains=spec.domains)
    selecting = replace(data, train_exclude_folds=(SELECT, STAND_IN_TEST), val_folds=(SELECT,))
    validate = FoldValidator(data.manifest, data.splits, (SELECT,), image_size=spec.model.image_size,
                             protocol=spec.protocol, domains=spec.domains)
    session = LocalSession(storage=storage / f"{experiment}-{seed}-select")
    fit(spec, selecting, session, validate=validate)
    state = load_checkpoint(session.latest_checkpoint())
    weights, epoch = selected_weights(spec, state)
    model, _ = trained_model(spec, state, weights)
    plain = test(model.eval())[metric]
    refitted = refit_spec(spec, epoch + 1)
    refit_state, _ = train_run(refitted, replace(data, train_exclude_folds=(STAND_IN_TEST,)),
                               storage_path=storage / f"{experiment}-{seed}-refit")
    model, _ = trained_model(refitted, refit_state, refit_state["learner"])
    return {"refit_false": plain, "refit_true": test(model.eval())[metric], "epoch": epoch}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--experiments", nargs="+", default=["multi_similarity", "contrastive"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", default="benchmarks/results/refit_value.json")
    args = parser.parse_args()
    params = load_params(args.params)
    dataset = params.experiment(args.experiments[0]).dataset
    runs = []
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="dml-refit-") as tmp:
        data = dataset_files(params.dataset(dataset), dataset, Path(tmp))
        for name in args.experiments:
            for seed in args.seeds:
                runs.append({"experiment": name, "seed": seed, **scores(params, name, seed, data, Path(tmp) / "runs")})
                print(f"{name} seed {seed}: refit false {runs[-1]['refit_false']:.4f}, "
                      f"true {runs[-1]['refit_true']:.4f} (epochs {runs[-1]['epoch'] + 1})", flush=True)
    summary = {}
    for setting in ("refit_false", "refit_true"):
        values = [r[setting] for r in runs]
        interval = t_interval(values)
        summary[setting] = {"mean": statistics.fmean(values), "low": interval.low, "high": interval.high}
    diff = paired_difference({(r["experiment"], r["seed"]): r["refit_true"] for r in runs},
                             {(r["experiment"], r["seed"]): r["refit_false"] for r in runs})
    summary["difference"] = {"mean": diff.mean, "low": diff.low, "high": diff.high}
    write_json_atomic(args.out, {"dataset": dataset, "experiments": args.experiments, "seeds": args.seeds,
                                 "select_fold": SELECT, "stand_in_test_fold": STAND_IN_TEST, "runs": runs,
                                 "summary": summary, "seconds": time.perf_counter() - started})
    print(f"refit true - false on the stand-in test fold: {diff.mean:+.4f} [{diff.low:+.4f}, {diff.high:+.4f}] "
          f"over {len(runs)} runs")


if __name__ == "__main__":
    main()
