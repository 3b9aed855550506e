"""A Ray Train worker killed with SIGKILL mid-epoch: the run resumes and ends where an
uninterrupted run ends, with no step repeated or skipped."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import pytest
import torch

from dml.config import ModelConfig, RunSpec, TrainConfig
from dml.train.checkpoints import load_checkpoint
from dml.train.ray_trainer import latest_checkpoint, train_on_ray

from .processes import checkpointed_epochs

pytestmark = [pytest.mark.ray, pytest.mark.slow]
EPOCHS = 4


def spec() -> RunSpec:
    return RunSpec(
        experiment="fault",
        dataset="fault",
        loss={"name": "proxy_anchor"},
        model=ModelConfig(backbone="small_cnn", embed_dim=16, image_size=32),
        train=TrainConfig(epochs=EPOCHS, batch_size=16, num_workers=2, cpus_per_worker=1,
                          max_failures=1),
    )


def train_worker_pids() -> list[int]:
    pids = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if b"RayTrainWorker" in cmdline.read_bytes():
                pids.append(int(cmdline.parent.name))
        except OSError:
            continue
    return pids


def test_sigkilled_worker_resumes_to_the_uninterrupted_weights(ray_local, fault_data, short_tmp):
    straight = train_on_ray(spec(), fault_data, storage_path=short_tmp / "straight")
    with latest_checkpoint(straight) as folder:
        expected = load_checkpoint(folder)

    storage = short_tmp / "killed"
    outcome: dict = {}
    thread = threading.Thread(target=lambda: outcome.update(result=train_on_ray(spec(), fault_data, storage_path=storage)))
    thread.start()
    deadline = time.monotonic() + 300
    while 0 not in (states := checkpointed_epochs(storage)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert 0 in states, "no checkpoint after the first epoch"
    victims = [w["pid"] for w in states[0]["workers"]]
    assert set(victims) <= set(train_worker_pids())
    os.kill(victims[1], signal.SIGKILL)  # rank 1, somewhere in epochs 1 to 3
    assert EPOCHS - 1 not in checkpointed_epochs(storage), "the run had ended before the kill"
    thread.join(timeout=600)
    assert "result" in outcome, "the run did not recover from the killed worker"

    with latest_checkpoint(outcome["result"]) as folder:
        final = load_checkpoint(folder)
    assert not {w["pid"] for w in final["workers"]} & set(victims), "the worker group was not restarted"
    # Every epoch once, each with its full number of steps, and as many optimizer steps in all.
    assert [h["epoch"] for h in final["history"]] == list(map(float, range(EPOCHS)))
    steps = [h["steps"] for h in final["history"]]
    assert steps == [h["steps"] for h in expected["history"]]
    assert all(int(s["step"]) == sum(steps) for s in final["optimizer"]["state"].values())
    for key, value in expected["learner"].items():
        torch.testing.assert_close(final["learner"][key], value, rtol=0, atol=0, msg=f"{key} differs")
