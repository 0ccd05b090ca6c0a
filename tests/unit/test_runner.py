"""The ingest loop against a fake subscription: acks, outages, bad input, signals and crashes.

The FakeSource advances a FakeClock on every poll, so simulated time passes as the stream is
consumed; the MemorySink's switch takes the sink down for a while. Everything asserted is what
an operator would see: which messages were acked, nacked or dead-lettered, and what the sink
counted.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import pytest

from alerts.state import AlertTracker
from detectors.registry import build_detectors
from schemas.alert_config import AlertingConfig
from schemas.decode.api import DecodedPoll, DecodeLimits, MessageBytes, decode_messages
from worker.engine import Engine, EngineSettings
from worker.evaluator import WindowEvaluator
from worker.runner import RunResult, RunSettings, run
from worker.source import SourceMessage
from worker.sources.simulator import SimulationConfig, simulate_logs
from worker.testing import (
    ClockedEvent,
    FakeClock,
    FakeSource,
    MemorySink,
    ndjson_messages,
    request_ids_of,
)

T0 = datetime(2026, 1, 5, 6, 0, tzinfo=UTC)


def stream(minutes: float = 8, per_message: int = 12) -> list[SourceMessage]:
    """Simulated calls of three models as NDJSON messages (about 180 calls a minute)."""
    config = SimulationConfig(
        start=T0, hours=minutes / 60, calls_per_minute=60, embedding_fraction=0.0
    )
    return ndjson_messages(simulate_logs(config), per_message=per_message)


def make_engine(sink: MemorySink, clock: FakeClock, writer: str = "pod-1") -> Engine:
    detectors = build_detectors({"safety": None, "latency": None, "tokens": None})
    evaluator = WindowEvaluator(detectors, 60, AlertTracker(AlertingConfig()))
    settings = EngineSettings(checkpoint_seconds=5.0, writer_id=writer)
    return Engine(settings, detectors, sink, evaluator, now=clock)


def ticking(clock: FakeClock, then: Callable[[float], None] | None = None) -> Any:
    """An on_poll hook: each poll takes one second of fake time."""

    def on_poll(_: FakeSource) -> None:
        now = clock.advance(1.0)
        if then is not None:
            then(now)

    return on_poll


def go(
    source: FakeSource,
    engine: Engine,
    stop: threading.Event | None = None,
    **settings: Any,
) -> RunResult:
    engine.set_ack_handler(source.ack)
    settings.setdefault("poll_max_messages", 1)
    settings.setdefault("poll_timeout_seconds", 0.0)
    return run(
        source,
        engine,
        limits=DecodeLimits(),
        stop=stop or threading.Event(),
        settings=RunSettings(**settings),
    )


def all_ids(messages: Sequence[SourceMessage]) -> list[str]:
    return [rid for m in messages for rid in request_ids_of(m)]


def assert_counted_exactly_once(sink: MemorySink, messages: Sequence[SourceMessage]) -> None:
    expected = all_ids(messages)
    stored = sink.request_ids()
    assert len(stored) == len(set(stored)), "a record was counted twice"
    assert set(stored) == set(expected), "a record was lost"
    assert sink.total_records() == len(expected)
    assert sum(w.calls for w in sink.merged().values()) == len(expected)


# -- acks only after durability ---------------------------------------------------------------


def test_every_ack_follows_the_checkpoint_that_made_its_records_durable() -> None:
    clock = FakeClock()
    sink = MemorySink()
    messages = stream()
    ids = {m.ack_id: set(request_ids_of(m)) for m in messages}
    source = FakeSource(messages, on_poll=ticking(clock))
    engine = make_engine(sink, clock)
    acked_early: list[str] = []

    def ack(ack_ids: Sequence[str]) -> None:
        durable = set(sink.request_ids())
        acked_early.extend(a for a in ack_ids if not ids[a] <= durable)
        source.ack(ack_ids)

    engine.set_ack_handler(ack)
    result = run(
        source,
        engine,
        limits=DecodeLimits(),
        stop=threading.Event(),
        settings=RunSettings(poll_max_messages=1, poll_timeout_seconds=0.0),
    )

    assert result.clean_exit and not result.stopped_by_signal
    assert result.messages == len(messages)
    assert acked_early == []
    assert sorted(source.acked) == sorted(m.ack_id for m in messages)
    assert len(source.acked) == len(set(source.acked))
    assert 1 < source.ack_calls < len(messages)  # acked per checkpoint, not per message
    assert_counted_exactly_once(sink, messages)
    assert source.stopped and source.closed


def test_sink_down_for_60_seconds_loses_nothing_and_recovers_without_a_restart() -> None:
    clock = FakeClock()
    sink = MemorySink()
    messages = stream()
    seen: dict[float, tuple[int, int]] = {}

    def outage(now: float) -> None:
        if now == 20:
            sink.fail_writes(until=80, clock=clock)
        if now in (21, 50, 79, 86):
            seen[now] = (len(source.acked), sink.total_records())

    source = FakeSource(messages, on_poll=ticking(clock, outage))
    engine = make_engine(sink, clock)
    result = go(source, engine)

    assert len(messages) > 100  # the stream outlasts the outage
    assert seen[21] == seen[50] == seen[79]  # not one ack, not one row while the sink is down
    assert seen[86][0] > seen[79][0] and seen[86][1] > seen[79][1]  # caught up by itself
    assert 10 <= engine.stats.checkpoint_failures <= 13  # a retry every 5 s for 60 s
    assert result.clean_exit
    assert sorted(source.acked) == sorted(m.ack_id for m in messages)
    assert len(source.acked) == len(set(source.acked))
    assert_counted_exactly_once(sink, messages)


def test_while_the_sink_is_down_polling_stops_at_the_pending_limit_and_backs_off() -> None:
    clock = FakeClock()
    sink = MemorySink()
    messages = stream(minutes=4)
    delivered_while_down: list[int] = []

    def outage(now: float) -> None:
        if now == 10:
            sink.fail_writes(until=100, clock=clock)
        if 10 <= now < 100:
            delivered_while_down.append(len(source.delivered))

    source = FakeSource(messages, on_poll=ticking(clock, outage))
    engine = make_engine(sink, clock)
    stop = ClockedEvent(clock)
    result = go(source, engine, stop=stop, max_pending_messages=5)

    # messages held un-acked while down: what arrived before the first failed checkpoint
    held = delivered_while_down[-1] - delivered_while_down[0]
    assert held <= 5 + 2
    assert stop.waits[:6] == [0.5, 1.0, 2.0, 4.0, 8.0, 10.0]  # exponential backoff, capped
    assert max(stop.waits) == 10.0
    assert result.clean_exit
    assert sorted(source.acked) == sorted(m.ack_id for m in messages)
    assert_counted_exactly_once(sink, messages)


def test_final_checkpoint_failing_leaves_messages_unacked_for_redelivery() -> None:
    clock = FakeClock()
    sink = MemorySink()
    messages = stream(minutes=2)
    first = make_engine(sink, clock)
    went_down: list[float] = []

    def down_at_the_end(now: float) -> None:
        if source.remaining == 3 and not went_down:
            went_down.append(now)
            sink.fail_writes()

    source = FakeSource(messages, on_poll=ticking(clock, down_at_the_end))
    result = go(source, first, grace_period_seconds=0.0)
    assert not result.clean_exit
    assert source.closed
    unacked = source.unacked
    assert unacked and len(unacked) < len(messages)
    assert {m.ack_id for m in unacked}.isdisjoint(source.acked)

    sink.heal()  # next pod: the subscription redelivers what was never acked
    assert source.redeliver() == len(unacked)
    second = go(source, make_engine(sink, clock, "pod-2"))
    assert second.clean_exit
    assert sorted(source.acked) == sorted(m.ack_id for m in messages)
    assert_counted_exactly_once(sink, messages)


# -- crashes ---------------------------------------------------------------------------------


class Killed(BaseException):
    """kill -9: the process is gone between two polls; no final checkpoint, no cleanup."""


@pytest.mark.parametrize("crash_at_poll", [3, 18, 44, 63])
def test_a_crash_at_any_moment_then_redelivery_counts_every_record_once(
    crash_at_poll: int,
) -> None:
    clock = FakeClock()
    sink = MemorySink()
    messages = stream(minutes=5)

    def crash(now: float) -> None:
        if source.polls == crash_at_poll:
            raise Killed

    source = FakeSource(messages, on_poll=ticking(clock, crash))
    with pytest.raises(Killed):
        go(source, make_engine(sink, clock, "pod-1"))
    before = set(sink.request_ids())
    assert {m.ack_id for m in source.unacked}  # something was in flight

    source.redeliver()
    result = go(source, make_engine(sink, clock, "pod-2"))
    assert result.clean_exit
    assert set(source.acked) == {m.ack_id for m in messages}
    assert before <= set(sink.request_ids())
    assert_counted_exactly_once(sink, messages)


class DiesBeforeItsThirdAck(FakeSource):
    """The replica is killed after its third checkpoint was written, before Pub/Sub got the ack."""

    died = False

    def ack(self, ack_ids: Sequence[str]) -> None:
        if self.ack_calls == 2 and not self.died:
            self.died = True
            raise Killed
        super().ack(ack_ids)


def test_a_replica_dying_before_its_ack_is_counted_once_by_the_replica_already_running() -> None:
    """Split ingest: the survivor has the first window open (and its own idea of the newest
    stored one) when the dead replica's durable but un-acked messages come back to it."""
    clock = FakeClock()
    sink = MemorySink()
    messages = stream(minutes=5)
    survivor = make_engine(sink, clock, "pod-2")
    first = decode_messages([MessageBytes(messages[0].data, None, 1)], limits=DecodeLimits())
    survivor.feed(first.rows_of([0])[0])
    assert survivor.checkpoint()

    source = DiesBeforeItsThirdAck(messages[1:], on_poll=ticking(clock))
    with pytest.raises(Killed):
        go(source, make_engine(sink, clock, "pod-1"))
    durable_unacked = {m.ack_id for m in source.unacked} & {
        m.ack_id for m in messages if set(request_ids_of(m)) <= set(sink.request_ids())
    }
    assert durable_unacked  # what makes this the case worth testing

    source.redeliver()
    assert go(source, survivor).clean_exit
    assert_counted_exactly_once(sink, messages)


# -- bad input --------------------------------------------------------------------------------


def mixed_message(good: SourceMessage) -> SourceMessage:
    lines = good.data.split(b"\n")
    bad = [b'{"request_id": "x1", "timestamp": "2026-01-05T06:00:00Z"', b"not json at all"]
    return SourceMessage(
        message_id="mixed", data=b"\n".join([lines[0], *bad, *lines[1:]]), ack_id="mixed"
    )


def test_bad_records_are_dead_lettered_and_the_good_ones_in_the_same_message_count() -> None:
    clock = FakeClock()
    sink = MemorySink()
    messages = stream(minutes=1)
    mixed = mixed_message(messages[2])
    garbage = SourceMessage(message_id="garbage", data=b"\x00\xff{{", ack_id="garbage")
    feed = [*messages[:2], mixed, garbage, *messages[3:]]
    source = FakeSource(feed, on_poll=ticking(clock))
    result = go(source, make_engine(sink, clock))

    assert result.invalid_records == 3
    assert [(d.message.ack_id, [e.line for e in d.errors]) for d in source.dead_letters] == [
        ("mixed", [2, 3]),
        ("garbage", [1]),
    ]
    assert all(e.raw for d in source.dead_letters for e in d.errors)  # nothing thrown away
    assert sorted(source.acked) == sorted(m.ack_id for m in feed)  # dead-lettered: acked too
    assert_counted_exactly_once(sink, messages)


def test_when_dead_lettering_fails_the_message_is_nacked_and_none_of_it_counts() -> None:
    clock = FakeClock()
    sink = MemorySink()
    messages = stream(minutes=1)
    mixed = mixed_message(messages[2])
    feed = [*messages[:2], mixed, *messages[3:]]
    source = FakeSource(feed, on_poll=ticking(clock), dead_letter_works=False)
    result = go(source, make_engine(sink, clock))

    assert result.nacked_messages == 1
    assert source.nacked == ["mixed"]
    assert "mixed" not in source.acked
    assert set(request_ids_of(mixed)).isdisjoint(sink.request_ids())
    assert_counted_exactly_once(sink, [m for m in messages if m is not messages[2]])

    source.dead_letter_works = True  # the dead-letter topic is back; Pub/Sub redelivers
    assert source.redeliver() == 1
    go(source, make_engine(sink, clock, "pod-2"))
    assert "mixed" in source.acked
    assert_counted_exactly_once(sink, messages)


# -- signals ---------------------------------------------------------------------------------


def test_sigterm_stops_pulling_writes_a_final_checkpoint_and_acks_what_it_holds() -> None:
    clock = FakeClock()
    sink = MemorySink()
    messages = stream(minutes=3)
    stop = threading.Event()

    def sigterm(now: float) -> None:
        if source.polls == 30:
            stop.set()

    source = FakeSource(messages, on_poll=ticking(clock, sigterm))
    result = go(source, make_engine(sink, clock), stop=stop)

    assert result.stopped_by_signal and result.clean_exit
    assert source.stopped and source.closed
    # what was polled in the same poll as the signal is handed back unprocessed (nacked), so
    # the exit does not wait for a large read to be decoded; everything else is acked
    handed_back = set(source.nacked)
    assert handed_back
    delivered = [m for m in source.delivered if m.ack_id not in handed_back]
    assert 0 < len(delivered) < len(messages)
    assert sorted(source.acked) == sorted(m.ack_id for m in delivered)
    assert_counted_exactly_once(sink, delivered)
    judged = {d.window_start for d in sink.detections()}
    assert judged  # the windows the watermark passed were judged before exiting
    newest = max(start for _, start in sink.merged())
    assert all(start.timestamp() < newest for start in judged)  # the open one waits


# -- how much one cycle takes -----------------------------------------------------------------


class Trickle(FakeSource):
    """A subscription where each pull finds one message (messages trickle in)."""

    def poll(self, max_messages: int, timeout_seconds: float) -> Sequence[SourceMessage]:
        return super().poll(min(max_messages, 1), timeout_seconds)


def ticking_by(clock: FakeClock, seconds: float) -> Callable[[FakeSource], None]:
    def on_poll(_: FakeSource) -> None:
        clock.advance(seconds)

    return on_poll


def spy_on_decode(monkeypatch: pytest.MonkeyPatch) -> list[list[bytes]]:
    """The bodies of the messages each decode call was given."""
    calls: list[list[bytes]] = []
    real = decode_messages

    def spy(messages: Sequence[MessageBytes], *, limits: DecodeLimits) -> DecodedPoll:
        calls.append([m.data for m in messages])
        return real(messages, limits=limits)

    monkeypatch.setattr("worker.runner.decode_messages", spy)
    return calls


def test_a_trickle_is_folded_every_poll_timeout_not_held_for_a_full_batch(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = FakeClock()
    sink = MemorySink()
    messages = stream(minutes=3)
    source = Trickle(messages, on_poll=ticking_by(clock, 0.1))
    calls = spy_on_decode(monkeypatch)
    engine = make_engine(sink, clock)
    engine.set_ack_handler(source.ack)
    settings = RunSettings(poll_max_messages=1000, poll_timeout_seconds=0.5)
    run(source, engine, limits=DecodeLimits(), stop=threading.Event(), settings=settings, now=clock)
    # one poll waits, then at most 0.5 s of fake time (5 polls) more is collected
    assert max(len(c) for c in calls) <= 6
    assert sum(len(c) for c in calls) == len(messages)
    assert_counted_exactly_once(sink, messages)


def test_sigterm_during_a_trickle_stops_collecting_and_decodes_nothing_handed_back(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = FakeClock()
    sink = MemorySink()
    stop = threading.Event()

    def on_poll(source: FakeSource) -> None:
        clock.advance(0.001)  # fast polls: only the stop ends the collection
        if source.polls == 5:
            stop.set()

    source = Trickle(stream(minutes=3), finite=False, on_poll=on_poll)
    calls = spy_on_decode(monkeypatch)
    engine = make_engine(sink, clock)
    engine.set_ack_handler(source.ack)
    settings = RunSettings(poll_max_messages=1000, poll_timeout_seconds=60)
    result = run(source, engine, limits=DecodeLimits(), stop=stop, settings=settings, now=clock)
    assert result.stopped_by_signal and result.clean_exit
    assert source.polls == 5  # not a thousand
    assert sorted(source.nacked) == sorted(m.ack_id for m in source.delivered)
    assert calls == []  # handed back without being decoded


def test_a_large_poll_is_decoded_in_slices_of_the_configured_size(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = FakeClock()
    sink = MemorySink()
    messages = stream(minutes=3, per_message=40)
    size = max(len(m.data) for m in messages)
    source = FakeSource(messages, on_poll=ticking(clock))
    calls = spy_on_decode(monkeypatch)
    result = go(
        source, make_engine(sink, clock), poll_max_messages=1000, decode_slice_bytes=3 * size
    )
    assert result.clean_exit
    assert len(calls) > 1 and max(len(c) for c in calls) <= 3
    assert [d for c in calls for d in c] == [m.data for m in messages]  # in order, once
    assert_counted_exactly_once(sink, messages)
