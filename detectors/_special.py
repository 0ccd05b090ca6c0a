"""The five special functions the detectors judge windows with, without importing scipy.

Why: `scipy.special` is imported when the first window is judged, and that import cost
0.25 s of CPU and 27 MB of resident memory (most of it scipy's array-API layer, which pulls in
`numpy.f2py`), in every `lookout replay` and every worker, for five scalar functions. The
detectors call them once or a few times per window, so plain Python at a few microseconds a
call costs less over a day of windows than the import did once.

Each function gives scipy's value to about 1e-11 relative for counts up to 50,000, in the tails
too, where alerts are decided (`tests/unit/test_special.py` compares them with scipy over grids
that reach p-values of 1e-300). The incomplete beta function's error grows with the counts, by
about 1e-16 times them (1.4e-10 at 7e5, 7e-9 at 1e8, against 50-digit values): far from moving
a verdict. Array callers (the calibration tests, the benchmarks) still use scipy.

Sources:
- the normal tail through `math.erfc`, and its inverse through `statistics.NormalDist`
  (Wichura, "Algorithm AS 241", Applied Statistics 37(3), 1988);
- the regularised incomplete beta and gamma functions as power series and continued fractions
  evaluated by the modified Lentz method (Press, Teukolsky, Vetterling & Flannery, "Numerical
  Recipes", 3rd ed., §6.2 and §6.4; Lentz, Applied Optics 15(3), 1976, with Thompson & Barnett's
  modification, J. Comput. Phys. 64, 1986);
- the one-sided Kolmogorov–Smirnov tail as Birnbaum & Tingey's finite sum (Ann. Math. Statist.
  22(4), 1951), whose terms are all positive, summed in logarithms.
"""

from __future__ import annotations

import math
import statistics
from typing import Protocol

import numpy as np

_EPS = 1e-16
_TINY = 1e-300
_MAX_ITERATIONS = 100_000
_STANDARD_NORMAL = statistics.NormalDist()
_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)


def normal_sf(z: float) -> float:
    """P(Z > z) for a standard normal Z (scipy's `ndtr(-z)`)."""
    return 0.5 * math.erfc(z / math.sqrt(2.0))


def normal_isf(p: float) -> float:
    """z with P(Z > z) = p (scipy's `-ndtri(p)`)."""
    if not 0.0 < p < 1.0:
        return math.inf if p <= 0.0 else -math.inf
    return -_STANDARD_NORMAL.inv_cdf(p)


def _beta_continued_fraction(a: float, b: float, x: float) -> float:
    """The continued fraction of I_x(a, b) (Numerical Recipes `betacf`), fast for
    x < (a + 1) / (a + b + 2). The compiled loop (`_special_loops.pyx`) runs instead where it
    was built; this is its fallback and its test's reference."""
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c = 1.0
    d = 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > _TINY else _TINY)
    h = d
    for m in range(1, _MAX_ITERATIONS):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > _TINY else _TINY)
        c = 1.0 + aa / c
        c = c if abs(c) > _TINY else _TINY
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > _TINY else _TINY)
        c = 1.0 + aa / c
        c = c if abs(c) > _TINY else _TINY
        step = d * c
        h *= step
        if abs(step - 1.0) < _EPS:
            return h
    return math.nan  # as scipy answers where it does not converge: no verdict rests on it


def _stirling_remainder(z: float) -> float:
    """ln Γ(z) − ((z − ½) ln z − z + ½ ln 2π): small, so taking it from `math.lgamma` where
    z is small loses nothing, and the series is exact to rounding from z = 10."""
    if z < 10.0:
        return math.lgamma(z) - (z - 0.5) * math.log(z) + z - _HALF_LOG_2PI
    w = 1.0 / (z * z)
    return (1.0 / 12 - w * (1.0 / 360 - w * (1.0 / 1260 - w * (1.0 / 1680 - w / 1188)))) / z


def _log_beta_front(a: float, b: float, x: float) -> float:
    """ln(x^a (1 − x)^b / B(a, b)), with the Stirling terms of the three gammas combined first:
    their logarithms are each hundreds of thousands at the counts a busy window has, and
    subtracting them as `math.lgamma` gives them lost up to 1e-10 of the result."""
    total = a + b
    # ln(x(a+b)/a) and ln((1−x)(a+b)/b) as sums of logarithms that are each exact to rounding:
    # a product near 1 would carry its rounding, times a or b, into the result
    return (
        a * (math.log(x) + math.log1p(b / a))
        + b * (math.log1p(-x) + math.log1p(a / b))
        + 0.5 * math.log(a * b / total)
        - _HALF_LOG_2PI
        + _stirling_remainder(total)
        - _stirling_remainder(a)
        - _stirling_remainder(b)
    )


def betainc(a: float, b: float, x: float) -> float:
    """The regularised incomplete beta function I_x(a, b), for a, b > 0 (scipy's `betainc`):
    P(X ≥ k) for X ~ Binomial(m, x) is I_x(k, m − k + 1)."""
    if not (a > 0.0 and b > 0.0) or math.isnan(x):
        return math.nan
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = _log_beta_front(a, b, x)
    fraction = _LOOPS.beta_continued_fraction
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * fraction(a, b, x) / a
    return 1.0 - math.exp(log_front) * fraction(b, a, 1.0 - x) / b


def gammaincc(a: float, x: float) -> float:
    """The regularised upper incomplete gamma function Q(a, x), for a > 0 (scipy's
    `gammaincc`): the series for P = 1 − Q below x = a + 1, the continued fraction for Q
    above it, so a small Q is never found as a difference."""
    if not a > 0.0 or math.isnan(x):
        return math.nan
    if x <= 0.0:
        return 1.0
    if math.isinf(x):
        return 0.0
    log_front = a * math.log(x) - x - math.lgamma(a)
    if x < a + 1.0:
        total = _LOOPS.gamma_series(a, x)
        return total if math.isnan(total) else max(0.0, 1.0 - total * math.exp(log_front))
    fraction = _LOOPS.gamma_continued_fraction(a, x)
    return fraction if math.isnan(fraction) else math.exp(log_front) * fraction


def _gamma_series(a: float, x: float) -> float:
    """The sum of the series for P(a, x) before its front factor (NaN if it does not
    converge): the fallback of `_special_loops.gamma_series`."""
    term = total = 1.0 / a
    ap = a
    for _ in range(_MAX_ITERATIONS):
        ap += 1.0
        term *= x / ap
        total += term
        if abs(term) < abs(total) * _EPS:
            return total
    return math.nan


def _gamma_continued_fraction(a: float, x: float) -> float:
    """The continued fraction for Q(a, x) before its front factor (NaN if it does not
    converge): the fallback of `_special_loops.gamma_continued_fraction`."""
    b = x + 1.0 - a
    c = 1.0 / _TINY
    d = 1.0 / b
    h = d
    for i in range(1, _MAX_ITERATIONS):
        an = -i * (i - a)
        b += 2.0
        d = an * d + b
        d = 1.0 / (d if abs(d) > _TINY else _TINY)
        c = b + an / c
        c = c if abs(c) > _TINY else _TINY
        step = d * c
        h *= step
        if abs(step - 1.0) < _EPS:
            return h
    return math.nan


class _Loops(Protocol):
    """The loops of `betainc` and `gammaincc`: `detectors/_special_loops.pyx` or Python."""

    def beta_continued_fraction(self, a: float, b: float, x: float, /) -> float: ...
    def gamma_series(self, a: float, x: float, /) -> float: ...
    def gamma_continued_fraction(self, a: float, x: float, /) -> float: ...


class _PythonLoops:
    """The loops as Python, where `detectors/_special_loops.pyx` was not built."""

    def beta_continued_fraction(self, a: float, b: float, x: float, /) -> float:
        return _beta_continued_fraction(a, b, x)

    def gamma_series(self, a: float, x: float, /) -> float:
        return _gamma_series(a, x)

    def gamma_continued_fraction(self, a: float, x: float, /) -> float:
        return _gamma_continued_fraction(a, x)


PYTHON_LOOPS: _Loops = _PythonLoops()


def _loops() -> _Loops:
    """The compiled loops (the same numbers, a few times faster), else the Python ones."""
    try:
        from detectors import _special_loops
    except ImportError:
        return PYTHON_LOOPS
    return _special_loops


_LOOPS = _loops()


def chi2_sf(dof: float, x: float) -> float:
    """P(χ²_dof > x) (scipy's `chdtrc`)."""
    if x <= 0.0:
        return 1.0
    return gammaincc(dof / 2.0, x / 2.0)


def smirnov(n: int, d: float) -> float:
    """P(D⁺ₙ ≥ d), the one-sided one-sample Kolmogorov–Smirnov tail (scipy's `smirnov`):
    d · Σ_{j=0}^{⌊n(1−d)⌋} C(n, j) (d + j/n)^(j−1) (1 − d − j/n)^(n−j)."""
    if n < 1 or math.isnan(d) or d < 0.0 or d > 1.0:
        return math.nan
    if d == 0.0:
        return 1.0
    if d == 1.0:
        return 0.0
    last = math.floor(n * (1.0 - d))
    j = np.arange(last + 1, dtype=np.float64)
    log_factorials = np.array([math.lgamma(k + 1.0) for k in range(n + 1)])
    log_choose = (
        log_factorials[n] - log_factorials[: last + 1] - log_factorials[n - last : n + 1][::-1]
    )
    low = d + j / n
    high = 1.0 - low
    with np.errstate(divide="ignore", invalid="ignore"):
        # (1 − d − j/n)^(n−j) is 0 where its base is 0 and n − j > 0; that base is never
        # below 0 for j ≤ n(1 − d) but for rounding
        log_high = np.where(high > 0.0, (n - j) * np.log(np.maximum(high, _TINY)), -np.inf)
        log_terms = log_choose + (j - 1.0) * np.log(low) + log_high
    top = float(log_terms.max())
    if not math.isfinite(top):
        return 0.0
    total = float(np.exp(log_terms - top).sum())
    return min(1.0, d * total * math.exp(top))
