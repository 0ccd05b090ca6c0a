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
import re
import threading
from collections.abc import Sequence
from datetime import UTC, datetime

import pytest

from alerts.state import AlertTracker
from detectors.registry import build_detectors
from schemas.alert_config import AlertingConfig
from schemas.batch import LogBatch
from tests.sink_cases import S0, detection
from worker.engine import Engine, EngineSettings
from worker.evaluator import WindowEvaluator
from worker.judged_elsewhere import late_where_judged
from worker.sink import Checkpoint, PartialRow, SliceRow
from worker.sources.simulator import SimulationConfig, simulate_batches
from worker.testing import FakeClock, MemorySink

T0 = datetime(2026, 1, 5, 6, 0, tzinfo=UTC)
NAMES = ("safety", "latency", "tokens")
ACTIVE = 95.0  # the evaluator's `writer_active_seconds` for a 60 s ack deadline
MINUTE_5 = int(T0.timestamp()) + 300


def engine(
    sink: MemorySink, clock: FakeClock, *, evaluate: bool, writer: str, background: bool = False
) -> Engine:
    detectors = build_detectors(dict.fromkeys(NAMES))
    evaluator = WindowEvaluator(detectors, 60, AlertTracker.from_rows([], AlertingConfig()))
    settings = EngineSettings(
        allowed_lateness_seconds=30,
        writer_id=writer,
        evaluate=evaluate,
        writer_active_seconds=ACTIVE,
        background_checkpoints=background,
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


def window(sink: MemorySink, minute: int) -> tuple[int, int]:
    """(records, late_records) stored for that minute of the stream."""
    merged = sink.merged()[("chat", MINUTE_5 + (minute - 5) * 60)]
    return merged.records, merged.late_records


def minute_5(sink: MemorySink) -> tuple[int, int]:
    return window(sink, 5)


def poll(replica: Engine, *batches: LogBatch) -> None:
    for batch in batches:
        replica.feed(batch)
        replica.tick()
    assert replica.checkpoint()


def test_a_replica_learns_its_open_windows_were_judged_and_counts_what_follows_as_late(
    caplog: pytest.LogCaptureFixture,
) -> None:
    batches = ten_second_batches()
    clock = FakeClock(start=1_000.0)
    sink = MemorySink(clock=clock)
    evaluator = engine(sink, clock, evaluate=True, writer="evaluator")
    behind = engine(sink, clock, evaluate=False, writer="ingest-b")
    ahead = engine(sink, clock, evaluate=False, writer="ingest-a")

    caplog.set_level(logging.WARNING, logger="worker.engine")
    # it opens minutes 5 and 6, reports, then gets nothing for a while (paused, or idle)
    poll(behind, batches[30], batches[36])
    clock.advance(ACTIVE + 10.0)  # so the evaluator stops waiting for it

    for i, batch in enumerate(batches):  # the other replica takes the rest of the stream
        ingest_then_judge(ahead if i not in (30, 36) else None, batch, evaluator, sink, clock)
    judged = {int(d.window_start.timestamp()) for d in sink.detections()}
    assert {MINUTE_5, MINUTE_5 + 60} <= judged, "the evaluator went on without the replica"
    assert ("chat", MINUTE_5) in behind._windows, "the replica behind still holds minute 5"
    assert ("chat", MINUTE_5 + 60) in behind._windows, "... and minute 6"
    before = {minute: window(sink, minute) for minute in (5, 6, 8)}

    # the hour is published a second time: the replica behind gets minute 5 again
    republished = batches[31]
    poll(behind, republished)
    assert behind.stats.late == len(republished)
    assert minute_5(sink) == (before[5][0] + len(republished), len(republished))

    # it has reported again, and is counted: a copy of minute 6, which it held all along and
    # whose verdict came while it was left out, is late too (it was on time, in an SRE's trial)
    poll(behind, batches[37])
    assert window(sink, 6) == (before[6][0] + len(batches[37]), len(batches[37]))
    # minute 8, which it never held: read from the sink with its verdict and ids, not counted
    poll(behind, batches[49])
    assert window(sink, 8) == before[8]
    assert behind.stats.duplicates == len(batches[49])

    # it has read the ids the other replica stored: the rest of minute 5 is not counted again
    for batch in batches[32:36]:
        behind.feed(batch)
        behind.tick()
    assert behind.finish(end_of_input=False)
    assert behind.stats.duplicates == len(batches[49]) + sum(len(b) for b in batches[32:36])
    assert minute_5(sink) == (before[5][0] + len(republished), len(republished))
    assert behind.stats.late == len(republished) + len(batches[37])
    said = [r.getMessage() for r in caplog.records]
    logged = [re.match(r"(\d+) records arrived after their window was judged", s) for s in said]
    assert sum(int(m.group(1)) for m in logged if m) == behind.stats.late, said


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


def judged_minutes(sink: MemorySink) -> set[int]:
    return {int(d.window_start.timestamp()) for d in sink.detections()}


def left_out_while_the_stream_went_on(
    sink: MemorySink, clock: FakeClock, batches: list[LogBatch], held: range, **options: bool
) -> tuple[Engine, Engine]:
    """(the evaluator, a replica that folded `batches[held.start]`, then was left out while
    another replica took every batch outside `held` and the evaluator judged them)."""
    evaluator = engine(sink, clock, evaluate=True, writer="evaluator")
    behind = engine(sink, clock, evaluate=False, writer="ingest-b", **options)
    ahead = engine(sink, clock, evaluate=False, writer="ingest-a")
    poll(behind, batches[held.start])
    clock.advance(ACTIVE + 10.0)
    for i, batch in enumerate(batches):
        ingest_then_judge(ahead if i not in held else None, batch, evaluator, sink, clock)
    return evaluator, behind


def test_a_replica_catching_up_after_it_was_left_out_counts_late_what_follows_a_verdict() -> None:
    """Once the evaluator went on without a replica, its watermark stays ahead of that
    replica's even after the replica reports again: windows the replica opens while catching
    up can be judged a round later (a reviewer's run: 359 such records, 94 counted late)."""
    batches = ten_second_batches()
    clock = FakeClock(start=1_000.0)
    sink = MemorySink(clock=clock)
    evaluator, behind = left_out_while_the_stream_went_on(sink, clock, batches, range(30, 60))
    after_verdict = 0
    for batch in batches[31:60]:  # minutes 5-9 reach it only now; it reports every 5 s
        judged = judged_minutes(sink)
        poll(behind, batch)
        after_verdict += len(batch) if int(batch.timestamp.min()) // 60 * 60 in judged else 0
        clock.advance(5.0)
        evaluator.judge_stored(sink.load_frontier(ACTIVE))
        assert evaluator.checkpoint()
    assert after_verdict > 100  # the case this is about
    late = sum(w.late_records for (_, start), w in sink.merged().items() if start < MINUTE_5 + 300)
    assert late == behind.stats.late == after_verdict


def version(name: str, records: int) -> SliceRow:
    return SliceRow(model_version=name, tenant=None, records=records, late_records=0, states={})


class HeldWriteSink(MemorySink):
    """A sink whose next checkpoint write waits until released: folding goes on meanwhile."""

    def __init__(self, clock: FakeClock) -> None:
        super().__init__(clock=clock)
        self.hold = False
        self.writing = threading.Event()
        self.release = threading.Event()

    def write_checkpoint(self, checkpoint: Checkpoint) -> None:
        if self.hold:
            self.writing.set()
            assert self.release.wait(10)
        super().write_checkpoint(checkpoint)


def test_records_folded_while_the_write_that_finds_the_verdict_is_on_its_way_are_late(
    caplog: pytest.LogCaptureFixture,
) -> None:
    batches = ten_second_batches()
    clock = FakeClock(start=1_000.0)
    sink = HeldWriteSink(clock)
    _, behind = left_out_while_the_stream_went_on(
        sink, clock, batches, range(30, 31), background=True
    )
    records_judged = minute_5(sink)[0]
    behind.feed(batches[31])
    sink.hold = True
    behind.tick()  # the interval is up: the write goes to the background, and waits
    assert sink.writing.wait(10)
    behind.feed(batches[32])  # folded meanwhile
    sink.hold = False
    sink.release.set()
    caplog.set_level(logging.WARNING, logger="worker.engine")
    assert behind.finish(end_of_input=False)  # its late-records line follows the last write
    added = len(batches[31]) + len(batches[32])
    assert minute_5(sink) == (records_judged + added, added)
    assert behind.stats.late == added
    assert any(f"{added} records arrived after" in r.getMessage() for r in caplog.records)


def test_a_judged_windows_rows_go_late_in_every_slice() -> None:
    """Analysts read `late_records` from the slice rows (per model version and tenant)."""
    rows = [
        PartialRow("chat", S0, S0 + 60, 30, 0, {}, slices=[version("v1", 10), version("v2", 20)]),
        PartialRow("chat", S0 + 60, S0 + 120, 5, 0, {}, slices=[version("v1", 5)]),
    ]
    sink = MemorySink()
    sink.write_checkpoint(Checkpoint("evaluator", 0, detections=[detection("chat", S0)]))
    checkpoint, late = late_where_judged(
        sink, Checkpoint("ingest", 0, partials=rows), frozenset({("chat", S0), ("chat", S0 + 60)})
    )
    assert late == {("chat", S0): 30}
    first, second = checkpoint.partials
    assert (first.late_records, [r.late_records for r in first.slices]) == (30, [10, 20])
    assert (second.late_records, [r.late_records for r in second.slices]) == (0, [0])


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
