"""The one way a started process tree is stopped: every process of its session, SIGTERM, then
SIGKILL for what outlives a grace period.

The local Ray head and the warm interpreter are started with ``start_new_session``, and the
warm interpreter's stage children call ``os.setsid``: each leads a session that holds all its
descendants, those in process groups of their own too (Ray's workers are).
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path


def session_members(sid: int) -> list[int]:
    """Live processes of session ``sid`` (Linux /proc; elsewhere ``sid`` itself while its
    process group exists)."""
    if not Path("/proc/self/stat").exists():  # pragma: no cover - non-Linux
        try:
            os.killpg(sid, 0)
        except (ProcessLookupError, PermissionError):
            return []
        return [sid]
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # exited while we looked
        if fields[0] != "Z" and int(fields[3]) == sid:
            members.append(int(stat.parent.name))
    return members


def stop_session(sid: int, grace: float = 10.0) -> None:
    """SIGTERM every process of session ``sid``, SIGKILL what outlives ``grace`` seconds; return
    when none is left alive. The caller reaps its own child (``Popen.wait``, ``os.waitpid``)."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        for pid in session_members(sid):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)
        deadline = time.monotonic() + wait
        while session_members(sid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if not session_members(sid):
            return
