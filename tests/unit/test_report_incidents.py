"""The report's Alerts table as the on-call reads it: how many incidents, which still fire,
when each began and ended, how bad each got.

The alert rows are the real ones: made by the alert tracker from detections, written by the
DuckDB sink in one checkpoint (so they share `emitted_at`, as a replay's checkpoint does) and
read back with the report's own query. SQL promises no order among rows with the same
`emitted_at`, so each case is also read with its rows reversed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest

from alerts.state import AlertTracker
from schemas.alert_config import AlertingConfig
from schemas.detection import Alert, Detection, Severity, Verdict
from tests.window_detections import minute_detection
from worker.cli.report import alert_rows, incidents_from, write_report
from worker.cli.report_plots import Incident
from worker.sink import Checkpoint
from worker.sinks.duckdb_sink import DuckDBSink

T0 = datetime(2026, 1, 5, 6, 0, tzinfo=UTC)
WINDOW = timedelta(minutes=1)
WRITTEN = datetime(2026, 1, 6, 12, 0, tzinfo=UTC)
MODEL = "gemini-1.5-flash"


def det(i: int, verdict: Verdict, severity: Severity = "warning") -> Detection:
    return minute_detection(
        T0,
        i,
        detector="safety",
        model=MODEL,
        verdict=verdict,
        condition="block_rate_above_baseline",
        severity=severity,
        value=0.061,
        baseline=0.02,
        threshold=0.031,
        sample_size=2013,
        reason="block rate above its baseline's 99.9% Wilson bound",
        details={"metric": "block rate", "unit": "ratio"},
    )


def at(i: int) -> pd.Timestamp:
    return pd.Timestamp(T0 + i * WINDOW)


def alerts_of(
    steps: Sequence[Verdict | tuple[Verdict, Severity]], config: AlertingConfig | None = None
) -> list[Alert]:
    """The alerts the tracker emits for one stream's windows 0, 1, 2, …"""
    tracker = AlertTracker(config or AlertingConfig(resolve_after_ok_windows=2))
    out: list[Alert] = []
    for i, step in enumerate(steps):
        verdict, severity = step if isinstance(step, tuple) else (step, "warning")
        out += tracker.observe(det(i, verdict, severity))
    return out


def rows(alerts: Sequence[Alert], tmp_path: Path) -> pd.DataFrame:
    """The rows the report reads, after one checkpoint wrote these alerts."""
    sink = DuckDBSink(tmp_path / "lookout.duckdb", clock=lambda: WRITTEN)
    sink.write_checkpoint(Checkpoint("w1", 0, alerts=alerts))
    return alert_rows(sink)


Order = Callable[[pd.DataFrame], pd.DataFrame]


def as_read(frame: pd.DataFrame) -> pd.DataFrame:
    return frame


def reversed_rows(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.iloc[::-1].reset_index(drop=True)


BOTH_ORDERS = pytest.mark.parametrize(
    "order", [as_read, reversed_rows], ids=["as-read", "reversed"]
)


def still_firing(incidents: Sequence[Incident]) -> list[Incident]:
    return [i for i in incidents if i.resolved is None]


@BOTH_ORDERS
def test_an_escalation_updates_the_open_incident_instead_of_opening_a_second(
    tmp_path: Path, order: Order
) -> None:
    """warning, then critical while open, then clear: one page that got worse and resolved."""
    steps: list[Verdict | tuple[Verdict, Severity]] = [
        "alert",
        "alert",
        ("alert", "critical"),
        "alert",
        "ok",
        "ok",
    ]
    alerts = alerts_of(steps)
    assert [(a.status, a.severity) for a in alerts] == [
        ("firing", "warning"),
        ("firing", "critical"),
        ("resolved", "critical"),
    ], "the tracker escalates with a second firing row of the same dedup key"
    (incident,) = incidents_from(order(rows(alerts, tmp_path)))
    assert incident.fired == at(0)
    assert incident.resolved == at(6), "resolved at the end of the second ok window"
    assert incident.severity == "critical", "the worst it got"
    # what fired at its start, with the escalation and its own window: the escalation's summary
    # (its value and sample size) beside the first window's time misread both
    assert incident.summary.startswith(alerts[0].summary), incident.summary
    assert "escalated from warning" not in incident.summary
    assert incident.summary.endswith(
        "escalated to critical in the window ending 2026-01-05 06:03 UTC"
    )


@BOTH_ORDERS
def test_a_firing_and_its_resolve_written_together_pair_in_event_time_order(
    tmp_path: Path, order: Order
) -> None:
    """One checkpoint held the firing and the resolve: the same `emitted_at` must not let the
    resolve come first and leave the incident open forever."""
    alerts = alerts_of(["alert", "ok"], AlertingConfig(resolve_after_ok_windows=1))
    assert [a.status for a in alerts] == ["firing", "resolved"]
    (incident,) = incidents_from(order(rows(alerts, tmp_path)))
    assert (incident.fired, incident.resolved) == (at(0), at(2))


@BOTH_ORDERS
def test_a_key_that_fires_again_after_its_resolve_is_a_second_incident(
    tmp_path: Path, order: Order
) -> None:
    alerts = alerts_of(["alert", "ok", "ok", "alert", ("alert", "critical"), "ok", "ok", "alert"])
    incidents = incidents_from(order(rows(alerts, tmp_path)))
    assert [(i.fired, i.resolved, i.severity) for i in incidents] == [
        (at(0), at(3), "warning"),
        (at(3), at(7), "critical"),
        (at(7), None, "warning"),
    ]
    assert still_firing(incidents) == [incidents[2]]


@BOTH_ORDERS
def test_a_restart_in_one_window_resolves_the_old_incident_and_opens_the_new(
    tmp_path: Path, order: Order
) -> None:
    """The evaluator's restart: window 3 resolves the incident of window 0 and fires a new one,
    both rows with the same window end."""
    tracker = AlertTracker(AlertingConfig())
    alerts = [a for i in range(3) for a in tracker.observe(det(i, "alert"))]
    fresh = det(3, "alert", "critical")
    alerts += tracker.restart(fresh, "the evidence had returned before a new rise")
    alerts += tracker.observe(fresh)
    assert [(a.status, a.window_start, a.window_end) for a in alerts[-2:]] == [
        ("resolved", T0, T0 + 4 * WINDOW),
        ("firing", T0 + 3 * WINDOW, T0 + 4 * WINDOW),
    ]
    incidents = incidents_from(order(rows(alerts, tmp_path)))
    assert [(i.fired, i.resolved, i.severity) for i in incidents] == [
        (at(0), at(4), "warning"),
        (at(3), None, "critical"),
    ]


@BOTH_ORDERS
def test_a_level_accepted_in_the_window_that_escalated_ends_the_incident(
    tmp_path: Path, order: Order
) -> None:
    """An accept resolves the incident right after its window escalated it (same window end):
    the escalation is an update, the resolve comes after it."""
    tracker = AlertTracker(AlertingConfig())
    alerts = tracker.observe(det(0, "alert"))
    last = det(1, "alert", "critical")
    alerts += tracker.observe(last)
    alerts += tracker.accept(last, "the new level is accepted")
    assert [a.status for a in alerts] == ["firing", "firing", "resolved"]
    (incident,) = incidents_from(order(rows(alerts, tmp_path)))
    assert (incident.fired, incident.resolved, incident.severity) == (at(0), at(2), "critical")


def test_a_resolve_whose_firing_is_not_in_the_table_still_shows_its_incident(
    tmp_path: Path,
) -> None:
    """The firing went to another file (the run was split); the resolve carries the span."""
    alerts = alerts_of(["alert", "alert", "ok", "ok"])
    resolve = [a for a in alerts if a.status == "resolved"]
    (incident,) = incidents_from(rows(resolve, tmp_path))
    assert (incident.fired, incident.resolved, incident.severity) == (at(0), at(4), "warning")


def test_a_repeated_resolve_row_adds_no_incident(tmp_path: Path) -> None:
    alerts = alerts_of(["alert", "ok", "ok"])
    (incident,) = incidents_from(rows([*alerts, alerts[-1]], tmp_path))
    assert (incident.fired, incident.resolved) == (at(0), at(3))


def test_the_report_says_all_resolved_after_an_escalation_that_resolved(tmp_path: Path) -> None:
    """What the on-call saw at the top of the report: "1 still firing" for an incident that
    had escalated and resolved."""
    alerts = alerts_of(["alert", ("alert", "critical"), "ok", "ok"])
    sink = DuckDBSink(tmp_path / "lookout.duckdb", clock=lambda: WRITTEN)
    sink.write_checkpoint(Checkpoint("w1", 0, alerts=alerts))
    html = write_report(sink, tmp_path / "report.html", title="t").read_text()
    assert "<b>1</b> alert(s): 1 critical, 0 warning, 0 info; all resolved" in html
    assert "still firing" not in html
