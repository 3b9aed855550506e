"""Hyperparameter search: Ray Tune with OptunaSearch and ASHA over spaces declared in params.yaml.

The objective is a retrieval metric (MAP@R by default) on validation folds carved out of the
training classes; the test classes are never seen. A trial either trains in its own process
("local", for small sweeps) or drives a TorchTrainer over several workers ("trainer", on a
cluster). A sweep interrupted and started again resumes: finished trials are kept, and the
searcher is restored with their results.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

import ray
import torch
from ray import tune
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
from ray.tune.search.optuna import OptunaSearch
from torch import nn
from tqdm import tqdm

from dml.config import ExperimentConfig, Params, RunSpec, SearchDim, resolve_run
from dml.errors import Interrupted
from dml.pipeline.ray_cluster import check_fits_a_node
from dml.pipeline.run_naming import inputs_hash
from dml.train.loop import fit
from dml.train.sessions import describe_process
from dml.train.training_data import DataSpec
from dml.held_out import held_out, monitored


def search_space(search: dict[str, SearchDim]) -> dict[str, Any]:
    """Tune sampling domains for each dotted key of an experiment's ``search`` section."""
    space: dict[str, Any] = {}
    for key, dim in search.items():
        if dim.type == "uniform":
            space[key] = tune.uniform(dim.low, dim.high)
        elif dim.type == "loguniform":
            space[key] = tune.loguniform(dim.low, dim.high)
        elif dim.type == "int":
            space[key] = tune.randint(int(dim.low), int(dim.high) + 1)
        else:
            space[key] = tune.choice(list(dim.values or []))
    return space


class TuneSession:
    """Session adapter for an in-process Tune trial (one worker, the trial's own CPUs)."""

    rank = 0
    world_size = 1

    def __init__(self) -> None:
        self.device = torch.device("cpu")
        self._stack = contextlib.ExitStack()

    def checkpoint_dir(self) -> Path | None:
        checkpoint = tune.get_checkpoint()
        return None if checkpoint is None else Path(self._stack.enter_context(checkpoint.as_directory()))

    def report(self, metrics: dict[str, float], checkpoint_dir: Path | None) -> None:
        checkpoint = tune.Checkpoint.from_directory(str(checkpoint_dir)) if checkpoint_dir else None
        tune.report(metrics, checkpoint=checkpoint)

    def prepare(self, module: nn.Module) -> nn.Module:
        return module.to(self.device)

    def placement(self) -> dict[str, Any]:
        return describe_process(0, ray.get_runtime_context().get_node_id(), self.device)


def _trial(config: dict[str, Any], *, context: dict[str, Any]) -> None:
    """One trial: resolve the sampled knobs over the experiment, train, validate every epoch."""
    params = Params.model_validate(context["params"])
    spec = resolve_run(params, context["experiment"], {**context["fixed"], **config})
    data, validator = held_out(spec, DataSpec(**context["data"]))
    if context["mode"] == "local":
        local = replace_train(spec, num_workers=1, use_gpu=False)
        fit(local, data, TuneSession(), epochs=context["epochs"], validate=validator)
        return
    from ray.tune.integration.ray_train import TuneReportCallback

    from dml.train.ray_trainer import make_trainer

    trial_name = tune.get_context().get_trial_name()
    trainer = make_trainer(
        spec,
        data,
        storage_path=Path(context["storage_path"]),
        epochs=context["epochs"],
        name=f"{context['name']}-{trial_name}",
        validate=validator,
        callbacks=[TuneReportCallback()],
    )
    result = trainer.fit()
    if result.error is not None:
        raise result.error


def format_knobs(knobs: dict[str, Any]) -> str:
    """``loss.margin=0.1234, train.lr=0.001``: sampled values for a console line."""
    return ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in knobs.items())


class TrialProgress(tune.Callback):
    """The sweep's progress for people: on a terminal a bar over the trials, each finished
    trial's knobs and score beside it; elsewhere (a log, ``make demo``) nothing per trial, as
    the stage prints its result in one line. A failed trial is always named (Tune's own
    tables are off: ``verbose=0``)."""

    def __init__(self, experiment: str, metric: str, total: int) -> None:
        self.experiment, self.metric, self.total = experiment, metric, total
        self._bar: tqdm | None = None

    @property
    def bar(self) -> tqdm:
        if self._bar is None:
            self._bar = tqdm(total=self.total, desc=f"tune {self.experiment}", unit="trial",
                             leave=False, dynamic_ncols=True, disable=None)  # None: a terminal only
        return self._bar

    def __getstate__(self) -> dict[str, Any]:  # Tune saves its callbacks with the sweep
        return {**self.__dict__, "_bar": None}

    def _describe(self, trials: list, trial: Any, outcome: str) -> str:
        knobs = format_knobs(dict(sorted(trial.config.items())))
        number = trials.index(trial) + 1 if trial in trials else "?"  # resumed sweeps count on
        return f"trial {number} ({knobs}): {outcome}"

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        best = trial.metric_analysis.get(self.metric, {}).get("max")
        epochs = (trial.last_result or {}).get("training_iteration", 0)
        score = "no score" if best is None else f"{self.metric} {best:.4f}"
        self.bar.set_postfix_str(self._describe(trials, trial, f"{score} after {epochs} epoch(s)"))
        self.bar.update()

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.bar.write(f"tune {self.experiment}: "
                       + self._describe(trials, trial, f"failed ({trial.error_file or 'see the trial folder'})"))
        self.bar.update()

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        if self._bar is not None:
            self._bar.close()


def replace_train(spec: RunSpec, **changes: Any) -> RunSpec:
    """A copy of ``spec`` with some train fields changed."""
    return spec.model_copy(update={"train": spec.train.model_copy(update=changes)})


def sweep_name(params: Params, experiment: str, data: DataSpec) -> str:
    """``tune-<experiment>-<hash>`` over everything that defines the sweep: its parameters,
    the data files' contents and the package source (a finished sweep of other code or data
    is never restored)."""
    exp: ExperimentConfig = params.experiment(experiment)
    payload = {
        "tune": params.tune.model_dump(mode="json"),
        "experiment": exp.model_dump(mode="json"),
        "dataset": params.dataset(exp.dataset).model_dump(mode="json"),
        "train": params.train.model_dump(mode="json"),
        "model": params.model.model_dump(mode="json"),
    }
    return f"tune-{experiment}-{inputs_hash(payload, data)}"


def run_sweep(params: Params, experiment: str, data: DataSpec, *, storage_path: Path,
              fixed: dict[str, Any] | None = None) -> dict[str, Any]:
    """Run (or resume) the sweep for ``experiment``; return the best overrides and their score.

    ``fixed``: dotted overrides every trial runs with (a batch fitted to the data by
    :mod:`dml.preflight`). With ``tune.trials == 0`` or an empty search space nothing runs and
    the overrides are empty.
    """
    cfg = params.tune
    exp = params.experiment(experiment)
    if cfg.trials == 0 or not exp.search:
        return {"experiment": experiment, "overrides": {}, "trials": 0, "metric": None, "value": None}
    metric = monitored(resolve_run(params, experiment))
    name = sweep_name(params, experiment, data)
    context = {
        "params": params.model_dump(mode="json"),
        "experiment": experiment,
        "fixed": dict(fixed or {}),
        "data": asdict(data),
        "epochs": cfg.epochs,
        "mode": cfg.mode,
        "name": name,
        "storage_path": str(storage_path),
    }
    trainable = _trainable(params, experiment, context)
    path = storage_path / name
    if tune.Tuner.can_restore(str(path)):
        tuner = tune.Tuner.restore(str(path), trainable=trainable, resume_errored=True)
    else:
        tuner = _new_tuner(trainable, params, experiment, metric, name, storage_path)
    results = tuner.fit()
    stop_if_interrupted(results, experiment, cfg.trials)
    return _best(results, experiment, name, metric, tuple(exp.search))


def _trainable(params: Params, experiment: str, context: dict[str, Any]) -> Any:
    """The trial function with its context and resources (a token share for a trainer trial)."""
    cfg = params.tune
    trainable = tune.with_parameters(_trial, context=context)
    if cfg.mode == "local":
        resources = {"cpu": cfg.cpus_per_trial}
        check_fits_a_node("tune.cpus_per_trial", cfg.cpus_per_trial)
    else:
        resources = {"cpu": 0.01}
        check_fits_a_node("train.cpus_per_worker", resolve_run(params, experiment).train.cpus_per_worker)
    return tune.with_resources(trainable, resources)


def _new_tuner(trainable: Any, params: Params, experiment: str, metric: str, name: str,
               storage_path: Path) -> tune.Tuner:
    """A fresh sweep: OptunaSearch over the search space, one trial at a time, ASHA or FIFO."""
    cfg = params.tune
    scheduler = (
        ASHAScheduler(time_attr="training_iteration", max_t=cfg.epochs, grace_period=1)
        if cfg.scheduler == "asha"
        else FIFOScheduler()
    )
    return tune.Tuner(
        trainable,
        param_space=search_space(params.experiment(experiment).search),
        tune_config=tune.TuneConfig(
            metric=metric,
            mode="max",
            search_alg=OptunaSearch(seed=cfg.seed),
            scheduler=scheduler,
            num_samples=cfg.trials,
            max_concurrent_trials=1,
            # the next trial runs in the same worker process: no second start-up (a
            # process importing torch and dml takes seconds on a small machine)
            reuse_actors=True,
        ),
        run_config=tune.RunConfig(name=name, storage_path=str(storage_path), verbose=0,
                                  callbacks=[TrialProgress(experiment, metric, cfg.trials)]),
    )


def _best(results: Any, experiment: str, name: str, metric: str,
          keys: tuple[str, ...]) -> dict[str, Any]:
    """The best trial's overrides and score, all trials ranked; RuntimeError if none scored."""
    errors = [r.error for r in results if r.error is not None]
    if len(errors) == len(results):
        raise RuntimeError(f"every trial of {name} failed; first error: {errors[0]}")
    rows = ranked_trials(results, metric, keys)
    if not rows:
        raise RuntimeError(f"no trial of {name} reported {metric}")
    return {
        "experiment": experiment,
        "overrides": dict(rows[0]["config"]),
        "trials": len(results),
        "failed_trials": len(errors),
        "metric": metric,
        "value": rows[0][metric],
        "all": rows,
    }


def stop_if_interrupted(results: Any, experiment: str, trials: int) -> None:
    """Raise :class:`~dml.errors.Interrupted` when fewer than ``trials`` trials ended
    (failed, or reported ``done``: finished or stopped by the scheduler): Tune returned from an
    interrupted sweep. Trial status cannot tell: Tune marks the trials it stops on SIGINT
    TERMINATED, as it does finished ones."""
    ended = sum(1 for r in results if r.error is not None or (r.metrics or {}).get("done"))
    if ended < trials:
        raise Interrupted(f"tune {experiment}: interrupted after {ended} of {trials} trial(s); "
                          "the finished ones are kept, run the stage again to resume the sweep")


def trial_score(result: Any, metric: str) -> float | None:
    """A trial's score: its best validation ``metric`` over the epochs it reported (the epoch
    that model selection would export), None when it reported none."""
    frame = result.metrics_dataframe
    if frame is not None and metric in frame and frame[metric].notna().any():
        return float(frame[metric].max())
    value = (result.metrics or {}).get(metric)
    return None if value is None else float(value)


def ranked_trials(results: Any, metric: str, keys: tuple[str, ...]) -> list[dict[str, Any]]:
    """The finished trials, best first: by score, ties broken by the configuration itself (its
    JSON), so that the same trials always give the same winner whatever order they ran in."""
    rows = [{"config": {k: r.config[k] for k in keys}, metric: trial_score(r, metric)}
            for r in results if r.error is None and r.config is not None]  # None: never reported
    rows = [row for row in rows if row[metric] is not None]
    return sorted(rows, key=lambda row: (-row[metric], json.dumps(row["config"], sort_keys=True)))
