"""``dml run``: a command (``dvc repro``) with a warm interpreter serving its stages and one
local Ray head, both stopped with their whole process trees when it ends."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence

from dml.pipeline.processes import stop_session
from dml.pipeline.ray_cluster import LOCAL_RAY_ENV, local_cluster
from dml.pipeline.scratch import scratch_dir, short_temp_dir
from dml.pipeline.warm import SOCKET_ENV



@contextlib.contextmanager
def warm_interpreter(timeout: float = 180.0) -> Iterator[str]:
    """A :mod:`dml.pipeline.warm` server for the duration of the block; yields its socket path (to
    export as ``$DML_WARM_SOCKET``). Stopped by its process group at the end."""
    log_path = scratch_dir() / "warm.log"
    with short_temp_dir("dml-warm-") as folder:  # socket paths must be short
        path = folder / "socket"
        with open(log_path, "w") as log:
            proc = subprocess.Popen([sys.executable, "-m", "dml.pipeline.warm", "--socket", str(path)],
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
            stop_session(proc.pid, grace=2.0)
            proc.wait()


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
            command = [sys.executable, "-m", "dml.pipeline.dvc_fast", *command[1:]]
        return subprocess.call(command, env=env)
