"""Where scratch lives, how we join a Ray cluster (local by default, RAY_ADDRESS if set), and
how runs are named so that only work of the same inputs and code is ever resumed."""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from dml.errors import ConfigError
from dml.io import sha256_file, source_fingerprint
from dml.warm import SOCKET_ENV

SCRATCH_ENV = "DML_SCRATCH"
#: Address of the local Ray head that ``dml run`` keeps for the stages that use Ray (Tune).
#: Unlike ``RAY_ADDRESS`` it does not move training onto Ray Train.
LOCAL_RAY_ENV = "DML_RAY_ADDRESS"


def scratch_dir() -> Path:
    """Ignored working space (Ray temp files, run folders): $DML_SCRATCH or ./.scratch."""
    path = Path(os.environ.get(SCRATCH_ENV) or ".scratch").resolve()
    path.mkdir(parents=True, exist_ok=True)
    return path


#: Ray's deepest socket path adds about 70 bytes to its temp dir (``session_<date>_<time>_<pid>/
#: sockets/plasma_store``) and a Unix socket path holds at most 107: the temp dir must be short
#: wherever the checkout is.
SHORT_TEMP_LIMIT = 32


#: The file in a short temp folder that names the process it belongs to.
OWNER_FILE = "owner.pid"


@contextlib.contextmanager
def short_temp_dir(prefix: str) -> Iterator[Path]:
    """A fresh folder with a short path under the system temp dir (``/tmp`` where $TMPDIR is
    long) for Unix sockets, removed with everything in it when the block ends. Folders of the
    same prefix whose process died without removing its own (SIGKILL) are removed first."""
    base = tempfile.gettempdir()
    if len(base) > SHORT_TEMP_LIMIT:
        base = "/tmp"
    _remove_abandoned(Path(base), prefix)
    folder = Path(tempfile.mkdtemp(prefix=prefix, dir=base))
    (folder / OWNER_FILE).write_text(str(os.getpid()))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _remove_abandoned(base: Path, prefix: str) -> None:
    """Remove ``base/<prefix>*`` folders whose owner process is no longer alive."""
    for folder in base.glob(f"{prefix}*"):
        try:
            owner = int((folder / OWNER_FILE).read_text())
        except (OSError, ValueError):
            continue  # not one of ours, or its owner is writing the file now
        try:
            os.kill(owner, 0)
        except ProcessLookupError:
            shutil.rmtree(folder, ignore_errors=True)
        except PermissionError:
            pass  # alive, another user's


def storage_dir(configured: str | None) -> Path:
    """Absolute folder for Ray run storage (checkpoints): configured, or scratch/ray_results."""
    path = Path(configured).resolve() if configured else scratch_dir() / "ray_results"
    path.mkdir(parents=True, exist_ok=True)
    return path


def available_cpus() -> int:
    """CPUs this process may use (respects affinity masks in containers)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - non-Linux
        return os.cpu_count() or 1


#: Loggers whose lines below these levels say nothing a user acts on: Ray's start-up lines
#: (its warnings, such as a resource request no node can meet, stay), Tune's result-file notes,
#: Ray Train's controller polling, Optuna's "new study" line, faiss's search for its fastest build.
NOISY_LOGGERS = {"ray": logging.WARNING, "ray.tune": logging.ERROR, "ray.train": logging.ERROR,
                 "ray.data": logging.ERROR, "optuna": logging.ERROR, "faiss": logging.WARNING}


def _ignore_exits(unraisable: Any) -> None:
    """``sys.unraisablehook`` that drops a ``SystemExit``: Ray's SIGTERM handler exits by
    raising one, and where the signal lands inside a callback Python cannot raise from (a
    weak reference's, during garbage collection) it prints "Exception ignored" and a
    traceback for what is an intended exit. Anything else goes to the default hook."""
    if isinstance(unraisable.exc_value, SystemExit):
        return
    sys.__unraisablehook__(unraisable)


def quiet_frameworks() -> None:
    """Keep the console for people: frameworks' own logging at the levels of NOISY_LOGGERS,
    Tune's classic reporter, which (unlike its newer one) prints nothing at verbose=0, and no
    traceback for a process that Ray stops (:func:`_ignore_exits`)."""
    sys.unraisablehook = _ignore_exits
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    for name, level in NOISY_LOGGERS.items():
        logging.getLogger(name).setLevel(level)
    try:
        import optuna

        optuna.logging.set_verbosity(optuna.logging.ERROR)
    except ImportError:  # pragma: no cover - optuna is a dependency
        pass


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
             "runtime_env": {"worker_process_setup_hook": f"{__name__}.quiet_frameworks"}}
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


def inputs_hash(payload: dict[str, Any], data: Any) -> str:
    """12 hex digits over ``payload``, the data files' contents and the package source."""
    full = {
        **payload,
        "data": dataclasses.asdict(data),
        "data_sha256": {"manifest": sha256_file(data.manifest), "splits": sha256_file(data.splits)},
        "code": source_fingerprint(),
    }
    return hashlib.sha256(json.dumps(full, sort_keys=True).encode()).hexdigest()[:12]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _session_members(sid: int) -> list[int]:
    """Live processes of session ``sid`` (Linux /proc): a process started with
    ``start_new_session`` and its descendants, those in process groups of their own too (Ray's
    workers are)."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # exited while we looked
        if fields[0] != "Z" and int(fields[3]) == sid:
            members.append(int(stat.parent.name))
    return members


def _stop_session(proc: subprocess.Popen, grace: float = 10.0) -> None:
    """SIGTERM every process of the session that ``proc`` leads (started with
    ``start_new_session``), SIGKILL what outlives ``grace`` seconds; return when none is left."""
    def members() -> list[int]:
        proc.poll()
        found = _session_members(proc.pid) if Path("/proc/self/stat").exists() else []
        return found or ([proc.pid] if proc.returncode is None else [])

    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        for pid in members():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)
        deadline = time.monotonic() + wait
        while members() and time.monotonic() < deadline:
            time.sleep(0.1)
        if not members():
            return


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
            _stop_session(proc, grace=HEAD_STOP_GRACE)


@contextlib.contextmanager
def warm_interpreter(timeout: float = 180.0) -> Iterator[str]:
    """A :mod:`dml.warm` server for the duration of the block; yields its socket path (to
    export as ``$DML_WARM_SOCKET``). Stopped by its process group at the end."""
    log_path = scratch_dir() / "warm.log"
    with short_temp_dir("dml-warm-") as folder:  # socket paths must be short
        path = folder / "socket"
        with open(log_path, "w") as log:
            proc = subprocess.Popen([sys.executable, "-m", "dml.warm", "--socket", str(path)],
                                    stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            deadline = time.monotonic() + timeout
            while not path.exists():
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"the warm interpreter did not start; see {log_path}:\n"
                                       + log_path.read_text()[-2000:])
                time.sleep(0.1)
            yield str(path)
        finally:
            _stop_session(proc, grace=2.0)


def run_command(command: Sequence[str], *, warm: bool = True, ray: bool = False) -> int:
    """Run ``command`` (``dvc repro``) with a warm interpreter serving its stages and one local
    Ray head (unless ``RAY_ADDRESS`` already names a cluster); its exit status.

    The head serves the stages that use Ray (Tune) as ``DML_RAY_ADDRESS``, so that each
    connects instead of starting a Ray instance; training stays in the stage's process. With
    ``ray`` it is ``RAY_ADDRESS``: training runs on it through Ray Train too. It starts while
    the warm interpreter imports its libraries.
    """
    env = dict(os.environ)
    # A terminated run (SIGTERM) stops its head and warm interpreter as Ctrl-C does.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    with contextlib.ExitStack() as stack:
        head = None
        if not env.get("RAY_ADDRESS"):
            head = stack.enter_context(local_cluster(wait=False))
            env["RAY_ADDRESS" if ray else LOCAL_RAY_ENV] = head.address
        if warm:
            env[SOCKET_ENV] = stack.enter_context(warm_interpreter())
        if head is not None:
            head.wait()
        command = list(command)
        if command[:1] == ["dvc"]:  # the same CLI, with faster lock-file updates
            command = [sys.executable, "-m", "dml.dvc_fast", *command[1:]]
        return subprocess.call(command, env=env)
