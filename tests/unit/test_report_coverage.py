"""The report's data-quality and coverage section: what the verdicts rest on, per model.

The report showed verdicts only: in a two-day replay embedding drift judged 0 of 8,640 windows
(no model sent embeddings) and safety left 3,082 unjudged, and nothing said so; late and
quarantined records were not shown either. Here a file holds two models' windows (with late
records), quarantined records and detections, and the report is read as `lookout report`
reads a file: attached read-only (the quarantine table is not among the tables that view
names), as well as through the sink that wrote it (`replay --report`).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest

from schemas.detection import Detection, Verdict
from schemas.plural import counted
from tests.report_html import Section, sections
from tests.window_detections import minute_detection
from worker.cli.report import write_report
from worker.cli.report_scope import scope_of
from worker.sink import Checkpoint, PartialRow, QuarantinedRecord
from worker.sinks.duckdb_read_only import open_read_only
from worker.sinks.duckdb_sink import DuckDBSink

T0 = datetime(2026, 1, 5, 6, 0, tzinfo=UTC)
START = int(T0.timestamp())
CALLS = {0: 4, 1: 7, 2: 9, 3: 250, 4: 260}


def detection(model: str, detector: str, i: int, verdict: Verdict, reason: str) -> Detection:
    return minute_detection(
        T0,
        i,
        detector=detector,
        model=model,
        verdict=verdict,
        condition="block_rate_above_baseline" if detector == "safety" else "x",
        value=0.02,
        threshold=0.03 if verdict != "insufficient_data" else None,
        sample_size=CALLS[i],
        reason=reason,
    )


def checkpoint() -> Checkpoint:
    detections = []
    for model in ("gpt-4o-mini", "text-bison"):
        for i in range(5):
            # too few calls: each reason's numbers differ (the first says "1 call"), its kind not
            if i < 3:
                detections.append(
                    detection(
                        model,
                        "safety",
                        i,
                        "insufficient_data",
                        f"not judged: {counted(CALLS[i] if i else 1, 'call')} in the window "
                        f"(minimum 100) and {1000 - i} calls in the {30 + i} past windows "
                        "(minimum 1000 for a baseline).",
                    )
                )
            else:
                detections.append(detection(model, "safety", i, "ok", "block rate normal"))
            detections.append(
                detection(
                    model,
                    "embedding_drift",
                    i,
                    "insufficient_data",
                    "no reference yet: it holds 0 of the 2000 embeddings it needs",
                )
            )
    partials = [
        PartialRow(model, START + 60 * i, START + 60 * (i + 1), CALLS[i], late, {})
        for model, late in (("gpt-4o-mini", 2), ("text-bison", 0))
        for i in range(5)
    ]
    held = [
        QuarantinedRecord(
            "text-bison",
            f"r{k}",
            START + 3600.0 * (k + 2),
            f"event time 2026-01-05 {8 + k:02d}:00:00Z is {2 + k} h ahead of the stream "
            "(2026-01-05 06:04:00Z; limit 1 h), fewer than 5 records agree",
        )
        for k in range(3)
    ]
    return Checkpoint("w1", 0, partials=partials, detections=detections, quarantined=held)


def as_replay_writes_it(path: Path) -> DuckDBSink:
    return DuckDBSink(path)


def as_report_reads_it(path: Path) -> DuckDBSink:
    DuckDBSink(path).close()  # written already: see `coverage`
    return open_read_only(path)


@pytest.fixture(params=[as_replay_writes_it, as_report_reads_it], ids=["replay", "report"])
def coverage(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, Section]:
    path = tmp_path / "lookout.duckdb"
    writer = DuckDBSink(path)
    writer.write_checkpoint(checkpoint())
    writer.close()
    opened: Callable[[Path], DuckDBSink] = request.param
    sink = opened(path)
    try:
        page = write_report(sink, tmp_path / "report.html", title="t")
    finally:
        sink.close()
    found = sections(page)
    assert "Data quality and coverage" in found, list(found)
    return found


def test_each_model_says_its_records_late_and_quarantined(coverage: dict[str, Section]) -> None:
    assert coverage["gpt-4o-mini"].text.startswith(
        "530 records in 5 windows · 10 late (1.89% of records) · 0 quarantined"
    ), coverage["gpt-4o-mini"].text
    text = coverage["text-bison"].text
    assert text.startswith("530 records in 5 windows · 0 late · 3 quarantined (most often: "), text
    # the latest wording of the commonest kind of reason
    assert "event time 2026-01-05 10:00:00Z is 4 h ahead of the stream" in text


def test_a_detector_that_never_judged_says_so_and_why(coverage: dict[str, Section]) -> None:
    rows = {r["detector"]: r for r in coverage["gpt-4o-mini"].table}
    assert list(rows) == ["safety", "embedding_drift"], "in the panels' order"
    drift = rows["embedding_drift"]
    assert drift["windows judged (ok or alert)"] == "0 of 5: never judged"
    assert drift["not judged (insufficient_data)"] == "5"
    reason = drift["most common reason not judged (its latest wording)"]
    assert reason == "no reference yet: it holds 0 of the 2000 embeddings it needs (5 windows)"


def test_unjudged_windows_are_counted_with_their_commonest_reason(
    coverage: dict[str, Section],
) -> None:
    safety = {r["detector"]: r for r in coverage["text-bison"].table}["safety"]
    assert safety["windows judged (ok or alert)"] == "2 of 5 (40%)"
    assert safety["not judged (insufficient_data)"] == "3"
    # three reasons that differ only in their numbers are one kind; the newest is shown
    assert safety["most common reason not judged (its latest wording)"] == (
        "not judged: 9 calls in the window (minimum 100) and 998 calls in the 32 past windows "
        "(minimum 1000 for a baseline). (3 windows)"
    )


@pytest.mark.parametrize(
    ("since", "until"),
    [("2026-01-05T06:00", "2026-01-05T07:00"), ("2026-01-05T06:00", "2026-01-05T06:05")],
    ids=["the hour", "every window"],
)
def test_a_time_range_that_holds_every_window_still_counts_the_quarantined_records(
    tmp_path: Path, since: str, until: str
) -> None:
    """Found in review: `lookout report --since --until` of the hour the stream ran said
    "0 quarantined" for a model with 3. A record is quarantined because its event time is far
    from the stream's (hours ahead here, 2099 or 1970 from a broken clock), so that time falls
    in no window the range selects; the count is the file's, and the line says so."""
    path = tmp_path / "lookout.duckdb"
    writer = DuckDBSink(path)
    writer.write_checkpoint(checkpoint())
    writer.close()
    sink = open_read_only(path)  # as `lookout report` opens it
    try:
        page = write_report(sink, tmp_path / "r.html", title="t", scope=scope_of(since, until))
    finally:
        sink.close()
    found = sections(page)
    text = found["text-bison"].text
    assert text.startswith("530 records in 5 windows · 0 late · 3 quarantined"), text
    assert "not limited by --since/--until" in text, text
    assert "event time 2026-01-05 10:00:00Z is 4 h ahead of the stream" in text
    assert " · 0 quarantined" in found["gpt-4o-mini"].text
