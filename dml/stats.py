"""Intervals for comparisons: over seeds (Student's t), over queries (bootstrap), and the
paired difference of a method and its baseline on the same seeds.

Figures are reported as ``mean ± half-width`` of a 95% interval; a difference whose interval
excludes zero is marked. With one value the interval is undefined (NaN), never zero.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

CONFIDENCE = 0.95


@dataclass(frozen=True)
class Interval:
    """A mean and the bounds of its confidence interval (NaN bounds when undefined)."""

    mean: float
    low: float
    high: float
    n: int

    @property
    def half_width(self) -> float:
        return (self.high - self.low) / 2

    def excludes_zero(self) -> bool:
        """True when the whole interval lies on one side of zero (False when undefined)."""
        return bool(self.low > 0 or self.high < 0)


def t_interval(values: Sequence[float], confidence: float = CONFIDENCE) -> Interval:
    """Student's t interval of the mean of ``values`` (one per seed): the spread of training
    runs. NaN bounds for fewer than two values."""
    x = np.asarray(values, dtype=np.float64)
    x = x[~np.isnan(x)]
    n = len(x)
    if n == 0:
        return Interval(math.nan, math.nan, math.nan, 0)
    mean = float(x.mean())
    if n < 2:
        return Interval(mean, math.nan, math.nan, n)
    half = float(stats.t.ppf((1 + confidence) / 2, n - 1) * x.std(ddof=1) / math.sqrt(n))
    return Interval(mean, mean - half, mean + half, n)


def bootstrap_interval(per_query: Sequence[float], confidence: float = CONFIDENCE, *,
                       resamples: int = 1000, seed: int = 0) -> Interval:
    """Percentile bootstrap interval of the mean of per-query values (queries resampled with
    replacement): the spread due to the finite query set, for a single training run."""
    x = np.asarray(per_query, dtype=np.float64)
    x = x[~np.isnan(x)]
    if len(x) < 2:
        return Interval(float(x.mean()) if len(x) else math.nan, math.nan, math.nan, len(x))
    result = stats.bootstrap((x,), np.mean, n_resamples=resamples, confidence_level=confidence,
                             method="percentile", vectorized=True, batch=max(1, 2**22 // len(x)),
                             rng=np.random.default_rng(seed))
    low, high = result.confidence_interval
    return Interval(float(x.mean()), float(low), float(high), len(x))


def paired_difference(method: Mapping[int, float], baseline: Mapping[int, float],
                      confidence: float = CONFIDENCE) -> Interval:
    """t interval of ``method - baseline`` over the seeds both have (a paired comparison: the
    seed's shared randomness cancels)."""
    seeds = sorted(set(method) & set(baseline))
    return t_interval([method[s] - baseline[s] for s in seeds], confidence)
