"""The compiled loops of the incomplete beta and gamma functions give the Python loops' numbers.

`detectors/_special_loops.pyx` runs the continued fractions and the series that every
block-rate, latency, token and pooled-drift p-value goes through. A verdict must not depend on
whether the install had a compiler, so the compiled loops are compared bit for bit with the
Python ones (kept as the fallback) over the arguments the detectors pass: counts from 1 to
millions, rates from near 0 to near 1, both branches of each function, and arguments where the
loops stop early or run long.
"""

from __future__ import annotations

import math
import os

import numpy as np
import pytest

from detectors import _special


def _compiled() -> _special._Loops:
    if os.environ.get("CI") == "true":  # `make test`: the install must have built them
        assert _special._LOOPS is not _special.PYTHON_LOOPS
    if _special._LOOPS is _special.PYTHON_LOOPS:
        pytest.skip("built without a compiler (LOOKOUT_PURE_PYTHON=1): Python runs instead")
    return _special._LOOPS


def _same(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or a == b


def _one_of(rng: np.random.Generator, *values: float | np.integer) -> float:
    """One of `values` at random: small counts, window-sized ones and huge ones in turn."""
    return float(values[int(rng.integers(len(values)))])


def test_the_beta_fraction_is_the_python_one_bit_for_bit() -> None:
    loops = _compiled()
    rng = np.random.default_rng(11)
    checked = 0
    for _ in range(4000):
        a = _one_of(rng, rng.integers(1, 40), rng.integers(1, 5_000), rng.uniform(0.5, 1e6))
        b = _one_of(rng, rng.integers(1, 40), rng.integers(1, 50_000), rng.uniform(0.5, 1e7))
        x = _one_of(rng, rng.uniform(0.0, 1.0), rng.uniform(0.0, 0.05), 10 ** -rng.uniform(0, 8))
        for args in ((a, b, x), (b, a, 1.0 - x)):  # both sides `betainc` may take
            got = loops.beta_continued_fraction(*args)
            assert _same(got, _special._beta_continued_fraction(*args)), args
            checked += 1
    assert checked == 8000


def test_betainc_is_unchanged_where_the_detectors_call_it() -> None:
    """P(X ≥ k) for the counts a window has, through the public function, both loops."""
    loops = _compiled()
    rng = np.random.default_rng(12)
    for _ in range(2000):
        m = int(rng.integers(1, 200_000))
        k = int(rng.integers(1, m + 1))
        pi = float(rng.uniform(1e-4, 0.9))
        args = (float(k), float(m - k + 1), pi)
        fast = _special.betainc(*args)
        _special._LOOPS = _special.PYTHON_LOOPS
        try:
            slow = _special.betainc(*args)
        finally:
            _special._LOOPS = loops
        assert _same(fast, slow), args


@pytest.mark.parametrize("branch", ["series", "fraction"])
def test_the_gamma_loops_are_the_python_ones_bit_for_bit(branch: str) -> None:
    loops = _compiled()
    rng = np.random.default_rng(13 if branch == "series" else 14)
    for _ in range(3000):
        a = _one_of(rng, rng.uniform(0.5, 5.0), rng.uniform(0.5, 500.0), rng.integers(1, 40) / 2)
        if branch == "series":  # `gammaincc` sums the series below x = a + 1
            x = float(rng.uniform(1e-6, a + 1.0))
            got = loops.gamma_series(a, x)
            want = _special._gamma_series(a, x)
        else:
            x = float(rng.uniform(a + 1.0, 20.0 * a + 50.0))
            got = loops.gamma_continued_fraction(a, x)
            want = _special._gamma_continued_fraction(a, x)
        assert _same(got, want), (a, x)


def test_a_fraction_that_runs_long_ends_on_the_same_number() -> None:
    """Equal counts at x = ½ take the most iterations (tens of thousands at 10¹²): rounding
    accumulated over every one of them still lands on the same number."""
    loops = _compiled()
    for args in ((1e12, 1e12, 0.5), (4e9, 4e9 + 7, 0.5), (123456.0, 123457.0, 0.4999)):
        got = loops.beta_continued_fraction(*args)
        assert math.isfinite(got)
        assert got == _special._beta_continued_fraction(*args), args


def test_a_zero_first_denominator_raises_as_in_python() -> None:
    """x == a past 2⁵³ makes the gamma fraction's first denominator 0: the compiled loop
    raises as Python's division does, instead of answering NaN (found by a reviewer)."""
    loops = _compiled()
    big = 2.0**53
    with pytest.raises(ZeroDivisionError):
        _special._gamma_continued_fraction(big, big)
    with pytest.raises(ZeroDivisionError):
        loops.gamma_continued_fraction(big, big)
