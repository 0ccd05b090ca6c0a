"""Shortcuts in the embedding-drift p-value that must not change it.

`weighted_chi2_sf` skips the Chernoff bound where the bound cannot fall below 10⁻⁶, and keeps
its Gauss–Legendre nodes between calls; the p-values, and so every verdict, stay the same.
"""

from __future__ import annotations

import numpy as np
import pytest

from detectors import _drift_math as dm


@pytest.mark.parametrize("seed", range(20))
def test_the_chernoff_bound_is_never_below_1e6_where_it_is_skipped(seed: int) -> None:
    """The skip rests on bound ≥ e^(−(x − Σw)/(2 max w)); check it on spread-out spectra."""
    rng = np.random.default_rng(seed)
    w = np.sort(rng.exponential(1.0, int(rng.integers(1, 200))) ** rng.uniform(1, 6))[::-1]
    w = w / w.sum()
    edge = float(w.sum()) + dm.CHERNOFF_SKIP * float(w.max())
    for x in np.linspace(0.0, edge, 50)[1:]:
        assert dm.chernoff_sf_bound(float(x), w) >= 1e-6


def test_tail_p_values_still_come_from_the_bound_beyond_the_skip() -> None:
    w = np.full(10, 0.1)
    x = 1.0 + 60 * 0.1  # far beyond Σw + 27 max w
    assert dm.weighted_chi2_sf(x, w) == dm.chernoff_sf_bound(x, w) < 1e-6


def test_gauss_legendre_nodes_are_computed_once_and_read_only() -> None:
    first = dm.gauss_legendre(24)
    assert dm.gauss_legendre(24) is first
    nodes, weights = first
    assert weights.sum() == pytest.approx(2.0)  # ∫₋₁¹ 1 dx
    assert not nodes.flags.writeable and not weights.flags.writeable


def test_the_table_of_a_null_law_agrees_with_the_integral_and_is_exact_where_verdicts_are() -> None:
    """`null_sf` reads p-values of at least `TABLE_ABOVE` from a table per null law: within
    10⁻³ of Imhof's integral there, relative (so a p of 0.012 is not read as 0.011), and the
    integral itself below it, where verdicts are made (at 3·10⁻⁴ and below)."""
    rng = np.random.default_rng(11)
    assert dm.TABLE_ABOVE >= 30 * 3e-4  # far above any level a verdict is taken at
    for shape, size in ((0.3, 128), (1.0, 128), (4.0, 128), (10.0, 384), (1.0, 16)):
        w = np.sort(rng.gamma(shape, 1.0, size))[::-1]
        for x in np.linspace(0.0, 3.0 * w.sum(), 160):
            exact = dm.weighted_chi2_sf(float(x), w)
            fast = dm.null_sf(float(x), w)
            if exact < dm.TABLE_ABOVE:
                assert fast == exact
            else:
                assert fast == pytest.approx(exact, rel=1e-3), (shape, size, x)
    assert dm.null_sf(1.0, np.zeros(4)) == dm.weighted_chi2_sf(1.0, np.zeros(4)) == 0.0


@pytest.mark.parametrize("rank", [1, 2, 3, 5])
def test_a_null_law_of_a_few_weights_gets_no_table_that_eats_memory(rank: int) -> None:
    """A reference of a handful of distinct prompts has one to a few non-zero weights: its
    integral needs up to ~10⁷ nodes, and a 256-point table of it once took 15 GiB and killed the
    worker. Such laws are computed exactly, and every table is built in bounded chunks."""
    import tracemalloc

    w = np.concatenate([np.ones(rank), np.zeros(60)])
    dm._SF_TABLES.clear()
    tracemalloc.start()
    try:
        for x in (0.1 * rank, 0.5 * rank, 1.5 * rank):
            assert dm.null_sf(x, w) == pytest.approx(dm.weighted_chi2_sf(x, w), abs=1e-3)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 300 * 2**20


def test_the_imhof_integral_in_chunks_equals_it_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    w = np.array([0.4, 0.3, 0.2, 0.1])
    xs = np.linspace(0.05, 3.0, 40)
    whole = dm._imhof(xs, w)
    monkeypatch.setattr(dm, "_IMHOF_CELLS", 1000)  # a few x per chunk
    np.testing.assert_allclose(dm._imhof(xs, w), whole, rtol=0, atol=1e-12)
