"""Checks of an experiment against the data it will run on, before any compute.

:mod:`dml.checks` validates params.yaml alone; this module reads the manifest and splits and
answers, in seconds, what otherwise fails minutes into a run: whether the sampler finds enough
classes per global batch once the validation folds are held out, whether the validation folds
and the test split give the protocol queries with something to retrieve, whether the loss
finds every annotation and head it reads (one dry forward pass on a few real rows), and which
quantizers the training vectors can train.

A default that cannot work on small data is adapted rather than failed on (the batch shrinks
to the classes there are; an index that cannot be trained is skipped), with a one-line notice
that says so. Everything else raises ConfigError or DataError naming the experiment and key.
"""

from __future__ import annotations

from dataclasses import dataclass, field
import numpy as np
import torch

from dml.config import Params, QuantizeConfig, RunSpec, resolve_run
from dml.context import BuildContext
from dml.data.dataset import ManifestDataset
from dml.data.rows import ManifestRows
from dml.data.samplers import fitting_batch_size
from dml.data.splits import evaluated_rows
from dml.errors import ConfigError, DataError
from dml.evaluate.protocols import EvalRows, build_protocol
from dml.index import CODEBOOK_BITS, KINDS, min_training_vectors
from dml.models import build_model
from dml.train.learner import build_learner
from dml.train.training_data import DataSpec, build_sampler, training_set
from dml.held_out import held_out, validation_selection

#: Rows of the dry forward pass: enough for pairs of two classes, cheap for any trunk.
DRY_ROWS = 8


@dataclass
class Preflight:
    """The run as it will execute (``spec``, adapted to the data) and what was adapted."""

    spec: RunSpec
    notices: list[str] = field(default_factory=list)


def preflight(spec: RunSpec, data: DataSpec, *, world_size: int, stage: str = "train",
              quantize: QuantizeConfig | None = None) -> Preflight:
    """Check ``spec`` against ``data`` for a run of ``world_size`` workers (``stage`` names the
    run in notices: ``train`` or ``tune``); adapt what a default cannot do on this data."""
    where = f"experiments.{spec.experiment}"
    result = Preflight(spec)
    train_data, _ = held_out(spec, data)
    if spec.train.epochs > 0 and spec.loss is not None:
        train_set = training_set(spec, train_data)
        result.spec = _fit_batch(result, train_set, world_size, stage, where)
        _dry_step(result.spec, train_set, world_size, where)
    if spec.train.val_folds:
        _check_rows(spec, _validation_rows(spec, data), f"{where}: validation folds "
                    f"{list(spec.train.val_folds)} (train.val_folds)")
    if quantize is not None:
        manifest_rows = ManifestRows(data.manifest, data.splits, domains=spec.domains)
        rows = EvalRows.from_rows(manifest_rows)
        test = rows.subset(evaluated_rows(rows.split, rows.role))
        _check_roles(spec, test, where)
        _check_rows(spec, test, f"{where}: the test split")
        result.notices += _quantizers(spec, manifest_rows, int((rows.split == "train").sum()), quantize, where)
    return result


def _fit_batch(result: Preflight, train_set: ManifestDataset, world_size: int, stage: str,
               where: str) -> RunSpec:
    """The spec with a batch the sampler can fill from these rows (a notice when changed)."""
    spec = result.spec
    sampler = spec.train.sampler
    asked = spec.train.batch_size
    size, reason = fitting_batch_size(sampler.name, sampler.knobs(), train_set.rows, batch_size=asked,
                                      world_size=world_size, where=f"{where}.train")
    if size == asked:
        return spec
    held = f" once validation folds {list(spec.train.val_folds)} are held out" if spec.train.val_folds else ""
    result.notices.append(f"{stage} {spec.experiment}: train.batch_size {asked} -> {size}: {reason}{held}")
    return spec.model_copy(update={"train": spec.train.model_copy(update={"batch_size": size})})


def _dry_step(spec: RunSpec, train_set: ManifestDataset, world_size: int, where: str) -> None:
    """One forward and backward pass of model and loss on a few rows of the first batch, as
    training would run it: a missing annotation or head fails here, naming the experiment, and
    so does an extra head that the loss never trains (its weights would get no gradient, which
    also stops DistributedDataParallel)."""
    sampler = build_sampler(spec, train_set, rank=0, world_size=world_size)
    rows = next(iter(sampler))[:DRY_ROWS]
    batch = train_set.collate([train_set[i] for i in rows])
    state = torch.random.get_rng_state()
    try:
        learner = build_learner(spec, BuildContext(**train_set.rows.context_sizes(),
                                                   embed_dim=spec.model.embed_dim))
        learner.eval()
        loss, _ = learner(batch)
        loss.backward()
    except (ValueError, KeyError, RuntimeError) as err:
        if isinstance(err, (ConfigError, DataError)):
            raise ConfigError(f"{where}: {err}") from None
        raise ConfigError(f"{where}: the first training step fails on the data: "
                          f"{str(err).splitlines()[0] if str(err) else type(err).__name__}") from None
    finally:
        torch.random.set_rng_state(state)
    if not torch.isfinite(loss):
        raise DataError(f"{where}: the loss of the first training rows is {float(loss)}")
    for name, head in learner.model.heads.items():
        if all(p.grad is None for p in head.parameters()):
            raise ConfigError(f"{where}.model.heads.{name}: the loss {spec.loss['name']!r} "
                              "never trains this head; remove it or give the loss a term that uses it "
                              "(e.g. loss.attribute_weight > 0)")


def _validation_rows(spec: RunSpec, data: DataSpec) -> EvalRows:
    return EvalRows.from_rows(ManifestRows(data.manifest, data.splits, domains=spec.domains,
                                           **validation_selection(spec.train.val_folds)))


def _check_roles(spec: RunSpec, rows: EvalRows, where: str) -> None:
    """Test rows that the dataset divides into queries and a gallery (In-Shop, DyML) are not
    evaluated all-against-all by mistake."""
    if spec.protocol.get("name") == "self_retrieval" and {"query", "gallery"} & set(rows.role):
        raise ConfigError(f"{where}.protocol: the test rows of dataset {spec.dataset!r} are divided "
                          "into queries and a gallery (their role column), but the protocol is "
                          "self_retrieval; set datasets.<name>.protocol: {name: query_gallery}")


def _check_rows(spec: RunSpec, rows: EvalRows, what: str) -> None:
    """The protocol's metrics on random vectors of ``rows``: its queries, gallery and
    relevance exist (no pixels are read)."""
    if len(rows) == 0:
        raise DataError(f"{what}: no rows")
    vectors = np.random.default_rng(0).standard_normal((len(rows), 8)).astype(np.float32)
    try:
        build_protocol(spec.protocol).evaluate(rows, vectors, ks=(1,), nmi=False)
    except DataError as err:
        raise DataError(f"{what}: {err}") from None


def _quantizers(spec: RunSpec, rows: ManifestRows, n_train: int, cfg: QuantizeConfig,
                where: str) -> list[str]:
    """The indexes of ``quantize`` these training vectors cannot train (a notice: the quantize
    stage skips them), and a ConfigError for a bit budget the embedding size cannot split."""
    dim = spec.model.embed_dim or build_model(spec.model, BuildContext(**rows.context_sizes())).embed_dim
    product = [kind for kind in cfg.kinds if kind != "hash"]  # a hash takes any number of bits
    for bits in cfg.bits if product else ():
        if dim % (bits // CODEBOOK_BITS):
            raise ConfigError(f"quantize.bits: {bits} bits are {bits // CODEBOOK_BITS} sub-quantizers "
                              f"of {CODEBOOK_BITS} bits, which do not divide the {dim}-d embedding of "
                              f"{where}; choose bits whose /{CODEBOOK_BITS} divides {dim}")
    needs = {kind: min_training_vectors(kind, dim) for kind in cfg.kinds if kind in KINDS}
    short = [kind for kind in cfg.kinds if kind in KINDS and n_train < needs[kind]]
    if not short:
        return []
    names = ", ".join(f"{kind}{bits}" for kind in short for bits in cfg.bits)
    return [f"quantize {spec.experiment}: {names} will be skipped: {n_train} training vectors, "
            f"{' / '.join(f'{kind} needs {needs[kind]}' for kind in short)} "
            f"({1 << CODEBOOK_BITS}-word codebooks); the exact index is built"]


def preflight_tune(params: Params, experiment: str, data: DataSpec) -> Preflight:
    """The preflight of ``experiment``'s first stage, tune: its trials' runs (one worker
    unless ``tune.mode`` is ``trainer``), the test split and the quantizers."""
    spec = resolve_run(params, experiment)
    workers = 1 if params.tune.mode == "local" else spec.train.num_workers
    result = preflight(spec, data, world_size=workers, stage="tune", quantize=spec.quantize)
    stored = params.datasets[spec.dataset].images.short_side
    if stored < spec.model.image_size:
        result.notices.append(
            f"tune {experiment}: model.image_size {spec.model.image_size} is larger than "
            f"datasets.{spec.dataset}.images.short_side {stored}: the stored images are enlarged; "
            f"raise short_side to at least {spec.model.image_size} and ingest again")
    return result

