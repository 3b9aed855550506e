"""Library use pulls in none of the pipeline's orchestration: importing every module of ``dml``
outside ``dml.pipeline`` (and the ``dml`` command) imports neither DVC nor DVCLive, nor the
warm interpreter's fork server, the ``dml run`` supervisor or DVC's lock-file speed-up."""

from __future__ import annotations

import json
import subprocess
import sys

SCRIPT = """
import importlib, json, pkgutil, sys
import dml
library = [m.name for m in pkgutil.walk_packages(dml.__path__, "dml.")
           if not m.name.startswith("dml.pipeline") and m.name != "dml.cli"]
for name in library:
    importlib.import_module(name)
print(json.dumps({"library": library, "modules": sorted(sys.modules)}))
"""

ORCHESTRATION = ("dvc", "dvclive", "dml.pipeline.warm", "dml.pipeline.supervisor", "dml.pipeline.dvc_fast")


def test_importing_the_library_imports_no_orchestration() -> None:
    done = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=300, check=True)
    found = json.loads(done.stdout.splitlines()[-1])
    assert {"dml.losses", "dml.evaluate.engine", "dml.train.launch", "dml.retrieve"} <= set(found["library"])
    pulled = [m for m in found["modules"] if m.split(".")[0] in ORCHESTRATION[:2] or m in ORCHESTRATION[2:]]
    assert pulled == []


def test_the_bare_package_imports_nothing_else() -> None:
    code = "import sys, dml; print(sorted(m for m in sys.modules if m.startswith(('dml', 'torch', 'ray', 'dvc'))))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert done.stdout.strip() == "['dml']"
