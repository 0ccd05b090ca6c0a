"""At-least-once paging across a crash: alerts a checkpoint stored are sent by the next start
even if the process died before handing them to the receivers, and only those.

The journal is the receivers' real SQLite outbox; the sink is the MemorySink (its outage switch
makes the sink unreadable at start)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from alerts.receivers import build_dispatcher
from alerts.receivers.outbox import Outbox
from alerts.state import AlertTracker
from detectors.registry import build_detectors
from schemas.alert_config import AlertingConfig
from schemas.batch import LogBatch
from schemas.detection import Alert, Detection
from schemas.prediction_log import PredictionLog
from worker.engine import Engine, EngineSettings
from worker.evaluator import Evaluation, WindowEvaluator
from worker.sink import Checkpoint
from worker.testing import FakeClock, MemorySink, SinkUnavailable

T0 = datetime(2026, 1, 5, 6, 0, tzinfo=UTC)


def alert(model: str, minute: int, status: str = "firing") -> Alert:
    return Alert(
        dedup_key=f"lookout:{model}:safety:block_rate_above_baseline",
        status=status,
        severity="critical",
        detector="safety",
        model=model,
        condition="block_rate_above_baseline",
        window_start=T0,
        window_end=T0 + timedelta(minutes=minute),
        value=0.1,
        threshold=0.03,
        baseline=0.02,
        sample_size=400,
        summary=f"{model} blocks",
        details={"top_reasons": {"SAFETY": 7}},
    )


class Receivers:
    """The engine's notify hook: records what it was given; `refuse` hands some back."""

    def __init__(self) -> None:
        self.got: list[Alert] = []
        self.refuse: set[str] = set()

    def __call__(self, alerts: Sequence[Alert]) -> list[Alert]:
        self.got.extend(alerts)
        return [a for a in alerts if a.model in self.refuse]


def engine(
    sink: MemorySink, journal: Outbox, receivers: Callable[[Sequence[Alert]], list[Alert]]
) -> Engine:
    detectors = build_detectors(dict.fromkeys(("safety",)))
    evaluator = WindowEvaluator(detectors, 60, AlertTracker(AlertingConfig()))
    return Engine(
        EngineSettings(),
        detectors,
        sink,
        evaluator,
        notify=receivers,
        now=FakeClock(),
        handoff=journal,
    )


def one_record(request_id: str) -> LogBatch:
    return LogBatch.from_logs(
        [PredictionLog(request_id=request_id, timestamp=T0, model="a", latency_ms=100.0)]
    )


def test_the_next_start_sends_what_was_stored_and_drops_what_never_landed(tmp_path: Path) -> None:
    journal, sink = Outbox(tmp_path / "outbox.sqlite"), MemorySink()
    stored, never_stored = alert("a", 5), alert("b", 5)
    journal.prepare_handoff([stored, never_stored])  # noted, then the write ...
    sink.write_checkpoint(Checkpoint("w", 0, alerts=[stored]))  # ... lands for one of them
    journal.close()  # kill -9

    journal = Outbox(tmp_path / "outbox.sqlite")
    receivers = Receivers()
    assert engine(sink, journal, receivers).send_unsent_alerts() == 1
    assert receivers.got == [stored]  # the whole alert, details included
    assert journal.pending_handoffs() == []
    assert engine(sink, journal, Receivers()).send_unsent_alerts() == 0  # sent once


def test_an_alert_the_receivers_did_not_take_stays_noted_for_the_next_start() -> None:
    journal, sink, receivers = Outbox(":memory:"), MemorySink(), Receivers()
    receivers.refuse = {"b"}
    worker = engine(sink, journal, receivers)
    refused, taken = alert("b", 5), alert("a", 5)
    journal.prepare_handoff([refused, taken])
    sink.write_checkpoint(Checkpoint("w", 0, alerts=[refused, taken]))
    assert worker.send_unsent_alerts() == 2
    assert journal.pending_handoffs() == [refused]  # still waiting: a crash now keeps it

    receivers.refuse = set()
    successor = engine(sink, journal, receivers)
    assert successor.send_unsent_alerts() == 1
    assert receivers.got[-1] == refused
    assert journal.pending_handoffs() == []


def test_a_sink_unreadable_at_start_is_asked_again_after_the_next_checkpoint() -> None:
    journal, sink, receivers = Outbox(":memory:"), MemorySink(), Receivers()
    stored = alert("a", 5)
    journal.prepare_handoff([stored])
    sink.write_checkpoint(Checkpoint("w", 0, alerts=[stored]))
    sink.fail_writes(reads=True)
    worker = engine(sink, journal, receivers)
    assert worker.send_unsent_alerts() == 0
    assert receivers.got == [] and journal.pending_handoffs() == [stored]

    sink.heal()
    worker.feed(one_record("r1"), ["m1"])
    assert worker.checkpoint()
    assert receivers.got == [stored]  # once
    assert journal.pending_handoffs() == []


def test_alerts_are_noted_before_the_write_and_struck_once_handed_on() -> None:
    journal, sink, receivers = Outbox(":memory:"), MemorySink(), Receivers()
    worker = engine(sink, journal, receivers)
    noted_during_write: list[list[Alert]] = []
    write = sink.write_checkpoint

    def watching(checkpoint: Checkpoint) -> None:
        noted_during_write.append(journal.pending_handoffs())
        write(checkpoint)

    sink.write_checkpoint = watching  # type: ignore[method-assign]
    firing = alert("a", 5)
    worker._pending_alerts.append(firing)  # what a judged window leaves for the checkpoint
    worker.feed(one_record("r1"), ["m1"])
    assert worker.checkpoint()
    assert noted_during_write == [[firing]]
    assert receivers.got == [firing]
    assert journal.pending_handoffs() == []


def alerting_window(minute: int, severity: str) -> Detection:
    start = T0 + timedelta(minutes=minute)
    return Detection(
        detector="safety",
        model="a",
        window_start=start,
        window_end=start + timedelta(minutes=1),
        verdict="alert",
        condition="block_rate_above_baseline",
        severity=severity,
        value=0.1,
        threshold=0.03,
        baseline=0.02,
        sample_size=400,
        reason="blocks",
    )


def test_two_changes_one_window_makes_are_both_sent_and_both_noted(tmp_path: Path) -> None:
    """The window that crosses the 6-hour horizon and turns critical makes an escalation and
    the sustained-shift notice: same incident, status and window, two pages (a review found
    the second replacing the first)."""
    tracker = AlertTracker(AlertingConfig())
    for minute in range(359):
        tracker.observe(alerting_window(minute, "warning"))
    both = tracker.observe(alerting_window(359, "critical"))
    assert both[0].change_key == both[1].change_key
    assert "escalated" in both[0].summary and "sustained" in both[1].summary

    journal, sink, receivers = Outbox(tmp_path / "outbox.sqlite"), MemorySink(), Receivers()
    journal.prepare_handoff(both)
    assert journal.pending_handoffs() == both
    sink.write_checkpoint(Checkpoint("w", 0, alerts=both))
    assert engine(sink, journal, receivers).send_unsent_alerts() == 2
    assert receivers.got == both


def half_written(journal: Outbox, sink: MemorySink) -> Alert:
    """What a process killed between BigQuery's alerts and detections inserts leaves: a noted
    firing alert in the alerts table, its window without a verdict."""
    firing = alert("a", 1)
    journal.prepare_handoff([firing])
    sink.write_checkpoint(Checkpoint("w", 0, alerts=[firing]))  # the alerts table only
    return firing


def judge_the_window_again(successor: Engine, firing: Alert) -> None:
    """The successor judges the window again and makes the same change (other words)."""
    judged_again = firing.model_copy(update={"summary": "judged again, same change"})
    successor._evaluator.evaluate = (  # type: ignore[method-assign]
        lambda model, start, states, model_version=None: Evaluation(alerts=[judged_again])
    )
    successor.feed(one_record("r1"), ["m1"])
    assert successor.finish(end_of_input=True)
    assert successor.stats.windows_evaluated == 1


def test_a_window_judged_again_does_not_store_or_send_a_recovered_change_twice() -> None:
    """BigQuery writes a checkpoint table by table: a process killed after the alerts and
    before the detections leaves the alert stored and its window unjudged. The next start
    sends the stored alert, then judges the window again and makes the same change: it must
    be neither a second row nor a second page."""
    journal, sink, receivers = Outbox(":memory:"), MemorySink(), Receivers()
    firing = half_written(journal, sink)
    successor = engine(sink, journal, receivers)
    assert successor.send_unsent_alerts() == 1
    judge_the_window_again(successor, firing)
    assert receivers.got == [firing]
    assert sink.alerts() == [firing]


def test_a_change_recovered_late_is_not_paged_twice() -> None:
    """The sink cannot be read at start (the outage that half-wrote the last checkpoint), so
    the window is judged again before the stored alert is found: the next checkpoint stores
    the change a second time, but receivers get it once."""
    journal, sink, receivers = Outbox(":memory:"), MemorySink(), Receivers()
    firing = half_written(journal, sink)
    reads = sink.stored_alerts
    failed: list[bool] = []

    def unreadable_once(alerts: Sequence[Alert]) -> frozenset[tuple[str, str, int]]:
        if not failed:
            failed.append(True)
            raise SinkUnavailable("down at start")
        return reads(alerts)

    sink.stored_alerts = unreadable_once  # type: ignore[method-assign]
    successor = engine(sink, journal, receivers)
    assert successor.send_unsent_alerts() == 0
    judge_the_window_again(successor, firing)
    assert receivers.got == [firing]
    assert journal.pending_handoffs() == []


WEBHOOK = AlertingConfig.model_validate(
    {"receivers": [{"name": "hook", "kind": "webhook", "url": {"env": "HOOK_URL"}}]}
)

KILLED_AFTER_QUEUEING = """
import os, signal, sys
from pathlib import Path
from prometheus_client import CollectorRegistry
from alerts.receivers import build_dispatcher
from tests.unit.test_alert_handoff import WEBHOOK, Receivers, alert, engine
from worker.sink import Checkpoint
from worker.testing import MemorySink

dispatcher = build_dispatcher(WEBHOOK, outbox_path=Path(sys.argv[1]), registry=CollectorRegistry())
hook = dispatcher.notifiers()["hook"]


class KilledAfterQueueing(Receivers):
    def __call__(self, alerts):
        hook.send(alerts)  # the webhook's group took the alert ...
        dispatcher.pump(waiting_too=True)  # ... and its notification is queued (or sent)
        os.kill(os.getpid(), signal.SIGKILL)  # killed before the journal strikes it


firing, sink = alert("a", 1), MemorySink()
dispatcher.outbox.prepare_handoff([firing])
sink.write_checkpoint(Checkpoint("w", 0, alerts=[firing]))
engine(sink, dispatcher.outbox, KilledAfterQueueing()).send_unsent_alerts()
"""


def test_a_kill_between_queueing_and_striking_does_not_queue_the_page_twice(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A real process is SIGKILLed right after the webhook's queue took a noted alert, before
    the journal struck it. The next start finds the alert noted and stored and hands it over
    again, and the receiver that already took it does not queue it a second time (without the
    mark an SRE's kill -9 rounds saw the same page twice in 3 of 27 rounds)."""
    path = tmp_path / "outbox.sqlite"
    monkeypatch.setenv("HOOK_URL", "http://127.0.0.1:9/never-called")
    child = subprocess.run(
        [sys.executable, "-c", KILLED_AFTER_QUEUEING, str(path)],
        cwd=Path(__file__).resolve().parents[2],
        env=os.environ,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert child.returncode == -9, child.stderr
    firing = alert("a", 1)
    assert Outbox(path).pending_handoffs() == [firing]  # noted, never struck
    assert Outbox(path).depth("hook") == 1

    successor = build_dispatcher(WEBHOOK, outbox_path=path, registry=CollectorRegistry())
    sink = MemorySink()
    sink.write_checkpoint(Checkpoint("w", 0, alerts=[firing]))
    hook = successor.notifiers()["hook"]

    def queue(alerts: Sequence[Alert]) -> list[Alert]:
        hook.send(alerts)
        return []

    assert engine(sink, successor.outbox, queue).send_unsent_alerts() == 1
    successor.pump(waiting_too=True)
    assert successor.outbox.depth("hook") == 1  # the one notification the child queued
    assert successor.outbox.pending_handoffs() == []
