"""A real two-node Ray cluster on one machine: the train stage runs its 2 workers on both nodes.

Each node is a `ray start --block` process in its own session with one CPU, so a 2-worker run
with one CPU per worker cannot fit on one node. At the end each node's process group is
stopped by its id (SIGTERM, then SIGKILL for what outlives a grace period) and checked to be
empty.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .processes import stage_command, stop_group, write_params

BIN = Path(sys.executable).parent
pytestmark = [pytest.mark.ray, pytest.mark.slow]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def alive_nodes(address: str, env: dict) -> list[str]:
    probe = ("import json, ray; ray.init(address=%r, log_to_driver=False); "
             "print(json.dumps([n['NodeID'] for n in ray.nodes() if n['Alive']]))" % address)
    out = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=120)
    return json.loads(out.stdout.strip().splitlines()[-1]) if out.returncode == 0 else []


@pytest.fixture
def two_nodes(short_tmp: Path):
    env = os.environ | {"PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "RAY_AUTH_MODE": "disabled"}
    env.pop("RAY_ADDRESS", None)
    address = f"127.0.0.1:{free_port()}"
    logs = short_tmp / "multinode"
    logs.mkdir(exist_ok=True)
    nodes: list[subprocess.Popen] = []

    def start(name: str, *args: str) -> None:
        with open(logs / f"{name}.log", "w") as log:
            nodes.append(subprocess.Popen([str(BIN / "ray"), "start", "--block", "--num-cpus=1", *args],
                                          env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True))

    try:
        start("head", "--head", f"--port={address.split(':')[1]}", f"--temp-dir={short_tmp / 'mn'}",
              "--include-dashboard=false", "--disable-usage-stats")
        deadline = time.monotonic() + 120
        while len(alive_nodes(address, env)) < 1 and time.monotonic() < deadline:
            time.sleep(1)
        start("worker", f"--address={address}")
        while len(node_ids := alive_nodes(address, env)) < 2 and time.monotonic() < deadline:
            time.sleep(1)
        assert len(node_ids) == 2, (logs / "head.log").read_text()[-2000:] + (logs / "worker.log").read_text()[-2000:]
        yield address, set(node_ids), env
    finally:
        for proc in reversed(nodes):
            stop_group(proc)


def test_train_stage_spreads_two_workers_over_two_nodes(two_nodes, tiny_data, short_tmp, tmp_path):
    address, node_ids, env = two_nodes
    write_params(tmp_path, experiment="mn", data=tiny_data,
                 train={"epochs": 1, "num_workers": 2, "batch_size": 8, "cpus_per_worker": 1, "storage_path": str(short_tmp / "mn-runs")})
    command = stage_command("train", "mn", tiny_data)
    out = subprocess.run(
        command, cwd=tmp_path, env=env | {"RAY_ADDRESS": address, "DML_SCRATCH": str(short_tmp / "mn-scratch")},
        capture_output=True, text=True, timeout=600,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    workers = json.loads((tmp_path / "model/model.json").read_text())["workers"]
    assert sorted(w["rank"] for w in workers) == [0, 1]
    assert {w["node_id"] for w in workers} == node_ids, "the two workers did not run on the two nodes"
    assert "on 2 worker(s), 2 node(s)" in out.stdout
