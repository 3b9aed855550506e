"""The benchmark scripts import each other as top-level modules (``from recipe_sweep import
...``), as they do when run as ``python benchmarks/<script>.py``: put benchmarks/ on sys.path."""

import sys
from pathlib import Path

BENCHMARKS = str(Path(__file__).resolve().parents[2] / "benchmarks")
if BENCHMARKS not in sys.path:
    sys.path.insert(0, BENCHMARKS)
