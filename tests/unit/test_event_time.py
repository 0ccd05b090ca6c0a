"""One record with a broken clock changes nothing: it is quarantined, reported, and the
watermark follows the stream, not the record (issue: a 2099 record judged 15–18 windows early
and made 2,865 records late)."""

from __future__ import annotations

import dataclasses
from collections import Counter
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pytest

from alerts.state import AlertTracker
from detectors.registry import build_detectors
from schemas.alert_config import AlertingConfig
from schemas.batch import LogBatch
from worker.engine import Engine, EngineSettings
from worker.evaluator import WindowEvaluator
from worker.event_time import EventTimeGuard, EventTimeLimits
from worker.sources.simulator import SimulationConfig, simulate_batches
from worker.testing import FakeClock, MemorySink

T0 = datetime(2026, 1, 5, 6, 0, tzinfo=UTC).timestamp()
YEAR_2099 = datetime(2099, 1, 1, tzinfo=UTC).timestamp()
YEAR_1970 = 86_400.0


def guard(wall: float | None = None, **limits: Any) -> EventTimeGuard:
    return EventTimeGuard(EventTimeLimits(**limits), (lambda: wall) if wall is not None else None)


def times(*values: float) -> np.ndarray[Any, np.dtype[np.float64]]:
    return np.array(values, dtype=np.float64)


# -- the guard itself ----------------------------------------------------------------------------


def test_a_lone_far_future_record_is_quarantined_and_does_not_move_the_frontier() -> None:
    g = guard()
    first = g.admit(T0 + np.arange(100, dtype=np.float64))
    assert first.admitted.all() and first.quarantined == []
    frontier = g.frontier
    assert frontier == T0 + 50  # what half of the batch reaches, not the maximum

    second = g.admit(times(T0 + 100, YEAR_2099, T0 + 101))
    assert second.admitted.tolist() == [True, False, True]
    [q] = second.quarantined
    assert q.row == 1 and q.kind == "future"
    assert "2099-01-01T00:00:00Z" in q.reason and "ahead of the stream" in q.reason
    assert g.frontier == T0 + 50  # two records are too few to decide (quorum 5): pooled
    g.admit(T0 + 102 + np.arange(8, dtype=np.float64))
    # the 10 pooled (100 to 109) agree on T0 + 105: 55 s beyond the last batch's T0 + 50, more
    # than the allowed lateness (30 s), so the next batch must agree first
    assert g.frontier == T0 + 50
    g.admit(T0 + 110 + np.arange(10, dtype=np.float64))
    assert g.frontier == T0 + 115


def test_fewer_than_a_quorum_cannot_move_the_frontier_but_a_replay_catching_up_does() -> None:
    g = guard(quorum=5, max_future_skew_seconds=3600)
    g.admit(T0 + np.arange(50, dtype=np.float64))
    later = T0 + 5 * 3600  # five hours later: beyond the skew
    few = g.admit(np.full(4, later))
    assert few.admitted.all()  # admitted (a file read in order goes forward)...
    assert g.frontier == T0 + 25  # ...but four cannot move the frontier
    # a batch that carries a quorum of newer records is a stream catching up, not a broken clock
    burst = g.admit(later + np.arange(200, dtype=np.float64))
    assert burst.admitted.all()
    assert g.frontier == T0 + 25  # a jump of five hours: the next batch must agree
    g.admit(later + 200 + np.arange(200, dtype=np.float64))
    assert g.frontier == later + 300  # agreed: half of the confirming batch reaches it


def test_one_fast_clock_cannot_move_the_frontier_however_many_records_it_sends() -> None:
    """A gateway an hour fast sending a third of the traffic, in every batch: counted by
    records, five of its records moved the frontier an hour ahead and every other producer's
    records turned late. Its records are admitted (within the skew) but move nothing."""
    g = guard(max_future_skew_seconds=3600)
    for second in range(0, 600, 10):
        honest = T0 + second + np.arange(20, dtype=np.float64) / 2
        fast = T0 + 3000 + second + np.arange(10, dtype=np.float64)
        result = g.admit(np.concatenate((honest, fast)))
        assert result.admitted.all()
        assert g.frontier <= T0 + second + 10
    assert g.frontier >= T0 + 590


def test_one_poll_a_fast_producer_dominates_cannot_move_the_frontier() -> None:
    """A gateway 50 minutes fast that publishes its logs 100 to a message, in a quiet minute:
    its message was most of one poll, so half the poll agreed on its time, the frontier jumped
    50 minutes ahead, and every honest record for 50 minutes counted late. The jump now waits
    for the next batch to agree, and the next poll is honest again."""
    g = guard(max_future_skew_seconds=3600)
    for second in range(0, 600, 10):
        honest = T0 + second + np.arange(8, dtype=np.float64)
        if second % 60 == 30:  # once a minute, the fast gateway's message lands in the poll
            fast = T0 + 3000 + second + np.arange(100, dtype=np.float64) / 10
            result = g.admit(np.concatenate((honest, fast)))
        else:
            result = g.admit(honest)
        assert result.admitted.all()  # within the skew: folded into windows of their own time
        assert g.frontier <= T0 + second + 10
    assert g.frontier >= T0 + 590
    # a jump the next batch agrees with is the stream moving on (a replay catching up)
    g.admit(T0 + 7200 + np.arange(8, dtype=np.float64))
    assert g.frontier <= T0 + 600
    g.admit(T0 + 7210 + np.arange(8, dtype=np.float64))
    assert g.frontier >= T0 + 7200


def test_the_newer_half_of_a_sparse_file_batch_is_not_a_broken_clock() -> None:
    """A replayed file at a record a minute: one decode slice spans hours. Judged against the
    frontier (what half the batch reaches), its newer hours were quarantined, never folded;
    only records fewer than a quorum agree with are ahead of the stream."""
    g = guard(max_future_skew_seconds=3600)
    for hour in range(3):
        result = g.admit(T0 + hour * 4 * 3600 + 60 * np.arange(240, dtype=np.float64))
        assert result.admitted.all() and result.quarantined == []
    # a record the stream comes back from is a wrong clock; one at the end, after a gap
    # wider than the skew, is the sparse file going on (found in review: a file of a
    # record every 2 hours lost the newest 4 of every slice)
    back = T0 + 12 * 3600 + np.arange(20.0)
    alone = g.admit(np.concatenate((back[:10], times(T0 + 20 * 3600), back[10:])))
    assert alone.admitted.tolist() == [True] * 10 + [False] + [True] * 10
    assert "back at 2026-01-05T18:00:10Z" in alone.quarantined[0].reason
    sparse = guard(max_future_skew_seconds=3600)
    for start in range(0, 48, 12):
        two_hourly = T0 + 7200 * (start + np.arange(12.0))
        assert sparse.admit(two_hourly).admitted.all()


def test_a_share_outside_zero_to_one_is_refused() -> None:
    with pytest.raises(ValueError, match="share must be in"):
        guard(share=0.0)


def test_a_far_past_record_is_quarantined_not_late() -> None:
    g = guard(max_past_seconds=86_400)
    g.admit(T0 + np.arange(20, dtype=np.float64))
    result = g.admit(times(YEAR_1970, T0 - 3600, T0 + 30))
    assert result.admitted.tolist() == [False, True, True]  # an hour behind is only late
    [q] = result.quarantined
    assert q.kind == "past" and "behind the stream" in q.reason


def test_nothing_may_come_from_the_future_of_the_wall_clock_even_first() -> None:
    g = guard(wall=T0, max_future_skew_seconds=600)
    result = g.admit(times(T0 - 5, T0 + 300, T0 + 601, YEAR_2099))
    assert result.admitted.tolist() == [True, True, False, False]
    assert all("ahead of the wall clock" in q.reason for q in result.quarantined)


def test_a_live_source_after_a_quiet_night_follows_the_wall_clock() -> None:
    """Pub/Sub: the first record after eight silent hours is new traffic, not a broken clock."""
    morning = T0 + 8 * 3600
    g = guard(wall=morning + 1, live=True)
    g.admit(T0 + np.arange(50, dtype=np.float64))
    assert g.admit(times(morning)).admitted.tolist() == [True]
    # a file read in order: the record after the night goes forward, as the file does
    replay = guard(wall=morning + 1, live=False)
    replay.admit(T0 + np.arange(50, dtype=np.float64))
    assert replay.admit(times(morning)).admitted.tolist() == [True]


def test_a_quorum_below_one_is_refused() -> None:
    with pytest.raises(ValueError, match="quorum must be at least 1"):
        guard(quorum=0)


# -- through the engine --------------------------------------------------------------------------


def one_record(batch: LogBatch, at: float, request_id: str) -> LogBatch:
    row = batch.take(np.array([0]))
    return dataclasses.replace(
        row, timestamp=np.array([at]), request_id=np.array([request_id], dtype=object)
    )


def replay(batches: list[LogBatch]) -> tuple[Engine, MemorySink]:
    sink = MemorySink()
    detectors = build_detectors({"safety": None, "latency": None, "tokens": None})
    evaluator = WindowEvaluator(detectors, 60, AlertTracker(AlertingConfig()))
    engine = Engine(
        EngineSettings(allowed_lateness_seconds=30),
        detectors,
        sink,
        evaluator,
        now=FakeClock(),
        wall_clock=lambda: T0 + 2 * 3600,
    )
    for batch in batches:
        engine.feed(batch)
        engine.tick()
    assert engine.finish(end_of_input=True)
    return engine, sink


def verdicts(sink: MemorySink) -> Counter[tuple[str, str, float, int]]:
    return Counter(
        (d.model, d.detector, d.window_start.timestamp(), d.sample_size) for d in sink.detections()
    )


def an_hour_of_polls() -> list[LogBatch]:
    """An hour of three models at 120 calls a minute, as polls of 10 seconds each."""
    sim = SimulationConfig(
        start=datetime.fromtimestamp(T0, tz=UTC),
        hours=1.0,
        calls_per_minute=120,
        embedding_fraction=0.0,
    )
    return list(simulate_batches(sim, seconds_per_batch=10))


def test_a_2099_and_a_1970_record_change_no_window_s_sample_and_no_late_count() -> None:
    clean = an_hour_of_polls()
    poisoned = list(clean)
    # the 2099 record arrives inside a poll with its neighbours; the 1970 one on its own
    poisoned[40] = LogBatch.concat([clean[40], one_record(clean[40], YEAR_2099, "clock-2099")])
    poisoned.insert(200, one_record(clean[200], YEAR_1970, "clock-1970"))

    reference, reference_sink = replay(clean)
    engine, sink = replay(poisoned)

    assert verdicts(sink) == verdicts(reference_sink)
    assert engine.stats.late == reference.stats.late
    assert engine.stats.records == reference.stats.records
    assert engine.stats.quarantined == 2
    assert {q.request_id for q in sink.quarantined} == {"clock-2099", "clock-1970"}
    reasons = {q.request_id: q.reason for q in sink.quarantined}
    assert "2099-01-01" in reasons["clock-2099"] and "ahead" in reasons["clock-2099"]
    assert "behind the stream" in reasons["clock-1970"]


def test_a_fast_gateway_s_burst_alone_in_a_poll_makes_no_honest_record_late() -> None:
    """A gateway 50 minutes fast publishes a message of its buffered logs that is a poll of its
    own: every record of that poll agreed on its time, the watermark jumped 50 minutes, and
    the honest windows were judged early on part of their calls, the rest counted late."""
    clean = an_hour_of_polls()
    source = clean[100]
    burst = dataclasses.replace(
        source,
        timestamp=source.timestamp + 3000,
        request_id=np.array([f"fast-{i}" for i in range(len(source))], dtype=object),
    )
    reference, reference_sink = replay(clean)
    engine, sink = replay([*clean[:150], burst, *clean[150:]])

    assert engine.stats.late == reference.stats.late
    assert engine.stats.records == reference.stats.records + len(burst)
    assert engine.stats.quarantined == 0  # within the skew: folded into windows of its time
    # every honest window judged on the same calls as without the burst
    assert verdicts(reference_sink) - verdicts(sink) == Counter()
