"""Decoding beside the fold: slices are decoded on a second thread (the compiled decoder
releases the GIL) while the loop folds, evaluates and writes. That must change nothing an
operator sees: the same acks, the same counts, the same detections as decoding in line, and a
stop still hands back, undecoded where it can, everything not folded."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

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
from worker.testing import FakeClock, FakeSource, MemorySink, ndjson_messages, request_ids_of

T0 = datetime(2026, 1, 5, 6, 0, tzinfo=UTC)


def stream() -> list[SourceMessage]:
    config = SimulationConfig(start=T0, hours=6 / 60, calls_per_minute=60, embedding_fraction=0.3)
    return ndjson_messages(simulate_logs(config), per_message=15)


def replay(
    messages: list[SourceMessage],
    ahead: int,
    stop: threading.Event | None = None,
    on_poll: Callable[[FakeSource], None] | None = None,
) -> tuple[RunResult, FakeSource, MemorySink]:
    clock = FakeClock()
    sink = MemorySink()

    def poll_hook(source: FakeSource) -> None:
        clock.advance(1.0)
        if on_poll is not None:
            on_poll(source)

    source = FakeSource(messages, on_poll=poll_hook)
    detectors = build_detectors({"safety": None, "latency": None, "embedding_drift": None})
    evaluator = WindowEvaluator(detectors, 60, AlertTracker(AlertingConfig()))
    engine = Engine(EngineSettings(checkpoint_seconds=5.0), detectors, sink, evaluator, now=clock)
    engine.set_ack_handler(source.ack)
    size = max(len(m.data) for m in messages)
    settings = RunSettings(
        poll_max_messages=8,
        poll_timeout_seconds=0.0,
        decode_slice_bytes=2 * size,
        decode_ahead_slices=ahead,
    )
    result = run(
        source, engine, limits=DecodeLimits(), stop=stop or threading.Event(), settings=settings
    )
    return result, source, sink


@pytest.fixture
def decode_threads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The name of the thread of every decode call."""
    names: list[str] = []

    def spy(messages: Sequence[MessageBytes], *, limits: DecodeLimits) -> DecodedPoll:
        names.append(threading.current_thread().name)
        return decode_messages(messages, limits=limits)

    monkeypatch.setattr("worker.runner.decode_messages", spy)
    return names


def test_decoding_ahead_on_a_second_thread_changes_nothing_an_operator_sees(
    decode_threads: list[str],
) -> None:
    messages = stream()
    in_line = replay(messages, ahead=0)
    in_line_threads = list(decode_threads)
    decode_threads.clear()
    beside = replay(messages, ahead=2)

    assert set(in_line_threads) == {threading.current_thread().name}
    assert decode_threads and all(n.startswith("lookout-decode") for n in decode_threads)
    assert len(decode_threads) == len(in_line_threads)  # each slice decoded once
    (r0, s0, sink0), (r1, s1, sink1) = in_line, beside
    assert r0.clean_exit and r1.clean_exit
    assert r1.messages == r0.messages == len(messages)
    assert sorted(s1.acked) == sorted(s0.acked) == sorted(m.ack_id for m in messages)
    assert sorted(sink1.request_ids()) == sorted(sink0.request_ids())
    assert sink1.merged().keys() == sink0.merged().keys()
    assert [w.sums for w in sink1.merged().values()] == [w.sums for w in sink0.merged().values()]
    assert [d.model_dump() for d in sink1.detections()] == [
        d.model_dump() for d in sink0.detections()
    ]
    assert not [t for t in threading.enumerate() if t.name.startswith("lookout-decode")]


def test_a_stop_with_a_poll_taken_ahead_hands_it_back_and_counts_only_what_was_acked(
    decode_threads: list[str],
) -> None:
    messages = stream()
    stop = threading.Event()

    def on_poll(source: FakeSource) -> None:
        if source.polls == 3:
            stop.set()  # SIGTERM while the loop takes the next poll ahead of its tick

    result, source, sink = replay(messages, ahead=1, stop=stop, on_poll=on_poll)

    assert result.stopped_by_signal and result.clean_exit
    delivered = [m.ack_id for m in source.delivered]
    assert source.nacked, "the poll taken ahead was not handed back"
    assert sorted(source.acked + source.nacked) == sorted(delivered)
    assert not set(source.acked) & set(source.nacked)
    by_ack = {m.ack_id: m for m in messages}
    counted = [rid for a in source.acked for rid in request_ids_of(by_ack[a])]
    assert sorted(sink.request_ids()) == sorted(counted)
    assert len(decode_threads) < len(messages)  # the rest was never decoded
