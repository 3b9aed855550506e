"""The build context: sizes that come from the data and the model, injected in one place.

A loss, head or sampler factory that declares a parameter named like a field below (say
``num_classes`` or ``num_attributes``) receives it from the context; params.yaml never sets
such a parameter (:data:`INJECTED`, checked by ``dml.config``). Everything else a factory
takes is a knob of params.yaml.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from dml.errors import ConfigError

__all__ = ["INJECTED", "BuildContext", "build_with_context", "inject"]


@dataclass(frozen=True)
class BuildContext:
    """Sizes known once the training rows and the model config are known.

    - ``num_classes``: fine classes among the training rows (ids relabelled 0..C-1);
    - ``scale_classes``: classes per scale among the training rows, finest first;
    - ``hierarchy``: per coarser scale, the (relabelled) label of each fine class at that
      scale, ``hierarchy[scale][c]`` (empty for single-scale data);
    - ``num_attributes``: length of the attribute vectors (0 when the data has none);
    - ``count_classes``: length of the object-count vectors (0 when the data has none);
    - ``embed_dim``: the embedding size; ``feature_dim``: the trunk's output size;
    - ``image_size``: the side of the model's (square) input images;
    - ``embedding_head``: the model's embedding layer (``W h + b``), for a loss that applies
      it again to detached trunk features (energy confusion); None before the model exists.
    """

    num_classes: int = 0
    scale_classes: Mapping[str, int] = field(default_factory=dict)
    hierarchy: Mapping[str, tuple[int, ...]] = field(default_factory=dict)
    num_attributes: int = 0
    count_classes: int = 0
    embed_dim: int = 0
    feature_dim: int = 0
    image_size: int = 0
    embedding_head: Any = None

    def values(self) -> dict[str, Any]:
        """Field name -> value."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    @classmethod
    def placeholder(cls, embed_dim: int = 4, scales: Sequence[str] = ()) -> BuildContext:
        """Small stand-in sizes, to build components once while checking params.yaml.

        The stand-in data has the scales fine, middle and coarse plus any coarser ``scales``
        named (a dataset's own, such as a loss's margins name them: race, suit, ...).
        """
        extra = [s for s in dict.fromkeys(scales) if s not in ("fine", "middle", "coarse")]
        return cls(num_classes=2,
                   scale_classes={"fine": 2, "middle": 2, "coarse": 1} | {s: 1 for s in extra},
                   hierarchy={"middle": (0, 1), "coarse": (0, 0)} | {s: (0, 0) for s in extra},
                   num_attributes=2,
                   count_classes=2, embed_dim=embed_dim, feature_dim=8, image_size=32)


#: Parameter names that are filled in from the context, never written in params.yaml.
INJECTED = frozenset(f.name for f in dataclasses.fields(BuildContext))


def inject(parameters: Mapping[str, Any], kwargs: Mapping[str, Any],
           context: BuildContext | None, *, where: str) -> dict[str, Any]:
    """``kwargs`` plus each context value whose name the factory accepts (``parameters``).

    A knob in ``kwargs`` that the context fills in is an error naming ``where``.
    """
    clash = sorted(set(kwargs) & INJECTED)
    if clash:
        raise ConfigError(f"{', '.join(f'{where}.{k}' for k in clash)}: filled in from the data "
                          "and the model; remove it from params.yaml")
    out = dict(kwargs)
    if context is not None:
        for name, value in context.values().items():
            if name in parameters:
                out[name] = value
    return out


def build_with_context(registry: Any, name: str, kwargs: Mapping[str, Any],
                       context: BuildContext | None, *, where: str,
                       **fixed: Any) -> Any:
    """Build ``name`` from ``registry`` with its knobs, the context's sizes and ``fixed``
    arguments (those the caller supplies, such as a sampler's rank)."""
    parameters: Callable[..., Any] = registry.parameters
    supplied = sorted(set(kwargs) & set(fixed))
    if supplied:
        raise ConfigError(f"{', '.join(f'{where}.{k}' for k in supplied)}: set by the pipeline "
                          "itself; remove it from params.yaml")
    full = inject(parameters(name), kwargs, context, where=where)
    registry.check_kwargs(name, {**full, **fixed}, where=where)
    return registry.get(name)(**full, **fixed)
