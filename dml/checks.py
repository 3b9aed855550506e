"""Checks before compute: every component an experiment names, with its knobs, is built once
with stand-in sizes, and every search key must name a knob of the resolved run, its bounds
within the range the knob's factory declares (:class:`dml.registry.Knob`).

Unknown names, unknown knobs and bad values (a negative margin) fail here, in seconds, with
the dotted key of params.yaml, instead of inside a training worker.
"""

from __future__ import annotations

from typing import Any

from dml.config import Component, Params, RunSpec, resolve_run
from dml.context import BuildContext, build_with_context
from dml.data.samplers import LOOP_ARGUMENTS, SAMPLERS
from dml.data.transforms import check_augment
from dml.errors import ConfigError
from dml.evaluate.candidates import Candidates, check_index
from dml.evaluate.protocols import build_protocol
from dml.losses import build_loss
from dml.models import BACKBONES, HEADS
from dml.models.timm_trunk import check_timm_options, is_timm_model
from dml.models.weights import check_weights
from dml.registry import KnobValueError


def check_run(spec: RunSpec) -> None:
    """Build (or check the knobs of) every registered component ``spec`` names."""
    where = f"experiments.{spec.experiment}"
    context = BuildContext.placeholder(spec.model.embed_dim or 8, named_scales(spec.loss))
    if spec.loss is not None:
        build_loss(spec.loss, context=context, where=f"{where}.loss")
    sampler = spec.train.sampler
    supplied = sorted(set(sampler.knobs()) & set(LOOP_ARGUMENTS))
    if supplied:
        raise ConfigError(f"{', '.join(f'{where}.train.sampler.{k}' for k in supplied)}: set by "
                          "the training loop; remove it")
    SAMPLERS.check_kwargs(sampler.name, sampler.knobs(), where=f"{where}.train.sampler")
    if spec.model.backbone in BACKBONES:
        BACKBONES.check_kwargs(spec.model.backbone, spec.model.backbone_options,
                               where=f"{where}.model.backbone_options")
    elif is_timm_model(spec.model.backbone):
        check_timm_options(spec.model.backbone, spec.model.backbone_options,
                           where=f"{where}.model.backbone_options")
    else:
        raise ConfigError(f"{where}.model.backbone: unknown backbone {spec.model.backbone!r}; "
                          f"valid choices: {', '.join(BACKBONES.names())} or a timm model name")
    check_weights(spec.model.weights, spec.model.backbone)
    for head, knobs in spec.model.heads.items():
        build_with_context(HEADS, head, knobs, context, where=f"{where}.model.heads.{head}")
    build_protocol(spec.protocol, where=f"{where}.protocol")
    check_augment(spec.train.augment, spec.model.image_size, where=f"{where}.train.augment")


def named_scales(component: Any) -> list[str]:
    """The scale names a component's ``margins`` (or a nested component's) name: the data's
    own scales, which the stand-in data must have for the component to build."""
    found: list[str] = []
    items = component.knobs().items() if isinstance(component, Component) else (
        component.items() if isinstance(component, dict) else ())
    for key, value in items:
        if key == "margins" and isinstance(value, dict):
            found += [str(k) for k in value]
        elif isinstance(value, (Component, dict)):
            found += named_scales(value)
    return found


def check_experiment(params: Params, name: str) -> None:
    """Check experiment ``name``'s components and each of its search keys (each must name a
    knob of the resolved run, nested knobs such as ``loss.base.margin`` included)."""
    exp = params.experiment(name)
    check_run(resolve_run(params, name))
    for key, dim in exp.search.items():
        for bound in dim.bounds():  # every value Tune may draw lies in the knob's declared range
            try:
                check_run(resolve_run(params, name, {key: bound}))
            except KnobValueError as err:
                raise ConfigError(f"experiments.{name}.search.{key}: {bound!r} is outside what the "
                                  f"knob accepts ({err})") from None
            except ConfigError as err:
                raise ConfigError(f"search key experiments.{name}.search.{key} names no knob of the "
                                  f"run ({err})") from None


def check_params(params: Params) -> Params:
    """Check every experiment of ``params`` (and, with an approximate candidate stage, that
    its index builds and that each experiment's protocol can be ranked so); returns ``params``."""
    for name in params.experiments:
        check_experiment(params, name)
        if params.evaluate.candidates is not None:
            check_candidates(params, name)
    return params


def check_candidates(params: Params, name: str) -> None:
    """``evaluate.candidates`` for experiment ``name``: its faiss index builds over the
    experiment's embeddings (where their size is known) and its protocol's figures do not
    need the full ranking (:meth:`~dml.evaluate.protocols.Protocol.check_candidates`)."""
    assert params.evaluate.candidates is not None
    candidates = Candidates(**params.evaluate.candidates.model_dump())
    spec = resolve_run(params, name)
    protocol = build_protocol(spec.protocol, where=f"experiments.{name}.protocol")
    try:
        protocol.check_candidates(candidates)
        if spec.model.embed_dim is not None:
            check_index(candidates, spec.model.embed_dim, protocol.metric)
    except ConfigError as err:
        raise ConfigError(f"experiments.{name}: {err}") from None
