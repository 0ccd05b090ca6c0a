"""Split mode: an ingest replica that made a message durable and died before acking it has
its message redelivered to another replica. That replica must skip the records already stored,
whether it had their window open already or never saw it stored, so analysts and detectors see
each call once."""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime

from alerts.state import AlertTracker
from detectors.registry import build_detectors
from schemas.alert_config import AlertingConfig
from schemas.batch import LogBatch
from schemas.decode.api import DecodeLimits
from schemas.prediction_log import PredictionLog, canonical_json
from worker.engine import Engine, EngineSettings
from worker.evaluator import WindowEvaluator
from worker.runner import run
from worker.sink import StoredWindow
from worker.source import SourceMessage
from worker.sources.simulator import SimulationConfig, simulate_batches, simulate_logs
from worker.testing import FakeClock, FakeSource, MemorySink

T0 = datetime(2026, 1, 5, 6, 0, tzinfo=UTC)
NAMES = ("safety", "latency", "tokens")


class CountingSink(MemorySink):
    """Counts windows read, and the reads they came in: on BigQuery each read is three
    queries, whether for one window or several."""

    def __init__(self) -> None:
        super().__init__()
        self.window_reads = 0
        self.reads = 0

    def load_window(self, model: str, window_start: int) -> StoredWindow:
        self.window_reads += 1
        return super().load_window(model, window_start)

    def load_windows(
        self, windows: Sequence[tuple[str, int]]
    ) -> Mapping[tuple[str, int], StoredWindow]:
        self.reads += 1
        return super().load_windows(windows)


def ingest_replica(sink: MemorySink, writer: str, clock: FakeClock) -> Engine:
    detectors = build_detectors(dict.fromkeys(NAMES))
    evaluator = WindowEvaluator(detectors, 60, AlertTracker.from_rows([], AlertingConfig()))
    settings = EngineSettings(allowed_lateness_seconds=30, writer_id=writer, evaluate=False)
    return Engine(settings, detectors, sink, evaluator, now=clock, wall_clock=None)


def batches() -> list[LogBatch]:
    """Ten-second batches of one model: six per one-minute window."""
    sim = SimulationConfig(
        start=T0, hours=0.05, calls_per_minute=120, embedding_fraction=0.0, models=("chat",)
    )
    return list(simulate_batches(sim, seconds_per_batch=10))


def stored_records(sink: MemorySink, batch: LogBatch) -> int:
    start = int(batch.timestamp.min()) // 60 * 60
    return sink.load_window("chat", start).records


def test_a_redelivered_message_another_replica_stored_is_counted_once() -> None:
    first, second = batches()[:2]  # the same window
    sink, clock = MemorySink(), FakeClock()
    survivor = ingest_replica(sink, "ingest-b", clock)
    dying = ingest_replica(sink, "ingest-a", clock)
    survivor.feed(first)
    assert survivor.checkpoint()  # the survivor has the window open from here on
    dying.feed(second)
    assert dying.checkpoint()  # durable; the replica dies before its ack reaches Pub/Sub
    clock.advance(60)

    survivor.feed(second, redelivered=True)
    assert survivor.checkpoint()

    assert stored_records(sink, first) == len(first) + len(second)
    assert survivor.stats.duplicates == len(second)


def test_a_redelivery_into_a_window_the_replica_never_saw_stored_is_counted_once() -> None:
    all_batches = batches()
    early, later = all_batches[0], all_batches[7]  # the first and the second window
    sink, clock = MemorySink(), FakeClock()
    survivor = ingest_replica(sink, "ingest-b", clock)
    dying = ingest_replica(sink, "ingest-a", clock)
    survivor.feed(early)
    assert survivor.checkpoint()  # it knows its own newest stored window: the first
    dying.feed(later)
    assert dying.checkpoint()

    survivor.feed(later, redelivered=True)
    assert survivor.checkpoint()

    assert stored_records(sink, later) == len(later)


def test_a_read_made_for_an_earlier_redelivery_does_not_hide_a_later_one() -> None:
    """Another redelivery into the window made the survivor read the stored ids just before the
    dying replica wrote: that read cannot know of the write, so the next redelivery reads
    again (a once-per-5-s read counted the dead replica's 19 records twice)."""
    first, second, third = batches()[:3]
    sink, clock = MemorySink(), FakeClock()
    survivor = ingest_replica(sink, "ingest-b", clock)
    dying = ingest_replica(sink, "ingest-a", clock)
    survivor.feed(first)
    assert survivor.checkpoint()
    survivor.feed(third, redelivered=True)  # e.g. a message some replica nacked
    clock.advance(1)
    dying.feed(second)
    assert dying.checkpoint()  # then it dies; its lease runs out two seconds later
    clock.advance(2)
    survivor.feed(second, redelivered=True)
    assert survivor.checkpoint()

    assert stored_records(sink, first) == len(first) + len(second) + len(third)


def test_a_redelivered_batch_reads_each_of_its_windows_once() -> None:
    first, second = batches()[:2]
    sink, clock = CountingSink(), FakeClock()
    survivor = ingest_replica(sink, "ingest-b", clock)
    survivor.feed(first)
    reads = sink.window_reads
    survivor.feed(LogBatch.concat([first, second]), redelivered=True)  # one window, two parts
    assert sink.window_reads == reads + 1
    survivor.feed(second)  # not a redelivery: no read
    assert sink.window_reads == reads + 1


def test_one_redelivered_message_reads_again_only_the_window_its_records_are_in() -> None:
    """One redelivery among a backlog's messages made the replica read every window of the poll
    again, three BigQuery queries each, in turn, on the main loop: an SRE's trial on the
    emulators held checkpoints and acks back for minutes. Only its own window is read now,
    and its records are still skipped as the duplicates they are."""
    sim = SimulationConfig(
        start=T0, hours=0.05, calls_per_minute=120, embedding_fraction=0.0, models=("chat",)
    )
    polls: dict[int, list[PredictionLog]] = {}
    for log in simulate_logs(sim):  # 10-second messages, 6 per window, 3 windows
        polls.setdefault(int((log.timestamp - T0).total_seconds()) // 10, []).append(log)
    groups = [polls[k] for k in sorted(polls)]
    sink, clock = CountingSink(), FakeClock()
    dying = ingest_replica(sink, "ingest-a", clock)
    dying.feed(LogBatch.from_logs(groups[0]))
    assert dying.checkpoint()  # durable, never acked: Pub/Sub sends it again
    messages = [
        SourceMessage(
            f"m{i}",
            b"\n".join(canonical_json(log) for log in group),
            f"ack-{i}",
            delivery_attempt=2 if i == 0 else 1,
        )
        for i, group in enumerate(groups)
    ]
    survivor = ingest_replica(sink, "ingest-b", clock)
    source = FakeSource(messages)
    survivor.set_ack_handler(source.ack)
    reads_before = sink.window_reads
    run(source, survivor, limits=DecodeLimits(), stop=threading.Event())
    windows = {int(log.timestamp.timestamp()) // 60 for group in groups for log in group}
    assert len(windows) == 3
    # the poll spans the 3 windows; only the redelivered message's window is read again (each
    # of the 3 was, one query set each on BigQuery)
    assert sink.window_reads - reads_before == 1
    assert survivor.stats.duplicates == len(groups[0])
    assert sink.total_records() == sum(len(group) for group in groups)


def test_a_poll_of_redeliveries_spanning_several_windows_reads_them_in_one_go() -> None:
    """Redelivered messages spanning many windows (a dead replica's share of a backlog) cost
    three BigQuery queries per window, in turn, on the main loop; they are one read now, and
    each redelivered record is still skipped as the duplicate it is."""
    all_batches = batches()  # 18 ten-second batches: 3 windows
    sink, clock = CountingSink(), FakeClock()
    dying = ingest_replica(sink, "ingest-a", clock)
    for batch in all_batches:
        dying.feed(batch)
    assert dying.checkpoint()  # durable, never acked: every message comes back
    survivor = ingest_replica(sink, "ingest-b", clock)
    reads_before, windows_before = sink.reads, sink.window_reads
    survivor.feed(LogBatch.concat(all_batches), redelivered=True)
    assert survivor.checkpoint()
    assert sink.window_reads - windows_before == 3  # each window's stored ids...
    assert sink.reads - reads_before == 1  # ...in one read
    assert survivor.stats.duplicates == sum(len(b) for b in all_batches)
    assert sink.total_records() == sum(len(b) for b in all_batches)
