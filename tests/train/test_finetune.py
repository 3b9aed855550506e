"""Fine-tuning (dml/train/finetune.py, dml/train/feature_cache.py, their wiring in ``fit``):
frozen stages keep their weights and BatchNorm statistics, unfreezing, feature caching,
per-part learning rates and their schedule, resuming, refit and channels_last.

Real training on the tiny synthetic set: ``small_cnn`` (with BatchNorm) where any trunk will
do, the pretrained timm ``tf_efficientnet_lite0`` where timm's stage grouping matters.
"""

from __future__ import annotations

import math
from pathlib import Path

import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import torch
from pydantic import ValidationError

from dml.config import ModelConfig, RunSpec, TrainConfig
from dml.context import BuildContext
from dml.errors import ConfigError
from dml.models import build_model
from dml.train.feature_cache import CachedFeatures, deterministic, trunk_features
from dml.train.finetune import frozen_count, lr_factor, parameter_groups, use_channels_last
from dml.train.launch import refit_spec, train_run
from dml.train.checkpoints import load_checkpoint
from dml.train.learner import build_learner
from dml.train.loop import fit
from dml.train.sessions import LocalSession
from dml.train.training_data import DataSpec, training_set
from dml.held_out import held_out

LITE0 = ModelConfig(backbone="tf_efficientnet_lite0", weights="efficientnet_lite0", embed_dim=16, image_size=32)
SMALL_BN = ModelConfig(backbone="small_cnn", backbone_options={"norm": "batch"}, embed_dim=16, image_size=32)


def spec_of(model: ModelConfig = SMALL_BN, loss: str = "multi_similarity", **train) -> RunSpec:
    """A tiny run: 1 epoch of batches of 16, a large learning rate so that weights move."""
    return RunSpec(experiment="ft", dataset="tiny", loss={"name": loss}, model=model,
                   train=TrainConfig(**({"epochs": 1, "batch_size": 16, "lr": 1e-2} | train)))


def state_of(learner: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A detached copy of a learner's state dict (parameters and buffers)."""
    return {key: value.detach().clone() for key, value in learner.state_dict().items()}


def untrained(spec: RunSpec, data: DataSpec) -> dict[str, torch.Tensor]:
    """The learner ``fit`` starts from (same seed, same sizes): a fit of 0 epochs."""
    return state_of(fit(spec, data, LocalSession(), epochs=0))


def group_keys(learner: torch.nn.Module, groups: slice) -> list[str]:
    """The learner state-dict keys of the trunk's parameter groups ``groups`` (stages())."""
    trunk = learner.model.trunk
    names = {id(module): name for name, module in trunk.named_modules()}
    return [f"model.trunk.{names[id(module)]}.{key}"
            for group in trunk.stages()[groups] for module in group for key in module.state_dict()]


def trunk_keys(state: dict[str, torch.Tensor]) -> list[str]:
    return [key for key in state if key.startswith("model.trunk.")]


def changed(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], keys: list[str]) -> list[str]:
    """The ``keys`` whose tensors differ (bitwise) between ``a`` and ``b``."""
    return [key for key in keys if not torch.equal(a[key], b[key])]


def assert_bitwise_equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], keys: list[str]) -> None:
    assert keys
    moved = changed(a, b, keys)
    assert not moved, f"changed: {moved[:5]}"


def keep_checkpoints(into: Path):
    """An ``on_report`` that copies each epoch's checkpoint to ``into/epoch<N>``."""
    def keep(metrics, folder):
        target = into / f"epoch{int(metrics['epoch'])}"
        target.mkdir(parents=True)
        (target / "state.pt").write_bytes((Path(folder) / "state.pt").read_bytes())
    return keep


@pytest.fixture(scope="module")
def data(tiny_data) -> DataSpec:
    return DataSpec(**tiny_data)


@pytest.fixture(scope="module")
def lite0_start(data) -> dict[str, torch.Tensor]:
    """The lite0 learner before training (pretrained trunk, seeded head)."""
    return untrained(spec_of(LITE0), data)


# --- freezing -------------------------------------------------------------------------------

@pytest.mark.slow
def test_frozen_stages_keep_weights_and_batchnorm_statistics(data, lite0_start):
    learner = fit(spec_of(LITE0, freeze=3), data, LocalSession())
    after = state_of(learner)
    frozen = group_keys(learner, slice(0, 3))
    # the stem's BatchNorm and its statistics are among them: not a vacuous check
    assert {"model.trunk.net.bn1.running_mean", "model.trunk.net.bn1.running_var",
            "model.trunk.net.bn1.num_batches_tracked", "model.trunk.net.conv_stem.weight"} <= set(frozen)
    assert_bitwise_equal(after, lite0_start, frozen)
    assert changed(after, lite0_start, group_keys(learner, slice(4, 5)))  # a later stage trained
    assert not torch.equal(after["model.head.weight"], lite0_start["model.head.weight"])


@pytest.mark.slow
def test_freeze_all_keeps_the_whole_trunk(data, lite0_start):
    after = state_of(fit(spec_of(LITE0, freeze="all"), data, LocalSession()))
    assert_bitwise_equal(after, lite0_start, trunk_keys(after))
    assert not torch.equal(after["model.head.weight"], lite0_start["model.head.weight"])


def test_unfreeze_after_trains_the_trunk_from_that_epoch(data, tmp_path):
    spec = spec_of(freeze="all", unfreeze_after=1, epochs=2)
    start = untrained(spec, data)
    final = state_of(fit(spec, data, LocalSession(on_report=keep_checkpoints(tmp_path))))
    epoch0 = load_checkpoint(tmp_path / "epoch0")["learner"]
    keys = trunk_keys(final)
    assert_bitwise_equal(epoch0, start, keys)  # BatchNorm statistics included
    assert not torch.equal(epoch0["model.head.weight"], start["model.head.weight"])
    moved = changed(final, start, keys)
    assert "model.trunk.features.0.weight" in moved
    assert "model.trunk.features.1.running_mean" in moved


# --- feature caching ------------------------------------------------------------------------

def test_deterministic_only_without_random_augmentation(data):
    assert not deterministic(training_set(spec_of(), data))
    assert deterministic(training_set(spec_of(augment=[]), data))


def test_cached_features_train_as_the_uncached_loop(data):
    """freeze: all with deterministic transforms trains the heads on cached features; frozen
    throughout but unfreezing later than the run lasts takes the uncached path: same result."""
    cached = state_of(fit(spec_of(freeze="all", augment=[], epochs=2), data, LocalSession()))
    uncached = state_of(fit(spec_of(freeze="all", augment=[], epochs=2, unfreeze_after=5), data, LocalSession()))
    assert cached.keys() == uncached.keys()
    for key, value in uncached.items():
        torch.testing.assert_close(cached[key], value, rtol=0, atol=1e-5, msg=key)


def test_random_augmentation_caches_several_views_read_in_turn(data):
    spec = spec_of(feature_views=2)
    train_set = training_set(spec, data)
    torch.manual_seed(0)
    model = build_model(spec.model, BuildContext(**train_set.rows.context_sizes()))
    cpu = torch.device("cpu")
    features = trunk_features(model, train_set, views=2, seed=0, device=cpu, batch_size=32)
    assert features.shape == (2, len(train_set), model.trunk.out_dim)
    assert not torch.allclose(features[0], features[1])  # two different augmentations
    again = trunk_features(model, train_set, views=2, seed=0, device=cpu, batch_size=32)
    assert torch.equal(features, again)  # each view seeded by (seed, view)

    cache = CachedFeatures(train_set, features)
    for epoch, view in [(0, 0), (1, 1), (2, 0), (3, 1)]:
        cache.set_epoch(epoch)
        assert torch.equal(cache[5][0], features[view, 5])
    batch = cache.collate([cache[i] for i in range(4)])
    assert batch.images is None and torch.equal(batch.features, features[1, :4])


# --- learning rates -------------------------------------------------------------------------

def group_lrs(trunk_lr: float | None) -> tuple[dict[str, float], list[dict], torch.nn.Module]:
    spec = spec_of(loss="proxy_anchor", lr=1e-3, loss_lr=5e-2, trunk_lr=trunk_lr)
    torch.manual_seed(0)
    learner = build_learner(spec, BuildContext(num_classes=4))
    groups = parameter_groups(learner.model, learner.loss, spec.train)
    return {group["name"]: group["lr"] for group in groups}, groups, learner


def test_parameter_groups_give_each_part_its_learning_rate():
    assert group_lrs(trunk_lr=1e-4)[0] == {"trunk": 1e-4, "heads": 1e-3, "loss": 5e-2}
    lrs, groups, learner = group_lrs(trunk_lr=None)
    assert lrs == {"trunk": 1e-3, "heads": 1e-3, "loss": 5e-2}
    grouped = [id(p) for group in groups for p in group["params"]]
    assert len(grouped) == len(set(grouped))  # no parameter twice
    assert set(grouped) == {id(p) for p in learner.parameters()}  # every one once
    by_name = {group["name"]: {id(p) for p in group["params"]} for group in groups}
    assert by_name["trunk"] == {id(p) for p in learner.model.trunk.parameters()}
    assert by_name["heads"] == {id(p) for p in learner.model.head.parameters()}
    assert by_name["loss"] == {id(p) for p in learner.loss.parameters()} and by_name["loss"]


def test_warmup_then_constant():
    cfg = TrainConfig(warmup_epochs=1, schedule="constant")
    factors = [lr_factor(step, 4, cfg, epochs=3) for step in range(12)]
    assert factors == [0.25, 0.5, 0.75, 1.0] + [1.0] * 8
    half = TrainConfig(warmup_epochs=0.5)  # a fractional warm-up: 2 of 4 steps
    assert [lr_factor(step, 4, half, epochs=1) for step in range(4)] == [0.5, 1.0, 1.0, 1.0]
    assert lr_factor(0, 4, TrainConfig(), epochs=1) == 1.0  # no warm-up


def test_warmup_then_cosine():
    cfg = TrainConfig(warmup_epochs=1, schedule="cosine")
    # 4 warm-up steps, then a cosine over the 8 steps left
    assert [lr_factor(step, 4, cfg, epochs=3) for step in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert lr_factor(4, 4, cfg, epochs=3) == 1.0
    assert lr_factor(8, 4, cfg, epochs=3) == pytest.approx(0.5)  # the midpoint
    assert lr_factor(11, 4, cfg, epochs=3) == pytest.approx(0.5 * (1 + math.cos(math.pi * 7 / 8)))
    assert lr_factor(12, 4, cfg, epochs=3) == pytest.approx(0.0, abs=1e-12)  # the end
    assert lr_factor(20, 4, cfg, epochs=3) == pytest.approx(0.0, abs=1e-12)  # never past it
    falling = [lr_factor(step, 4, cfg, epochs=3) for step in range(4, 13)]
    assert falling == sorted(falling, reverse=True)


@pytest.mark.slow
def test_fit_steps_the_schedule_per_optimizer_step(data, tmp_path):
    spec = spec_of(loss="proxy_anchor", epochs=3, warmup_epochs=1, schedule="cosine", lr=1e-3,
                   trunk_lr=1e-4, loss_lr=5e-2)
    session = LocalSession(on_report=keep_checkpoints(tmp_path))
    fit(spec, data, session)
    steps = int(session.history[0]["steps"])
    assert steps >= 2
    base = {"trunk": 1e-4, "heads": 1e-3, "loss": 5e-2}
    for epoch in range(3):
        state = load_checkpoint(tmp_path / f"epoch{epoch}")
        done = (epoch + 1) * steps
        assert state["schedule"]["last_epoch"] == done
        factor = lr_factor(done, steps, spec.train, epochs=3)
        for group in state["optimizer"]["param_groups"]:
            assert group["lr"] == pytest.approx(base[group["name"]] * factor, rel=1e-12, abs=1e-15)
    # end of warm-up after epoch 0, the cosine's midpoint after epoch 1, zero at the end
    assert lr_factor(steps, steps, spec.train, 3) == 1.0
    assert lr_factor(2 * steps, steps, spec.train, 3) == pytest.approx(0.5)


class Interrupted(Exception):
    """Stands for a run killed right after a checkpoint was kept."""


def interrupt_after(epoch: int):
    """An ``on_report`` that stops the run once ``epoch`` is reported (and kept in storage)."""
    def stop(metrics, folder):
        if metrics["epoch"] == epoch:
            raise Interrupted
    return stop


@pytest.mark.slow
def test_resume_with_schedule_and_frozen_stages_gives_the_same_weights(data, tmp_path):
    """Killed after epoch 0 of 2 and resumed from the kept checkpoint: the cosine schedule
    (its step count is in the checkpoint) and the frozen stages continue exactly. (A run of
    ``epochs=1`` is no interruption here: its cosine would end after epoch 0.)"""
    spec = spec_of(schedule="cosine", warmup_epochs=0.5, freeze=2, epochs=2)
    straight = state_of(fit(spec, data, LocalSession()))
    with pytest.raises(Interrupted):
        fit(spec, data, LocalSession(storage=tmp_path, on_report=interrupt_after(0)))
    resumed_session = LocalSession(storage=tmp_path)
    assert resumed_session.checkpoint_dir().name == "checkpoint_000000"
    resumed = state_of(fit(spec, data, resumed_session))
    assert [m["epoch"] for m in resumed_session.history] == [1.0]
    assert straight.keys() == resumed.keys()
    for key, value in straight.items():
        torch.testing.assert_close(resumed[key], value, rtol=0, atol=0, msg=key)
    start = fit(spec, data, LocalSession(), epochs=0)
    assert_bitwise_equal(resumed, state_of(start), group_keys(start, slice(0, 2)))


# --- refit ----------------------------------------------------------------------------------

def test_refit_spec_trains_on_every_training_class_to_the_last_epoch():
    spec = spec_of(epochs=8, patience=2, refit=True)
    refit = refit_spec(spec, 3)
    assert refit.train.val_folds == [] and refit.train.select == "last"
    assert refit.train.epochs == 3 and refit.train.patience is None
    assert refit.model == spec.model and refit.loss == spec.loss
    assert spec.train.val_folds == [0] and spec.train.epochs == 8  # the original is untouched


def fold_image_ids(splits: str, fold: int) -> set[str]:
    table = pq.read_table(splits)
    rows = table.filter(pc.and_(pc.equal(table["split"], "train"), pc.equal(table["fold"], fold)))
    return set(rows["image_id"].to_pylist())


def test_refit_training_set_includes_the_validation_fold(data, tiny_data):
    spec = spec_of()
    refit = refit_spec(spec, 3)
    refit_data, validator = held_out(refit, data)
    assert validator is None and refit_data == data
    selection_set = training_set(spec, held_out(spec, data)[0])
    refit_set = training_set(refit, refit_data)
    fold0 = fold_image_ids(tiny_data["splits"], 0)
    assert fold0 and not fold0 & set(selection_set.rows.image_ids)
    assert fold0 <= set(refit_set.rows.image_ids)
    assert set(selection_set.rows.image_ids) < set(refit_set.rows.image_ids)
    assert len(refit_set) > len(selection_set)
    assert refit_set.rows.context_sizes()["num_classes"] > selection_set.rows.context_sizes()["num_classes"]


def test_train_run_of_a_refit_spec_uses_every_training_class(data, tmp_path):
    spec = spec_of(launcher="local")
    refit = refit_spec(spec, 1)
    state, folder = train_run(refit, data, storage_path=tmp_path)
    assert folder.parent == tmp_path
    assert len(state["history"]) == 1
    assert not any(key.startswith("val_") for key in state["history"][0])  # nothing validated
    assert state["context"]["num_classes"] == training_set(refit, data).rows.context_sizes()["num_classes"]
    held = training_set(spec, held_out(spec, data)[0]).rows.context_sizes()["num_classes"]
    assert state["context"]["num_classes"] > held


# --- errors ---------------------------------------------------------------------------------

def test_freezing_more_groups_than_the_trunk_has_is_an_error(data):
    with pytest.raises(ConfigError, match=r"train\.freeze.*99.*the trunk has 4"):
        fit(spec_of(freeze=99), data, LocalSession())
    trunk = build_model(SMALL_BN, BuildContext(num_classes=4)).trunk
    assert frozen_count(TrainConfig(freeze=4), trunk) == 4
    assert frozen_count(TrainConfig(freeze="all"), trunk) == 4


@pytest.mark.parametrize("freeze", [-1, "some"])
def test_invalid_freeze_is_refused_by_validation(freeze):
    with pytest.raises(ValidationError, match="freeze"):
        TrainConfig(freeze=freeze)


# --- channels_last --------------------------------------------------------------------------

def test_channels_last_auto_is_on_for_timm_trunks_only():
    context = BuildContext(num_classes=4)
    timm_trunk = build_model(LITE0.model_copy(update={"weights": None}), context).trunk
    small = build_model(SMALL_BN, context).trunk
    auto = TrainConfig()
    assert use_channels_last(auto, timm_trunk) is True
    assert use_channels_last(auto, small) is False
    assert use_channels_last(TrainConfig(channels_last=True), small) is True
    assert use_channels_last(TrainConfig(channels_last=False), timm_trunk) is False


@pytest.mark.slow
def test_channels_last_trains_as_the_default_layout(data):
    """Same training in either memory layout, up to float rounding. A small lr and a smooth
    loss: Adam's normalised steps (and hard-pair mining) amplify rounding-level gradient
    differences to the order of lr per step."""
    last_session, default_session = LocalSession(), LocalSession()
    last = fit(spec_of(loss="proxy_anchor", lr=1e-4, channels_last=True), data, last_session)
    assert last.model.trunk.features[0].weight.is_contiguous(memory_format=torch.channels_last)
    default = fit(spec_of(loss="proxy_anchor", lr=1e-4, channels_last=False), data, default_session)
    assert default.model.trunk.features[0].weight.is_contiguous()
    assert last_session.history[0]["loss"] == pytest.approx(default_session.history[0]["loss"], rel=1e-5)
    default_state = state_of(default)
    for key, value in state_of(last).items():
        torch.testing.assert_close(value, default_state[key], rtol=0, atol=1e-4, msg=key)
