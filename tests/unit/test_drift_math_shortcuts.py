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
