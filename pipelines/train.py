"""Stage train: fit an experiment on all training classes with Ray Train; export the model."""

import json

from dml.cli import run_stage, stage_parser
from dml.config import load_params, resolve_run
from dml.runtime import ray_session, storage_dir
from dml.train.export import export_model
from dml.train.loop import DataSpec, build_learner, load_checkpoint
from dml.train.ray_trainer import latest_checkpoint, train_on_ray
from dml.train.curves import write_curves


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
    data = DataSpec(manifest=args.manifest, splits=args.splits)
    with ray_session():
        result = train_on_ray(spec, data, storage_path=storage_dir(spec.train.storage_path))
        with latest_checkpoint(result) as folder:
            state = load_checkpoint(folder)
    learner = build_learner(spec, num_classes=state["num_classes"])
    learner.load_state_dict(state["learner"])
    write_curves(args.curves, state["history"])
    export_model(
        learner.model,
        spec.model,
        args.out,
        experiment=args.experiment,
        loss={"name": spec.loss_name, **spec.loss_kwargs},
        train=spec.train.model_dump(mode="json"),
        history=state["history"],
        workers=state["workers"],
        resumed_at_epochs=state["resumes"],
    )
    last = state["history"][-1]
    nodes = len({worker["node_id"] for worker in state["workers"]})
    print(f"train {args.experiment}: {len(state['history'])} epochs on {len(state['workers'])} worker(s), "
          f"{nodes} node(s), loss {last['loss']:.4f} -> {args.out}")


if __name__ == "__main__":
    run_stage(main)
