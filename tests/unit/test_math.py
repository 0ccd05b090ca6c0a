"""The detectors' statistics checked against published values and exact computations."""

from __future__ import annotations

import math

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from detectors._math import (
    BURN_RATE_RULES,
    LogBuckets,
    burn_rate,
    ewma_mean_and_variance,
    ewma_weights,
    mean_and_variance,
    rate_increase_pvalue,
    wilson_interval,
    z_for_alpha,
)

BUCKETS = LogBuckets(0.1, 600_000.0, 0.0095)


def test_wilson_interval_matches_published_values() -> None:
    # Brown, Cai & DasGupta (2001) / Newcombe (1998) worked example: 0 of 10 and 5 of 10
    assert wilson_interval(0, 10, 1.96)[0] == 0.0
    assert math.isclose(wilson_interval(0, 10, 1.96)[1], 0.2775, abs_tol=1e-4)
    low, high = wilson_interval(5, 10, 1.96)
    assert math.isclose(low, 0.2366, abs_tol=1e-4) and math.isclose(high, 0.7634, abs_tol=1e-4)
    assert wilson_interval(3, 0, 1.96) == (0.0, 1.0)


@settings(max_examples=200)
@given(st.integers(0, 10_000), st.integers(1, 10_000))
def test_wilson_interval_contains_the_observed_rate(x: int, n: int) -> None:
    x = min(x, n)
    low, high = wilson_interval(x, n, 3.09)
    assert 0.0 <= low <= x / n <= high <= 1.0


@settings(max_examples=200)
@given(st.integers(0, 300), st.integers(1, 5000), st.integers(0, 3000), st.integers(1, 50_000))
def test_rate_test_equals_the_exact_conditional_binomial_tail(
    x: int, n: int, x0: int, n0: int
) -> None:
    pi = n / (n + n0)
    exact = 1.0 if x == 0 else float(stats.binom.sf(x - 1, x + x0, pi))
    assert math.isclose(rate_increase_pvalue(x, n, x0, n0), exact, rel_tol=1e-6, abs_tol=1e-12)


def test_rate_test_keeps_its_false_alarm_rate_under_the_null() -> None:
    """200,000 quiet comparisons: the share with p < alpha must not exceed alpha."""
    rng = np.random.default_rng(1)
    trials = 200_000
    for n, n0, rate in ((50, 1200, 0.02), (500, 12_000, 0.02), (5000, 120_000, 0.05)):
        x = rng.binomial(n, rate, trials).astype(float)
        x0 = rng.binomial(n0, rate, trials).astype(float)
        p = rate_increase_pvalue(x, np.full(trials, float(n)), x0, np.full(trials, float(n0)))
        for alpha in (1e-2, 1e-3):
            assert np.mean(p < alpha) <= alpha * 1.1, (n, alpha, np.mean(p < alpha))


def test_rate_test_detects_a_tripled_rate() -> None:
    assert rate_increase_pvalue(120.0, 2000.0, 960.0, 48_000.0) < 1e-20


def test_burn_rate_follows_the_sre_workbook() -> None:
    # 99.9% SLO, 1.44% of calls failing: 14.4× — the 1-hour page threshold
    assert math.isclose(burn_rate(144, 10_000, 0.999), 14.4)
    assert burn_rate(0, 0, 0.99) == 0.0
    table = {(r.factor, r.long_seconds, r.short_seconds) for r in BURN_RATE_RULES}
    assert table == {(14.4, 3600, 300), (6.0, 21_600, 1800)}


def test_ewma_halves_the_weight_every_halflife() -> None:
    w = ewma_weights(7, halflife=3.0)
    assert math.isclose(w.sum(), 1.0)
    assert math.isclose(w[-1] / w[-4], 2.0) and math.isclose(w[-1] / w[0], 4.0)


def test_ewma_of_equal_windows_with_long_memory_is_the_pooled_mean() -> None:
    means, variances = np.array([10.0, 12.0, 14.0]), np.array([4.0, 4.0, 4.0])
    counts = np.array([100.0, 100.0, 100.0])
    mean, var = ewma_mean_and_variance(means, variances, counts, halflife=1e9)
    assert math.isclose(mean, 12.0) and math.isclose(var, 4.0 / 300)
    # an empty window carries no weight, and no history at all gives NaN
    mean2, _ = ewma_mean_and_variance(
        np.array([10.0, 999.0]), np.array([4.0, 0.0]), np.array([100.0, 0.0]), 1.0
    )
    assert mean2 == 10.0
    assert math.isnan(ewma_mean_and_variance(np.zeros(0), np.zeros(0), np.zeros(0), 1.0)[0])


@settings(max_examples=100)
@given(st.lists(st.integers(0, 100_000), min_size=2, max_size=200))
def test_mean_and_variance_from_integer_sums_are_exact(values: list[int]) -> None:
    a = np.array(values, dtype=np.int64)
    mean, var = mean_and_variance(len(a), int(a.sum()), int(np.dot(a, a)))
    assert math.isclose(mean, float(a.mean()))
    assert math.isclose(var, float(a.var(ddof=1)), rel_tol=1e-9, abs_tol=1e-6)


def test_log_buckets_are_bounded() -> None:
    assert BUCKETS.n_buckets < 1000
    assert BUCKETS.index(np.array([0.0, 1e-9, 1e12]))[[0, 2]].tolist() == [0, BUCKETS.n_buckets - 1]


@settings(max_examples=200)
@given(
    st.lists(st.floats(0.1, 600_000.0, allow_nan=False), min_size=1, max_size=300),
    st.sampled_from([0.0, 0.5, 0.9, 0.95, 0.99, 1.0]),
)
def test_histogram_quantiles_are_within_one_percent_of_exact(values: list[float], q: float) -> None:
    data = np.array(values)
    counts = np.bincount(BUCKETS.index(data), minlength=BUCKETS.n_buckets)
    got = BUCKETS.quantiles(counts, np.array([q]))[0]
    exact = float(np.quantile(data, q, method="lower"))
    assert abs(got - exact) <= 0.01 * exact


@settings(max_examples=200)
@given(st.floats(0.1001, 599_000.0, allow_nan=False))
def test_documented_bucket_bounds_hold_each_value(value: float) -> None:
    """The SQL view rebuilds quantiles from lower(k) < value ≤ upper(k)."""
    k = int(BUCKETS.index(np.array([value]))[0])
    assert BUCKETS.lower(k) * (1 - 1e-12) < value <= BUCKETS.upper(k) * (1 + 1e-12)


def test_z_for_alpha() -> None:
    assert math.isclose(z_for_alpha(0.025), 1.959964, rel_tol=1e-6)


def test_rate_increase_pvalue_one_window_equals_the_array_route() -> None:
    """A detector judges one window at a time through the scalar route (`detectors._special`,
    no scipy); its p-values must be the array route's (scipy) to rounding, 1e-10 relative: a
    verdict could change only for a p-value within that of alpha."""
    rng = np.random.default_rng(3)
    x = rng.integers(0, 60, 500).astype(np.float64)
    n = rng.integers(0, 3000, 500).astype(np.float64)
    x0 = rng.integers(0, 400, 500).astype(np.float64) + rng.random(500)  # floors are fractional
    n0 = rng.integers(0, 50_000, 500).astype(np.float64)
    n[:5] = n0[:5] = 0.0  # no traffic on either side: p = 1
    for ratio in (1.0, 1.5):
        arrays = rate_increase_pvalue(x, n, x0, n0, ratio)
        one_by_one = [
            rate_increase_pvalue(float(a), float(b), float(c), float(d), ratio)
            for a, b, c, d in zip(x, n, x0, n0, strict=True)
        ]
        assert all(isinstance(p, float) for p in one_by_one)
        np.testing.assert_allclose(np.array(one_by_one), arrays, rtol=1e-10, atol=0.0)
