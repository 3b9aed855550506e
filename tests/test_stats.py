"""Interval arithmetic against scipy on fixed numbers, and the paired difference on a
constructed case."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from dml.stats import bootstrap_interval, paired_difference, t_interval


def test_the_seed_interval_is_students_t():
    values = [41.0, 40.6, 42.2]
    got = t_interval(values)
    low, high = stats.t.interval(0.95, df=2, loc=np.mean(values), scale=stats.sem(values))
    assert got.mean == pytest.approx(41.266666, abs=1e-5)
    assert (got.low, got.high) == pytest.approx((low, high))
    # by hand: t_{0.975, 2} = 4.302653, s = 0.832666, s / sqrt(3) = 0.480740
    assert got.half_width == pytest.approx(4.302653 * 0.480740, rel=1e-5)


def test_one_seed_has_no_seed_interval_and_nans_are_dropped():
    one = t_interval([0.5, math.nan])
    assert one.mean == 0.5 and one.n == 1 and math.isnan(one.low) and not one.excludes_zero()
    assert math.isnan(t_interval([]).mean)


def test_the_paired_difference_cancels_the_seed_effect():
    # the seed moves both runs alike; the method is 1.0 better, +-0.1 -> a clear mark
    baseline = {0: 40.0, 1: 45.0, 2: 35.0, 3: 50.0}
    method = {0: 41.1, 1: 45.9, 2: 36.0, 3: 51.0, 7: 99.0}  # seed 7 has no baseline: not paired
    diff = paired_difference(method, baseline)
    assert diff.n == 4 and diff.mean == pytest.approx(1.0)
    low, high = stats.t.interval(0.95, df=3, loc=1.0, scale=stats.sem([1.1, 0.9, 1.0, 1.0]))
    assert (diff.low, diff.high) == pytest.approx((low, high))
    assert diff.excludes_zero()
    # unpaired, the same numbers' intervals overlap widely: the pairing is what shows the gain
    assert t_interval(list(method.values())[:4]).low < t_interval(list(baseline.values())).high


def test_the_bootstrap_interval_covers_the_mean_and_matches_scipy():
    x = np.random.default_rng(0).random(500)
    got = bootstrap_interval(x, resamples=2000, seed=1)
    ref = stats.bootstrap((x,), np.mean, n_resamples=2000, method="percentile",
                          rng=np.random.default_rng(1)).confidence_interval
    assert got.low < x.mean() < got.high
    assert (got.low, got.high) == pytest.approx((ref.low, ref.high), abs=2e-3)
    # the normal approximation: half-width ~ 1.96 sd / sqrt(n)
    assert got.half_width == pytest.approx(1.96 * x.std(ddof=1) / math.sqrt(500), rel=0.15)
