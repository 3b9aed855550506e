"""The train stage's driver killed mid-run (SIGKILL to its whole process group, Ray included
when it launched Ray) and started again: it resumes from its checkpoint (both launchers: Ray
Train, and the in-process loop the demo uses); changed parameters start a fresh run."""

from __future__ import annotations

import json
import subprocess

import pytest

from .processes import (checkpointed_epochs, kill_when, ray_registered_checkpoint, settled_checkpoints, stage_command,
                        stage_env, write_params)

pytestmark = [pytest.mark.ray, pytest.mark.slow]
EPOCHS = 4


@pytest.mark.parametrize("launcher", ["ray", "local"])
def test_killed_train_stage_resumes_and_changed_params_start_afresh(launcher, fault_data, short_tmp, tmp_path):
    data = {"manifest": fault_data.manifest, "splits": fault_data.splits}
    storage = short_tmp / f"driver-runs-{launcher}"
    train = {"epochs": EPOCHS, "num_workers": 1, "cpus_per_worker": 2, "storage_path": str(storage),
             "launcher": launcher}
    write_params(tmp_path, experiment="drv", data=data, train=train)
    command = stage_command("train", "drv", data)
    env = stage_env(short_tmp / f"driver-scratch-{launcher}")
    # killed (driver and its Ray) once a checkpoint is there to resume from: for Ray, once Ray recorded it
    ready = ((lambda: ray_registered_checkpoint(storage)) if launcher == "ray"
             else (lambda: bool(checkpointed_epochs(storage))))
    kill_when(command, tmp_path, env, ready=ready, log=tmp_path / "killed.log")
    done = settled_checkpoints(storage)  # what the killed run left, a late copy included
    assert EPOCHS - 1 not in done, "the run had finished before the kill"
    assert not (tmp_path / "model").exists(), "a killed stage left its output behind"

    again = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    card = json.loads((tmp_path / "model/model.json").read_text())
    assert [h["epoch"] for h in card["history"]] == list(map(float, range(EPOCHS)))
    [resumed_at] = card["resumed_at_epochs"]
    assert 1 <= resumed_at <= max(done) + 1
    assert f"resuming at epoch {resumed_at}" in again.stdout + again.stderr

    # The console is for people: Ray Train's own records stay in its log files.
    for noise in ("Reporting training result", "Checkpoint successfully created",
                  "Failed to query Ray Train Controller", "TrainingReport("):
        assert noise not in again.stdout + again.stderr, noise

    if launcher == "ray":
        return  # which run a stage resumes is decided before either launcher starts: once is enough
    # Changed parameters: a different run, trained from scratch.
    write_params(tmp_path, experiment="drv", data=data, train=train | {"epochs": 1, "lr": 0.002})
    fresh = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert fresh.returncode == 0, fresh.stdout[-3000:] + fresh.stderr[-3000:]
    card = json.loads((tmp_path / "model/model.json").read_text())
    assert card["resumed_at_epochs"] == [] and len(card["history"]) == 1
    assert len([p for p in storage.iterdir() if p.name.startswith("drv-")]) == 2
