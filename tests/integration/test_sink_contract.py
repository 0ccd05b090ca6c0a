"""One sink contract, run against the in-memory fake, DuckDB and BigQuery (on the emulator).

What the engine relies on, whichever sink it writes to: states come back exactly, request ids
and the evaluated flag survive, partial rows of several writers merge to the one-pass state,
alert state and references round-trip, bad data stores nothing, and writing the same
checkpoint twice changes nothing an analyst or the evaluator sees.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from alerts.state import AlertTracker
from detectors.latency import LatencyDetector
from schemas.alert_config import AlertingConfig
from schemas.detector_config import LatencyConfig
from tests.integration.bigquery_emulator import BigQueryEmulator
from tests.sink_cases import (
    DETECTORS,
    S0,
    batch,
    detection,
    ids,
    merged_state,
    partial,
    states_of,
    tracker_rows,
)
from worker.sink import BaselineAccept, Checkpoint, Sink
from worker.sinks.duckdb_sink import DuckDBSink
from worker.testing import MemorySink

SINKS = ["memory", "duckdb", "bigquery"]
LATENCY = LatencyDetector(LatencyConfig())


def bigquery_sink(emulator: BigQueryEmulator, dataset: str) -> Sink:
    from worker.sinks.bigquery_sink import BigQuerySink

    return BigQuerySink(emulator.project, dataset, client=emulator.client(), write_timeout=20)


@pytest.fixture(params=SINKS)
def sink(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Sink]:
    made: Sink
    if request.param == "duckdb":
        made = DuckDBSink(tmp_path / "lookout.duckdb")
    elif request.param == "bigquery":
        emulator = request.getfixturevalue("bigquery_emulator")
        made = bigquery_sink(emulator, request.getfixturevalue("bigquery_dataset"))
    else:
        made = MemorySink()
    yield made
    made.close()


MERGED_SQL = (
    "SELECT model, CAST({epoch} AS BIGINT) AS start, records, calls, blocked, input_tokens, "
    "output_tokens, latency_p95_ms FROM {ds}window_metrics_merged ORDER BY model, start"
)


def merged_view(sink: Sink) -> list[tuple[Any, ...]]:
    """`window_metrics_merged` as an analyst reads it (the fake: the engine's own merge)."""
    if isinstance(sink, MemorySink):
        out = []
        for (model, start), w in sink.merged().items():
            p95 = LATENCY.quantiles(merged_state(sink, model, start)["latency"])
            s = w.sums
            out.append(
                (model, start, w.records, s["calls"], s["blocked"], s["input_tokens"],
                 s["output_tokens"], p95["p95_ms"])
            )  # fmt: skip
        return out
    if isinstance(sink, DuckDBSink):
        sql = MERGED_SQL.format(epoch="epoch(window_start)", ds="")
        return [tuple(r) for r in sink.query(sql)]
    sql = MERGED_SQL.format(epoch="UNIX_SECONDS(window_start)", ds="{ds}.")
    return [tuple(r.values()) for r in sink.query(sql)]  # type: ignore[attr-defined]


def same_view(a: list[tuple[Any, ...]], b: list[tuple[Any, ...]]) -> bool:
    def norm(row: tuple[Any, ...]) -> tuple[Any, ...]:
        return tuple(round(float(v), 6) if isinstance(v, float | int) else v for v in row)

    return [norm(r) for r in a] == [norm(r) for r in b]


# -- the contract ---------------------------------------------------------------------------------


def test_checkpoint_round_trips_states_ids_verdicts_alert_state_and_references(sink: Sink) -> None:
    a, b = batch("a", 10, blocked=5), batch("b", 4, model="b", second=70)
    spike = detection()
    alert_state = tracker_rows(spike)
    reference = DETECTORS["latency"].to_row(states_of(a)["latency"])
    sink.write_checkpoint(
        Checkpoint(
            writer_id="w1",
            sequence=0,
            partials=[partial(a), partial(b, model="b", start=S0 + 60)],
            request_ids=[*ids(a), *ids(b, model="b", start=S0 + 60)],
            detections=[spike],
            alert_state=alert_state,
            references={("a", "latency"): reference},
            frontier=S0 + 75.0,
        )
    )

    stored = sink.load_window("a", S0)
    assert stored.request_ids == frozenset(a.request_id.tolist())
    assert stored.records == 10
    assert stored.evaluated  # a verdict is stored for it
    assert merged_state(sink, "a", S0) == states_of(a)
    other = sink.load_window("b", S0 + 60)
    assert (other.records, other.evaluated) == (4, False)
    assert other.request_ids == frozenset(b.request_id.tolist())
    nothing = sink.load_window("a", S0 + 600)
    assert (nothing.records, nothing.request_ids, nothing.evaluated) == (0, frozenset(), False)
    assert list(nothing.partial_states) == []

    assert sink.newest_window_start("a") == S0
    assert sink.newest_window_start("b") == S0 + 60
    assert sink.newest_window_start("c") is None
    assert list(sink.models()) == ["a", "b"]
    assert list(sink.unevaluated_windows(10)) == [("b", S0 + 60)]
    assert list(sink.unevaluated_windows(10, since=S0 + 60)) == [("b", S0 + 60)]
    assert list(sink.unevaluated_windows(10, since=S0 + 61)) == []
    # what an ingest replica asks before each checkpoint: only the judged of the windows asked
    asked = [("a", S0), ("b", S0 + 60), ("b", S0), ("a", S0 + 600)]
    assert sink.judged_windows(asked) == {("a", S0)}
    assert sink.judged_windows([("b", S0 + 60)]) == frozenset()
    assert sink.judged_windows([]) == frozenset()
    recent = sink.load_recent_windows("b", S0, S0 + 120)
    assert list(recent) == [S0 + 60]
    assert sink.load_recent_windows("b", S0, S0 + 60) == {}
    assert sink.load_frontier() == S0 + 75.0

    assert list(sink.load_alert_state()) == alert_state
    restored = AlertTracker.from_rows(sink.load_alert_state(), AlertingConfig())
    assert [i.dedup_key for i in restored.open_incidents()] == [
        "lookout:a:safety:block_rate_above_ceiling"
    ]
    assert restored.observe(detection(start=S0 + 60)) == []  # still firing: no second page
    loaded = sink.load_references()
    assert dict(loaded) == {("a", "latency"): reference}
    assert DETECTORS["latency"].from_row(loaded[("a", "latency")]) == states_of(a)["latency"]
    assert sink.writable()


def test_partial_rows_of_several_writers_merge_to_the_one_pass_state(sink: Sink) -> None:
    whole = batch("r", 30, blocked=7)
    parts = [
        whole.take(np.array(rows))
        for rows in ([0, 3, 4, 9], list(range(10, 30)), [1, 2, 5, 6, 7, 8])
    ]
    for sequence, (writer, part) in enumerate(zip(("w1", "w2", "w1"), parts, strict=True)):
        sink.write_checkpoint(
            Checkpoint(writer, sequence, partials=[partial(part)], request_ids=ids(part))
        )
    stored = sink.load_window("a", S0)
    assert len(stored.partial_states) == 3
    assert stored.records == 30
    assert stored.request_ids == frozenset(whole.request_id.tolist())
    assert merged_state(sink, "a", S0) == states_of(whole)
    # what an ingest writer sizes its sample share by: one cheap read for many windows
    wanted = [("a", S0), ("a", S0 + 60), ("b", S0)]
    assert sink.stored_records(wanted) == {("a", S0): 30}
    # the merged view: sums of the parts, and the p95 of the merged histogram
    [row] = merged_view(sink)
    p95 = LATENCY.quantiles(states_of(whole)["latency"])["p95_ms"]
    assert row[:7] == ("a", S0, 30, 30, 7, sum(100 + i for i in range(30)),
                       sum(50 + i for i in range(30)))  # fmt: skip
    assert math.isclose(row[7], p95, rel_tol=1e-9)


def test_the_same_checkpoint_written_twice_changes_nothing(sink: Sink) -> None:
    first, second = batch("x", 12, blocked=3), batch("y", 7, second=20)
    sink.write_checkpoint(Checkpoint("w1", 0, [partial(first)], ids(first)))
    again = Checkpoint(
        "w1", 1, [partial(second)], ids(second), [detection()], alert_state=tracker_rows()
    )
    sink.write_checkpoint(again)
    view = merged_view(sink)
    window = sink.load_window("a", S0)
    sink.write_checkpoint(again)  # a retried write or a replayed checkpoint
    assert same_view(merged_view(sink), view)
    replayed = sink.load_window("a", S0)
    assert (replayed.records, replayed.request_ids) == (window.records, window.request_ids)
    assert merged_state(sink, "a", S0) == states_of(batch("x", 12, blocked=3)) | {
        name: DETECTORS[name].merge(states_of(first)[name], states_of(second)[name])
        for name in DETECTORS
    }
    assert view[0][2:5] == (19, 19, 3)


def unserialisable_detection_details() -> Checkpoint:
    return Checkpoint("w1", 1, detections=[detection(start=S0 + 60, broken=object())])


def unserialisable_reference() -> Checkpoint:
    return Checkpoint("w1", 1, references={("a", "tokens"): {"calls": {1, 2}}})


@pytest.mark.parametrize("failure", [unserialisable_detection_details, unserialisable_reference])
def test_a_checkpoint_that_fails_midway_leaves_nothing_behind(sink: Sink, failure: Any) -> None:
    first = batch("first", 5)
    good_state = tracker_rows(detection())
    sink.write_checkpoint(Checkpoint("w1", 0, [partial(first)], ids(first), alert_state=good_state))
    late = batch("late", 8, second=65)
    broken: Checkpoint = failure()
    checkpoint = Checkpoint(
        "w1",
        1,
        partials=[partial(late, start=S0 + 60), partial(first, start=S0 + 120)],
        request_ids=[*ids(late, start=S0 + 60), *ids(first, start=S0 + 120)],
        detections=broken.detections,
        alert_state=[],
        references=broken.references,
    )
    with pytest.raises(TypeError):
        sink.write_checkpoint(checkpoint)

    assert sink.newest_window_start("a") == S0
    for start in (S0 + 60, S0 + 120):
        stored = sink.load_window("a", start)
        assert (stored.records, stored.request_ids, stored.evaluated) == (0, frozenset(), False)
    assert list(sink.load_alert_state()) == good_state
    assert dict(sink.load_references()) == {}

    # the sink is usable afterwards: the retried (fixed) checkpoint lands whole
    sink.write_checkpoint(
        Checkpoint("w1", 1, checkpoint.partials, checkpoint.request_ids, [detection(start=S0 + 60)])
    )
    assert sink.load_window("a", S0 + 60).records == 8
    assert sink.load_window("a", S0 + 60).evaluated
    assert sink.newest_window_start("a") == S0 + 120


def test_alert_state_is_replaced_when_given_and_kept_when_not(sink: Sink) -> None:
    sink.write_checkpoint(Checkpoint("w1", 0, alert_state=tracker_rows(detection())))
    sink.write_checkpoint(Checkpoint("w1", 1, detections=[detection(start=S0 + 60)]))
    assert len(sink.load_alert_state()) == len(tracker_rows(detection()))
    sink.write_checkpoint(Checkpoint("w1", 2, alert_state=[]))
    assert list(sink.load_alert_state()) == []


def test_references_are_upserted_per_model_and_detector(sink: Sink) -> None:
    latency = DETECTORS["latency"]
    old, new = batch("old", 3), batch("new", 9)
    sink.write_checkpoint(
        Checkpoint(
            "w1", 0, references={("a", "latency"): latency.to_row(states_of(old)["latency"])}
        )
    )
    sink.write_checkpoint(
        Checkpoint(
            "w1",
            1,
            references={
                ("a", "latency"): latency.to_row(states_of(new)["latency"]),
                ("b", "latency"): latency.to_row(states_of(old)["latency"]),
            },
        )
    )
    loaded = sink.load_references()
    assert latency.from_row(loaded[("a", "latency")]) == states_of(new)["latency"]
    assert latency.from_row(loaded[("b", "latency")]) == states_of(old)["latency"]
    assert len(loaded) == 2


def test_baseline_acceptances_round_trip_once(sink: Sink) -> None:
    accept = BaselineAccept(
        "a",
        "safety",
        incident_started_at=datetime.fromtimestamp(S0, tz=UTC),
        accepted_at=datetime.fromtimestamp(S0 + 3600, tz=UTC),
        accepted_by="oncall",
    )
    checkpoint = Checkpoint("cli", 0, baseline_accepts=[accept])
    sink.write_checkpoint(checkpoint)
    sink.write_checkpoint(checkpoint)  # the same acceptance written again
    assert list(sink.load_baseline_accepts()) == [accept]


def test_stored_alerts_names_each_state_change_the_alerts_table_holds(sink: Sink) -> None:
    """What a restarted evaluator asks to page for alerts its predecessor stored and never
    sent: the same incident firing, escalating a window later, then resolved are three."""
    tracker = AlertTracker(AlertingConfig())
    firing = tracker.observe(detection("a", S0))[0]
    later = firing.model_copy(update={"window_end": firing.window_end + timedelta(minutes=1)})
    resolved = firing.model_copy(update={"status": "resolved"})
    other = firing.model_copy(update={"dedup_key": "lookout:b:safety:block_rate_above_ceiling"})
    sink.write_checkpoint(Checkpoint("w", 0, alerts=[firing]))
    sink.write_checkpoint(Checkpoint("w", 1, alerts=[resolved]))
    asked = [firing, later, resolved, other]
    assert sink.stored_alerts(asked) == {firing.change_key, resolved.change_key}
    assert sink.stored_alerts([]) == frozenset()


@pytest.mark.parametrize("kind", SINKS)
def test_the_frontier_is_the_slowest_writer_that_still_reports(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """A window closes for the evaluator only when every replica still folding has passed it;
    a replica that stopped reporting (idle, stopped, scaled down) stops holding it open."""
    now = [datetime(2026, 1, 5, 7, 0, tzinfo=UTC)]

    def clock() -> datetime:
        return now[0]

    made: Sink
    if kind == "duckdb":
        made = DuckDBSink(tmp_path / "lookout.duckdb", clock=clock)
    elif kind == "bigquery":
        from worker.sinks.bigquery_sink import BigQuerySink

        emulator = request.getfixturevalue("bigquery_emulator")
        made = BigQuerySink(
            emulator.project,
            request.getfixturevalue("bigquery_dataset"),
            client=emulator.client(),
            write_timeout=20,
            clock=clock,
        )
    else:
        made = MemorySink(clock=lambda: now[0].timestamp())
    try:
        assert made.writer_frontier("fast") is None
        assert not made.any_writer_progress()
        made.write_checkpoint(Checkpoint("fast", 0, frontier=S0 + 300.0))
        assert made.any_writer_progress()
        made.write_checkpoint(Checkpoint("slow", 0, frontier=S0 + 100.0))
        now[0] += timedelta(seconds=30)
        made.write_checkpoint(Checkpoint("fast", 1, frontier=S0 + 400.0))
        # what a replica restarted under the same id reads: its predecessor's last report
        assert made.writer_frontier("fast") == S0 + 400.0
        assert made.writer_frontier("slow") == S0 + 100.0
        assert made.load_frontier(60.0) == S0 + 100.0  # the slow replica still counts
        # what a replica asks before refreshing its report: is another one behind it?
        assert made.load_frontier(60.0, excluding="slow") == S0 + 400.0
        assert made.load_frontier(60.0, excluding="fast") == S0 + 100.0
        # what a replica the evaluator left out reads when it is back: the furthest of the others
        assert made.newest_frontier(excluding="slow") == S0 + 400.0
        assert made.newest_frontier(excluding="fast") == S0 + 100.0
        assert made.newest_frontier(excluding="nobody") == S0 + 400.0
        now[0] += timedelta(seconds=40)
        made.write_checkpoint(Checkpoint("fast", 2, frontier=S0 + 500.0))
        # "slow" last reported 70 s before the newest report: it no longer holds windows open
        assert made.load_frontier(60.0) == S0 + 500.0
        assert made.load_frontier(120.0) == S0 + 100.0
        assert made.load_frontier(60.0, excluding="fast") is None
        # "slow" restarted under its id before checkpointing reports its start as it did: the
        # same checkpoint, yet it counts from now (on BigQuery a new process is a new sink
        # incarnation, and its rows new rows; DuckDB's and the memory sink's dedup see it)
        restarted = made
        if kind == "bigquery":
            restarted = BigQuerySink(
                emulator.project,
                request.getfixturevalue("bigquery_dataset"),
                client=emulator.client(),
                write_timeout=20,
                clock=clock,
            )
        restarted.write_checkpoint(Checkpoint("slow", 0, frontier=S0 + 100.0))
        if restarted is not made:
            restarted.close()
        assert made.load_frontier(60.0) == S0 + 100.0
    finally:
        made.close()
