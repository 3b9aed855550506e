"""Stage train: fit an experiment on its training classes (validation folds held out, the
best epoch on them selected) with its launcher; with ``train.refit``, train again on every
training class for that many epochs; export the model. An experiment with
``train.epochs: 0`` is an untrained reference: its initial model is exported as is."""

from dml.pipeline.stage import hand_over, print_notices, read_tuned, run_stage, stage_parser

hand_over()  # run in the warm interpreter when `dml run` serves one: no import cost

from pathlib import Path

from dml.checks import check_run
from dml.config import load_params, resolve_run
from dml.preflight import preflight
from dml.pipeline.scratch import storage_dir
from dml.train.curves import write_curves
from dml.train.export import export_model
from dml.train.launch import (initial_model, mark_finished, refit_spec, selected_weights, train_run,
                              trained_model)
from dml.train.training_data import DataSpec
from dml.held_out import held_out


def main() -> None:
    parser = stage_parser(__doc__, data=False, bound=True, experiment=True, seed=True)
    parser.add_argument("--out", required=True, help="folder of the exported model")
    parser.add_argument("--curves", required=True, help="dvclive folder for training curves")
    args = parser.parse_args()
    params = load_params(args.params)
    tuned = read_tuned(args.tuned)
    spec = resolve_run(params, args.experiment, {**tuned["overrides"], "train.seed": args.seed})
    check_run(spec)
    data = DataSpec(manifest=tuned["data"]["manifest"], splits=tuned["data"]["splits"])
    checked = preflight(spec, data, world_size=spec.train.num_workers)
    print_notices(checked.notices)
    spec = checked.spec
    card = {"experiment": args.experiment, "seed": args.seed, "dataset": spec.dataset, "domains": spec.domains,
            "loss": spec.loss, "protocol": spec.protocol, "train": spec.train.model_dump(mode="json"),
            "pretrained": spec.model.weights}
    if spec.train.epochs == 0:
        model, context = initial_model(spec, data)
        _, validate = held_out(spec, data)
        history = [{"epoch": 0.0, **validate(model)}] if validate is not None else []
        write_curves(args.curves, history)
        export_model(model, spec.model, args.out, context=context, history=history, workers=[],
                     resumed_at_epochs=[], selected_epoch=None, selected_by="untrained", **card)
        print(f"train {args.experiment}: untrained reference ({spec.model.backbone}) -> {args.out}")
        return
    storage = storage_dir(spec.train.storage_path)
    state, run_folder = train_run(spec, data, storage_path=storage)
    weights, epoch = selected_weights(spec, state)
    model, context = trained_model(spec, state, weights)
    refit = None
    if spec.train.refit:  # the epochs chosen on the folds, now on every training class
        refitted = refit_spec(spec, epoch + 1)
        refit_state, refit_folder = train_run(refitted, data, storage_path=storage)
        model, context = trained_model(refitted, refit_state, refit_state["learner"])
        refit = {"epochs": epoch + 1, "history": refit_state["history"]}
        mark_finished(refit_folder, model=str(Path(args.out).resolve()))
    write_curves(args.curves, state["history"])
    export_model(
        model, spec.model, args.out, context=context,
        history=state["history"], workers=state["workers"], resumed_at_epochs=state["resumes"],
        selected_epoch=epoch,
        selected_by=state["best"]["metric"] if spec.train.select == "best" and state.get("best") else "last",
        refit=refit, **card,
    )
    mark_finished(run_folder, model=str(Path(args.out).resolve()))
    chosen = state["history"][epoch]
    nodes = len({worker["node_id"] for worker in state["workers"]})
    monitored = f"val_{spec.train.val_metric}"
    validated = f", {monitored} {chosen[monitored]:.4f}" if monitored in chosen else ""
    refitted = f"; refit on every training class for {epoch + 1} epochs" if refit else ""
    print(f"train {args.experiment}: {len(state['history'])} epochs on {len(state['workers'])} worker(s), "
          f"{nodes} node(s); epoch {epoch} ({spec.train.select}): loss {chosen['loss']:.4f}{validated}"
          f"{refitted} -> {args.out}")


if __name__ == "__main__":
    run_stage(main)
