"""The real processes these tests start and kill: process groups and the train stage."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import yaml

from dml.errors import IntegrityError
from dml.train.checkpoints import load_checkpoint

REPO = Path(__file__).resolve().parents[2]


def group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes of a process group, read from /proc."""
    return [pid for pid, group, _ in _live_processes() if group == pgid]


def session_members(sid: int) -> list[int]:
    """Live (non-zombie) processes of a session, read from /proc: a process started with
    ``start_new_session`` and every descendant, also those in process groups of their own (as
    Ray's workers are)."""
    return [pid for pid, _, session in _live_processes() if session == sid]


def processes_with_env(name: str, value: str) -> list[str]:
    """Command lines of live processes whose environment sets ``name`` to ``value``: what a
    run started with that variable and left behind."""
    entry = f"{name}={value}".encode()
    found = []
    for pid, _, _ in _live_processes():
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if entry in environ:
            found.append(f"{pid}: {command}")
    return found


def _live_processes() -> list[tuple[int, int, int]]:
    """(pid, process group, session) of every live (non-zombie) process."""
    live = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # exited while we looked
        if fields[0] != "Z":
            live.append((int(stat.parent.name), int(fields[2]), int(fields[3])))
    return live


def stop_group(proc: subprocess.Popen) -> None:
    """Stop a process group by its id: SIGTERM, a grace period, then SIGKILL for what is left."""
    _signal_group(proc, ((signal.SIGTERM, 5), (signal.SIGKILL, 10)))


def kill_group(proc: subprocess.Popen) -> None:
    """Crash a process group by its id: SIGKILL to every member at once."""
    _signal_group(proc, ((signal.SIGKILL, 30),))


def _signal_group(proc: subprocess.Popen, steps: tuple[tuple[int, float], ...]) -> None:
    for sig, grace in steps:
        if not group_members(proc.pid):
            break
        os.killpg(proc.pid, sig)
        deadline = time.monotonic() + grace
        while group_members(proc.pid) and time.monotonic() < deadline:
            proc.poll()
            time.sleep(0.2)
    proc.wait(timeout=10)
    assert not group_members(proc.pid), f"processes {group_members(proc.pid)} of group {proc.pid} survived"


def stage_env(scratch: Path) -> dict[str, str]:
    """Environment for a stage run here: its own scratch, a private local Ray instance."""
    env = os.environ | {"DML_SCRATCH": str(scratch)}
    env.pop("RAY_ADDRESS", None)
    return env


def kill_when(command: list[str], cwd: Path, env: dict[str, str], ready: Callable[[], bool], *,
              log: Path, delay: float = 0.0, timeout: float = 400) -> None:
    """Run ``command`` in its own process group, its output in ``log``; SIGKILL the group
    ``delay`` seconds after ``ready()`` turns true.

    Fails, showing the command's output, when it exits (or the time runs out) first.
    """
    with open(log, "w") as handle:
        proc = subprocess.Popen(command, cwd=cwd, env=env, stdout=handle, stderr=subprocess.STDOUT,
                                start_new_session=True)
    deadline = time.monotonic() + timeout
    while not ready() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(delay)
    assert proc.poll() is None and ready(), log.read_text()[-3000:]
    kill_group(proc)


def write_params(folder: Path, *, experiment: str, data: dict[str, str], train: dict | None = None,
                 tune: dict | None = None) -> None:
    """params.yaml (the repo's, made small, with ``train`` / ``tune`` overrides) and a tuned.json
    without tuned values, naming ``data``, in ``folder``: a project for running single stages."""
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["model"]["embed_dim"] = 16
    # one training run per stage (no refit run after it): what these tests kill and resume
    params["train"].update({"batch_size": 16, "refit": False} | (train or {}))
    params["tune"].update(tune or {})
    params["experiments"] = {experiment: params["experiments"]["multi_similarity"]}
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "params.yaml").write_text(yaml.safe_dump(params))
    (folder / "tuned.json").write_text(json.dumps({"overrides": {}, "data": dict(data)}))


def stage_command(stage: str, experiment: str, data: dict[str, str]) -> list[str]:
    """The command line of the train or tune stage, run in a folder made by ``write_params``."""
    arguments = {"train": ["--tuned", "tuned.json", "--seed", "0", "--out", "model", "--curves", "curves"],
                 "tune": ["--manifest", data["manifest"], "--splits", data["splits"], "--out", "best.json"]}[stage]
    return [sys.executable, str(REPO / f"pipelines/{stage}.py"), "--experiment", experiment, "--params", "params.yaml",
            *arguments]


def ray_registered_checkpoint(storage: Path) -> bool:
    """Whether Ray Train has recorded a checkpoint of a run under ``storage`` (its checkpoint
    manager's snapshot names a latest one): what a restarted run resumes from. A checkpoint's
    files are complete a moment before Ray records them; a kill in between leaves nothing to
    resume."""
    for path in storage.glob("**/checkpoint_manager_snapshot.json"):
        try:
            if json.loads(path.read_text()).get("latest_checkpoint_result") is not None:
                return True
        except (FileNotFoundError, json.JSONDecodeError):  # being written
            continue
    return False


def settled_checkpoints(storage: Path, *, quiet: float = 3.0, timeout: float = 60.0) -> dict[int, dict]:
    """The checkpoints under ``storage`` once none has appeared for ``quiet`` seconds: after a
    driver is killed, a Ray worker outside its process group can finish copying a checkpoint
    before Ray stops it, and that checkpoint is one a restarted run resumes from."""
    states = checkpointed_epochs(storage)
    still, deadline = time.monotonic(), time.monotonic() + timeout
    while time.monotonic() - still < quiet and time.monotonic() < deadline:
        time.sleep(0.25)
        now = checkpointed_epochs(storage)
        if set(now) != set(states):
            states, still = now, time.monotonic()
    return states


def checkpointed_epochs(storage: Path) -> dict[int, dict]:
    """The checkpoints under a Ray storage folder so far, by epoch (skipping half-copied ones)."""
    states = {}
    try:
        paths = list(storage.glob("**/state.pt"))
    except FileNotFoundError:  # a temporary checkpoint folder vanished during the walk
        return states
    for path in paths:
        try:
            state = load_checkpoint(path.parent)
        except IntegrityError:  # still being copied into place
            continue
        states[int(state["epoch"])] = state
    return states
