"""Wall time of each pipeline stage for one experiment: where `dvc repro`'s time goes.

    .venv/bin/python benchmarks/bench_pipeline.py [--experiment contrastive] [--repo .]
        [--modes cold warm ray]

Copies the pipeline (dvc.yaml, pipelines/, dml/, params.yaml) of ``--repo`` into a temporary
git repository, keeps one experiment, and runs it there from scratch once per mode:

- ``cold``: plain ``dvc repro``: every stage imports its libraries, every Ray stage starts
  its own local Ray instance;
- ``warm``: ``dml run -- dvc repro`` (what ``make demo`` does): stages fork from a warm
  interpreter that imported the libraries once;
- ``ray``: ``dml run --ray -- dvc repro``: warm, and one local Ray head for every stage.

Prints the seconds of each stage (from DVC's "Running stage" lines) and of the whole run, and
writes benchmarks/results/pipeline.json. Stage scripts import the ``dml`` installed in this
environment, so ``--repo`` pointing at another checkout measures that checkout's stage
layout and parameters with this environment's library.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
MODES = {
    "cold": ["dvc", "repro"],
    "warm": [str(BIN / "dml"), "run", "--", "dvc", "repro"],
    "ray": [str(BIN / "dml"), "run", "--ray", "--", "dvc", "repro"],
}


def stage_times(command: list[str], cwd: Path, env: dict[str, str]) -> tuple[dict[str, float], float]:
    """Run ``command``; seconds from each "Running stage" line to the next (the last one to
    the end) and the total."""
    start = time.perf_counter()
    marks: list[tuple[str, float]] = []
    proc = subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    output = []
    for line in proc.stdout:  # type: ignore[union-attr]
        output.append(line)
        if line.startswith("Running stage '"):
            marks.append((line.split("'")[1], time.perf_counter()))
    if proc.wait() != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{''.join(output[-60:])}")
    end = time.perf_counter()
    times = {name: (marks[i + 1][1] if i + 1 < len(marks) else end) - t for i, (name, t) in enumerate(marks)}
    return times, end - start


def project(repo: Path, experiment: str, root: Path, env: dict[str, str]) -> Path:
    """A git repository holding ``repo``'s pipeline with only ``experiment``."""
    work = root / "r"
    work.mkdir()
    for item in ("dvc.yaml", "pipelines", "dml", ".gitignore"):
        source = repo / item
        (shutil.copytree if source.is_dir() else shutil.copy)(source, work / item)
    params = yaml.safe_load((repo / "params.yaml").read_text())
    kept = {k: v for k, v in params["experiments"][experiment].items() if k != "baseline"}  # its baseline is left out
    params["experiments"] = {experiment: kept}
    (work / "params.yaml").write_text(yaml.safe_dump(params))
    for cmd in (["git", "init", "-q"], ["dvc", "init", "-q"], ["dvc", "config", "core.analytics", "false"],
                ["git", "add", "-A"], ["git", "commit", "-qm", "pipeline"]):
        subprocess.run(cmd, cwd=work, env=env, check=True, capture_output=True)
    return work


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--experiment", default="contrastive")
    parser.add_argument("--repo", type=Path, default=REPO, help="checkout whose pipeline is timed")
    parser.add_argument("--modes", nargs="+", choices=sorted(MODES), default=["cold", "warm"])
    args = parser.parse_args()
    env = os.environ | {"PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "RAY_AUTH_MODE": "disabled",
                        "GIT_AUTHOR_NAME": "dml", "GIT_AUTHOR_EMAIL": "dml@example.com",
                        "GIT_COMMITTER_NAME": "dml", "GIT_COMMITTER_EMAIL": "dml@example.com"}
    env.pop("RAY_ADDRESS", None)
    results = {}
    for mode in args.modes:
        with tempfile.TemporaryDirectory(prefix="dmlb-", dir="/tmp") as tmp:
            work = project(args.repo.resolve(), args.experiment, Path(tmp), env)
            run_env = env | {"DML_SCRATCH": str(Path(tmp) / "s")}
            times, total = stage_times(MODES[mode], work, run_env)
        print(f"\n{args.experiment} ({mode}: {' '.join(MODES[mode])}): {total:.1f} s in all")
        for name, seconds in times.items():
            print(f"  {name:<28} {seconds:6.1f} s")
        results[mode] = {"command": " ".join(MODES[mode]), "total_s": round(total, 2),
                         "stages_s": {k: round(v, 2) for k, v in times.items()}}
    out = REPO / "benchmarks/results/pipeline.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
