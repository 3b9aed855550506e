"""What each reported figure is: one declaration per metric, and the key format that names it.

The engine writes each figure under a key ``[scope/]name[@K]`` (``recall@1``, ``map@r``,
``middle/map``, ``avg/recall@1``): ``scope`` is a task's prefix (a semantic scale, ``avg``
over scales, ``attributes``), ``name`` a declared metric and ``K`` its cutoff. A
:class:`MetricSpec` declares how the metric is shown (its title, its place among the columns,
whether it is shown at all and per scope), whether higher is better and what it needs from a
ranking. :func:`metric_key` is the one reader of a key: the report, the figures and the summary
take titles, order and visibility from the declarations it returns. Register another metric
with :func:`register_metric`.

>>> metric_key("middle/map@r").title, metric_key("recall@4").title, metric_key("map@100").title
('middle MAP@R', 'R@4', 'mAP@100')
>>> metric_key("precision@1").shown, metric_key("avg/recall@1").per_scope, metric_key("avg/recall@2").per_scope
(False, True, False)
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["METRIC_SPECS", "MetricKey", "MetricSpec", "metric_key", "register_metric"]


@dataclass(frozen=True)
class MetricSpec:
    """A reported figure's declaration."""

    name: str  #: the key's name: ``map@r``, or the part before ``@K`` of a cutoff metric
    title: str  #: the short column title (``R``, ``MAP@R``, ``mAP``, ...)
    cutoff: bool = False  #: reported at cutoffs K: ``name@K``
    higher_is_better: bool = True
    needs: frozenset[str] = frozenset({"ranks"})  #: what it reads: ranks, R, the full ranking, grades, labels
    shown: bool = True  #: a column of the report (bookkeeping is not)
    hidden_at: tuple[int, ...] = ()  #: cutoffs not shown (P@1 equals R@1)
    per_scope: tuple[int | None, ...] = ()  #: the cutoffs (None: the metric itself) shown for each scope


#: The declarations in the order of the report's columns (a cutoff metric's K in increasing order).
METRIC_SPECS: dict[str, MetricSpec] = {}


def register_metric(spec: MetricSpec) -> MetricSpec:
    """Add ``spec`` (after those registered before it in column order); returns it."""
    key = f"{spec.name}@" if spec.cutoff else spec.name
    if key in METRIC_SPECS:
        raise ValueError(f"metric {key!r} is registered already")
    METRIC_SPECS[key] = spec
    return spec


for _spec in (
    MetricSpec("recall", "R", cutoff=True, hidden_at=(), per_scope=(1,)),
    MetricSpec("precision", "P", cutoff=True, needs=frozenset({"ranks", "R"}), hidden_at=(1,)),
    MetricSpec("map@r", "MAP@R", needs=frozenset({"ranks", "R"})),
    MetricSpec("r_precision", "RP", needs=frozenset({"ranks", "R"})),
    MetricSpec("map", "mAP", needs=frozenset({"ranks", "R", "full ranking"}), per_scope=(None,)),
    MetricSpec("map", "mAP", cutoff=True, needs=frozenset({"ranks", "R"})),
    MetricSpec("ndcg", "NDCG", cutoff=True, needs=frozenset({"scores", "grades"})),
    MetricSpec("asi", "ASI", needs=frozenset({"ranks", "R"}), per_scope=(None,)),
    MetricSpec("nmi", "NMI", needs=frozenset({"embeddings", "labels"})),
    MetricSpec("ami", "AMI", needs=frozenset({"embeddings", "labels"})),
    MetricSpec("queries_without_relevant", "no relevant item", higher_is_better=False, needs=frozenset({"R"}),
               shown=False),
    MetricSpec("bytes_per_vector", "B/vec", higher_is_better=False, needs=frozenset(), shown=False),
):
    register_metric(_spec)


@dataclass(frozen=True)
class MetricKey:
    """A figure's key read back: its scope, its declaration (None: a figure nothing declares)
    and its cutoff."""

    key: str
    scope: str
    name: str
    spec: MetricSpec | None
    k: int | None = None

    @property
    def title(self) -> str:
        """Column title: ``R@1``, ``MAP@R``, ``middle mAP``; an undeclared figure's own name."""
        short = self.name if self.spec is None else self.spec.title + (f"@{self.k}" if self.spec.cutoff else "")
        return f"{self.scope} {short}" if self.scope else short

    @property
    def shown(self) -> bool:
        """Whether the report shows it (bookkeeping and duplicates are not)."""
        return self.spec is None or (self.spec.shown and self.k not in self.spec.hidden_at)

    @property
    def per_scope(self) -> bool:
        """Whether a scoped figure (one scale's) is shown: each scale's R@1, mAP and ASI."""
        return self.spec is not None and self.k in self.spec.per_scope

    @property
    def spec_name(self) -> str | None:
        """The declared metric's name (``map`` for both mAP and mAP@K); None if undeclared."""
        return None if self.spec is None else self.spec.name

    @property
    def needs(self) -> frozenset[str]:
        """What the figure is computed from (empty where nothing declares it)."""
        return frozenset() if self.spec is None else self.spec.needs

    def order(self) -> tuple[int, int, str]:
        """Its place among the columns of one scope: declaration order, then K, then name."""
        specs = list(METRIC_SPECS.values())
        return (specs.index(self.spec) if self.spec is not None else len(specs), self.k or 0, self.name)


def metric_key(key: str) -> MetricKey:
    """Read a figure's key ``[scope/]name[@K]`` against the declarations."""
    scope, _, name = key.rpartition("/")
    if name in METRIC_SPECS:
        return MetricKey(key, scope, name, METRIC_SPECS[name])
    base, at, k = name.partition("@")
    spec = METRIC_SPECS.get(f"{base}@") if at and k.isdigit() else None
    return MetricKey(key, scope, name, spec, int(k) if spec is not None else None)
