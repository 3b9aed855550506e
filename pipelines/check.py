"""Stage check: validate every key of params.yaml (DVC re-runs it whenever the file changes),
so that an unknown or misspelt key anywhere stops `dvc repro` before any other stage runs.

Its output never changes while the parameters are valid: the stages after it re-run only for
the parameters they read."""

from dml.pipeline.stage import hand_over, run_stage, stage_parser

hand_over()  # run in the warm interpreter when `dml run` serves one: no import cost

from dml.checks import check_params
from dml.config import load_params
from dml.io import write_json_atomic


def main() -> None:
    parser = stage_parser(__doc__, data=False)
    parser.add_argument("--out", required=True, help="written once the parameters are valid")
    args = parser.parse_args()
    check_params(load_params(args.params))
    write_json_atomic(args.out, {"valid": True})


if __name__ == "__main__":
    run_stage(main)
