"""A figure over an experiment's runs with its 95% interval (t over seeds, or one seed's
bootstrap over queries), paired differences between experiments, and how each reads in a
table cell (in %, ``mean ± half-width``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from dml.report.runs import Runs
from dml.stats import paired_difference, t_interval


@dataclass(frozen=True)
class Estimate:
    """A figure over runs and its 95% interval: ``kind`` ``t`` (over seeds), ``bootstrap``
    (one seed, over queries) or ``""`` (no interval: ``low`` and ``high`` are None)."""

    mean: float
    low: float | None = None
    high: float | None = None
    kind: str = ""


def estimate(values: Sequence[float | None], bootstrap: Sequence[float] | None = None) -> Estimate | None:
    """The mean of the present ``values`` (one per seed) with the 95% t interval over seeds,
    or for one seed the bootstrap interval over queries when given; None when none is present."""
    present = [v for v in values if isinstance(v, float)]
    if not present:
        return None
    interval = t_interval(present)
    if interval.n >= 2:
        return Estimate(interval.mean, interval.low, interval.high, "t")
    if bootstrap is not None and len(present) == 1:
        return Estimate(interval.mean, float(bootstrap[0]), float(bootstrap[1]), "bootstrap")
    return Estimate(interval.mean)


def float_estimate(runs: Sequence[Mapping], key: str) -> Estimate | None:
    """A float figure of an experiment over its runs (seeds); a single run carries the
    bootstrap interval of its metrics file (``float_bootstrap_ci``)."""
    bootstrap = runs[0].get("float_bootstrap_ci", {}).get(key) if len(runs) == 1 else None
    return estimate([r["float"].get(key) for r in runs], bootstrap)


def format_estimate(e: Estimate | None) -> str:
    """``mean ± half-width`` in %, the bootstrap's marked ``ᵇ``; the mean alone without interval."""
    if e is None:
        return "–"
    if e.low is None or e.high is None:
        return f"{100 * e.mean:.1f}"
    mark = "ᵇ" if e.kind == "bootstrap" else ""
    return f"{100 * e.mean:.1f} ± {100 * (e.high - e.low) / 2:.1f}{mark}"


def cell(values: Sequence[float | None], bootstrap: Sequence[float] | None = None) -> str:
    """``mean ± half-width`` in %: the 95% t interval over seeds, or for one seed the 95%
    bootstrap interval over queries when given (marked ``ᵇ``), else the mean alone."""
    return format_estimate(estimate(values, bootstrap))


def float_cell(runs: Sequence[Mapping], key: str) -> str:
    """A float figure of an experiment over its runs (seeds)."""
    return format_estimate(float_estimate(runs, key))


def difference(method: Runs, baseline: Runs, key: str) -> str:
    """The paired difference of a float figure on the seeds both ran (:func:`paired`)."""
    return paired({s: r["float"].get(key) for s, r in method.items()},
                  {s: r["float"].get(key) for s, r in baseline.items()})


def paired(method: Mapping[int, float | None], baseline: Mapping[int, float | None]) -> str:
    """The paired difference of per-seed values on the seeds both have, in points, marked
    ``*`` where its 95% interval excludes zero."""
    diff = paired_difference({s: v for s, v in method.items() if isinstance(v, float)},
                             {s: v for s, v in baseline.items() if isinstance(v, float)})
    if diff.n == 0:
        return "–"
    if diff.n < 2:
        return f"{100 * diff.mean:+.1f} (1 seed)"
    mark = " *" if diff.excludes_zero() else ""
    return f"{100 * diff.mean:+.1f} ± {100 * diff.half_width:.1f}{mark}"


def clears(method: Estimate | None, reference: Estimate | None) -> str:
    """``+Δ`` in points of a method over a reference, marked ✓ when Δ exceeds the larger
    half-width of the two intervals (where both have one)."""
    if method is None or reference is None:
        return "–"
    gap = method.mean - reference.mean
    widths = [(e.high - e.low) / 2 for e in (method, reference) if e.low is not None and e.high is not None]
    mark = " ✓" if len(widths) == 2 and gap > max(widths) else ""
    return f"{100 * gap:+.1f}{mark}"
