"""`detectors._special` gives scipy's values, in the tails where alerts are decided too.

The detectors judge every window with these five functions instead of importing scipy (0.25 s
and 27 MB at the first judged window). A verdict turns on a p-value against alpha, so each is
held to scipy's value within 1e-10 relative wherever that value is at least 1e-300, over the
ranges the detectors reach and well beyond them.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import special as scipy_special

from detectors import _special
from detectors._math import rate_increase_pvalue

TOLERANCE = 1e-10


def assert_close(got: float, expected: float, what: str) -> None:
    if expected < 1e-300:
        assert got < 1e-290, what
        return
    assert abs(got - expected) <= TOLERANCE * abs(expected), f"{what}: {got!r} != {expected!r}"


def test_the_normal_tail_and_its_inverse() -> None:
    for z in np.linspace(-10.0, 37.0, 2_000):
        assert_close(_special.normal_sf(float(z)), float(scipy_special.ndtr(-z)), f"sf({z})")
    for p in np.logspace(-300.0, math.log10(0.999), 2_000):
        expected = float(-scipy_special.ndtri(p))
        assert abs(_special.normal_isf(float(p)) - expected) <= TOLERANCE * abs(expected)
    assert _special.normal_isf(0.0) == math.inf
    assert _special.normal_isf(1.0) == -math.inf


def test_the_incomplete_beta_function_over_counts_from_one_to_fifty_thousand() -> None:
    """x ≤ 0.75: the detectors' π = n·ratio/(n·ratio + n0) stays well below it (a window
    against 24 to 48 of them). Beyond it, for a ≫ b, scipy 1.17 itself is off by up to 1e-3
    (I_0.92(9023, 36.4) = 2.3727638968e-261, to 50 digits; scipy says 2.3700e-261)."""
    rng = np.random.default_rng(15)
    ranges = ((0.5, 5.0), (1.0, 100.0), (100.0, 50_000.0))
    for _ in range(6_000):
        low, high = ranges[rng.integers(3)]
        a = float(rng.uniform(low, high))
        low, high = ranges[rng.integers(3)]
        b = float(rng.uniform(low, high))
        x = 0.75 * float(rng.uniform() ** rng.uniform(0.2, 5.0))
        expected = float(scipy_special.betainc(a, b, x))
        assert_close(_special.betainc(a, b, x), expected, f"I_{x}({a}, {b})")


def test_the_incomplete_beta_function_at_its_edges() -> None:
    assert _special.betainc(3.0, 4.0, 0.0) == 0.0
    assert _special.betainc(3.0, 4.0, 1.0) == 1.0
    assert math.isnan(_special.betainc(3.0, 4.0, math.nan))
    assert math.isnan(_special.betainc(0.0, 4.0, 0.5))


def test_the_chi_square_tail_for_one_to_three_thousand_degrees_of_freedom() -> None:
    rng = np.random.default_rng(16)
    for _ in range(6_000):
        choices = (float(rng.integers(1, 10)), float(rng.integers(1, 200)), rng.uniform(0.5, 3e3))
        dof = float(choices[rng.integers(3)])
        x = float(rng.uniform(0.0, 3.0 * dof + 50.0))
        assert_close(_special.chi2_sf(dof, x), float(scipy_special.chdtrc(dof, x)), f"{dof}, {x}")
    assert _special.chi2_sf(3.0, 0.0) == 1.0
    assert _special.chi2_sf(3.0, math.inf) == 0.0


def test_the_one_sided_kolmogorov_smirnov_tail() -> None:
    rng = np.random.default_rng(17)
    for _ in range(1_500):
        n = int(
            rng.choice([rng.integers(1, 50), rng.integers(50, 1_100), rng.integers(1_000, 6_000)])
        )
        d = float(rng.uniform() ** rng.uniform(0.3, 3.0))
        assert_close(_special.smirnov(n, d), float(scipy_special.smirnov(n, d)), f"{n}, {d}")
    assert _special.smirnov(10, 0.0) == 1.0
    assert _special.smirnov(10, 1.0) == 0.0


@pytest.mark.parametrize("ratio", [1.0, 1.5])
def test_a_window_judged_alone_gets_the_p_value_of_the_array_route(ratio: float) -> None:
    """A detector passes floats (the pure-Python route); the calibration tests pass arrays
    (scipy): both must decide alike."""
    rng = np.random.default_rng(18)
    n = rng.integers(20, 20_000, 400).astype(np.float64)
    n0 = n * rng.uniform(10.0, 50.0, 400)
    x0 = rng.poisson(0.02 * n0).astype(np.float64)
    x = rng.poisson(0.02 * n * rng.uniform(0.5, 3.0, 400)).astype(np.float64)
    vectorised = rate_increase_pvalue(x, n, x0, n0, ratio)
    for i in range(400):
        alone = rate_increase_pvalue(float(x[i]), float(n[i]), float(x0[i]), float(n0[i]), ratio)
        assert_close(alone, float(vectorised[i]), f"window {i}")
