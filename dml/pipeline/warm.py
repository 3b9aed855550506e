"""A warm interpreter for pipeline stages: heavy libraries imported once, one fork per stage.

On a small machine every stage process spends seconds importing torch, torchvision, Ray and
friends (about 8 s on 2 cores) before it does any work, and ``dvc repro`` starts several such
processes per experiment. ``dml run -- dvc repro`` starts this server first: it imports the
third-party libraries (never ``dml`` itself) and listens on a unix socket. A stage script
calls :func:`dml.pipeline.stage.hand_over` before its imports; when ``$DML_WARM_SOCKET`` names a
live server, the script passes its argv, working directory, environment and standard streams
to the server, which forks a child that runs the script from disk as ``__main__``; the
script's process waits and exits with the child's status. Because the child imports ``dml``
fresh, an edit of the library between stages is always seen. Without a server, or when the
socket does not answer, the script simply runs in its own process.

The child runs in its own process group; if the waiting script dies (Ctrl-C, a killed
``dvc repro``), the server terminates the child's group, so no stage outlives its caller.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import runpy
import select
import signal
import socket
import struct
import sys
import threading
import traceback
from pathlib import Path

from dml.pipeline.processes import stop_session

SOCKET_ENV = "DML_WARM_SOCKET"
CHILD_ENV = "DML_WARM_CHILD"
#: Imported once by the server; a stage's own modules (``dml``) are not among them.
PRELOAD = (
    "numpy", "yaml", "pydantic", "PIL.Image", "pyarrow.parquet", "pyarrow.compute", "torch",
    "torch.distributed", "torchvision.transforms.v2", "faiss", "sklearn.metrics", "safetensors.torch",
    "tqdm", "dvclive", "ray", "ray.train", "ray.train.torch", "ray.tune", "ray.tune.search.optuna",
    "optuna", "scipy.stats", "matplotlib.figure", "matplotlib.backends.backend_agg", "timm",
)
#: The only dml modules the server itself imports (standard library only beneath them).
SERVER_MODULES = {"dml", "dml.pipeline", "dml.pipeline.warm", "dml.pipeline.processes"}
_HEADER = struct.Struct("!Q")  # length of the JSON request that follows the streams
_STATUS = struct.Struct("!i")


def _run_child(request: dict, fds: list[int]) -> None:
    """In the forked child: become the stage script and exit with its status."""
    os.setsid()
    for target, fd in enumerate(fds):
        os.dup2(fd, target)
        os.close(fd)
    sys.stdin = os.fdopen(0, "r", closefd=False)
    sys.stdout = os.fdopen(1, "w", buffering=1, closefd=False)
    sys.stderr = os.fdopen(2, "w", buffering=1, closefd=False)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    # SIGTERM (the server ending a stage whose caller is gone) unwinds like Ctrl-C would, so
    # that the stage's `finally` blocks remove its temporary folders; SIGKILL follows if it hangs.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"], **{CHILD_ENV: "1"})
    script = request["argv"][0]
    sys.argv = list(request["argv"])
    sys.path[0] = os.path.dirname(os.path.abspath(script))
    code: int | str | None = 0
    try:
        runpy.run_path(script, run_name="__main__")
    except SystemExit as stop:
        code = stop.code
    except BaseException:  # noqa: BLE001 - report like the interpreter would, then exit 1
        traceback.print_exc()
        code = 1
    if isinstance(code, str):
        print(code, file=sys.stderr)
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(int(code or 0))


def _terminate(pid: int) -> None:
    """Stop the child's session (SIGTERM, SIGKILL after a grace period) and reap the child."""
    stop_session(pid, grace=5.0)
    os.waitpid(pid, 0)


def _supervise(conn: socket.socket, pid: int) -> None:
    """Wait for the child and send its exit status; if the caller hangs up first (it was
    interrupted or killed), terminate the child's group instead."""
    with conn:
        while True:
            done, raw = os.waitpid(pid, os.WNOHANG)
            if done:
                code = os.waitstatus_to_exitcode(raw)
                break
            ready, _, _ = select.select([conn], [], [], 0.05)
            if ready and not conn.recv(1, socket.MSG_PEEK):
                _terminate(pid)
                return
        try:
            conn.sendall(_STATUS.pack(code if code >= 0 else 128 - code))  # signal n -> 128 + n
        except OSError:
            pass


def serve(path: Path) -> None:
    """Preload the libraries, then fork a child per request on the unix socket ``path``."""
    for name in PRELOAD:
        try:
            importlib.import_module(name)
        except Exception:  # noqa: BLE001 - a missing optional library only costs its import later
            pass
    assert not set(m for m in sys.modules if m == "dml" or m.startswith("dml.")) - SERVER_MODULES, \
        "the warm interpreter must not import dml's library: children import it fresh"
    tmp = path.with_suffix(".tmp")
    tmp.unlink(missing_ok=True)
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(tmp))
    server.listen(16)
    os.replace(tmp, path)  # the socket appears once everything is loaded
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        while True:
            conn, _ = server.accept()
            try:
                data, fds, _, _ = socket.recv_fds(conn, _HEADER.size, 3)
                (length,) = _HEADER.unpack(data)
                payload = b""
                while len(payload) < length:
                    chunk = conn.recv(length - len(payload))
                    if not chunk:
                        raise ConnectionError("request cut short")
                    payload += chunk
                request = json.loads(payload)
            except (OSError, ValueError, struct.error):
                conn.close()
                continue
            pid = os.fork()
            if pid == 0:
                server.close()
                conn.close()
                _run_child(request, fds)
            for fd in fds:
                os.close(fd)
            threading.Thread(target=_supervise, args=(conn, pid), daemon=True).start()
    finally:
        server.close()
        path.unlink(missing_ok=True)


def request_run(path: str, argv: list[str]) -> int | None:
    """Ask the server at ``path`` to run ``argv`` (a script and its arguments) here; its exit
    status, or None when no server answers (the caller then runs the script itself)."""
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        conn.connect(path)
    except OSError:
        conn.close()
        return None
    payload = json.dumps({"argv": argv, "cwd": os.getcwd(), "env": dict(os.environ)}).encode()
    with conn:
        socket.send_fds(conn, [_HEADER.pack(len(payload))], [0, 1, 2])
        conn.sendall(payload)
        data = b""
        while len(data) < _STATUS.size:
            chunk = conn.recv(_STATUS.size - len(data))
            if not chunk:
                return 1
            data += chunk
    return _STATUS.unpack(data)[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--socket", required=True, type=Path)
    serve(parser.parse_args().socket)


if __name__ == "__main__":
    main()
