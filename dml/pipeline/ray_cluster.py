"""How a stage joins Ray: a cluster at $RAY_ADDRESS, the local head of ``dml run``, or a Ray
instance of its own; the local head itself; and whether a request fits a node."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from dml.errors import ConfigError
from dml.pipeline.processes import stop_session
from dml.pipeline.quiet import quiet_frameworks
from dml.pipeline.scratch import scratch_dir, short_temp_dir

#: Address of the local Ray head that ``dml run`` keeps for the stages that use Ray (Tune).
#: Unlike ``RAY_ADDRESS`` it does not move training onto Ray Train.
LOCAL_RAY_ENV = "DML_RAY_ADDRESS"


def available_cpus() -> int:
    """CPUs this process may use (respects affinity masks in containers)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - non-Linux
        return os.cpu_count() or 1


@contextlib.contextmanager
def ray_session() -> Iterator[None]:
    """Connect to $RAY_ADDRESS (a cluster), else to $DML_RAY_ADDRESS (the local head of
    ``dml run``), else start a local Ray instance with its files under scratch."""
    import ray

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("RAY_TRAIN_ENABLE_V2_MIGRATION_WARNINGS", "0")
    if ray.is_initialized():
        yield
        return
    quiet_frameworks()
    # Workers' own prints (progress, errors) reach the console; Ray's INFO chatter does not,
    # nor the polling of Ray Train's placement-group cleaner (a warning a second where the
    # state API has no dashboard to ask): every worker process quiets the frameworks first.
    quiet = {"log_to_driver": True, "logging_level": logging.WARNING,
             "logging_config": ray.LoggingConfig(log_level="WARNING"),
             "runtime_env": {"worker_process_setup_hook": "dml.pipeline.quiet.quiet_frameworks"}}
    address = os.environ.get("RAY_ADDRESS") or os.environ.get(LOCAL_RAY_ENV)
    with contextlib.ExitStack() as stack:
        if address:
            ray.init(address=address, **quiet)
        else:
            temp = stack.enter_context(short_temp_dir("dml-ray-"))
            ray.init(num_cpus=available_cpus(), include_dashboard=False, _temp_dir=str(temp), **quiet)
        stack.callback(ray.shutdown)
        yield


def check_fits_a_node(key: str, cpus: float) -> None:
    """ConfigError when a Tune trial or a Ray Train worker asks more CPUs than the largest node
    of a Ray cluster that cannot grow: Ray would wait for such a node forever."""
    largest = fixed_cluster_node_cpus()
    if largest is not None and cpus > largest:
        raise ConfigError(f"{key}: {cpus:g} CPUs asked, but the largest node of the Ray cluster "
                          f"has {largest:g}; lower {key} or start larger nodes")


def fixed_cluster_node_cpus() -> float | None:
    """CPUs of the largest live node when the cluster cannot add nodes, else None (unknown).

    A cluster cannot grow when this process started it (a local instance), or when Ray's
    autoscaler reports it read-only: started by hand (``ray start``), one node type per node,
    named ``node_<id>``. An autoscaling cluster (its head often has no CPUs) is never judged.
    """
    import ray
    from ray._private import ray_constants, worker
    from ray.experimental.internal_kv import _internal_kv_get

    started_here = worker._global_node is not None and worker._global_node.head
    if not started_here:
        try:
            report = json.loads(_internal_kv_get(ray_constants.DEBUG_AUTOSCALING_STATUS) or "{}")
            types = set(report["autoscaler_report"]["node_type_mapping"].values())
        except Exception:  # noqa: BLE001 - no report yet, another layout, a client connection
            return None
        if not types or not all(name.startswith("node_") for name in types):
            return None
    return max((n["Resources"].get("CPU", 0.0) for n in ray.nodes() if n["Alive"]), default=0.0)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


#: Seconds a stopped local head gets to exit before it is killed.
HEAD_STOP_GRACE = 1.0


@dataclasses.dataclass
class RayHead:
    """A local Ray head started by :func:`local_cluster`: its address, and :meth:`wait`."""

    address: str
    process: subprocess.Popen
    log_path: Path
    timeout: float

    def wait(self) -> None:
        """Return once the head accepts drivers; RuntimeError with its log if it died."""
        deadline = time.monotonic() + self.timeout
        while "Ray runtime started" not in self.log_path.read_text():
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the local Ray head did not start; see {self.log_path}:\n"
                                   + self.log_path.read_text()[-2000:])
            time.sleep(0.2)


@contextlib.contextmanager
def local_cluster(num_cpus: int | None = None, *, timeout: float = 120.0,
                  wait: bool = True) -> Iterator[RayHead]:
    """A local Ray head node for the duration of the block.

    Every stage run inside (``RAY_ADDRESS`` or ``DML_RAY_ADDRESS`` set to its address)
    connects in about a second instead of starting and stopping a Ray instance of its own (6
    to 8 s each on 2 cores). The head runs as ``ray start --block`` in its own session and is
    stopped by its process group: other Ray instances on the machine are left alone. With
    ``wait=False`` the block starts at once, while the head starts in the background: call
    ``wait()`` before the first driver connects.
    """
    port = _free_port()
    bin_dir = Path(sys.executable).parent
    ray = bin_dir / "ray" if (bin_dir / "ray").exists() else Path("ray")
    env = os.environ | {"RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}
    env.pop("RAY_ADDRESS", None)
    log_path = scratch_dir() / "ray-head.log"
    with short_temp_dir("dml-ray-") as temp:
        with open(log_path, "w") as log:
            proc = subprocess.Popen(
                [str(ray), "start", "--head", "--block", f"--port={port}",
                 f"--num-cpus={num_cpus or available_cpus()}", "--include-dashboard=false",
                 f"--temp-dir={temp}", "--disable-usage-stats"],
                env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )
        head = RayHead(f"127.0.0.1:{port}", proc, log_path, timeout)
        try:
            if wait:
                head.wait()
            yield head
        finally:
            # `ray start --block` takes its children down on SIGTERM but lingers itself for ~10 s
            stop_session(proc.pid, grace=HEAD_STOP_GRACE)
            proc.wait()
