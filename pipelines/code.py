"""Stage code: for each stage script, the sha256 of every dml file it runs (dml/pipeline/code_fingerprint.py).

DVC runs it every time; a stage re-runs when its script's fingerprint changes, that is when the
code it imports changed, and only then."""

from dml.pipeline.stage import hand_over, run_stage

hand_over()  # run in the warm interpreter when `dml run` serves one: no import cost

import argparse
from pathlib import Path

from dml.pipeline.code_fingerprint import code_fingerprint
from dml.io import write_json_atomic


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="the folder of the fingerprints (<script>.json)")
    parser.add_argument("scripts", nargs="+", help="stage scripts, e.g. pipelines/train.py")
    args = parser.parse_args()
    for script in args.scripts:
        write_json_atomic(Path(args.out) / f"{Path(script).stem}.json", code_fingerprint(Path(script)))


if __name__ == "__main__":
    run_stage(main)
