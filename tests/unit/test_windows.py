"""Event-time windows and the watermark, as an on-call engineer sees them in the sink.

A window is judged once, when the watermark (max event time − allowed lateness) passes its
end; records later than that still count (as late) but never produce a second verdict or page;
at the end of a finite input every window is judged.
"""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pytest

from alerts.state import AlertTracker
from detectors.registry import build_detectors
from schemas.alert_config import AlertingConfig
from schemas.batch import LogBatch
from schemas.prediction_log import PredictionLog
from worker.engine import Engine, EngineSettings
from worker.evaluator import WindowEvaluator
from worker.event_time import EventTimeLimits
from worker.testing import FakeClock, MemorySink
from worker.windows import Watermark, WindowKey, window_starts

T0 = datetime(2026, 1, 5, 6, 0, tzinfo=UTC)
S0 = int(T0.timestamp())  # a multiple of 60: the start of window 0


def logs(
    prefix: str,
    second: float,
    n: int,
    *,
    model: str = "gemini-1.5-flash",
    blocked: bool = False,
) -> LogBatch:
    """`n` calls at T0 + `second`, request ids `{prefix}-{i}`."""
    return LogBatch.from_logs(
        PredictionLog(
            request_id=f"{prefix}-{i}",
            timestamp=T0 + timedelta(seconds=second),
            model=model,
            latency_ms=200.0 + i,
            input_tokens=300,
            output_tokens=250,
            blocked=blocked,
            block_stage="prompt" if blocked else None,
            block_reason="SAFETY" if blocked else None,
        )
        for i in range(n)
    )


def make_engine(sink: MemorySink, clock: FakeClock | None = None, **settings: Any) -> Engine:
    detectors = build_detectors({"safety": None, "latency": None, "tokens": None})
    evaluator = WindowEvaluator(detectors, 60, AlertTracker(AlertingConfig()))
    return Engine(
        EngineSettings(**settings),
        detectors,
        sink,
        evaluator,
        now=clock or FakeClock(),
    )


def verdicts_per_window(sink: MemorySink) -> Counter[tuple[str, int]]:
    """How many detections the sink holds per (model, window offset from T0 in seconds)."""
    return Counter((d.model, int(d.window_start.timestamp()) - S0) for d in sink.detections())


# -- pure functions ------------------------------------------------------------------------------


def test_window_starts_floor_event_times_to_window_boundaries() -> None:
    t = np.array([S0, S0 + 59.999, S0 + 60, S0 + 119.5, S0 - 0.001], dtype=np.float64)
    starts = window_starts(t, 60)
    assert starts.tolist() == [S0, S0, S0 + 60, S0 + 60, S0 - 60]
    assert starts.dtype == np.int64
    assert WindowKey("m", S0).start_datetime() == T0


def test_watermark_lags_max_event_time_and_never_moves_back() -> None:
    mark = Watermark(allowed_lateness_seconds=30)
    assert not mark.closes(S0, 60)  # nothing seen yet
    mark.observe(S0 + 89.999)
    assert mark.value == pytest.approx(S0 + 59.999)
    assert not mark.closes(S0, 60)
    mark.observe(S0 + 90)
    assert mark.closes(S0, 60)
    mark.observe(S0 + 10)  # an old record does not pull the watermark back
    assert mark.value == S0 + 60
    assert mark.closes(S0, 60)
    assert not mark.closes(S0 + 60, 60)


# -- the engine's windows --------------------------------------------------------------------------


def test_window_is_judged_exactly_once_when_the_watermark_passes_its_end() -> None:
    sink = MemorySink()
    engine = make_engine(sink, allowed_lateness_seconds=30)
    engine.feed(logs("a", 10, 20))
    engine.feed(logs("b", 89, 20))  # watermark 59 s: window 0 still open
    engine.tick()
    engine.checkpoint()
    assert sink.detections() == []
    assert engine.stats.windows_evaluated == 0

    engine.feed(logs("c", 90, 5))  # watermark 60 s: window 0 is over
    engine.tick()
    engine.checkpoint()
    assert verdicts_per_window(sink) == {("gemini-1.5-flash", 0): 3}  # one per detector
    judged = {d.detector: d.sample_size for d in sink.detections()}
    assert judged == {"safety": 20, "latency": 20, "tokens": 20}

    for second in (100, 110, 119):  # more traffic, more ticks, more checkpoints
        engine.feed(logs(f"t{second}", second, 5))
        engine.tick()
        engine.checkpoint()
    assert verdicts_per_window(sink)[("gemini-1.5-flash", 0)] == 3
    assert engine.stats.windows_evaluated == 1


def test_records_are_split_by_model_and_window_within_one_batch() -> None:
    sink = MemorySink()
    engine = make_engine(sink)
    batch = LogBatch.concat(
        [
            logs("a0", 0, 3, model="a"),
            logs("b1", 60, 4, model="b"),
            logs("a1", 119.999, 5, model="a"),
            logs("b0", 59.5, 6, model="b"),
            logs("a2", 120, 7, model="a"),
        ]
    )
    engine.feed(batch)
    assert engine.checkpoint()
    counts = {(m, s - S0): w.records for (m, s), w in sink.merged().items()}
    assert counts == {("a", 0): 3, ("a", 60): 5, ("a", 120): 7, ("b", 0): 6, ("b", 60): 4}


def test_late_records_are_counted_but_never_judged_or_paged_again() -> None:
    sink = MemorySink()
    engine = make_engine(sink, allowed_lateness_seconds=30)
    # 200 of 200 calls blocked: above the 25 % ceiling, pages without any baseline
    engine.feed(logs("spike", 20, 200, blocked=True))
    engine.feed(logs("next", 95, 10))
    engine.feed(logs("next-too", 96, 10))  # the stream agrees it moved on: window 0 closes
    engine.tick()
    assert engine.checkpoint()
    firing = [a for a in sink.alerts() if a.status == "firing"]
    assert [(a.detector, a.condition) for a in firing] == [("safety", "block_rate_above_ceiling")]
    before = {(d.detector, d.window_start): d for d in sink.detections()}

    engine.feed(logs("late", 30, 150, blocked=True))  # window 0 again, after its verdict
    engine.tick()
    assert engine.checkpoint()

    assert engine.stats.late == 150
    window0 = sink.merged()[("gemini-1.5-flash", S0)]
    assert (window0.records, window0.late_records, window0.calls) == (350, 150, 350)
    assert {(d.detector, d.window_start): d for d in sink.detections()} == before
    assert len([a for a in sink.alerts() if a.status == "firing"]) == 1
    assert len(engine.stats.alerts) == 1


def test_late_records_for_a_window_dropped_from_memory_still_count_once_and_do_not_repage() -> None:
    sink = MemorySink()
    engine = make_engine(sink, allowed_lateness_seconds=30)
    engine.feed(logs("spike", 20, 200, blocked=True))
    for minute in range(1, 10):  # event time runs far past window 0: it is judged and dropped
        engine.feed(logs(f"m{minute}", minute * 60 + 30, 10))
        engine.tick()
        assert engine.checkpoint()
    assert engine.open_windows < 5

    late = logs("late", 40, 50, blocked=True)
    engine.feed(late)
    engine.feed(late)  # the same late records redelivered
    engine.feed(logs("spike", 20, 200, blocked=True))  # and the original ones replayed
    engine.tick()
    assert engine.checkpoint()

    window0 = sink.merged()[("gemini-1.5-flash", S0)]
    assert (window0.records, window0.late_records) == (250, 50)
    assert engine.stats.late == 50
    assert engine.stats.duplicates == 250
    assert verdicts_per_window(sink)[("gemini-1.5-flash", 0)] == 3
    assert len([a for a in sink.alerts() if a.status == "firing"]) == 1


def test_finish_at_end_of_input_judges_every_remaining_window() -> None:
    sink = MemorySink()
    engine = make_engine(sink, allowed_lateness_seconds=30)
    for minute in range(3):  # in time order: batches of 4 are pooled until 5 agree
        for model in ("a", "b"):
            engine.feed(logs(f"{model}{minute}", minute * 60 + 5, 4, model=model))
    engine.tick()  # watermark 95 s: only the first windows are over
    assert engine.checkpoint()
    assert set(verdicts_per_window(sink)) == {("a", 0), ("b", 0)}

    assert engine.finish(end_of_input=True)
    assert verdicts_per_window(sink) == {
        (model, minute * 60): 3 for model in ("a", "b") for minute in range(3)
    }
    assert engine.stats.windows_evaluated == 6


def test_finish_without_end_of_input_judges_only_windows_the_watermark_passed() -> None:
    sink = MemorySink()
    # four records a minute: the plain maximum moves the watermark (no quorum)
    engine = make_engine(sink, allowed_lateness_seconds=30, event_time=EventTimeLimits(quorum=1))
    for minute in range(3):
        engine.feed(logs(f"r{minute}", minute * 60 + 5, 4))
    assert engine.finish(end_of_input=False)  # SIGTERM: the stream goes on elsewhere
    assert set(verdicts_per_window(sink)) == {("gemini-1.5-flash", 0)}
    assert sink.total_records() == 12


def test_ingest_only_replica_never_judges_a_window() -> None:
    sink = MemorySink()
    engine = make_engine(sink, evaluate=False)
    for minute in range(5):
        engine.feed(logs(f"r{minute}", minute * 60 + 5, 4))
        engine.tick()
    assert engine.finish(end_of_input=True)
    assert sink.detections() == []
    assert sink.total_records() == 20
