"""Stage tune: search an experiment's margins and loss weights; write the best values."""

from dml.pipeline.stage import hand_over, print_notices, run_stage, stage_parser

hand_over()  # run in the warm interpreter when `dml run` serves one: no import cost

from dml.checks import check_experiment
from dml.config import load_params
from dml.io import write_json_atomic
from dml.preflight import preflight_tune
from dml.pipeline.ray_cluster import ray_session
from dml.pipeline.scratch import storage_dir
from dml.pipeline.stage import data_binding
from dml.train.training_data import DataSpec
from dml.tune import format_knobs, run_sweep


def main() -> None:
    parser = stage_parser(__doc__, experiment=True)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    params = load_params(args.params)
    check_experiment(params, args.experiment)
    data = DataSpec(manifest=args.manifest, splits=args.splits)
    checked = preflight_tune(params, args.experiment, data)
    print_notices(checked.notices)
    fixed = {"train.batch_size": checked.spec.train.batch_size}
    if params.tune.trials == 0:
        best = run_sweep(params, args.experiment, data, storage_path=storage_dir(None), fixed=fixed)
    else:
        with ray_session():
            best = run_sweep(params, args.experiment, data, fixed=fixed,
                             storage_path=storage_dir(params.train.storage_path))
    best["data"] = data_binding(args.manifest, args.splits)
    write_json_atomic(args.out, best)
    if not best["overrides"]:
        print(f"tune {args.experiment}: nothing to search; the parameters pass through -> {args.out}")
        return
    print(f"tune {args.experiment}: best of {best['trials']} trial(s): {format_knobs(best['overrides'])} "
          f"({best['metric']} {best['value']:.4f}) -> {args.out}")


if __name__ == "__main__":
    run_stage(main)
