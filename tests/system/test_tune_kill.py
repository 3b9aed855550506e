"""The tune stage killed mid-sweep (SIGKILL to its process group) and started again: every
planned trial runs to the end, and the trials that Tune's saved experiment state lists as
finished are kept, not run again.

"Finished before the kill" is read from that saved state, not from the trials' own result
files: Tune snapshots its state periodically, so a trial that ended after the last snapshot
is restored from its last checkpoint and repeats the epochs after it."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from ray.tune import ExperimentAnalysis
from ray.tune.search.optuna import OptunaSearch

from .processes import kill_when, stage_command, stage_env, write_params

pytestmark = [pytest.mark.ray, pytest.mark.slow]
TRIALS, EPOCHS = 8, 2  # trials share one worker and take seconds: room for the kill to land mid-sweep


def trial_results(storage: Path) -> dict[str, list[dict]]:
    """Each trial folder's reported rows (result.json), by trial folder name."""
    trials = {}
    for path in storage.glob("tune-*/*/result.json"):
        rows = []
        for line in path.read_text().splitlines():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                break  # a row still being written
        trials[path.parent.name] = rows
    return trials


def finished(trials: dict[str, list[dict]]) -> set[str]:
    return {name for name, rows in trials.items() if rows and rows[-1]["training_iteration"] == EPOCHS}


def recorded_finished(storage: Path) -> set[str]:
    """Trial folder names that Tune's saved experiment state lists as TERMINATED: what a
    restored sweep keeps (empty while no state is saved, or while it is being written)."""
    sweep = next(storage.glob("tune-*"), None)
    if sweep is None or not any(sweep.glob("experiment_state-*.json")):
        return set()
    try:
        trials = ExperimentAnalysis(str(sweep)).trials
    except (ValueError, OSError):  # a state file caught mid-write
        return set()
    return {Path(trial.path).name for trial in trials if trial.status == "TERMINATED"}


def test_killed_sweep_completes_every_trial_once(fault_data, short_tmp, tmp_path):
    data = {"manifest": fault_data.manifest, "splits": fault_data.splits}
    storage = short_tmp / "tune-runs"
    write_params(tmp_path, experiment="tk", data=data, train={"storage_path": str(storage)},
                 tune={"trials": TRIALS, "epochs": EPOCHS, "scheduler": "fifo"})
    command = stage_command("tune", "tk", data)
    # a state snapshot every second (Tune's default is at least 10 s) lands one mid-sweep
    env = stage_env(short_tmp / "tune-scratch") | {"TUNE_GLOBAL_CHECKPOINT_S": "1"}
    kill_when(command, tmp_path, env, ready=lambda: bool(recorded_finished(storage)),
              log=tmp_path / "killed.log")
    before = trial_results(storage)
    done_before = recorded_finished(storage)
    assert done_before <= finished(before)
    assert done_before and len(done_before) < TRIALS, "the kill did not land mid-sweep"
    assert not (tmp_path / "best.json").exists()

    again = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    after = trial_results(storage)
    assert len(after) == TRIALS and finished(after) == set(after), "a trial is missing, repeated or unfinished"
    for name in done_before:  # recorded as finished before the kill: kept as they were, not trained again
        assert after[name] == before[name]
    best = json.loads((tmp_path / "best.json").read_text())
    assert best["trials"] == TRIALS and best["failed_trials"] == 0 and len(best["all"]) == TRIALS
    metric = best["metric"]
    scores = sorted(max(row[metric] for row in rows) for rows in after.values())  # each trial's best epoch
    assert sorted(row[metric] for row in best["all"]) == pytest.approx(scores)
    assert best["value"] == pytest.approx(max(scores))

    # The restored searcher holds every trial's result, those from before the kill included.
    searcher = OptunaSearch(metric=best["metric"], mode="max")
    searcher.restore_from_dir(str(next(storage.glob("tune-*"))))
    told = sorted(t.value for t in searcher._ot_study.trials if t.state.name == "COMPLETE")
    assert told == pytest.approx(sorted(rows[-1][metric] for rows in after.values()))  # what each trial ended on
