"""Split mode: an ingest replica that made a message durable and died before acking it has
its message redelivered to another replica. That replica must skip the records already stored,
whether it had their window open already or never saw it stored, so analysts and detectors see
each call once."""

from __future__ import annotations

from datetime import UTC, datetime

from alerts.state import AlertTracker
from detectors.registry import build_detectors
from schemas.alert_config import AlertingConfig
from schemas.batch import LogBatch
from worker.engine import Engine, EngineSettings
from worker.evaluator import WindowEvaluator
from worker.sink import StoredWindow
from worker.sources.simulator import SimulationConfig, simulate_batches
from worker.testing import FakeClock, MemorySink

T0 = datetime(2026, 1, 5, 6, 0, tzinfo=UTC)
NAMES = ("safety", "latency", "tokens")


class CountingSink(MemorySink):
    """Counts window reads, which cost a query each on BigQuery."""

    def __init__(self) -> None:
        super().__init__()
        self.window_reads = 0

    def load_window(self, model: str, window_start: int) -> StoredWindow:
        self.window_reads += 1
        return super().load_window(model, window_start)


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
