"""Stage train: fit an experiment on all training classes with Ray Train; export the model."""

from dml.stage import hand_over, run_stage, stage_parser

hand_over()  # run in the warm interpreter when `dml run` serves one: no import cost

import json
from pathlib import Path

from dml.checks import check_run
from dml.config import load_params, resolve_run
from dml.context import BuildContext
from dml.runtime import storage_dir
from dml.train.curves import write_curves
from dml.train.export import export_model
from dml.train.launch import mark_finished, train_run
from dml.train.loop import DataSpec, build_learner


def main() -> None:
    parser = stage_parser(__doc__, experiment=True)
    parser.add_argument("--tuned", required=True, help="best values found by the tune stage")
    parser.add_argument("--out", required=True, help="folder of the exported model")
    parser.add_argument("--curves", required=True, help="dvclive folder for training curves")
    args = parser.parse_args()
    params = load_params(args.params)
    with open(args.tuned) as handle:
        tuned = json.load(handle)
    spec = resolve_run(params, args.experiment, tuned["overrides"])
    check_run(spec)
    data = DataSpec(manifest=args.manifest, splits=args.splits)
    state, run_folder = train_run(spec, data, storage_path=storage_dir(spec.train.storage_path))
    context = BuildContext(**state["context"])
    learner = build_learner(spec, context)
    learner.load_state_dict(state["learner"])
    write_curves(args.curves, state["history"])
    export_model(
        learner.model,
        spec.model,
        args.out,
        context=context,
        experiment=args.experiment,
        dataset=spec.dataset,
        domains=spec.domains,
        loss=spec.loss,
        protocol=spec.protocol,
        train=spec.train.model_dump(mode="json"),
        history=state["history"],
        workers=state["workers"],
        resumed_at_epochs=state["resumes"],
    )
    mark_finished(run_folder, model=str(Path(args.out).resolve()))
    last = state["history"][-1]
    nodes = len({worker["node_id"] for worker in state["workers"]})
    print(f"train {args.experiment}: {len(state['history'])} epochs on {len(state['workers'])} worker(s), "
          f"{nodes} node(s), loss {last['loss']:.4f} -> {args.out}")


if __name__ == "__main__":
    run_stage(main)
