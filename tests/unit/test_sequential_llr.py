"""The per-window likelihood ratios behind "has the incident ended?" (detectors._sequential)."""

from __future__ import annotations

import numpy as np

from detectors._sequential import normal_llr, normal_llr2


def test_with_one_variance_the_two_variance_ratio_is_the_plain_one() -> None:
    for mean in (-0.3, 0.0, 0.4, 1.2):
        assert np.isclose(
            normal_llr2(mean, 40, 2.0, 2.0, 0.0, 1.0), normal_llr(mean, 40, 2.0, 0.0, 1.0)
        )


def test_a_wider_incident_spread_makes_a_chance_low_window_weaker_evidence_of_a_return() -> None:
    """A window near the baseline level is evidence of a return; if the incident's calls
    scatter wider than the baseline's, such a window is less surprising under the incident,
    so it counts for less — what kept 6-hour drift incidents from resolving mid-way."""
    narrow = normal_llr2(0.1, 40, 1.0, 1.0, 0.0, 1.0)
    wide = normal_llr2(0.1, 40, 1.0, 2.6, 0.0, 1.0)
    assert 0 < wide < narrow


def test_windows_drawn_at_each_level_point_the_right_way_on_average() -> None:
    rng = np.random.default_rng(3)
    n, var0, var1 = 30, 1.0, 2.6
    at_base = rng.normal(0.0, np.sqrt(var0 / n), 4000)
    in_incident = rng.normal(0.8, np.sqrt(var1 / n), 4000)
    assert np.mean([normal_llr2(x, n, var0, var1, 0.0, 0.8) for x in at_base]) > 0
    assert np.mean([normal_llr2(x, n, var0, var1, 0.0, 0.8) for x in in_incident]) < 0
