"""The warm interpreter: a stage script handed over runs in a fork with the caller's argv,
working directory, environment and streams; its exit status comes back; killing the caller
stops it; without a server the script runs in its own process."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dml.pipeline.supervisor import warm_interpreter
from dml.pipeline.warm import SOCKET_ENV

SCRIPT = '''
import os, sys, tempfile, time
from dml.pipeline.stage import hand_over
hand_over()
print("pid", os.getpid(), "cwd", os.getcwd(), "argv", sys.argv[1:], "env", os.environ.get("PROBE"), flush=True)
print("to stderr", file=sys.stderr, flush=True)
print("torch preloaded", "torch" in sys.modules, flush=True)
if sys.argv[1] == "sleep":
    with tempfile.TemporaryDirectory(dir=os.path.dirname(sys.argv[2])) as held:
        open(sys.argv[2] + ".tmp", "w").write(f"{os.getpid()} {held}")
        os.replace(sys.argv[2] + ".tmp", sys.argv[2])
        time.sleep(60)
sys.exit(int(sys.argv[1]) if sys.argv[1].isdigit() else 0)
'''


@pytest.fixture(scope="module")
def server():
    with warm_interpreter() as path:
        yield path


def run(script: Path, *args: str, env: dict, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(script), *args], env=env, cwd=cwd, capture_output=True, text=True,
                          timeout=60)


@pytest.mark.slow
def test_a_handed_over_script_runs_warm_with_the_callers_context(server, tmp_path):
    script = tmp_path / "stage.py"
    script.write_text(SCRIPT)
    env = os.environ | {SOCKET_ENV: server, "PROBE": "seen"}
    out = run(script, "3", "x y", env=env, cwd=tmp_path)
    assert out.returncode == 3
    assert f"cwd {tmp_path}" in out.stdout and "argv ['3', 'x y']" in out.stdout and "env seen" in out.stdout
    assert "torch preloaded True" in out.stdout  # imported by the server before the fork
    assert "to stderr" in out.stderr
    cold = run(script, "0", env=env | {SOCKET_ENV: str(tmp_path / "nobody")}, cwd=tmp_path)
    assert cold.returncode == 0 and "torch preloaded False" in cold.stdout  # no server: runs here


@pytest.mark.slow
def test_killing_the_caller_stops_the_stage_and_its_clean_up_runs(server, tmp_path):
    script = tmp_path / "stage.py"
    script.write_text(SCRIPT)
    marker = tmp_path / "child.pid"
    proc = subprocess.Popen([sys.executable, str(script), "sleep", str(marker)], env=os.environ | {SOCKET_ENV: server},
                            cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while not marker.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    pid, held = marker.read_text().split()
    child = int(pid)
    assert child != proc.pid  # the stage ran in the server's fork
    proc.kill()
    proc.wait()
    deadline = time.monotonic() + 15
    while Path(f"/proc/{child}").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not Path(f"/proc/{child}").exists(), "the forked stage outlived its caller"
    assert not Path(held).exists(), "the stage was stopped without running its clean-up"
