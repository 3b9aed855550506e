"""A process that Ray stops prints no traceback: Ray's SIGTERM handler raises SystemExit, and
where that lands inside a weak reference's callback Python reports it as "Exception ignored"."""

from __future__ import annotations

import subprocess
import sys

SCRIPT = """
import gc, weakref, sys
{setup}

class Thing:
    pass

def stop(_ref):
    raise SystemExit(1)  # as ray._private.worker's sigterm_handler does

def fail(_ref):
    raise ValueError("a real error")

kept = []
for callback in (stop, fail):
    thing = Thing()
    kept.append(weakref.ref(thing, callback))
    del thing
    gc.collect()
print("done")
"""


def run(setup: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", SCRIPT.format(setup=setup)], capture_output=True, text=True,
                          timeout=60)


def test_an_exit_inside_a_callback_prints_nothing_and_real_errors_still_show():
    plain = run("")
    assert "SystemExit" in plain.stderr and "ValueError" in plain.stderr  # what Python does by default
    quiet = run("from dml.pipeline.quiet import quiet_frameworks; quiet_frameworks()")
    assert quiet.stdout == "done\n"
    assert "SystemExit" not in quiet.stderr
    assert "ValueError: a real error" in quiet.stderr  # only the intended exit is dropped
