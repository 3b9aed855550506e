"""Ray Tune + Optuna + ASHA over a declared search space, objective on validation folds."""

import pytest
import yaml
from pathlib import Path

from dml.config import parse_params
from dml.train.training_data import DataSpec
from dml.tune import run_sweep

REPO = Path(__file__).resolve().parents[1]


def tiny_params(trials: int):
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["train"].update(batch_size=16, cpus_per_worker=1)
    raw["tune"].update(trials=trials, epochs=2, cpus_per_trial=1)
    raw["model"].update(embed_dim=16)
    raw["experiments"] = {"ms": raw["experiments"]["multi_similarity"]}
    return parse_params(raw)


def test_zero_trials_pass_parameters_through(tiny_data, tmp_path):
    best = run_sweep(tiny_params(0), "ms", DataSpec(**tiny_data), storage_path=tmp_path)
    assert best["overrides"] == {} and best["trials"] == 0


def wrapped_params(trials: int):
    """A wrapper loss whose nested knob (``loss.base.neg_margin``) is the search space."""
    raw = tiny_params(trials).model_dump(mode="json")
    raw["experiments"] = {"wrapped": {
        "dataset": "shapes",
        "loss": {"name": "embedding_norm", "weight": 0.01, "base": {"name": "contrastive", "neg_margin": 0.5}},
        "search": {"loss.base.neg_margin": {"type": "uniform", "low": 0.3, "high": 0.9}},
    }}
    return parse_params(raw)


@pytest.mark.ray
@pytest.mark.slow
def test_two_trials_search_the_declared_space_nested_knobs_included(ray_local, tiny_data, short_tmp):
    params = wrapped_params(2)
    storage = short_tmp / "tune"
    best = run_sweep(params, "wrapped", DataSpec(**tiny_data), storage_path=storage)
    assert best["trials"] == 2 and best["failed_trials"] == 0
    assert best["metric"] == "val_map@r" and 0.0 < best["value"] <= 1.0
    tried = [row["config"]["loss.base.neg_margin"] for row in best["all"]]
    assert len(set(tried)) == 2 and all(0.3 <= v <= 0.9 for v in tried)
    assert best["overrides"]["loss.base.neg_margin"] in tried
    # Started again, the finished sweep is restored, not re-run.
    again = run_sweep(params, "wrapped", DataSpec(**tiny_data), storage_path=storage)
    assert again["overrides"] == best["overrides"] and again["trials"] == 2


@pytest.mark.ray
@pytest.mark.slow
def test_trainer_mode_trial_drives_a_torch_trainer(ray_local, tiny_data, short_tmp):
    raw = tiny_params(1).model_dump(mode="json")
    raw["tune"].update(mode="trainer", epochs=1, scheduler="fifo")
    params = parse_params(raw)
    best = run_sweep(params, "ms", DataSpec(**tiny_data), storage_path=short_tmp / "tune-trainer")
    assert best["trials"] == 1 and best["failed_trials"] == 0
    assert 0.0 < best["value"] <= 1.0
    # The trial's TorchTrainer run lives beside the sweep, named after it.
    assert any(p.name.startswith("tune-ms-") and "-" in p.name[8:] for p in (short_tmp / "tune-trainer").iterdir())


def test_the_winner_is_the_best_epoch_of_the_best_trial_and_ties_do_not_depend_on_order():
    import pandas as pd
    from types import SimpleNamespace

    from dml.tune import ranked_trials

    def trial(margin, curve, error=None):
        frame = pd.DataFrame({"val_map@r": curve})
        return SimpleNamespace(config={"loss.margin": margin}, error=error, metrics={"val_map@r": curve[-1]},
                               metrics_dataframe=frame)

    trials = [trial(0.2, [0.3, 0.5]), trial(0.1, [0.5, 0.4]), trial(0.3, [0.2, 0.45]), trial(0.9, [0.9], error="x")]
    for order in (trials, trials[::-1]):
        rows = ranked_trials(order, "val_map@r", ("loss.margin",))
        # 0.1 and 0.2 tie at 0.5 (0.1 at its first epoch): the smaller configuration wins both times
        assert [r["config"]["loss.margin"] for r in rows] == [0.1, 0.2, 0.3]
        assert [r["val_map@r"] for r in rows] == [0.5, 0.5, 0.45]
