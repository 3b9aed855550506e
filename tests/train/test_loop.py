"""The framework-free loop: trains, checkpoints, and resumes to the same weights."""

from pathlib import Path

import pytest
import torch

from dml.batch import Batch
from dml.config import ModelConfig, RunSpec, TrainConfig
from dml.context import BuildContext
from dml.precision import autocast_dtype
from dml.train.checkpoints import load_checkpoint
from dml.train.learner import build_learner
from dml.train.loop import fit
from dml.train.sessions import LocalSession
from dml.train.training_data import DataSpec


def tiny_spec(loss: str = "multi_similarity", **train) -> RunSpec:
    return RunSpec(
        experiment="t",
        dataset="tiny",
        loss={"name": loss},
        model=ModelConfig(backbone="small_cnn", embed_dim=16, image_size=32),
        train=TrainConfig(**({"epochs": 2, "batch_size": 16} | train)),
    )


def test_fit_reports_each_epoch_and_checkpoints(tiny_data, tmp_path):
    saved = []

    def keep(metrics, folder):
        target = tmp_path / f"epoch{int(metrics['epoch'])}"
        target.mkdir()
        (target / "state.pt").write_bytes((Path(folder) / "state.pt").read_bytes())
        saved.append(target)

    session = LocalSession(on_report=keep)
    learner = fit(tiny_spec(), DataSpec(**tiny_data), session)
    assert [m["epoch"] for m in session.history] == [0.0, 1.0]
    assert all(m["loss"] > 0 and m["steps"] >= 1 for m in session.history)
    state = load_checkpoint(saved[-1])
    assert state["epoch"] == 1 and len(state["history"]) == 2
    torch.testing.assert_close(state["learner"]["model.head.weight"], learner.state_dict()["model.head.weight"])


@pytest.mark.slow
def test_resume_gives_the_same_weights_as_an_uninterrupted_run(tiny_data, tmp_path):
    data = DataSpec(**tiny_data)
    straight = fit(tiny_spec(loss="proxy_anchor"), data, LocalSession())

    first = tmp_path / "after-epoch-0"
    first.mkdir()

    def keep_first(metrics, folder):
        if metrics["epoch"] == 0:
            (first / "state.pt").write_bytes((Path(folder) / "state.pt").read_bytes())

    fit(tiny_spec(loss="proxy_anchor"), data, LocalSession(on_report=keep_first), epochs=1)
    resumed_session = LocalSession(resume_from=first)
    resumed = fit(tiny_spec(loss="proxy_anchor"), data, resumed_session)
    assert [m["epoch"] for m in resumed_session.history] == [1.0]
    for key, value in straight.state_dict().items():
        torch.testing.assert_close(resumed.state_dict()[key], value, rtol=0, atol=0)



@pytest.mark.slow
def test_loader_worker_processes_train_reproducibly_and_resume_exactly(tiny_data, tmp_path):
    """Two DataLoader processes decode and augment: the run repeats, and a resumed run draws
    the augmentations the uninterrupted one drew (workers are seeded from the loop's seed)."""
    data = DataSpec(**tiny_data)
    spec = tiny_spec(loader_workers=2)
    straight = fit(spec, data, LocalSession())
    again = fit(spec, data, LocalSession())
    first = tmp_path / "after-epoch-0"
    first.mkdir()

    def keep_first(metrics, folder):
        if metrics["epoch"] == 0:
            (first / "state.pt").write_bytes((Path(folder) / "state.pt").read_bytes())

    fit(spec, data, LocalSession(on_report=keep_first), epochs=1)
    resumed = fit(spec, data, LocalSession(resume_from=first))
    in_process = fit(tiny_spec(), data, LocalSession())
    for key, value in straight.state_dict().items():
        torch.testing.assert_close(again.state_dict()[key], value, rtol=0, atol=0)
        torch.testing.assert_close(resumed.state_dict()[key], value, rtol=0, atol=0)
    # other processes draw other augmentations than the loop's own generator
    assert not torch.equal(in_process.state_dict()["model.head.weight"], straight.state_dict()["model.head.weight"])


def test_loader_pins_memory_only_for_a_gpu(tiny_data):
    from dml.data.dataset import ManifestDataset
    from dml.data.samplers import MPerClassBatchSampler
    from dml.train.training_data import training_loader

    dataset = ManifestDataset(tiny_data["manifest"], tiny_data["splits"], split="train", image_size=32, train=True)
    sampler = MPerClassBatchSampler(dataset.rows.require_labels("test"), batch_size=8, m=4)
    cpu = torch.device("cpu")
    assert not training_loader(dataset, sampler, 0, "auto", cpu).pin_memory
    assert training_loader(dataset, sampler, 0, True, cpu).pin_memory == torch.cuda.is_available()
    assert training_loader(dataset, sampler, 2, "auto", cpu).num_workers == 2
    assert dataset.images._used > 0  # decoded once here, before the workers fork


def test_bf16_autocast_runs_the_trunk_in_bf16_and_the_loss_in_fp32():
    learner = build_learner(tiny_spec(), BuildContext(num_classes=4))
    trunk_dtypes, loss_dtypes = [], []
    learner.model.trunk.register_forward_hook(lambda module, args, out: trunk_dtypes.append(out.dtype))
    learner.loss.register_forward_pre_hook(lambda module, args: loss_dtypes.append(args[0].dtype))
    images, labels = torch.randn(8, 3, 32, 32, generator=torch.Generator().manual_seed(0)), torch.arange(4).repeat(2)
    batch = Batch(images=images, index=torch.arange(8), labels=labels)
    full, _ = learner(batch)
    learner.autocast_dtype = torch.bfloat16
    mixed, _ = learner(batch)
    assert trunk_dtypes == [torch.float32, torch.bfloat16]
    assert loss_dtypes == [torch.float32, torch.float32]
    torch.testing.assert_close(mixed, full, rtol=0.05, atol=0.05)
    mixed.backward()
    assert all(p.grad is None or torch.isfinite(p.grad).all() for p in learner.parameters())


def test_precision_setting_picks_the_autocast_dtype():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert autocast_dtype("auto", cpu) is None
    assert autocast_dtype("fp32", cuda) is None
    assert autocast_dtype("bf16", cpu) == torch.bfloat16
