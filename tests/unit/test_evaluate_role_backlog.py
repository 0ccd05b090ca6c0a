"""The evaluate-only replica with a sink that refuses writes, or far behind its ingest replicas.

Found by a bug hunt on the BigQuery emulator: (1) after two failed checkpoints in a row the
evaluator judged the same windows again, and every detection was stored twice; (2) behind by more
than `judge_stored`'s limit, it judged the newest windows first, its alert tracker then took the
older ones for replays, and an incident in them never paged.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from alerts.tracking import EvidenceTracker
from detectors.registry import build_detectors
from schemas.alert_config import AlertingConfig
from worker.engine import Engine, EngineSettings
from worker.evaluator import WindowEvaluator
from worker.health import stall_check
from worker.sources.simulator import Incident, SimulationConfig, simulate_batches
from worker.testing import FakeClock, MemorySink, SinkUnavailable

T0 = datetime(2026, 1, 5, 6, 0, tzinfo=UTC)
NAMES = ("safety", "latency", "tokens")


def replica(sink: MemorySink, *, evaluate: bool, writer: str) -> Engine:
    detectors = build_detectors(dict.fromkeys(NAMES))
    tracker = EvidenceTracker.load(sink.load_alert_state(), AlertingConfig())
    evaluator = WindowEvaluator(detectors, 60, tracker)
    settings = EngineSettings(writer_id=writer, evaluate=evaluate)
    return Engine(settings, detectors, sink, evaluator, now=FakeClock(), wall_clock=None)


def ingest_all(sink: MemorySink, minutes: float, **simulation: Any) -> int:
    """Ingest-only writing of a simulated stream of one model; returns its window count."""
    config = SimulationConfig(
        start=T0,
        hours=minutes / 60,
        models=("text-bison",),
        calls_per_minute=400,
        embedding_fraction=0.0,
        **simulation,
    )
    ingest = replica(sink, evaluate=False, writer="ingest-0")
    for batch in simulate_batches(config, seconds_per_batch=30):
        ingest.feed(batch)
        assert ingest.checkpoint()
    assert ingest.finish(end_of_input=True)
    return len(sink.merged())


def test_an_evaluator_whose_checkpoints_fail_judges_each_window_once() -> None:
    sink = MemorySink()
    ingest_all(sink, 12)
    evaluator = replica(sink, evaluate=True, writer="evaluator")
    sink.fail_writes(count=2)
    results = []
    for _ in range(4):
        judged = evaluator.judge_stored(sink.load_frontier())
        results.append((judged, evaluator.checkpoint()))
    assert [ok for _, ok in results] == [True, False, False, True], results
    judged_windows = {(d.model, d.window_start) for d in sink.detections()}
    assert judged_windows, f"nothing was judged: {results}"
    assert evaluator.stats.windows_evaluated == len(judged_windows), results


def test_an_evaluator_behind_by_more_than_its_limit_judges_oldest_first_and_pages() -> None:
    sink = MemorySink()
    incident = Incident("safety_spike", _minutes(20), _minutes(30), magnitude=5)
    windows = ingest_all(sink, 90, incidents=(incident,))
    evaluator = replica(sink, evaluate=True, writer="evaluator")
    judged = 0
    for _ in range(windows):  # a bounded number of intervals: each judges up to 20 windows
        judged += evaluator.judge_stored(sink.load_frontier(), limit=20)
        assert evaluator.checkpoint()
        if not sink.unevaluated_windows(1):
            break
    assert [a.status for a in sink.alerts() if a.detector == "safety"][:1] == ["firing"]
    starts = [d.window_start for d in sink.detections()]
    assert starts == sorted(starts)


def _minutes(n: float) -> timedelta:
    return timedelta(minutes=n)


def test_the_evaluators_regular_read_looks_a_day_back_and_still_finds_an_old_window() -> None:
    """Every `checkpoint_seconds` the evaluator asks the sink for unjudged windows; on BigQuery
    a read of every partition each time is billed each time, 17,280 times a day. The regular
    read starts a day behind the frontier; all windows are read at the first read, while a
    read comes back full, and every `unjudged_full_scan_every` reads, which is how a window
    stored late for a day long past (a model silent for days) is still judged."""
    sink = MemorySink()
    ingest_all(sink, 12)
    detectors = build_detectors(dict.fromkeys(NAMES))
    evaluator = Engine(
        EngineSettings(writer_id="evaluator", unjudged_full_scan_every=5),
        detectors,
        sink,
        WindowEvaluator(detectors, 60, EvidenceTracker.load([], AlertingConfig())),
        now=FakeClock(),
        wall_clock=None,
    )
    frontier = sink.load_frontier()
    assert frontier is not None
    for _ in range(3):
        evaluator.judge_stored(frontier)
        assert evaluator.checkpoint()
    day_back = int(frontier) - 86_400
    assert sink.unevaluated_reads == [None, day_back, day_back]
    judged_before = len({(d.model, d.window_start) for d in sink.detections()})
    assert judged_before >= 10

    # records two days old for a model no window of which was stored (within max_past_seconds)
    old = T0 - timedelta(days=2)
    late = replica(sink, evaluate=False, writer="ingest-1")
    for batch in simulate_batches(
        SimulationConfig(start=old, hours=0.05, models=("gpt-4o-mini",), embedding_fraction=0.0),
        seconds_per_batch=30,
    ):
        late.feed(batch)
    assert late.finish(end_of_input=True)
    old_windows = {(m, s) for m, s in sink.unevaluated_windows(100) if s < day_back}
    assert len(old_windows) >= 3
    del sink.unevaluated_reads[3:]
    for _ in range(4):
        evaluator.judge_stored(frontier)
        assert evaluator.checkpoint()
    # reads 0 and 5 are full ones; the windows read 5 found stay in view until judged
    oldest = min(start for _, start in old_windows)
    assert sink.unevaluated_reads[3:] == [day_back, day_back, None, oldest]
    judged = {(d.model, int(d.window_start.timestamp())) for d in sink.detections()}
    assert old_windows <= judged, "the old windows were never judged"


def test_an_evaluator_reads_from_the_oldest_while_its_backlog_fills_a_read() -> None:
    sink = MemorySink()
    ingest_all(sink, 12)
    evaluator = replica(sink, evaluate=True, writer="evaluator")
    frontier = sink.load_frontier()
    for _ in range(4):
        evaluator.judge_stored(frontier, limit=4)
        assert evaluator.checkpoint()
    assert sink.unevaluated_reads == [None, None, None, None]


class _SlowSink(MemorySink):
    """`load_window` costs 2 s, as a query to BigQuery can (on the engine's fake clock)."""

    clock: FakeClock | None = None

    def load_window(self, model: str, start: int) -> Any:
        if self.clock is not None:
            self.clock.advance(2.0)
        return super().load_window(model, start)


def test_an_evaluator_far_behind_stays_healthy_and_writes_its_backlog_slice_by_slice() -> None:
    """Found in review: 360 stored windows at 2 s a read kept one `judge_stored` busy 12
    minutes; /healthz (600 s without progress) failed and the restart lost every detection,
    as they are written by the checkpoint after the call."""
    sink = _SlowSink()
    windows = ingest_all(sink, 360)
    clock = FakeClock()
    detectors = build_detectors(dict.fromkeys(NAMES))
    tracker = EvidenceTracker.load(sink.load_alert_state(), AlertingConfig())
    evaluator = Engine(
        EngineSettings(writer_id="evaluator", evaluate=True),
        detectors,
        sink,
        WindowEvaluator(detectors, 60, tracker),
        now=clock,
        wall_clock=None,
    )
    sink.clock = clock
    stall = stall_check(lambda: evaluator.seconds_since_progress, 600.0)
    written: list[int] = []
    for _ in range(2 * windows):
        evaluator.judge_stored(sink.load_frontier())
        assert not stall(), stall()
        assert evaluator.checkpoint()
        written.append(len({(d.model, d.window_start) for d in sink.detections()}))
        if not sink.unevaluated_windows(1):
            break
        clock.advance(5.0)
    assert written[-1] == windows - 1, written  # all but the newest, which nothing closed
    # about 30 windows a minute-long slice, each slice durable before the next one
    assert 20 <= written[1] <= 40, written
    judged = [(d.model, d.window_start, d.detector) for d in sink.detections()]
    assert len(judged) == len(set(judged)), "a window was judged twice"
    # behind, then the sink stops answering: the loop must wait between reads again
    # (found in review: `judging_behind` stayed set and the evaluator read in a busy loop)
    more = _SlowSink()
    ingest_all(more, 60)
    more.clock = clock
    evaluator._sink = more  # the same evaluator, a sink it is behind on
    for _ in range(3):
        evaluator.judge_stored(more.load_frontier())
        evaluator.checkpoint()
        if evaluator.judging_behind:
            break
    assert evaluator.judging_behind
    more.fail_writes(reads=True)
    with pytest.raises(SinkUnavailable):
        evaluator.judge_stored(None)
    assert not evaluator.judging_behind
