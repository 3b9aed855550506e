"""Stage report: one comparison table over every experiment's metrics.json."""

from dml.stage import hand_over, run_stage, stage_parser

hand_over()  # run in the warm interpreter when `dml run` serves one: no import cost

import json
from pathlib import Path

from dml.config import load_params
from dml.errors import DataError
from dml.io import write_text_atomic
from dml.report import comparison_table


def main() -> None:
    parser = stage_parser(__doc__, data=False)
    parser.add_argument("--metrics", default="metrics", help="folder of <experiment>.json")
    parser.add_argument("--out", default="results/comparison.md")
    args = parser.parse_args()
    results = {}
    for name in load_params(args.params).experiments:
        path = Path(args.metrics) / f"{name}.json"
        if not path.is_file():
            raise DataError(f"experiment {name!r} has no metrics file {path}")
        results[name] = json.loads(path.read_text())
    table = comparison_table(results)
    write_text_atomic(args.out, table)
    print(table)


if __name__ == "__main__":
    run_stage(main)
