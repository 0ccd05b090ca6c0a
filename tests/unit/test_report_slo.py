"""A latency SLO's verdicts in the report: burn rates are burn rates, and they are plotted.

With `latency.slo` configured, the windows the SLO rule decides carry a burn rate (19.84 against
the page rule's 14.4), not a p95. The report printed them as "20 ms p95" in its worst-window
table, and its latency panel, which took p95 conditions only, drew nothing for the whole
regression the SLO paged for.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pandas as pd

from worker.cli.report import _amount, _summary
from worker.cli.report_plots import model_figure

T0 = datetime(2026, 1, 5, 6, 0, tzinfo=UTC)


def detections() -> pd.DataFrame:
    rows = []
    for i in range(6):
        slo = i >= 3
        rows.append(
            {
                "model": "text-bison",
                "detector": "latency",
                "condition": "slo_burn_rate_page" if slo else "p95_above_baseline",
                "value": 19.84 if slo else 1800.0 + i,
                "threshold": 14.4 if slo else 2400.0,
                "baseline": None if slo else 1790.0,
                "verdict": "alert" if slo else "ok",
                "window_start": pd.Timestamp(T0 + timedelta(minutes=i)),
                "window_end": pd.Timestamp(T0 + timedelta(minutes=i + 1)),
                "sample_size": 600,
            }
        )
    return pd.DataFrame(rows)


def test_a_burn_rate_reads_as_a_burn_rate_and_a_p95_as_a_p95() -> None:
    assert _amount("latency", 19.84, "slo_burn_rate_page") == "19.84 × error-budget burn rate"
    assert _amount("latency", 1800.0, "p95_above_baseline") == "1,800 ms p95"
    merged = pd.DataFrame([{"model": "text-bison", "windows": 6, "records": 600}])
    summary = _summary(detections(), merged, [])
    assert "19.84 × error-budget burn rate" in summary and "20 ms p95" not in summary
    assert "no alerts" in summary and "0 alert(s)" not in summary


def test_the_slo_windows_are_drawn_in_a_panel_of_their_own() -> None:
    figure = model_figure("text-bison", detections(), [], pd.Timestamp(T0 + timedelta(minutes=6)))
    assert figure is not None
    titles = [a.text for a in figure.layout.annotations]
    assert any(t.startswith("Latency: 95th percentile") for t in titles), titles
    assert any(t.startswith("Latency SLO: error-budget burn rate") for t in titles), titles
    values = [t for t in figure.data if t.name == "window value"]
    assert sorted(len([y for y in t.y if y is not None]) for t in values) == [3, 3]
    assert all("markers" in t.mode for t in values)
