"""Real Ray Train on a local 2-CPU Ray instance: 2 gloo workers, checkpoints, resume, export."""

import pytest
import torch

from dml.config import ModelConfig, RunSpec, TrainConfig
from dml.context import BuildContext
from dml.train.export import export_model, load_model
from dml.train.checkpoints import load_checkpoint
from dml.train.learner import build_learner
from dml.train.training_data import DataSpec
from dml.pipeline.run_naming import run_name
from dml.train.ray_trainer import latest_checkpoint, train_on_ray

pytestmark = [pytest.mark.ray, pytest.mark.slow]


def spec(**train) -> RunSpec:
    return RunSpec(
        experiment="raytest",
        dataset="tiny",
        loss={"name": "proxy_anchor", "margin": 0.1},
        model=ModelConfig(backbone="small_cnn", embed_dim=16, image_size=32),
        train=TrainConfig(**({"epochs": 2, "batch_size": 16, "num_workers": 2} | train)),
    )


def test_two_worker_run_trains_resumes_and_exports(ray_local, tiny_data, short_tmp, tmp_path):
    data = DataSpec(**tiny_data)
    storage = short_tmp / "runs"
    result = train_on_ray(spec(), data, storage_path=storage)
    assert result.metrics["world_size"] == 2.0
    assert result.metrics["epoch"] == 1.0
    with latest_checkpoint(result) as folder:
        state = load_checkpoint(folder)
    assert [h["epoch"] for h in state["history"]] == [0.0, 1.0]

    # The same run started again resumes from its last checkpoint: no epoch is repeated.
    again = train_on_ray(spec(), data, storage_path=storage)
    with latest_checkpoint(again) as folder:
        assert [h["epoch"] for h in load_checkpoint(folder)["history"]] == [0.0, 1.0]

    # More epochs continue the same history; changed parameters make a different run.
    assert run_name(spec(), data, 2) != run_name(spec(lr=0.01), data, 2)

    context = BuildContext(**state["context"])
    learner = build_learner(spec(), context)
    learner.load_state_dict(state["learner"])
    export_model(learner.model, spec().model, tmp_path / "model", context=context, experiment="raytest")
    model, card = load_model(tmp_path / "model")
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(model(x).embeddings, learner.model.eval()(x).embeddings)
    assert card["embed_dim"] == 16


def test_csl_proxies_learn_under_two_ray_train_workers(ray_local, tiny_data, short_tmp):
    """CSL's proxies are DDP parameters: under 2 Ray Train workers with the hierarchical
    sampler they leave their initial values."""
    from dml.config import Component

    csl = RunSpec(
        experiment="raycsl", dataset="tiny", loss={"name": "csl"}, protocol={"name": "per_scale"},
        model=ModelConfig(backbone="small_cnn", embed_dim=16, image_size=32),
        train=TrainConfig(epochs=1, batch_size=12, num_workers=2,
                          sampler=Component(name="hierarchical", k=2)),
    )
    result = train_on_ray(csl, DataSpec(**tiny_data), storage_path=short_tmp / "csl-runs")
    assert result.metrics["world_size"] == 2.0
    with latest_checkpoint(result) as folder:
        state = load_checkpoint(folder)
    context = BuildContext(**state["context"])
    assert set(context.hierarchy) == {"middle", "coarse"}
    initial = build_learner(csl, context).state_dict()
    trained = state["learner"]
    proxies = [k for k in trained if k.endswith("proxies")]
    assert proxies and all(torch.isfinite(trained[k]).all() for k in proxies)
    assert not torch.allclose(trained[proxies[0]], initial[proxies[0]])
