"""cluster/README.md's one-machine recipe, run as written: two one-CPU Ray nodes started by
`ray start --block`, one experiment trained on both through `dvc exp run`, the nodes stopped by
their process ids. And Ctrl-C during a sweep: one line, status 130, no output.

The recipe is read from the README when the test runs, so the two cannot drift apart. The only
changes made to it are free ports, a Ray folder of the test's own, and this virtual environment
in place of the clone's `.venv`.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from .processes import REPO, session_members, stage_command, stage_env, stop_group, write_params
from .test_pipeline_dvc import run

pytestmark = [pytest.mark.ray, pytest.mark.slow]

README = REPO / "cluster/README.md"
RECIPE = "### On one machine, for a try-out (two nodes)"
CARD = "models/multi_similarity/seed0/model.json"
# Each node's raylet logs its id (Ray 2.60) under the Ray folder: raylet.out, raylet.1.out.
NODE_ID = re.compile(r"Setting node ID node_id=([0-9a-f]{56})")


def recipe_block() -> str:
    """The first fenced bash block under the try-out heading of cluster/README.md."""
    section = README.read_text().split(RECIPE, 1)[1]
    return section.split("```bash\n", 1)[1].split("\n```", 1)[0] + "\n"


def adapted(block: str, swaps: dict[str, str]) -> str:
    """``block`` with each key replaced by its value; every key must be in the block."""
    for old, new in swaps.items():
        assert old in block, f"the recipe in {README} no longer has {old!r}"
        block = block.replace(old, new)
    return block


def free_port() -> int:
    """A TCP port that is free now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def working_tree_clone(repo: Path) -> None:
    """A git repository at ``repo`` with one commit of the files this checkout would commit
    (tracked and untracked, ignored ones aside, as they are now): a user's fresh clone."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                            cwd=REPO, capture_output=True, text=True, check=True).stdout
    for name in filter(None, listed.split("\0")):
        source = REPO / name
        if source.is_file():  # not one deleted in the working tree
            (repo / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, repo / name)
    identity = ["-c", "user.name=dml", "-c", "user.email=dml@example.com"]
    for command in (["git", "init", "-q"], ["git", "add", "-A"], ["git", *identity, "commit", "-qm", "clone"]):
        out = run(command, repo, dict(os.environ))
        assert out.returncode == 0, out.stderr


def recipe_env() -> dict[str, str]:
    """This environment without what would point the recipe elsewhere (a cluster, a scratch
    folder, a warm interpreter): the recipe sets what it needs itself."""
    env = dict(os.environ)
    for name in ("RAY_ADDRESS", "DML_SCRATCH", "DML_WARM_SOCKET"):
        env.pop(name, None)
    return env


def wait_until(done: Callable[[], bool], timeout: float) -> bool:
    """Poll ``done`` every 0.2 s for up to ``timeout`` seconds; its last answer."""
    deadline = time.monotonic() + timeout
    while not done() and time.monotonic() < deadline:
        time.sleep(0.2)
    return done()


def kill_session(sid: int) -> None:
    """SIGKILL every process left in a session this test started."""
    for pid in session_members(sid):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def trial_reported(scratch: Path) -> bool:
    """Whether a trial of a sweep run with ``scratch`` has reported an epoch."""
    try:
        return any(path.stat().st_size for path in scratch.glob("ray_results/tune-*/*/result.json"))
    except FileNotFoundError:  # a folder Tune was replacing; ask again
        return False


@pytest.mark.dvc
def test_the_readme_recipe_trains_on_two_nodes_and_stops_them(short_tmp, tmp_path):
    repo = tmp_path / "clone"
    working_tree_clone(repo)
    ray_folder = short_tmp / "recipe-ray"
    script = adapted(recipe_block(), {
        "6379": str(free_port()), "8265": str(free_port()), "/tmp/dml-ray": str(ray_folder),
        "$PWD/.venv/bin": str(Path(sys.executable).parent),
    })
    log = tmp_path / "recipe.log"
    with open(log, "w") as out:
        shell = subprocess.Popen(["bash", "-c", script], cwd=repo, env=recipe_env(), stdout=out,
                                 stderr=subprocess.STDOUT, start_new_session=True)
    try:
        try:
            status = shell.wait(timeout=400)
        except subprocess.TimeoutExpired:
            status = None
        # A node's workers end once its raylet has: give them a moment, then none may be left.
        wait_until(lambda: not session_members(shell.pid), 15)
        left = session_members(shell.pid)
    finally:
        kill_session(shell.pid)
        shell.wait(timeout=30)
    output = log.read_text()
    assert status == 0 and "Ran experiment" in output, output[-4000:]
    assert "on 2 worker(s), 2 node(s)" in output, output[-4000:]
    workers = json.loads((repo / CARD).read_text())["workers"]
    assert sorted(w["rank"] for w in workers) == [0, 1]
    raylet_logs = ray_folder.glob("session_*/logs/raylet*.out")
    nodes = {node for raylet_log in raylet_logs for node in NODE_ID.findall(raylet_log.read_text())}
    assert len(nodes) == 2, f"not two nodes: {nodes}"
    assert {w["node_id"] for w in workers} == nodes, "the two workers did not run on the two nodes"
    for worker in workers:
        assert f"rank {worker['rank']} ran on node {worker['node_id']}" in output
    assert not left, f"processes {left} of the recipe's nodes outlived the kill"


def test_ctrl_c_ends_a_sweep_with_one_line_status_130_and_no_output(tiny_data, short_tmp, tmp_path):
    # One long trial: Tune marks the trial it stops on SIGINT as TERMINATED, like a finished one.
    # (long enough that the signal always lands mid-trial, however late it is sent)
    write_params(tmp_path, experiment="sigint", data=tiny_data, tune={"trials": 1, "epochs": 1000, "cpus_per_trial": 1})
    scratch = short_tmp / "sigint-scratch"
    log = tmp_path / "tune.log"
    with open(log, "w") as out:
        stage = subprocess.Popen(stage_command("tune", "sigint", tiny_data), cwd=tmp_path, env=stage_env(scratch),
                                 stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_until(lambda: trial_reported(scratch) or stage.poll() is not None, 300)
        assert stage.poll() is None and trial_reported(scratch), log.read_text()[-3000:]
        os.killpg(stage.pid, signal.SIGINT)  # what Ctrl-C in a terminal does
        signalled = time.monotonic()
        status = stage.wait(timeout=120)
        took = time.monotonic() - signalled
    finally:
        stop_group(stage)
    output = log.read_text()
    assert status == 130, output[-3000:]
    assert "Traceback" not in output, output[-3000:]
    assert output.strip().splitlines()[-1].startswith("tune sigint: interrupted after 0 of 1 trial(s)"), output[-3000:]
    assert not (tmp_path / "best.json").exists()
    assert took < 20, f"the stage took {took:.1f} s to end after SIGINT"
