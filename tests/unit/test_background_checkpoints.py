"""Interval checkpoints written on a second thread while the engine goes on folding.

`lookout run` and `lookout replay` on DuckDB write interval checkpoints in the background (a
quarter of a replay's time was the engine waiting on its own writes). What users rely on must
not move: a message is acked only once what it carried is durable, a write that fails loses
nothing (neither what it held nor what was folded while it ran), nothing is counted twice, and
the sink ends up holding exactly what a worker writing in the foreground would have written.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest

from alerts.state import AlertTracker
from detectors import reservoir as rs
from detectors.registry import build_detectors
from schemas.alert_config import AlertingConfig
from tests.unit.test_engine import incident_stream, logs, make_engine, records_per_window
from worker.engine import Engine, EngineSettings
from worker.evaluator import WindowEvaluator
from worker.sink import Checkpoint
from worker.testing import FakeClock, MemorySink

WAIT = 10.0  # seconds: a condition that needs longer has failed


def wait_for(condition: Callable[[], bool], what: str) -> None:
    done = threading.Event()
    for _ in range(int(WAIT / 0.01)):
        if condition():
            return
        done.wait(0.01)
    raise AssertionError(f"timed out waiting for {what}")


def writer_finished() -> bool:
    """The background write has returned and its thread is gone (so the next tick settles it)."""
    return not any(t.name == "lookout-checkpoint" for t in threading.enumerate())


class GatedSink(MemorySink):
    """Each write waits for `release`; `writing` is set while one is held there."""

    def __init__(self) -> None:
        super().__init__()
        self.release = threading.Event()
        self.writing = threading.Event()

    def write_checkpoint(self, checkpoint: Checkpoint) -> None:
        self.writing.set()
        if not self.release.wait(WAIT):
            raise AssertionError("the test never released the write")
        super().write_checkpoint(checkpoint)


def background_engine(sink: MemorySink, clock: FakeClock, **settings: Any) -> Engine:
    return make_engine(sink, clock, background_checkpoints=True, checkpoint_seconds=5, **settings)


def after_first_interval(
    sink: MemorySink, records: int, *, blocked: int = 0, fail_once: bool = False
) -> tuple[Engine, list[str]]:
    """A background engine that folded message "a" and started its first interval checkpoint;
    and the list its acks go to."""
    clock = FakeClock()
    acked: list[str] = []
    engine = background_engine(sink, clock)
    engine.set_ack_handler(acked.extend)
    engine.feed(logs("a", 5, records, blocked=blocked), ["a"])
    clock.advance(5)
    if fail_once:
        sink.fail_writes(count=1)
    engine.tick()
    return engine, acked


def test_messages_are_acked_only_once_their_background_write_is_durable() -> None:
    sink = GatedSink()
    engine, acked = after_first_interval(sink, 4)
    assert sink.writing.wait(WAIT), "the interval checkpoint did not start"

    # the engine folds on while the write is held up; nothing is acked meanwhile
    engine.feed(logs("b", 10, 3), ["b"])
    engine.feed(logs("c", 70, 2), ["c"])
    engine.tick()
    assert acked == []
    assert engine.pending_messages == 3
    assert sink.total_records() == 0

    sink.release.set()

    def settled() -> bool:
        engine.tick()  # not due again: this only settles the write once it has finished
        return bool(acked)

    wait_for(settled, "the first write to be settled")
    assert acked == ["a"]
    assert sink.checkpoints_written == 1
    assert records_per_window(sink) == {("a", S0_WINDOW): 4}

    assert engine.finish(end_of_input=True)
    assert acked == ["a", "b", "c"]
    assert records_per_window(sink) == {("a", S0_WINDOW): 7, ("a", S0_WINDOW + 60): 2}
    assert sorted(sink.request_ids()) == sorted(
        [f"a-{i}" for i in range(4)] + [f"b-{i}" for i in range(3)] + [f"c-{i}" for i in range(2)]
    )


def test_a_failed_background_write_loses_nothing_it_held_or_that_was_folded_meanwhile() -> None:
    sink = GatedSink()
    engine, acked = after_first_interval(sink, 5, blocked=2, fail_once=True)
    assert sink.writing.wait(WAIT)
    engine.feed(logs("b", 20, 4, blocked=1), ["b"])  # same window, while the write runs
    engine.feed(logs("a", 20, 5), ["a-again"])  # a redelivery of the first message
    sink.release.set()

    def settled() -> bool:
        engine.tick()  # not due again, and no early retry after a failure: only settles
        return engine.stats.checkpoint_failures > 0

    wait_for(settled, "the failed write to be settled")
    assert engine.stats.checkpoint_failures == 1
    assert sink.failed_writes == 1
    assert acked == []
    assert engine.pending_messages == 3

    assert engine.finish(end_of_input=True)
    assert acked == ["a", "b", "a-again"]
    (window,) = sink.merged().values()
    assert (window.records, window.sums["blocked"]) == (9, 3)
    assert len(sink.request_ids()) == len(set(sink.request_ids())) == 9
    assert engine.stats.duplicates == 5


def test_the_sink_holds_what_a_foreground_writer_would_have_written() -> None:
    before, after = incident_stream()  # a block-rate incident: it pages and resolves
    batches = before + after
    results = []
    for background in (False, True):
        sink, clock = MemorySink(), FakeClock()
        engine = make_engine(sink, clock, background_checkpoints=background, checkpoint_seconds=5)
        for batch in batches:
            engine.feed(batch)
            clock.advance(2)
            engine.tick()
        assert engine.finish(end_of_input=True)
        verdicts = [(d.model, d.detector, d.window_start, d.verdict) for d in sink.detections()]
        results.append((records_per_window(sink), verdicts, sink.alerts()))
    foreground, background_ = results
    assert {a.status for a in foreground[2]} == {"firing", "resolved"}
    assert background_[0] == foreground[0]
    assert background_[1] == foreground[1]
    assert [(a.model, a.status) for a in background_[2]] == [
        (a.model, a.status) for a in foreground[2]
    ]


S0_WINDOW = int(logs("x", 0, 1).timestamp[0]) // 60 * 60


def ingest_replica(sink: MemorySink, clock: FakeClock, *, background: bool) -> Engine:
    """An ingest-only replica with a detector that holds its sample until the window closes."""
    detectors = build_detectors(dict.fromkeys(("tokens", "descriptor_drift")))
    evaluator = WindowEvaluator(detectors, 60, AlertTracker(AlertingConfig()))
    settings = EngineSettings(
        evaluate=False, background_checkpoints=background, checkpoint_seconds=5
    )
    return Engine(settings, detectors, sink, evaluator, now=clock)


def test_an_ingest_replica_writes_the_held_sample_of_a_window_the_watermark_passed_meanwhile() -> (
    None
):
    """Found by review: the write settled before the tick closed the windows the watermark had
    passed, and a window whose sample was held back (written once, when it closes) was forgotten
    with it: no sample rows for that window in the sink, where a foreground writer wrote 20."""
    samples = []
    for background in (False, True):
        sink, clock = GatedSink(), FakeClock()
        engine = ingest_replica(sink, clock, background=background)
        acked: list[str] = []
        engine.set_ack_handler(acked.extend)
        engine.feed(logs("a", 5, 20), ["m1"])
        clock.advance(5)
        if not background:
            sink.release.set()  # a foreground write would wait for it on this thread
        engine.tick()  # an interval checkpoint of the open window: its sample is held back
        engine.feed(logs("b", 200, 20), ["m2"])  # the watermark moves far past that window
        sink.release.set()
        wait_for(writer_finished, "the writer thread to finish")
        engine.tick()  # settles the write: the case the review found
        assert acked == ["m1"]
        assert engine.finish(end_of_input=True)
        stored = sink.load_window("a", S0_WINDOW)
        samples.append(
            sum(
                len(rs.from_row(row["descriptor_drift"]["sample"]))
                for row in stored.partial_states
                if "descriptor_drift" in row
            )
        )
    assert samples == [20, 20]


class InterruptedSink(MemorySink):
    def write_checkpoint(self, checkpoint: Checkpoint) -> None:
        raise KeyboardInterrupt


def test_ctrl_c_during_a_background_write_stops_the_engine_with_nothing_acked() -> None:
    engine, acked = after_first_interval(InterruptedSink(), 4)
    with pytest.raises(KeyboardInterrupt):
        engine.finish(end_of_input=True)
    assert acked == []
    assert engine.pending_messages == 1


def test_finish_writes_again_what_a_failed_background_write_held() -> None:
    sink = GatedSink()
    engine, acked = after_first_interval(sink, 5, fail_once=True)
    assert sink.writing.wait(WAIT)
    sink.release.set()
    assert engine.finish(end_of_input=True)  # settles the failure, then writes it all
    assert acked == ["a"]
    assert records_per_window(sink) == {("a", S0_WINDOW): 5}


class RecordingSink(GatedSink):
    """Keeps (model, detector, window start) of every detection each write carried."""

    def __init__(self) -> None:
        super().__init__()
        self.verdicts: list[tuple[str, str, int]] = []

    def write_checkpoint(self, checkpoint: Checkpoint) -> None:
        super().write_checkpoint(checkpoint)
        self.verdicts += [
            (d.model, d.detector, int(d.window_start.timestamp())) for d in checkpoint.detections
        ]


def test_a_window_judged_during_a_write_is_judged_once_when_a_late_record_arrives() -> None:
    """Found by review: a window judged while a write ran was forgotten when that write settled,
    before its verdicts were written; a late record (or a redelivery) reopened it from the sink
    as unjudged and every detector judged it a second time, two rows each."""
    outcomes = []
    for background in (False, True):
        sink, clock = RecordingSink(), FakeClock()
        if not background:
            sink.release.set()
        engine = make_engine(sink, clock, background_checkpoints=background, checkpoint_seconds=5)
        engine.feed(logs("a", 5, 10), ["m1"])
        clock.advance(5)
        engine.tick()  # the interval write of the first window (held, in the background)
        engine.feed(logs("b", 200, 10), ["m2"])
        engine.feed(logs("b2", 201, 10), ["m2b"])  # agreed: the watermark passes the first window
        engine.tick()  # not due: the first window is judged, its verdicts pending
        sink.release.set()
        wait_for(writer_finished, "the writer thread to finish")
        engine.tick()  # settles the write
        engine.feed(logs("late", 10, 3), ["m3"])  # a late record for the first window
        engine.tick()
        assert engine.finish(end_of_input=True)
        first = Counter(v for v in sink.verdicts if v[2] == S0_WINDOW)
        outcomes.append((max(first.values()), engine.stats.windows_evaluated, engine.stats.late))
    assert outcomes[1] == outcomes[0] == (1, 2, 3)
