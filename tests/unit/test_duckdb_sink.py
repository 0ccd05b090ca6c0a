"""The sink contract, run against DuckDB (the embedded default) and the in-memory fake alike.

Running one contract against both proves the fake the engine tests rely on behaves like the
real sink: checkpoints are atomic, states come back exactly, request ids and the evaluated flag
survive, alert state and references round-trip. DuckDB-only tests then check what an analyst
opening the file sees (`window_metrics_merged`) and that replays and restarts leave it unchanged.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pytest

from alerts.state import AlertTracker
from detectors.registry import build_detectors
from schemas.alert_config import AlertingConfig
from schemas.batch import LogBatch
from schemas.config import DetectorsConfig, DuckDBSinkConfig, EngineConfig, LookoutConfig
from schemas.detection import Detection
from schemas.prediction_log import PredictionLog
from worker.cli.pipeline import build_pipeline
from worker.sink import Checkpoint, PartialRow, Sink
from worker.sinks.duckdb_sink import DuckDBSink
from worker.sources.simulator import SimulationConfig, simulate_batches
from worker.testing import MemorySink

T0 = datetime(2026, 1, 5, 6, 0, tzinfo=UTC)
S0 = int(T0.timestamp())
DETECTORS = build_detectors({"safety": None, "latency": None, "tokens": None})


def batch(
    prefix: str, n: int, *, model: str = "a", second: float = 5, blocked: int = 0
) -> LogBatch:
    return LogBatch.from_logs(
        PredictionLog(
            request_id=f"{prefix}-{i}",
            timestamp=T0 + timedelta(seconds=second),
            model=model,
            latency_ms=100.0 + 10 * i,
            input_tokens=100 + i,
            output_tokens=50 + i,
            blocked=i < blocked,
            block_stage="response" if i < blocked else None,
            block_reason="SAFETY" if i < blocked else None,
        )
        for i in range(n)
    )


def states_of(logs: LogBatch) -> dict[str, Any]:
    return {name: d.add(d.empty(), logs) for name, d in DETECTORS.items()}


def rows_of(states: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {name: DETECTORS[name].to_row(state) for name, state in states.items()}


def partial(logs: LogBatch, model: str = "a", start: int = S0, late: int = 0) -> PartialRow:
    return PartialRow(
        model=model,
        window_start=start,
        window_end=start + 60,
        records=len(logs),
        late_records=late,
        states=rows_of(states_of(logs)),
    )


def ids(logs: LogBatch, model: str = "a", start: int = S0) -> list[tuple[str, int, str]]:
    return [(model, start, rid) for rid in logs.request_id.tolist()]


def detection(model: str = "a", start: int = S0, **details: Any) -> Detection:
    return Detection(
        detector="safety",
        model=model,
        window_start=datetime.fromtimestamp(start, tz=UTC),
        window_end=datetime.fromtimestamp(start + 60, tz=UTC),
        verdict="alert",
        condition="block_rate_above_ceiling",
        severity="critical",
        value=0.5,
        threshold=0.25,
        sample_size=10,
        reason="half the calls blocked",
        details={"block_rate": 0.5, **details},
    )


def tracker_rows(*detections: Detection) -> list[dict[str, Any]]:
    tracker = AlertTracker(AlertingConfig())
    for d in detections:
        tracker.observe(d)
    return tracker.to_rows()


@pytest.fixture(params=["duckdb", "memory"])
def sink(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Sink]:
    made: Sink = (
        DuckDBSink(tmp_path / "lookout.duckdb") if request.param == "duckdb" else MemorySink()
    )
    yield made
    made.close()


def merged_state(sink: Sink, model: str, start: int) -> dict[str, Any]:
    stored = sink.load_window(model, start)
    out = {name: d.empty() for name, d in DETECTORS.items()}
    for row in stored.partial_states:
        for name, d in DETECTORS.items():
            out[name] = d.merge(out[name], d.from_row(row[name]))
    return out


# -- the contract, for every sink ----------------------------------------------------------------


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
    recent = sink.load_recent_windows("b", S0, S0 + 120)
    assert list(recent) == [S0 + 60]
    assert sink.load_recent_windows("b", S0, S0 + 60) == {}

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
    # the failing part comes last: the partial rows, ids and alert state before it are written
    # first by a sink that writes in order, and must be rolled back
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


# -- DuckDB: what an analyst opening the file sees ---------------------------------------------


def query(path: Path, sql: str) -> list[tuple[Any, ...]]:
    """Read the file the way an analyst would, after the worker closed it."""
    with duckdb.connect(str(path), read_only=True) as con:
        return con.execute(sql).fetchall()


MERGED = (
    "SELECT model, epoch(window_start)::BIGINT, records, late_records, partial_rows, calls, "
    "blocked, latency_count, latency_sum_ms, token_calls FROM window_metrics_merged ORDER BY 1, 2"
)


def test_merged_view_sums_the_partial_rows_of_every_writer(tmp_path: Path) -> None:
    path = tmp_path / "lookout.duckdb"
    sink = DuckDBSink(path)
    whole = batch("r", 20, blocked=4)
    first, second = whole.take(np.arange(12)), whole.take(np.arange(12, 20))
    sink.write_checkpoint(Checkpoint("w1", 0, [partial(first)], ids(first)))
    sink.write_checkpoint(Checkpoint("w2", 0, [partial(second, late=3)], ids(second)))
    sink.close()

    latency_sum = float(sum(100 + 10 * i for i in range(20)))
    assert query(path, MERGED) == [("a", S0, 20, 3, 2, 20, 4, 20, latency_sum, 20)]
    [(rate,)] = query(path, "SELECT block_rate FROM window_metrics_merged")
    assert rate == pytest.approx(0.2)


def test_checkpoints_survive_closing_and_reopening_the_file(tmp_path: Path) -> None:
    path = tmp_path / "lookout.duckdb"
    sink = DuckDBSink(path)
    logs = batch("r", 6, blocked=2)
    sink.write_checkpoint(
        Checkpoint(
            "w1",
            0,
            [partial(logs)],
            ids(logs),
            [detection()],
            alert_state=tracker_rows(detection()),
        )
    )
    sink.close()
    assert not sink.writable()
    with pytest.raises(duckdb.Error):
        sink.write_checkpoint(Checkpoint("w1", 1, alert_state=[]))

    reopened = DuckDBSink(path)
    stored = reopened.load_window("a", S0)
    assert (stored.records, stored.evaluated) == (6, True)
    assert stored.request_ids == frozenset(logs.request_id.tolist())
    assert merged_state(reopened, "a", S0) == states_of(logs)
    assert list(reopened.load_alert_state()) == tracker_rows(detection())
    reopened.close()


def test_a_constraint_violation_midway_rolls_back_the_whole_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "lookout.duckdb"
    sink = DuckDBSink(path)
    good = batch("good", 5)
    bad = PartialRow(
        model=None,  # type: ignore[arg-type]  # NOT NULL in window_metrics
        window_start=S0 + 60,
        window_end=S0 + 120,
        records=1,
        late_records=0,
        states=rows_of(states_of(batch("x", 1))),
    )
    with pytest.raises(duckdb.ConstraintException):
        sink.write_checkpoint(
            Checkpoint("w1", 0, [partial(good), bad], ids(good), alert_state=[{"kind": "x"}])
        )
    assert sink.newest_window_start("a") is None
    assert sink.load_window("a", S0).request_ids == frozenset()
    assert list(sink.load_alert_state()) == []
    sink.write_checkpoint(Checkpoint("w1", 0, [partial(good)], ids(good)))
    sink.close()
    assert query(path, "SELECT count(*), sum(records) FROM window_metrics") == [(1, 5)]
    assert query(path, "SELECT count(*) FROM window_request_ids") == [(5,)]


def test_rewriting_a_verdict_replaces_it(tmp_path: Path) -> None:
    path = tmp_path / "lookout.duckdb"
    sink = DuckDBSink(path)
    sink.write_checkpoint(Checkpoint("w1", 0, detections=[detection()]))
    sink.write_checkpoint(Checkpoint("w2", 0, detections=[detection()]))
    sink.close()
    assert query(path, "SELECT count(*) FROM detections") == [(1,)]


def pipeline_config(path: Path, writer: str = "w1") -> LookoutConfig:
    return LookoutConfig(
        sink=DuckDBSinkConfig(path=str(path)),
        engine=EngineConfig(writer_id=writer),
        detectors=DetectorsConfig(enabled=("safety", "latency", "tokens")),
    )


def simulated(minutes: int) -> list[LogBatch]:
    config = SimulationConfig(
        start=T0,
        hours=minutes / 60,
        models=("gemini-1.5-flash", "text-bison"),
        calls_per_minute=120,
        embedding_fraction=0.0,
    )
    return list(simulate_batches(config, seconds_per_batch=20))


def replay(path: Path, batches: list[LogBatch]) -> tuple[int, int]:
    """A `lookout replay` of the batches: a fresh process on the file; (counted, duplicates)."""
    pipeline = build_pipeline(pipeline_config(path), alert_stream=None)
    for b in batches:
        pipeline.engine.feed(b)
        pipeline.engine.tick()
    assert pipeline.engine.finish(end_of_input=True)
    pipeline.close()
    return pipeline.engine.stats.records, pipeline.engine.stats.duplicates


def test_replaying_the_same_stream_into_the_same_file_changes_no_number(tmp_path: Path) -> None:
    path = tmp_path / "lookout.duckdb"
    batches = simulated(minutes=8)
    total = sum(len(b) for b in batches)
    assert replay(path, batches) == (total, 0)
    merged = query(path, MERGED)
    detections = query(path, "SELECT model, detector, epoch(window_start), verdict FROM detections")
    alerts = query(path, "SELECT count(*) FROM alerts")
    assert sum(row[5] for row in merged) == total  # every call counted, in `calls`

    assert replay(path, batches) == (0, total)  # a second run counts nothing new
    assert query(path, MERGED) == merged
    assert sorted(
        query(path, "SELECT model, detector, epoch(window_start), verdict FROM detections")
    ) == sorted(detections)
    assert query(path, "SELECT count(*) FROM alerts") == alerts

    assert replay(path, batches[3:7]) == (0, sum(len(b) for b in batches[3:7]))
    assert query(path, MERGED) == merged
