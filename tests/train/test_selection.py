"""Model selection on validation folds: the best epoch of a validation curve is the one exported,
early stopping stops, and the train launcher holds the validation folds out of training."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from dml.config import ModelConfig, RunSpec, TrainConfig
from dml.data.dataset import ManifestDataset
from dml.errors import ConfigError
from dml.train.launch import selected_weights, train_run
from dml.train.checkpoints import BestEpoch, load_checkpoint
from dml.train.loop import fit
from dml.train.sessions import LocalSession
from dml.train.training_data import DataSpec, training_set
from dml.held_out import held_out


def spec(**train) -> RunSpec:
    return RunSpec(experiment="sel", dataset="tiny", loss={"name": "contrastive"},
                   model=ModelConfig(backbone="small_cnn", backbone_options={"width": 8}, embed_dim=8),
                   train=TrainConfig(**({"epochs": 5, "batch_size": 16} | train)))


class ScriptedValidation:
    """Returns the next value of a fixed curve, and remembers the weights it saw each epoch."""

    def __init__(self, curve: list[float]) -> None:
        self.curve = list(curve)
        self.weights: list[dict[str, torch.Tensor]] = []

    def __call__(self, model: torch.nn.Module) -> dict[str, float]:
        self.weights.append({k: v.detach().clone() for k, v in model.state_dict().items()})
        return {"val_map@r": self.curve[len(self.weights) - 1], "val_recall@1": 0.0}


def run(tiny_data, tmp_path: Path, curve: list[float], **train):
    validate = ScriptedValidation(curve)
    session = LocalSession(storage=tmp_path / "run")
    fit(spec(**train), DataSpec(**tiny_data), session, validate=validate)
    return validate, session, load_checkpoint(session.latest_checkpoint())


def test_the_best_epoch_of_the_curve_is_selected_with_its_weights(tiny_data, tmp_path):
    validate, session, state = run(tiny_data, tmp_path, [0.1, 0.5, math.nan, 0.5, 0.2])
    assert len(session.history) == 5  # no patience: every epoch runs
    weights, epoch = selected_weights(spec(), state)
    assert epoch == 1 and state["best"]["value"] == 0.5  # the earliest of a tie; NaN never wins
    for key, value in validate.weights[1].items():
        assert torch.equal(weights[f"model.{key}"], value), key
    last, last_epoch = selected_weights(spec(select="last"), state)
    assert last_epoch == 4 and torch.equal(last["model.head.weight"], validate.weights[4]["head.weight"])


def test_early_stopping_stops_after_patience_epochs_and_stays_stopped(tiny_data, tmp_path):
    validate, session, state = run(tiny_data, tmp_path, [0.3, 0.4, 0.35, 0.3, 0.9], patience=2)
    assert [m["epoch"] for m in session.history] == [0.0, 1.0, 2.0, 3.0]
    assert state["best"]["epoch"] == 1 and state["epoch"] == 3
    again = LocalSession(storage=tmp_path / "run")  # a restart of a stopped run trains nothing
    fit(spec(patience=2), DataSpec(**tiny_data), again, validate=validate)
    assert again.history == [] and len(validate.weights) == 4


def test_an_unknown_validation_metric_names_what_there_is():
    with pytest.raises(ConfigError, match=r"train.val_metric.*val_map@r"):
        BestEpoch("val_ndcg@10").update(0, {"val_map@r": 0.3, "loss": 1.0}, torch.nn.Linear(1, 1))


def test_selection_without_validation_folds_is_refused():
    with pytest.raises(ValueError, match="val_folds"):
        TrainConfig(val_folds=[], select="best")
    assert TrainConfig(val_folds=[], select="last").patience is None


def test_the_validation_folds_are_held_out_of_training(tiny_data):
    data, validator = held_out(spec(val_folds=[1]), DataSpec(**tiny_data))
    assert data.train_exclude_folds == (1,) and validator.folds == (1,)
    fold_one = set(ManifestDataset(tiny_data["manifest"], tiny_data["splits"], split="train",
                                   include_folds=[1]).rows.image_ids)
    assert fold_one and not fold_one & set(training_set(spec(), data).rows.image_ids)
    assert held_out(spec(val_folds=[], select="last"), DataSpec(**tiny_data)) == (DataSpec(**tiny_data), None)


@pytest.mark.slow
def test_the_local_launcher_validates_each_epoch_and_keeps_the_best(tiny_data, tmp_path):
    state, folder = train_run(spec(epochs=3), DataSpec(**tiny_data), storage_path=tmp_path)
    values = [h["val_map@r"] for h in state["history"]]
    assert len(values) == 3 and all(0.0 <= v <= 1.0 for v in values)
    assert state["best"]["epoch"] == values.index(max(values))
    assert folder.parent == tmp_path
