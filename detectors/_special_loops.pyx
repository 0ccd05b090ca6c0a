# cython: boundscheck=False, wraparound=False, cdivision=True
"""The iterations of `detectors._special`'s incomplete beta and gamma functions, compiled.

Why: `rate_increase_pvalue` judges every block-rate, latency and token window through the
incomplete beta function, whose continued fraction takes about a hundred Python iterations at
the counts a window has: a third of the safety detector's time and a fifth of the latency
detector's per window. Here each loop does the same floating-point operations in the same
order as the Python it replaces (no fused multiply-add: `setup.py` builds it with
`-ffp-contract=off`), so the values are the same numbers; `tests/unit/test_special_loops.py`
compares them bit for bit. `detectors._special` keeps the Python loops as the fallback of an
install without a compiler (`LOOKOUT_PURE_PYTHON=1`).
"""

from libc.math cimport NAN, fabs

cdef double _EPS = 1e-16
cdef double _TINY = 1e-300
cdef long _MAX_ITERATIONS = 100_000


cdef inline double _guarded(double v) noexcept nogil:
    # as `v if abs(v) > _TINY else _TINY` (a tiny negative becomes +_TINY, as in Python)
    return v if fabs(v) > _TINY else _TINY


cdef inline double _lentz_step(double an, double bn, double* c, double* d) noexcept nogil:
    """One term an / (bn + …) of a continued fraction by modified Lentz: updates C and D, and
    returns the factor C·D the fraction is multiplied by."""
    d[0] = 1.0 / _guarded(bn + an * d[0])
    c[0] = _guarded(bn + an / c[0])
    return d[0] * c[0]


def beta_continued_fraction(double a, double b, double x) -> float:
    """`detectors._special._beta_continued_fraction`: Numerical Recipes' `betacf`."""
    cdef double qab = a + b, qap = a + 1.0, qam = a - 1.0
    cdef double c = 1.0, d, h, aa, step, dm, m2
    cdef long m
    d = 1.0 - qab * x / qap
    d = 1.0 / _guarded(d)
    h = d
    for m in range(1, _MAX_ITERATIONS):
        dm = <double>m
        m2 = <double>(2 * m)
        aa = dm * (b - dm) * x / ((qam + m2) * (a + m2))
        h *= _lentz_step(aa, 1.0, &c, &d)
        aa = -(a + dm) * (qab + dm) * x / ((a + m2) * (qap + m2))
        step = _lentz_step(aa, 1.0, &c, &d)
        h *= step
        if fabs(step - 1.0) < _EPS:
            return h
    return NAN


def gamma_series(double a, double x) -> float:
    """The sum of `gammaincc`'s series for P(a, x) before its front factor; NaN if it does
    not converge."""
    cdef double term = 1.0 / a, total, ap = a
    cdef long i
    total = term
    for i in range(_MAX_ITERATIONS):
        ap += 1.0
        term *= x / ap
        total += term
        if fabs(term) < fabs(total) * _EPS:
            return total
    return NAN


def gamma_continued_fraction(double a, double x) -> float:
    """`gammaincc`'s continued fraction for Q(a, x) before its front factor; NaN if it does
    not converge."""
    cdef double b = x + 1.0 - a, c = 1.0 / _TINY, d, h, an, step, di
    cdef long i
    if b == 0.0:  # as Python's 1.0 / b (a == x past 2^53, where a + 1 == a): never a window's
        raise ZeroDivisionError("float division by zero")
    d = 1.0 / b
    h = d
    for i in range(1, _MAX_ITERATIONS):
        di = <double>i
        an = -di * (di - a)
        b += 2.0
        step = _lentz_step(an, b, &c, &d)
        h *= step
        if fabs(step - 1.0) < _EPS:
            return h
    return NAN
