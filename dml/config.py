"""Typed schema of params.yaml: unknown keys, wrong types and unknown names are errors.

Each pipeline stage validates the whole file (so a typo anywhere is caught at once) but reads
only its own section. Errors name the dotted key and, for choices, the valid values.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from dml.errors import ConfigError


class Section(BaseModel):
    """A params.yaml section: extra keys are errors, values are validated on assignment."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=False)


class IngestConfig(Section):
    source: str = "synthetic"
    on_bad: Literal["fail", "skip"] = "fail"
    options: dict[str, Any] = Field(default_factory=dict)


class SplitConfig(Section):
    method: Literal["random", "ordered"] = "random"
    test_fraction: float = Field(0.5, gt=0.0, lt=1.0)
    num_folds: int = Field(3, ge=1)
    seed: int = 0


class ModelConfig(Section):
    backbone: str = "small_cnn"
    embed_dim: int = Field(64, ge=2)
    image_size: int = Field(32, ge=8)
    weights: str | None = None  # local trunk weights; never downloaded
    pretrained_strict: bool = True


class TrainConfig(Section):
    epochs: int = Field(8, ge=1)
    batch_size: int = Field(64, ge=2)  # per worker
    m_per_class: int = Field(4, ge=1)
    lr: float = Field(1e-3, gt=0)
    loss_lr: float = Field(1e-2, gt=0)  # proxies and centres learn faster than the trunk
    weight_decay: float = Field(1e-4, ge=0)
    num_workers: int = Field(1, ge=1)
    use_gpu: bool = False
    precision: Literal["auto", "fp32", "bf16"] = "auto"  # auto: bf16 autocast on GPUs that have it
    cpus_per_worker: int = Field(1, ge=1)
    max_failures: int = Field(1, ge=0)
    storage_path: str | None = None  # absolute or repo-relative; default .scratch/ray_results
    seed: int = 0


class SearchDim(Section):
    """One dimension of a search space: a dotted key inside the experiment."""

    type: Literal["uniform", "loguniform", "int", "choice"]
    low: float | None = None
    high: float | None = None
    values: list[Any] | None = None

    @model_validator(mode="after")
    def _bounds(self) -> SearchDim:
        if self.type == "choice":
            if not self.values:
                raise ValueError("a 'choice' dimension needs a non-empty 'values' list")
        elif self.low is None or self.high is None or not self.low < self.high:
            raise ValueError(f"a {self.type!r} dimension needs low < high")
        return self


class TuneConfig(Section):
    trials: int = Field(2, ge=0)
    epochs: int = Field(2, ge=1)
    mode: Literal["local", "trainer"] = "local"
    scheduler: Literal["asha", "fifo"] = "asha"
    folds: list[int] = Field(default_factory=lambda: [0])
    metric: Literal["map@r", "r_precision", "recall@1", "map"] = "map@r"
    cpus_per_trial: int = Field(1, ge=1)  # local mode: the trial trains in its own process
    seed: int = 0


class QuantizeConfig(Section):
    kinds: list[Literal["pq", "opq", "ivfpq"]] = Field(default_factory=lambda: ["pq", "opq"])
    bits: list[int] = Field(default_factory=lambda: [32, 64])

    @field_validator("bits")
    @classmethod
    def _bytes(cls, bits: list[int]) -> list[int]:
        bad = [b for b in bits if b <= 0 or b % 8]
        if bad:
            raise ValueError(f"bit budgets must be positive multiples of 8, got {bad}")
        return bits


class EvaluateConfig(Section):
    ks: list[int] = Field(default_factory=lambda: [1, 2, 4, 8])
    grid_queries: int = Field(8, ge=0)
    grid_topk: int = Field(5, ge=1)


class LossSpec(Section):
    """A loss by registry name plus its knobs; knobs are checked against the loss itself."""

    model_config = ConfigDict(extra="allow")
    name: str

    def kwargs(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class ExperimentConfig(Section):
    """A method: a loss with its knobs, optional train/model overrides, a search space."""

    loss: LossSpec
    train: dict[str, Any] = Field(default_factory=dict)
    model: dict[str, Any] = Field(default_factory=dict)
    search: dict[str, SearchDim] = Field(default_factory=dict)


class Params(Section):
    seed: int = 0
    ingest: IngestConfig = Field(default_factory=IngestConfig)
    split: SplitConfig = Field(default_factory=SplitConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    tune: TuneConfig = Field(default_factory=TuneConfig)
    quantize: QuantizeConfig = Field(default_factory=QuantizeConfig)
    evaluate: EvaluateConfig = Field(default_factory=EvaluateConfig)
    experiments: dict[str, ExperimentConfig] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _experiments(self) -> Params:
        for name, exp in self.experiments.items():
            check_experiment(name, exp, self)
        return self

    def experiment(self, name: str) -> ExperimentConfig:
        """The experiment ``name``; unknown names list the valid ones."""
        if name not in self.experiments:
            raise ConfigError(
                f"unknown experiment {name!r}; valid choices: {', '.join(sorted(self.experiments))}"
            )
        return self.experiments[name]


def check_experiment(name: str, exp: ExperimentConfig, params: Params) -> None:
    """Check an experiment's loss name and knobs, overrides and search keys against the schema."""
    from dml.losses import LOSSES  # local: losses import torch

    where = f"experiments.{name}"
    kwargs = _loss_kwargs_without_shapes(exp)
    LOSSES.check_kwargs(exp.loss.name, kwargs, where=f"{where}.loss")
    # Build once with stand-in shapes so that bad knob values (a negative margin) fail now.
    shapes = {"num_classes": 2, "embed_dim": 2}
    accepted = LOSSES.parameters(exp.loss.name)
    LOSSES.build(exp.loss.name, **kwargs, **{k: v for k, v in shapes.items() if k in accepted})
    for section, overrides in (("train", exp.train), ("model", exp.model)):
        fields = type(getattr(params, section)).model_fields
        unknown = sorted(set(overrides) - set(fields))
        if unknown:
            raise ConfigError(
                f"unknown key(s) {', '.join(f'{where}.{section}.{k}' for k in unknown)}; "
                f"valid keys: {', '.join(sorted(fields))}"
            )
    loss_keys = set(LOSSES.parameters(exp.loss.name))
    for key in exp.search:
        head, _, tail = key.partition(".")
        valid = (
            (head == "loss" and tail in loss_keys)
            or (head in ("train", "model") and tail in type(getattr(params, head)).model_fields)
        )
        if not valid:
            raise ConfigError(
                f"search key {where}.search.{key} names no knob; use loss.<knob> "
                f"({', '.join(sorted(loss_keys))}) or train.<field> / model.<field>"
            )


def _loss_kwargs_without_shapes(exp: ExperimentConfig) -> dict[str, Any]:
    kwargs = exp.loss.kwargs()
    for filled_in in ("num_classes", "embed_dim"):
        if filled_in in kwargs:
            raise ConfigError(
                f"experiments.*.loss.{filled_in} is filled in from the data and the model; remove it"
            )
    return kwargs


def _format_validation_error(err: ValidationError, source: str, prefix: str = "") -> str:
    lines = [f"invalid parameters in {source}:"]
    for item in err.errors():
        key = prefix + ".".join(str(p) for p in item["loc"])
        msg = item["msg"]
        if item["type"] == "extra_forbidden":
            msg = "unknown key"
        elif item["type"] == "literal_error":
            msg = f"{msg} (got {item.get('input')!r})"
        lines.append(f"  {key}: {msg}")
    return "\n".join(lines)


def parse_params(raw: dict[str, Any], *, source: str = "params.yaml") -> Params:
    """Validate a raw mapping into Params; errors name each bad key."""
    try:
        return Params.model_validate(raw or {})
    except ValidationError as err:
        raise ConfigError(_format_validation_error(err, source)) from None


def load_params(path: str | os.PathLike[str] = "params.yaml") -> Params:
    """Read and validate params.yaml."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"parameter file {path} does not exist")
    with open(path) as handle:
        try:
            raw = yaml.safe_load(handle)
        except yaml.YAMLError as err:
            raise ConfigError(f"{path} is not valid YAML: {err}") from None
    if raw is not None and not isinstance(raw, dict):
        raise ConfigError(f"{path} must hold a mapping at the top level")
    return parse_params(raw or {}, source=str(path))


def set_dotted(tree: dict[str, Any], key: str, value: Any) -> None:
    """Set ``tree['a']['b'] = value`` for key 'a.b', creating nested dicts."""
    *parents, leaf = key.split(".")
    node = tree
    for part in parents:
        node = node.setdefault(part, {})
    node[leaf] = value


class RunSpec(BaseModel):
    """Everything one training run needs, resolved: the experiment merged over the defaults."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    experiment: str
    loss_name: str
    loss_kwargs: dict[str, Any]
    model: ModelConfig
    train: TrainConfig


def resolve_run(params: Params, name: str, overrides: dict[str, Any] | None = None) -> RunSpec:
    """Merge experiment ``name`` (and dotted ``overrides`` such as tuned values) over defaults."""
    exp = params.experiment(name)
    tree: dict[str, Any] = {
        "loss": exp.loss.kwargs(),
        "train": {**params.train.model_dump(), **exp.train},
        "model": {**params.model.model_dump(), **exp.model},
    }
    for key, value in (overrides or {}).items():
        if key.split(".")[0] not in tree:
            raise ConfigError(f"override {key!r} must start with loss., train. or model.")
        set_dotted(tree, key, copy.deepcopy(value))
    sections = {}
    for section, schema in (("model", ModelConfig), ("train", TrainConfig)):
        try:
            sections[section] = schema.model_validate(tree[section])
        except ValidationError as err:
            source = f"experiments.{name} (with overrides)"
            raise ConfigError(_format_validation_error(err, source, f"{section}.")) from None
    return RunSpec(experiment=name, loss_name=exp.loss.name, loss_kwargs=tree["loss"], **sections)
