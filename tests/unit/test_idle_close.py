"""A quiet Pub/Sub subscription closes the windows before the quiet spell.

Event time moves only with records: after a backlog with no traffic behind it (or a model's
callers quiet for the night) the newest windows stayed open and unjudged until traffic came
back, found in an SRE's trial on the emulators. With `engine.idle_close_seconds`, a source
that answers with nothing, while nothing waits for its ack, moves the frontier on at the
clock's pace once the quiet has lasted that long.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import datetime, timedelta

from alerts.state import AlertTracker
from detectors.registry import build_detectors
from schemas.alert_config import AlertingConfig
from schemas.decode.api import DecodeLimits
from tests.unit.test_runner import T0, stream
from worker.engine import Engine, EngineSettings
from worker.evaluator import WindowEvaluator
from worker.runner import RunSettings, run
from worker.source import SourceMessage
from worker.sources.simulator import SimulationConfig, simulate_logs
from worker.testing import FakeClock, FakeSource, MemorySink, ndjson_messages

IDLE = 60.0
#: the last window of `stream()` ends at T0 + 8 min and closes 30 s (the lateness) later
LAST_WINDOW = T0 + timedelta(minutes=7)


def make_engine(
    sink: MemorySink, clock: FakeClock, idle: float | None, *, evaluate: bool = True
) -> Engine:
    detectors = build_detectors({"safety": None, "latency": None, "tokens": None})
    evaluator = WindowEvaluator(detectors, 60, AlertTracker(AlertingConfig()))
    settings = EngineSettings(
        checkpoint_seconds=5.0,
        writer_id="pod-1" if evaluate else "ingest-1",
        evaluate=evaluate,
        idle_close_seconds=idle,
        frontier_refresh_seconds=None if evaluate else 95.0 / 3,
        writer_active_seconds=95.0,
    )
    return Engine(settings, detectors, sink, evaluator, now=clock, wall_clock=None)


class QuietSubscription(FakeSource):
    """A subscription that delivers its messages, then nothing; `failing` makes its pulls fail
    (they return nothing too, and the source says it is not ready)."""

    def __init__(self, messages: list[SourceMessage], clock: FakeClock, *, failing: bool) -> None:
        super().__init__(messages, finite=False, on_poll=lambda _: self._tick())
        self.clock = clock
        self.failing = failing
        self.drained_at: float | None = None
        self.judged_at: dict[datetime, float] = {}
        self.watch: list[MemorySink] = []
        self.done = threading.Event()
        self.quiet_for = 400.0
        self.between_polls: list[Callable[[], None]] = []

    def _tick(self) -> None:
        now = self.clock.advance(1.0)
        if self.drained_at is None and not self.remaining:
            self.drained_at = now
        for sink in self.watch:
            for d in sink.detections():
                self.judged_at.setdefault(d.window_start, now)
        for hook in self.between_polls:
            hook()
        if self.drained_at is not None and now - self.drained_at > self.quiet_for:
            self.done.set()

    def ready(self) -> bool:
        return not (self.failing and self.drained_at is not None)


def drive(source: QuietSubscription, engine: Engine) -> None:
    engine.set_ack_handler(source.ack)
    run(
        source,
        engine,
        limits=DecodeLimits(),
        stop=source.done,
        settings=RunSettings(poll_max_messages=50, poll_timeout_seconds=0.0),
        now=source.clock,
    )


def quiet_run(idle: float | None, *, failing: bool = False) -> QuietSubscription:
    clock = FakeClock()
    sink = MemorySink(clock=clock)
    source = QuietSubscription(stream(minutes=8), clock, failing=failing)
    source.watch.append(sink)
    drive(source, make_engine(sink, clock, idle))
    return source


def test_the_last_window_before_a_quiet_spell_is_judged_once_the_quiet_lasted() -> None:
    source = quiet_run(IDLE)
    assert source.drained_at is not None
    judged = source.judged_at.get(LAST_WINDOW)
    assert judged is not None, "the last window before the quiet spell was never judged"
    waited = judged - source.drained_at
    # not before the quiet lasted `idle_close_seconds`, then about the lateness and the rest
    # of the window (the frontier trailed the last records by up to a minute) and a checkpoint
    assert IDLE < waited <= IDLE + 60 + 30 + 10, waited


def test_without_idle_close_the_last_windows_wait_for_traffic() -> None:
    """What users had before: 400 s of quiet, and the last window still open."""
    source = quiet_run(None)
    assert LAST_WINDOW not in source.judged_at
    assert T0 + timedelta(minutes=3) in source.judged_at  # the earlier ones were judged


def test_a_subscription_whose_pulls_fail_closes_nothing() -> None:
    """Nothing delivered because the pulls fail is not a quiet stream: its messages are still
    coming, and closing their windows would count them late."""
    source = quiet_run(IDLE, failing=True)
    assert LAST_WINDOW not in source.judged_at


def test_records_after_the_quiet_spell_with_their_usual_delay_are_not_late() -> None:
    clock = FakeClock()
    sink = MemorySink(clock=clock)
    source = QuietSubscription(stream(minutes=8), clock, failing=False)
    source.quiet_for = 200.0
    engine = make_engine(sink, clock, IDLE)
    drive(source, engine)
    assert source.drained_at is not None and engine.stats.late == 0
    # traffic comes back: event time went on as the clock did (the stream took about as many
    # seconds of clock as of event time to arrive before, and the same lag holds)
    quiet = clock() - source.drained_at
    resumed = SimulationConfig(
        start=T0 + timedelta(minutes=8, seconds=quiet),
        hours=3 / 60,
        calls_per_minute=60,
        embedding_fraction=0.0,
    )
    source.push(ndjson_messages(simulate_logs(resumed), per_message=12))
    source.done.clear()
    source.stopped = False
    source.drained_at = None
    drive(source, engine)
    assert engine.stats.records > 0 and engine.stats.late == 0


def test_a_quiet_ingest_replica_s_frontier_lets_the_evaluator_judge_its_last_windows() -> None:
    """Split mode: the ingest replica's idle frontier is reported, and the evaluator closes
    the last windows on it."""
    clock = FakeClock()
    sink = MemorySink(clock=clock)
    replica = make_engine(sink, clock, IDLE, evaluate=False)
    evaluator = make_engine(sink, clock, None)

    def evaluator_round() -> None:
        if int(clock()) % 5 == 0:
            evaluator.judge_stored(sink.load_frontier(95.0))
            assert evaluator.checkpoint()

    source = QuietSubscription(stream(minutes=8), clock, failing=False)
    source.watch.append(sink)
    source.between_polls.append(evaluator_round)
    drive(source, replica)
    assert source.drained_at is not None
    judged = source.judged_at.get(LAST_WINDOW)
    assert judged is not None, "the evaluator never judged the replica's last window"
    # the quiet, the lateness and rest of the window, the replica's frontier refresh (a third
    # of 95 s), and the evaluator's second sighting a few seconds later
    assert IDLE < judged - source.drained_at <= IDLE + 60 + 30 + 95 / 3 + 15
