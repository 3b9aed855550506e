"""bench_scale.py end to end at a size CI affords: every stage runs in its own process (Ray Data
for the embedding) and its figures are written."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def test_every_stage_runs_and_is_measured(tmp_path: Path) -> None:
    out = tmp_path / "scale.json"
    done = subprocess.run([sys.executable, f"{BENCHMARKS}/bench_scale.py", "--sizes", "1600",
                           "--work", str(tmp_path), "--actors", "1", "--out", str(out)],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    rows = json.loads(out.read_text())["sizes"]["1600"]
    assert set(rows) == {"ingest", "split", "train", "embed", "evaluate"}
    for stage, row in rows.items():
        assert row["wall_s"] > 0 and row["process_peak_mib"] > 100, stage  # torch alone is more
    assert rows["embed"]["ray_workers"] >= 1 and rows["embed"]["worker_peak_mib"] > 0
    assert rows["train"]["images_per_s"] > 0
    ranking = rows["evaluate"]["ranking"]
    assert ranking["kind"] == "approximate" and 0 < ranking["recall@100"] <= 1
    assert len([line for line in done.stdout.splitlines() if " 1600 " in f" {line} "]) >= 5
