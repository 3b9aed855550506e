"""Typed schema of params.yaml: unknown keys and wrong types are errors.

Each pipeline stage validates the whole file's schema (so a typo anywhere is caught at once)
but reads only its own section. Errors name the dotted key and, for choices, the valid values.
The registered components an experiment names (losses, samplers, heads, protocols) and
their knobs are checked by :mod:`dml.checks`, which imports them; this module imports none.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from dml.errors import ConfigError


class Section(BaseModel):
    """A params.yaml section: extra keys are errors, values are validated on assignment."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=False)


class Component(Section):
    """A registered component by name plus its knobs (a loss, sampler, protocol, ...).

    The knobs are checked against the component's own factory when the run is resolved; a
    knob may itself be a component (a wrapper loss's ``base``).
    """

    model_config = ConfigDict(extra="allow")
    name: str

    def knobs(self) -> dict[str, Any]:
        """Everything but ``name``."""
        return dict(self.model_extra or {})


class SplitConfig(Section):
    # random / ordered: class-disjoint (zero-shot); held_out_queries: the category-level
    # sketch protocol, queries_per_class test queries of query_domain, the rest trained on
    method: Literal["random", "ordered", "held_out_queries"] = "random"
    test_fraction: float = Field(0.5, gt=0.0, lt=1.0)
    num_folds: int = Field(3, ge=1)
    seed: int = 0
    # Share of the test images drawn as queries, the rest the gallery (the multi-label
    # retrieval protocol); null: every test image is both (self-retrieval).
    query_fraction: float | None = Field(None, gt=0.0, lt=1.0)
    queries_per_class: int | None = Field(None, ge=1)
    query_domain: Literal["photo", "sketch"] = "sketch"


class ImagesConfig(Section):
    """How ingest stores a dataset's images (dml.data.images.store_image)."""

    # Images are stored with the shorter side at most this many pixels, never enlarged; pick
    # at least the largest model.image_size of the experiments on this dataset.
    short_side: int = Field(256, ge=8)
    background: str = "white"  # colour transparent pixels are composited onto (name or #rrggbb)


class DatasetConfig(Section):
    """A named dataset: where its images come from, how it is split, how it is evaluated."""

    source: str = "synthetic"
    on_bad: Literal["fail", "skip"] = "fail"
    options: dict[str, Any] = Field(default_factory=dict)
    images: ImagesConfig = Field(default_factory=ImagesConfig)
    split: SplitConfig = Field(default_factory=SplitConfig)
    protocol: Component = Field(default_factory=lambda: Component(name="self_retrieval"))


class ModelConfig(Section):
    backbone: str = "small_cnn"
    backbone_options: dict[str, Any] = Field(default_factory=dict)  # the trunk factory's kwargs
    embed_dim: int | None = Field(64, ge=2)  # null: no projection, the trunk's features are the embedding
    image_size: int = Field(32, ge=8)
    heads: dict[str, dict[str, Any]] = Field(default_factory=dict)  # extra heads: name -> knobs
    condition: Literal["domain"] | None = None  # a per-sample signal fed to the trunk
    weights: str | None = None  # local trunk weights; never downloaded
    pretrained_strict: bool = True


class TrainConfig(Section):
    epochs: int = Field(8, ge=0)  # 0: an untrained reference (the initial weights are exported)
    batch_size: int = Field(64, ge=2)  # per worker
    sampler: Component = Field(default_factory=lambda: Component(name="m_per_class", m=4))
    lr: float = Field(1e-3, gt=0)
    loss_lr: float = Field(1e-2, gt=0)  # proxies and centres learn faster than the trunk
    weight_decay: float = Field(1e-4, ge=0)
    num_workers: int = Field(1, ge=1)
    # DataLoader processes decoding and augmenting images beside each training worker (0: in
    # the worker itself) and page-locked batches for the GPU copy (auto: when on a GPU).
    loader_workers: int = Field(0, ge=0)
    pin_memory: bool | Literal["auto"] = "auto"
    # Decoded images each training worker (and each of its loader processes) keeps, in MiB: its
    # memory stays bounded by this whatever the number of images (read from the manifest's
    # shards row group by row group).
    image_cache_mb: int = Field(1024, ge=0)
    # auto: Ray Train when a cluster is given (RAY_ADDRESS), several workers or a GPU; otherwise
    # the same loop in this process, where Ray Train's worker start-up costs more than training.
    launcher: Literal["auto", "ray", "local"] = "auto"
    use_gpu: bool = False
    precision: Literal["auto", "fp32", "bf16"] = "auto"  # auto: bf16 autocast on GPUs that have it
    cpus_per_worker: int = Field(1, ge=1)
    max_failures: int = Field(1, ge=0)
    storage_path: str | None = None  # absolute or repo-relative; default .scratch/ray_results
    seed: int = 0
    # Validation on class-disjoint folds of the training classes (held out of training), with
    # the experiment's evaluation protocol: model selection here, the objective in Tune.
    val_folds: list[int] = Field(default_factory=lambda: [0])
    val_metric: str = "map@r"  # a key of the protocol's metrics, maximised
    select: Literal["best", "last"] = "best"  # which epoch's model is exported
    # torchvision.transforms.v2 transforms by name with their arguments, for every domain or
    # per domain ({photo: [...], sketch: [...]}); null: the default recipe (dml.data.transforms)
    augment: list[dict[str, Any]] | dict[Literal["photo", "sketch"], list[dict[str, Any]]] | None = None
    patience: int | None = Field(None, ge=1)  # stop after this many epochs without improvement
    # Fine-tuning a pretrained trunk (dml/train/finetune.py). freeze: the first N parameter
    # groups of the trunk (the stem, then its stages) stay frozen, BatchNorm in eval mode;
    # "all": the whole trunk, whose features are then computed once per image and view
    # (feature_views; 1 where the transforms are deterministic) and the heads train on them.
    freeze: Annotated[int, Field(ge=0)] | Literal["all"] = 0
    unfreeze_after: int | None = Field(None, ge=1)  # epochs after which the frozen part trains too
    feature_views: int = Field(4, ge=1)  # augmented views cached per image under freeze: all
    trunk_lr: float | None = Field(None, gt=0)  # the trunk's learning rate (null: lr, as the heads)
    warmup_epochs: float = Field(0.0, ge=0)  # linear warm-up of every learning rate from 0
    schedule: Literal["constant", "cosine"] = "constant"  # after the warm-up: kept, or cosine to 0
    channels_last: bool | Literal["auto"] = "auto"  # auto: for timm trunks (1.3-2.2x on CPU)
    # The linear embedding head's first weights: random, or the projection onto the top
    # principal components of the training images' trunk features (dml/train/head_init.py).
    head_init: Literal["random", "pca"] = "random"
    # Retrain on all training classes (validation folds included) for the epochs selected on
    # the folds, as scikit-learn's refit after a search; the model card says which.
    refit: bool = False

    @model_validator(mode="after")
    def _selection_needs_validation(self) -> TrainConfig:
        if not self.val_folds and (self.select == "best" or self.patience is not None):
            raise ValueError("select: best and patience need validation folds (val_folds)")
        return self


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

    def bounds(self) -> list[Any]:
        """The extreme values Tune may draw: ``low`` and ``high``, or every choice."""
        if self.type == "choice":
            return list(self.values or [])
        return [int(self.low), int(self.high)] if self.type == "int" else [self.low, self.high]


class TuneConfig(Section):
    trials: int = Field(2, ge=0)
    epochs: int = Field(2, ge=1)
    mode: Literal["local", "trainer"] = "local"
    scheduler: Literal["asha", "fifo"] = "asha"
    cpus_per_trial: int = Field(1, ge=1)  # local mode: the trial trains in its own process
    seed: int = 0


class EmbedConfig(Section):
    """How the embed stage runs the model over every row (the vectors are the same either way:
    bitwise in fp32 on CPU at the same thread count, :mod:`dml.embed_ray`)."""

    batch_size: int = Field(256, ge=1)
    # 0: in the stage's own process (no Ray Data start-up); N: N model actors on Ray Data, one
    # GPU each where the cluster has GPUs, else cpus_per_actor CPUs each; auto: one per GPU,
    # else the cluster's CPUs / cpus_per_actor
    actors: Annotated[int, Field(ge=0)] | Literal["auto"] = 0
    cpus_per_actor: int = Field(1, ge=1)  # a CPU actor's torch threads; a GPU actor's decoders
    # rows per parquet shard of embeddings.parquet (then a directory); null: one file in
    # process, dml.embed_ray.DEFAULT_SHARD_ROWS per shard on Ray Data (always sharded there)
    shard_rows: int | None = Field(None, ge=1)


class QuantizeConfig(Section):
    # pq / opq / ivfpq: product codes ranked against float queries; hash: binary codes of
    # queries and gallery ranked by Hamming distance (dml/binary_codes.py)
    kinds: list[Literal["pq", "opq", "ivfpq", "hash"]] = Field(default_factory=lambda: ["pq", "opq"])
    bits: list[int] = Field(default_factory=lambda: [32, 64])
    hash_steps: int = Field(300, ge=1)  # optimisation steps of each hash (dml/binary_codes.py)

    @field_validator("bits")
    @classmethod
    def _bytes(cls, bits: list[int]) -> list[int]:
        bad = [b for b in bits if b <= 0 or b % 8]
        if bad:
            raise ValueError(f"bit budgets must be positive multiples of 8, got {bad}")
        return bits


class CandidatesConfig(Section):
    """An approximate candidate stage (dml/evaluate/candidates.py): each query's ``k`` nearest
    items from a faiss index over the gallery, re-ranked exactly; figures over the whole
    ranking (mAP over all, NDCG) are refused, the candidates' recall is measured and reported."""

    index: str = Field("IVF64,Flat", min_length=1)  # a faiss.index_factory string: IVF{nlist},Flat, HNSW32, Flat
    k: int = Field(100, ge=1)  # candidates per query, re-ranked exactly (at least the deepest cutoff)
    nprobe: int | None = Field(None, ge=1)  # inverted lists an IVF index visits (null: faiss's 1)
    ef_search: int | None = Field(None, ge=1)  # an HNSW index's search breadth (null: faiss's default)
    recall_sample: int = Field(1000, ge=1)  # queries whose exact top ranks measure the candidates' recall
    seed: int = 0  # of that sample and of the index's k-means


class EvaluateConfig(Section):
    ks: list[int] = Field(default_factory=lambda: [1, 2, 4, 8])
    grid_queries: int = Field(8, ge=0)
    grid_topk: int = Field(5, ge=1)
    candidates: CandidatesConfig | None = None  # null: exact ranking

    @field_validator("candidates")
    @classmethod
    def _deep_enough(cls, candidates: CandidatesConfig | None, info: ValidationInfo) -> CandidatesConfig | None:
        ks = info.data.get("ks") or []
        if candidates is not None and ks and candidates.k < max(ks):
            raise ValueError(f"k: {candidates.k} candidates per query cannot rank recall@{max(ks)} "
                             f"(evaluate.ks); raise it to at least {max(ks)}")
        return candidates


class ExperimentConfig(Section):
    """A method on a dataset: loss, optional model/train overrides, protocol, search space.

    ``domains`` picks the rows it trains and is evaluated on (default: every domain of the
    dataset); ``protocol`` overrides the dataset's evaluation protocol; ``quantize`` overrides
    keys of the top-level quantize section (say, 128-bit codes for one dataset's experiments).
    """

    dataset: str
    domains: list[Literal["photo", "sketch"]] | None = None
    loss: Component | None = None  # only an untrained reference (train.epochs: 0) has none
    train: dict[str, Any] = Field(default_factory=dict)
    model: dict[str, Any] = Field(default_factory=dict)
    protocol: Component | None = None
    quantize: dict[str, Any] = Field(default_factory=dict)  # over the top-level quantize section
    search: dict[str, SearchDim] = Field(default_factory=dict)
    # the experiment(s) it is compared against, paired over seeds (a method may have several:
    # one per part it adds)
    baseline: str | list[str] | None = None

    @property
    def baselines(self) -> list[str]:
        """``baseline`` as a list (empty: none)."""
        return [] if self.baseline is None else [self.baseline] if isinstance(self.baseline, str) \
            else list(self.baseline)


class Params(Section):
    seed: int = 0
    # Every experiment is trained and evaluated once per seed (train.seed); the report gives
    # intervals over them and paired differences against baselines on the same seeds.
    seeds: list[int] = Field(default_factory=lambda: [0], min_length=1)
    datasets: dict[str, DatasetConfig] = Field(
        default_factory=lambda: {"shapes": DatasetConfig()})
    model: ModelConfig = Field(default_factory=ModelConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    tune: TuneConfig = Field(default_factory=TuneConfig)
    embed: EmbedConfig = Field(default_factory=EmbedConfig)
    quantize: QuantizeConfig = Field(default_factory=QuantizeConfig)
    evaluate: EvaluateConfig = Field(default_factory=EvaluateConfig)
    experiments: dict[str, ExperimentConfig] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _references(self) -> Params:
        if len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds: repeated values in {self.seeds}")
        from dml.data.images import parse_colour  # PIL's colour table only

        for name, dataset in self.datasets.items():
            parse_colour(dataset.images.background, f"datasets.{name}.images.background")
        for name, exp in self.experiments.items():
            if exp.dataset not in self.datasets:
                raise ValueError(f"experiments.{name}.dataset: unknown dataset {exp.dataset!r}; "
                                 f"valid choices: {', '.join(sorted(self.datasets))}")
            for baseline in exp.baselines:
                base = self.experiments.get(baseline)
                if base is None or base.dataset != exp.dataset or baseline == name:
                    same = sorted(n for n, e in self.experiments.items() if e.dataset == exp.dataset and n != name)
                    raise ValueError(f"experiments.{name}.baseline: {baseline!r} is not another experiment "
                                     f"on dataset {exp.dataset!r}; valid choices: {', '.join(same)}")
        return self

    def experiment(self, name: str) -> ExperimentConfig:
        """The experiment ``name``; unknown names list the valid ones."""
        if name not in self.experiments:
            raise ConfigError(
                f"unknown experiment {name!r}; valid choices: {', '.join(sorted(self.experiments))}"
            )
        return self.experiments[name]

    def dataset(self, name: str) -> DatasetConfig:
        """The dataset ``name``; unknown names list the valid ones."""
        if name not in self.datasets:
            raise ConfigError(
                f"unknown dataset {name!r}; valid choices: {', '.join(sorted(self.datasets))}"
            )
        return self.datasets[name]


def _format_validation_error(err: ValidationError, source: str, prefix: str = "") -> str:
    """One line: ``<source>: <dotted key>: <problem>``, problems joined by ``; ``."""
    problems = []
    for item in err.errors():
        key = prefix + ".".join(str(p) for p in item["loc"])
        msg = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            msg = "unknown key"
        elif item["type"] == "literal_error":
            msg = f"{msg} (got {item.get('input')!r})"
        problems.append(f"{key}: {msg}" if key else msg)
    return f"{source}: {'; '.join(problems)}"


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


OVERRIDE_ROOTS = ("loss", "train", "model", "protocol")


class RunSpec(BaseModel):
    """Everything one training run needs, resolved: the experiment merged over the defaults.

    ``loss`` and ``protocol`` are component trees: ``{"name": ..., <knob>: ...}``, where a knob
    may itself be such a tree (a wrapper loss's ``base``).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)
    experiment: str
    dataset: str
    domains: tuple[str, ...] | None = None
    loss: dict[str, Any] | None
    protocol: dict[str, Any] = Field(default_factory=lambda: {"name": "self_retrieval"})
    model: ModelConfig
    train: TrainConfig
    quantize: QuantizeConfig = Field(default_factory=QuantizeConfig)


def resolve_run(params: Params, name: str, overrides: dict[str, Any] | None = None) -> RunSpec:
    """Merge experiment ``name`` (and dotted ``overrides`` such as tuned values) over defaults.

    The schema of the merged train and model sections is validated here; the registered
    components it names are checked by :func:`dml.checks.check_run`.
    """
    exp = params.experiment(name)
    dataset = params.dataset(exp.dataset)
    tree: dict[str, Any] = {
        "loss": exp.loss.model_dump(mode="json") if exp.loss else None,
        "train": {**params.train.model_dump(mode="json"), **exp.train},
        "model": {**params.model.model_dump(mode="json"), **exp.model},
        "protocol": (exp.protocol or dataset.protocol).model_dump(mode="json"),
        "quantize": {**params.quantize.model_dump(mode="json"), **exp.quantize},
    }
    for key, value in (overrides or {}).items():
        if key.split(".")[0] not in OVERRIDE_ROOTS:
            raise ConfigError(f"override {key!r} must start with one of: "
                              f"{', '.join(f'{r}.' for r in OVERRIDE_ROOTS)}")
        set_dotted(tree, key, copy.deepcopy(value))
    where = f"experiments.{name}"
    sections = {}
    for section, schema in (("model", ModelConfig), ("train", TrainConfig),
                            ("quantize", QuantizeConfig)):
        try:
            sections[section] = schema.model_validate(tree[section])
        except ValidationError as err:
            source = f"{where} (merged over the top-level {section} section)"
            raise ConfigError(_format_validation_error(err, source, f"{section}.")) from None
    if tree["loss"] is None and sections["train"].epochs > 0:
        raise ConfigError(f"{where}.loss: missing; only an untrained reference (train.epochs: 0) has no loss")
    spec = RunSpec(experiment=name, dataset=exp.dataset,
                   domains=tuple(exp.domains) if exp.domains else None,
                   loss=tree["loss"], protocol=tree["protocol"], **sections)
    return spec
