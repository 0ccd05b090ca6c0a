"""Split mode: an ingest replica that still holds a window open after the evaluator judged it
(it stopped reporting for a while, so the evaluator went on without it) learns of the verdict
at its next checkpoint: what it folded since then is written as late records, and records other
replicas stored for the window are duplicates from then on.

Found by an SRE's trial on the emulators: publishing an hour a second time added 1,455 records
to windows judged minutes before, with `late_records` 0 and no log line, so the analysts'
`model_windows` counted more than was judged.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import UTC, datetime

import pytest

from alerts.state import AlertTracker
from detectors.registry import build_detectors
from schemas.alert_config import AlertingConfig
from schemas.batch import LogBatch
from worker.engine import Engine, EngineSettings
from worker.evaluator import WindowEvaluator
from worker.sources.simulator import SimulationConfig, simulate_batches
from worker.testing import FakeClock, MemorySink

T0 = datetime(2026, 1, 5, 6, 0, tzinfo=UTC)
NAMES = ("safety", "latency", "tokens")
ACTIVE = 95.0  # the evaluator's `writer_active_seconds` for a 60 s ack deadline
MINUTE_5 = int(T0.timestamp()) + 300


def engine(sink: MemorySink, clock: FakeClock, *, evaluate: bool, writer: str) -> Engine:
    detectors = build_detectors(dict.fromkeys(NAMES))
    evaluator = WindowEvaluator(detectors, 60, AlertTracker.from_rows([], AlertingConfig()))
    settings = EngineSettings(
        allowed_lateness_seconds=30,
        writer_id=writer,
        evaluate=evaluate,
        writer_active_seconds=ACTIVE,
    )
    return Engine(settings, detectors, sink, evaluator, now=clock, wall_clock=None)


def ten_second_batches() -> list[LogBatch]:
    """Twenty minutes of one model, six batches a window: index 30-35 is minute 5."""
    sim = SimulationConfig(
        start=T0, hours=1 / 3, calls_per_minute=120, embedding_fraction=0.0, models=("chat",)
    )
    return list(simulate_batches(sim, seconds_per_batch=10))


def ingest_then_judge(
    replica: Engine | None, batch: LogBatch, evaluator: Engine, sink: MemorySink, clock: FakeClock
) -> None:
    """One poll of `replica` (none: a poll that went to a replica not in the test), a
    checkpoint, and a second later the evaluator's round."""
    if replica is not None:
        replica.feed(batch)
        replica.tick()
        assert replica.checkpoint()
    clock.advance(1.0)
    evaluator.judge_stored(sink.load_frontier(ACTIVE))
    assert evaluator.checkpoint()


def minute_5(sink: MemorySink) -> tuple[int, int]:
    window = sink.merged()[("chat", MINUTE_5)]
    return window.records, window.late_records


def test_a_replica_learns_its_open_window_was_judged_and_counts_what_follows_as_late(
    caplog: pytest.LogCaptureFixture,
) -> None:
    batches = ten_second_batches()
    clock = FakeClock(start=1_000.0)
    sink = MemorySink(clock=clock)
    evaluator = engine(sink, clock, evaluate=True, writer="evaluator")
    behind = engine(sink, clock, evaluate=False, writer="ingest-b")
    ahead = engine(sink, clock, evaluate=False, writer="ingest-a")

    behind.feed(batches[30])  # it opens minute 5, reports, then gets nothing for a while
    behind.tick()
    assert behind.checkpoint()
    clock.advance(ACTIVE + 10.0)  # so the evaluator stops waiting for it

    for i, batch in enumerate(batches):  # the other replica takes the rest of the stream
        ingest_then_judge(ahead if i != 30 else None, batch, evaluator, sink, clock)
    judged = {int(d.window_start.timestamp()) for d in sink.detections()}
    assert MINUTE_5 in judged, "the evaluator went on without the replica behind"
    assert ("chat", MINUTE_5) in behind._windows, "the replica behind still holds minute 5"
    records_judged, _ = minute_5(sink)

    # the hour is published a second time: the replica behind gets minute 5 again
    republished = batches[31]
    behind.feed(republished)
    behind.tick()
    assert behind.checkpoint()
    assert behind.stats.late == len(republished)
    assert minute_5(sink) == (records_judged + len(republished), len(republished))

    # it has read the ids the other replica stored: the rest of minute 5 is not counted again
    with caplog.at_level(logging.WARNING, logger="worker.engine"):
        for batch in batches[32:36]:
            behind.feed(batch)
            behind.tick()
        assert behind.finish(end_of_input=False)
    assert behind.stats.duplicates == sum(len(b) for b in batches[32:36])
    assert minute_5(sink) == (records_judged + len(republished), len(republished))
    said = [r.getMessage() for r in caplog.records]
    assert any(
        f"{len(republished)} records arrived after their window was judged" in line for line in said
    ), said


def test_a_late_record_for_a_window_the_replica_closed_and_still_holds_is_late() -> None:
    """Its own watermark passed the window, the evaluator judged it, and the replica has not
    forgotten it yet (it keeps a window one more window's length): a record that comes then
    was counted as on time, in the minute or so before the replica dropped the window."""
    batches = ten_second_batches()
    clock = FakeClock(start=1_000.0)
    sink = MemorySink(clock=clock)
    evaluator = engine(sink, clock, evaluate=True, writer="evaluator")
    replica = engine(sink, clock, evaluate=False, writer="ingest-a")
    late = batches[31]  # minute 5, held up somewhere upstream
    for i, batch in enumerate(batches[:42]):  # up to 6:50 of event time
        ingest_then_judge(replica if i != 31 else None, batch, evaluator, sink, clock)
    assert MINUTE_5 in {int(d.window_start.timestamp()) for d in sink.detections()}
    assert ("chat", MINUTE_5) in replica._windows

    ingest_then_judge(replica, late, evaluator, sink, clock)

    assert replica.stats.late == len(late)
    assert minute_5(sink)[1] == len(late)


class AskCountingSink(MemorySink):
    def __init__(self, clock: FakeClock) -> None:
        super().__init__(clock=clock)
        self.asked: list[Sequence[tuple[str, int]]] = []

    def judged_windows(self, windows: Sequence[tuple[str, int]]) -> frozenset[tuple[str, int]]:
        self.asked.append(windows)
        return super().judged_windows(windows)


def test_replicas_keeping_up_with_the_stream_write_no_late_records_and_ask_nothing() -> None:
    """While the evaluator waits for a replica, what it folds into windows its own watermark
    has not passed cannot have been judged: asking every checkpoint would be one BigQuery
    query every 5 s for each replica."""
    batches = ten_second_batches()
    clock = FakeClock(start=1_000.0)
    sink = AskCountingSink(clock)
    evaluator = engine(sink, clock, evaluate=True, writer="evaluator")
    replicas = [engine(sink, clock, evaluate=False, writer=f"ingest-{i}") for i in range(2)]
    for i, batch in enumerate(batches):
        ingest_then_judge(replicas[i % 2], batch, evaluator, sink, clock)
    assert sum(r.stats.late for r in replicas) == 0
    assert sum(w.late_records for w in sink.merged().values()) == 0
    assert sink.total_records() == sum(len(b) for b in batches)
    assert sink.asked == []
