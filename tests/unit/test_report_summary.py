"""The report's summary as an analyst read it: what alerted comes first, and the worst window
of each detector is one it judged.

In a two-day replay the "Worst window per detector" row for latency was a window with verdict
"ok" on 20 calls (9,732 ms, 2.91× its threshold) while the 62-minute critical incident was not
listed at all, and the safety row was 15.15% on 33 calls, verdict ok (ranked by value ÷
threshold over every window, insufficient_data included). These cases rebuild that file's
shape: detections and the alerts the tracker makes of them, written by the DuckDB sink and read
back by `write_report`; the tests read the HTML it writes.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

from alerts.state import AlertTracker
from schemas.alert_config import AlertingConfig
from schemas.detection import Alert, Detection, Verdict
from tests.report_html import sections
from tests.window_detections import minute_detection
from worker.cli.report import write_report
from worker.sink import Checkpoint
from worker.sinks.duckdb_sink import DuckDBSink

T0 = datetime(2026, 1, 5, 6, 0, tzinfo=UTC)
MINUTE = timedelta(minutes=1)


def latency(i: int, verdict: Verdict, value: float, n: int, threshold: float = 3610.0) -> Detection:
    return minute_detection(
        T0,
        i,
        detector="latency",
        model="text-bison",
        verdict=verdict,
        condition="p95_above_baseline",
        severity="critical" if verdict == "alert" else "warning",
        value=value if verdict != "insufficient_data" else None,
        threshold=threshold if verdict != "insufficient_data" else None,
        baseline=threshold / 1.3 if verdict != "insufficient_data" else None,
        sample_size=n,
        reason="latency",
    )


def safety(i: int, verdict: Verdict, rate: float, n: int) -> Detection:
    """Safety carries the window's block rate as its value even when it did not judge."""
    return minute_detection(
        T0,
        i,
        detector="safety",
        model="gpt-4o-mini",
        verdict=verdict,
        condition="block_rate_above_baseline",
        value=rate,
        threshold=0.0158 if verdict != "insufficient_data" else None,
        baseline=0.0105 if verdict != "insufficient_data" else None,
        sample_size=n,
        reason="safety",
    )


def two_day_shape() -> list[Detection]:
    """A quiet latency stream with one noisy 20-call window, a 12-window critical incident
    that resolves, and a safety stream whose largest values are small, unjudged windows."""
    out = []
    for i in range(100):
        if 50 <= i < 62:
            out.append(latency(i, "alert", 9020.0 if i == 50 else 6000.0 + i, 37))
        elif i == 20:
            out.append(latency(i, "ok", 9732.0, 20, threshold=3344.0))  # 2.91×, not significant
        else:
            out.append(latency(i, "ok", 2000.0 + i, 600))
        if i == 30:
            out.append(safety(i, "ok", 0.1515, 33))
        elif i == 31:
            out.append(safety(i, "insufficient_data", 0.5, 4))  # 2 of 4 calls blocked
        else:
            out.append(safety(i, "ok", 0.012, 900))
    return out


def tracked(detections: Sequence[Detection], config: AlertingConfig) -> list[Alert]:
    tracker = AlertTracker(config)
    return [a for d in detections for a in tracker.observe(d)]


def report(
    tmp_path: Path, detections: Sequence[Detection], config: AlertingConfig | None = None
) -> Path:
    alerts = tracked(detections, config or AlertingConfig(resolve_after_ok_windows=2))
    sink = DuckDBSink(tmp_path / "lookout.duckdb")
    sink.write_checkpoint(Checkpoint("w1", 0, detections=detections, alerts=alerts))
    try:
        return write_report(sink, tmp_path / "report.html", title="two days")
    finally:
        sink.close()


def test_the_summary_leads_with_the_incident_and_its_worst_value(tmp_path: Path) -> None:
    page = sections(report(tmp_path, two_day_shape()))
    order = list(page)
    assert order.index("What alerted") < order.index("Worst judged window per detector")
    (incident,) = page["What alerted"].table
    assert incident["model"] == "text-bison" and incident["detector"] == "latency"
    assert incident["fired (window start)"] == "2026-01-05 06:50 UTC"
    # resolved at the end of the second ok window after the last alert window (61)
    assert incident["ended (window end)"] == "2026-01-05 07:04 UTC"
    assert incident["peak severity"] == "critical"
    assert incident["worst value while alerting"] == "9,020 ms p95 (2026-01-05 06:50 UTC)"


def test_the_worst_window_is_one_the_detector_judged_with_its_verdict_and_sample(
    tmp_path: Path,
) -> None:
    page = sections(report(tmp_path, two_day_shape()))
    (worst,) = [s for heading, s in page.items() if heading.startswith("Worst")]
    rows = worst.table
    by_detector = {r["detector"]: r for r in rows}
    # the incident's window, not the noisy 20-call window that was ok
    assert by_detector["latency"]["window"] == "2026-01-05 06:50 UTC"
    assert by_detector["latency"]["verdict"] == "alert"
    assert by_detector["latency"]["sample (in the window)"] == "37 calls"
    # no alert: the largest judged window, said to be ok, with its 33 calls; never the
    # 4-call window that was not judged
    assert by_detector["safety"]["value"] == "15.15 % blocked"
    assert by_detector["safety"]["verdict"] == "ok (did not alert)"
    assert by_detector["safety"]["sample (in the window)"] == "33 calls"
    assert all(r["verdict"] in ("alert", "ok (did not alert)") for r in rows), rows


def test_an_open_sustained_shift_says_how_to_accept_it(tmp_path: Path) -> None:
    """Item 5: the tracker announced a sustained level shift; the summary says what to do
    (README, alerting: `lookout baseline accept` takes the new level)."""
    stream = [latency(i, "ok", 2000.0, 600) for i in range(10)]
    stream += [latency(i, "alert", 6000.0, 600) for i in range(10, 60)]
    page = report(tmp_path, stream, AlertingConfig(sustained_after=timedelta(minutes=30)))
    (incident,) = sections(page)["What alerted"].table
    assert incident["ended (window end)"] == "still open"
    todo = incident["what to do"]
    assert todo.startswith("Sustained level shift since 2026-01-05 06:10 UTC"), todo
    db = tmp_path / "lookout.duckdb"
    assert f"lookout baseline accept --model text-bison --detector latency --db {db}" in todo


def test_an_open_incident_not_yet_sustained_points_at_its_panel(tmp_path: Path) -> None:
    stream = [latency(i, "ok", 2000.0, 600) for i in range(10)]
    stream += [latency(i, "alert", 6000.0, 600) for i in range(10, 20)]
    (incident,) = sections(report(tmp_path, stream))["What alerted"].table
    assert incident["what to do"].startswith(
        "Find what changed at 2026-01-05 06:10 UTC (latency panel of text-bison below)"
    )
