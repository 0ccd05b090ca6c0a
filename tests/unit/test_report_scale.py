"""A long file's report: limited to a time range and some models, and long series thinned for
drawing without losing a spike or an alert window.

A ten-day file (42,355 window rows) made a 17.9 MB report in 9.6 s, with no way to ask for
less. `Scope` (`lookout report --since --until --model`) limits what is read; a series of more
than `MAX_POINTS` windows is drawn through each run's lowest and highest window, with every
alert window's marker, and its panel says so.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from alerts.state import AlertTracker
from schemas.alert_config import AlertingConfig
from schemas.detection import Detection, Verdict
from tests.report_html import sections
from tests.window_detections import minute_detection
from worker.cli.report import write_report
from worker.cli.report_plots import MAX_POINTS, model_figure
from worker.cli.report_scope import Scope, ScopeError, scope_of
from worker.sink import Checkpoint, PartialRow
from worker.sinks.duckdb_sink import DuckDBSink

T0 = datetime(2026, 1, 5, 0, 0, tzinfo=UTC)
MINUTE = timedelta(minutes=1)


@pytest.mark.parametrize(
    ("text", "utc"),
    [
        ("2026-01-06", "2026-01-06 00:00:00+00:00"),
        ("2026-01-06T12:30", "2026-01-06 12:30:00+00:00"),
        ("2026-01-06 12:30", "2026-01-06 12:30:00+00:00"),
        ("2026-01-06T12:30:00Z", "2026-01-06 12:30:00+00:00"),
        ("2026-01-06T14:30+02:00", "2026-01-06 12:30:00+00:00"),
    ],
)
def test_a_time_is_a_utc_date_or_time(text: str, utc: str) -> None:
    assert scope_of(since=text).since == pd.Timestamp(utc)


@pytest.mark.parametrize(
    ("since", "until", "message"),
    [
        (
            "yesterday",
            None,
            "--since 'yesterday' is not a date or time; give e.g. 2026-01-06, "
            "2026-01-06T12:00 or 2026-01-06T12:00:00Z (UTC)",
        ),
        (None, "2026-13-01", "--until '2026-13-01' is not a date or time; give e.g."),
        (
            "2026-01-07",
            "2026-01-06",
            "--since 2026-01-07 is not before --until 2026-01-06: no window is in that range",
        ),
    ],
)
def test_a_bad_time_is_one_line_naming_the_option(
    since: str | None, until: str | None, message: str
) -> None:
    with pytest.raises(ScopeError) as raised:
        scope_of(since, until)
    assert str(raised.value).startswith(message)
    assert "\n" not in str(raised.value)


def window(model: str, i: int, verdict: Verdict, value: float) -> Detection:
    return minute_detection(
        T0,
        i,
        detector="safety",
        model=model,
        verdict=verdict,
        condition="block_rate_above_baseline",
        severity="critical" if verdict == "alert" else "warning",
        value=value,
        threshold=0.03,
        baseline=0.02,
        sample_size=500,
        reason="r",
    )


def two_days(tmp_path: Path) -> DuckDBSink:
    """Two models, 2,880 one-minute windows each; gpt-4o-mini alerts on day two at 12:00."""
    detections = [
        window(model, i, "alert" if model == "gpt-4o-mini" and 2160 <= i < 2170 else "ok", 0.02)
        for model in ("gpt-4o-mini", "text-bison")
        for i in range(2880)
    ]
    partials = [
        PartialRow(
            d.model, int(d.window_start.timestamp()), int(d.window_end.timestamp()), 500, 0, {}
        )
        for d in detections
    ]
    tracker = AlertTracker(AlertingConfig())
    alerts = [a for d in detections for a in tracker.observe(d)]
    sink = DuckDBSink(tmp_path / "lookout.duckdb")
    sink.write_checkpoint(
        Checkpoint("w1", 0, partials=partials, detections=detections, alerts=alerts)
    )
    return sink


def test_since_until_and_model_limit_what_the_report_shows(tmp_path: Path) -> None:
    sink = two_days(tmp_path)
    scope = scope_of("2026-01-06T11:00", "2026-01-06T13:00", ["gpt-4o-mini"])
    try:
        page = write_report(sink, tmp_path / "r.html", title="t", scope=scope)
    finally:
        sink.close()
    found = sections(page)
    assert found[""].text.endswith(
        "Only windows that start from 2026-01-06 11:00 UTC to before 2026-01-06 13:00 UTC, "
        "of model gpt-4o-mini."
    ), found[""].text
    summary = found["Summary"].text
    assert "1 model(s): gpt-4o-mini" in summary
    assert "over 120 windows, 2026-01-06 11:00 UTC to 2026-01-06 12:59 UTC" in summary
    assert [r["model"] for r in found["Models"].table] == ["gpt-4o-mini"]
    (incident,) = found["What alerted"].table
    assert incident["fired (window start)"] == "2026-01-06 12:00 UTC"


def test_an_incident_outside_the_range_is_left_out(tmp_path: Path) -> None:
    sink = two_days(tmp_path)
    try:
        page = write_report(
            sink, tmp_path / "r.html", title="t", scope=scope_of(until="2026-01-06")
        )
    finally:
        sink.close()
    found = sections(page)
    assert found["What alerted"].text == "Nothing alerted."
    assert "over 1,440 windows" in found["Summary"].text


def test_a_model_the_file_does_not_hold_is_refused_before_writing(tmp_path: Path) -> None:
    sink = two_days(tmp_path)
    try:
        with pytest.raises(ScopeError) as raised:
            write_report(sink, tmp_path / "r.html", title="t", scope=Scope(models=("gpt-5",)))
    finally:
        sink.close()
    assert str(raised.value) == (
        "--model gpt-5: no such model in this file (it has: gpt-4o-mini, text-bison)"
    )
    assert not (tmp_path / "r.html").exists()


def ten_days() -> pd.DataFrame:
    """14,400 windows of one model: noise, one spike that never alerted, 30 alert windows."""
    n = 14_400
    rng = np.random.default_rng(3)
    value = 0.02 + rng.normal(0, 0.002, n)
    value[5_000] = 0.3  # a one-window spike, verdict ok
    verdict = np.where((np.arange(n) >= 9_000) & (np.arange(n) < 9_030), "alert", "ok")
    starts = pd.date_range(T0, periods=n, freq="min", tz="UTC")
    return pd.DataFrame(
        {
            "model": "m",
            "detector": "safety",
            "condition": "block_rate_above_baseline",
            "window_start": starts,
            "window_end": starts + MINUTE,
            "verdict": verdict,
            "value": value,
            "threshold": 0.03,
            "baseline": 0.02,
            "sample_size": 500,
        }
    )


def test_a_long_series_is_drawn_thinned_keeping_spikes_and_every_alert_marker() -> None:
    rows = ten_days()
    figure = model_figure("m", rows, [], pd.Timestamp(rows["window_end"].max()))
    assert figure is not None
    (line,) = [t for t in figure.data if t.name == "window value"]
    assert len(line.y) <= MAX_POINTS < len(rows)
    assert max(line.y) == pytest.approx(30.0), "the one-window spike is drawn"
    (marker,) = [t for t in figure.data if t.name == "window judged 'alert'" and len(t.x) > 1]
    assert len(marker.x) == 30, "every alert window keeps its marker"
    (title,) = [a.text for a in figure.layout.annotations]
    assert "downsampled: lines drawn through" in title and f"of {len(rows):,} windows" in title
