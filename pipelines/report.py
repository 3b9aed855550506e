"""Stage report: one comparison table over every experiment's metrics, per seed aggregated."""

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
    parser.add_argument("--metrics", default="metrics", help="folder of <experiment>/seed<k>.json")
    parser.add_argument("--out", default="results/comparison.md")
    args = parser.parse_args()
    params = load_params(args.params)
    results = {}
    for name in params.experiments:
        results[name] = {}
        for seed in params.seeds:
            path = Path(args.metrics) / name / f"seed{seed}.json"
            if not path.is_file():
                raise DataError(f"experiment {name!r}, seed {seed}: no metrics file {path}")
            results[name][seed] = json.loads(path.read_text())
    baselines = {n: e.baseline for n, e in params.experiments.items() if e.baseline}
    table = comparison_table(results, baselines)
    write_text_atomic(args.out, table)
    print(table)


if __name__ == "__main__":
    run_stage(main)
