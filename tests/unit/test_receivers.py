"""Receivers' timing and policy on a fake clock: group_wait, group_interval, repeat_interval
exactly on schedule, send_resolved, the bounded outbox, a restart that keeps the schedule,
backoff with jitter, Retry-After, the token bucket, and the SecretRef rules."""

from __future__ import annotations

import logging
import random
import sqlite3
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from pydantic import ValidationError

from alerts.notifiers import RetryableNotifierError, TerminalNotifierError
from alerts.receivers.dispatcher import Dispatcher
from alerts.receivers.outbox import Outbox
from alerts.receivers.policy import TokenBucket, backoff_delay, parse_retry_after
from alerts.receivers.secrets import SecretError, resolve_secret
from alerts.receivers.senders import Notification, RateLimited
from alerts.routing import Router
from schemas.alert_config import AlertingConfig, SecretRef
from schemas.detection import Alert
from worker.testing import FakeClock

T0 = datetime(2026, 1, 5, 6, 0, tzinfo=UTC)


def alert(status: str = "firing", model: str = "m", detector: str = "safety") -> Alert:
    return Alert(
        dedup_key=f"lookout:{model}:{detector}:c",
        status="firing" if status == "firing" else "resolved",
        severity="warning",
        detector=detector,
        model=model,
        condition="c",
        window_start=T0,
        window_end=T0 + timedelta(minutes=1),
        value=0.06,
        threshold=0.03,
        baseline=0.02,
        sample_size=500,
        summary=f"[{status.upper()}] {model} {detector}: c — why",
    )


class Recording:
    """A sender that remembers what it was asked to send; fails while `failures` lasts."""

    kind = "webhook"

    def __init__(self, name: str, per_alert: bool = False) -> None:
        self.name = name
        self.per_alert = per_alert
        self.sent: list[Notification] = []
        self.failures: list[Exception] = []

    def send(self, notification: Notification) -> None:
        if self.failures:
            raise self.failures.pop(0)
        self.sent.append(notification)

    def close(self) -> None:
        return


def dispatcher(
    tmp_path: Path, clock: FakeClock, sender: Recording, **config: Any
) -> tuple[Dispatcher, CollectorRegistry]:
    receiver = {"name": sender.name, "kind": "webhook", "url": {"env": "X"}}
    receiver.update(config.pop("receiver", {}))
    alerting = AlertingConfig.model_validate(
        {"receivers": [receiver], "routes": [{"receivers": [sender.name]}], **config}
    )
    registry = CollectorRegistry()
    d = Dispatcher(
        Router(alerting),
        [(sender, alerting.receivers[0])],
        Outbox(tmp_path / "outbox.sqlite"),
        registry=registry,
        clock=clock,
        rng=random.Random(1),
    )
    return d, registry


def drain(d: Dispatcher, name: str) -> None:
    d.pump()
    while d.deliver_next(name) == 0:
        pass


def test_repeat_interval_renotifies_exactly_on_schedule_while_firing(tmp_path: Path) -> None:
    clock, hook = FakeClock(1000), Recording("hook")
    d, _ = dispatcher(tmp_path, clock, hook, repeat_interval="10m")
    d.submit("hook", [alert()])
    drain(d, "hook")
    assert [n.repeat for n in hook.sent] == [False]
    sent_at = []
    for _ in range(35):  # 35 minutes, pumped each minute
        clock.advance(60)
        before = len(hook.sent)
        drain(d, "hook")
        if len(hook.sent) > before:
            sent_at.append(clock() - 1000)
    assert sent_at == [600, 1200, 1800] and all(n.repeat for n in hook.sent[1:])
    d.submit("hook", [alert("resolved")])
    clock.advance(60)
    drain(d, "hook")
    clock.advance(3600)
    drain(d, "hook")
    assert [n.alerts[0].status for n in hook.sent[-1:]] == ["resolved"]
    assert len(hook.sent) == 5  # nothing repeats once resolved
    d.close(drain_seconds=0)


def test_group_wait_batches_a_new_group_and_group_interval_spaces_its_updates(
    tmp_path: Path,
) -> None:
    clock, hook = FakeClock(0), Recording("hook")
    d, _ = dispatcher(
        tmp_path, clock, hook, group_by=["model"], group_wait="30s", group_interval="5m"
    )
    d.submit("hook", [alert(detector="safety")])
    clock.advance(10)
    d.submit("hook", [alert(detector="latency")])
    drain(d, "hook")
    assert hook.sent == []  # still inside group_wait
    clock.advance(20)
    drain(d, "hook")
    assert [len(n.alerts) for n in hook.sent] == [2]  # one message for the group
    d.submit("hook", [alert("resolved", detector="safety")])
    clock.advance(299)
    drain(d, "hook")
    assert len(hook.sent) == 1
    clock.advance(1)
    drain(d, "hook")
    assert [a.status for a in hook.sent[1].alerts] == ["resolved"]
    d.close(drain_seconds=0)


@pytest.mark.parametrize("per_alert", [True, False], ids=["pagerduty-like", "slack-like"])
def test_an_incident_that_fires_and_clears_before_a_flush_still_pages_then_resolves(
    tmp_path: Path, per_alert: bool
) -> None:
    """A fast replay (or a blip between two flushes) hands the dispatcher a page and its
    resolve together. The page goes out first, then the resolve — the resolve used to replace
    the page, and PagerDuty got a resolve for an incident it never saw: nobody was paged.
    A restart in between keeps both."""
    clock, hook = FakeClock(0), Recording("hook", per_alert=per_alert)
    d, _ = dispatcher(tmp_path, clock, hook)
    d.submit("hook", [alert()])
    d.submit("hook", [alert("resolved")])
    d.close(drain_seconds=0)
    d, _ = dispatcher(tmp_path, clock, hook)  # restarted: the group comes from the outbox
    drain(d, "hook")
    assert [[a.status for a in n.alerts] for n in hook.sent] == [["firing"], ["resolved"]]
    # it fired again before the next flush: the last change is the one that stands
    d.submit("hook", [alert()])
    d.submit("hook", [alert("resolved")])
    d.submit("hook", [alert()])
    clock.advance(1)
    drain(d, "hook")
    # the latest change goes out last, so the receiver ends with the incident open
    assert [[a.status for a in n.alerts] for n in hook.sent][2:] == [["resolved"], ["firing"]]
    d.close(drain_seconds=0)


def test_send_resolved_false_sends_no_resolve(tmp_path: Path) -> None:
    clock, hook = FakeClock(0), Recording("hook")
    d, _ = dispatcher(tmp_path, clock, hook, receiver={"send_resolved": False})
    d.submit("hook", [alert()])
    drain(d, "hook")
    d.submit("hook", [alert("resolved")])
    clock.advance(1)
    drain(d, "hook")
    assert [n.alerts[0].status for n in hook.sent] == ["firing"]
    d.close(drain_seconds=0)


def test_a_restart_keeps_the_outbox_and_the_repeat_schedule(tmp_path: Path) -> None:
    clock, hook = FakeClock(0), Recording("hook")
    hook.failures = [RetryableNotifierError("hook", "down")]
    d, registry = dispatcher(tmp_path, clock, hook, repeat_interval="1h")
    d.submit("hook", [alert()])
    drain(d, "hook")
    assert hook.sent == [] and d.pending("hook") == 1
    assert (
        registry.get_sample_value(
            "lookout_notifications_total", {"receiver": "hook", "outcome": "retried"}
        )
        == 1
    )
    d.close(drain_seconds=0)

    clock.advance(120)
    again, _ = dispatcher(tmp_path, clock, hook, repeat_interval="1h")
    drain(again, "hook")
    assert [n.repeat for n in hook.sent] == [False]  # the kept page, delivered once
    clock.advance(3600 - 121)
    drain(again, "hook")
    assert len(hook.sent) == 1
    clock.advance(1)
    drain(again, "hook")
    assert [n.repeat for n in hook.sent] == [False, True]
    again.close(drain_seconds=0)


def test_a_restart_retries_at_once_what_waited_out_a_backoff(tmp_path: Path) -> None:
    """An SRE fixed a receiver and restarted: the 5-minute wait a failure had set before the
    restart held the page back, and the run's end said the receiver stopped taking them."""
    clock, hook = FakeClock(0), Recording("hook")
    hook.failures = [RateLimited("hook", "429", 300.0)]
    d, _ = dispatcher(tmp_path, clock, hook)
    d.submit("hook", [alert()])
    d.pump()
    assert d.deliver_next("hook") == 300.0
    d.close(drain_seconds=0)

    clock.advance(1)
    again, _ = dispatcher(tmp_path, clock, hook)
    assert again.deliver_next("hook") == 0
    assert [n.alerts[0].dedup_key for n in hook.sent] == ["lookout:m:safety:c"]
    again.close(drain_seconds=0)


class Slow(Recording):
    """A receiver that takes its time to answer (the SRE's answered in 10 s)."""

    def __init__(self, name: str, seconds: float) -> None:
        super().__init__(name)
        self.seconds = seconds
        self.started = threading.Event()

    def send(self, notification: Notification) -> None:
        self.started.set()
        time.sleep(self.seconds)  # the receiver's own pace, not a wait for the test
        super().send(notification)


def test_a_send_on_its_way_when_the_run_ends_is_not_reported_queued(tmp_path: Path) -> None:
    """The run's end said `1 notification(s) not sent yet ... (the receiver stopped taking
    them)`, exit 1, and the receiver got it with a 200 a second later."""
    clock, hook = FakeClock(0), Slow("hook", 0.5)
    d, _ = dispatcher(tmp_path, clock, hook)
    d.start()
    d.submit("hook", [alert()])
    d.pump()
    assert hook.started.wait(10)
    d.close(drain_seconds=0.05)
    assert len(hook.sent) == 1
    assert d.left_queued["hook"] == 0


def test_a_send_longer_than_the_close_waits_is_struck_off_when_it_succeeds(
    tmp_path: Path,
) -> None:
    """Closed under it, the outbox refused to strike the page off after it was delivered (an
    error logged), and the next start sent the page again (a reviewer's run, 17 s send)."""
    clock, hook = FakeClock(0), Slow("hook", 0.5)
    d, _ = dispatcher(tmp_path, clock, hook)
    d.join_seconds = 0.05
    d.start()
    d.submit("hook", [alert()])
    d.pump()
    assert hook.started.wait(10)
    d.close(drain_seconds=0.0)
    assert d.left_queued["hook"] == 1  # said queued: it was not known to have gone
    for thread in threading.enumerate():
        if thread.name == "lookout-receiver-hook":
            thread.join(10)
    assert len(hook.sent) == 1
    again, _ = dispatcher(tmp_path, clock, hook)
    assert again.deliver_next("hook") is None  # nothing left: not sent a second time
    again.close(drain_seconds=0)


def test_a_page_given_up_on_is_named_in_the_log(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """`giving up after 1 attempt(s)` alone did not say which page was lost."""
    clock, hook = FakeClock(0), Recording("hook")
    hook.failures = [TerminalNotifierError("hook", "POST failed: HTTP 400, expected 2xx")]
    d, _ = dispatcher(tmp_path, clock, hook)
    d.submit("hook", [alert(model="gpt-4o-mini")])
    d.pump()
    with caplog.at_level(logging.ERROR, logger="lookout.receivers"):
        assert d.deliver_next("hook") == 0
    assert [r.getMessage() for r in caplog.records] == [
        "receiver 'hook': POST failed: HTTP 400, expected 2xx; giving up after 1 attempt(s): "
        "lookout:gpt-4o-mini:safety:c firing not delivered"
    ]
    d.close(drain_seconds=0)


def test_the_outbox_is_bounded_and_counts_what_it_drops(tmp_path: Path) -> None:
    clock, hook = FakeClock(0), Recording("hook")
    d, registry = dispatcher(tmp_path, clock, hook, receiver={"outbox_max": 3})
    for i in range(5):
        d.submit("hook", [alert(model=f"m{i}")])
    d.pump()
    assert d.pending("hook") == 3
    assert (
        registry.get_sample_value(
            "lookout_notifications_total", {"receiver": "hook", "outcome": "dropped"}
        )
        == 2
    )
    drain(d, "hook")
    assert [n.alerts[0].model for n in hook.sent] == ["m2", "m3", "m4"]  # newest kept, in order
    d.close(drain_seconds=0)


def test_retry_after_is_honoured_and_gives_up_after_the_limit(tmp_path: Path) -> None:
    clock, hook = FakeClock(0), Recording("hook")
    hook.failures = [RateLimited("hook", "429", 7.0)]
    d, _ = dispatcher(tmp_path, clock, hook, receiver={"give_up_after": "1m"})
    d.submit("hook", [alert()])
    d.pump()
    assert d.deliver_next("hook") == 7.0
    clock.advance(6.9)
    assert d.deliver_next("hook") == pytest.approx(0.1)
    clock.advance(0.1)
    assert d.deliver_next("hook") == 0 and len(hook.sent) == 1
    hook.failures = [RetryableNotifierError("hook", "down")] * 100
    d.submit("hook", [alert("resolved")])
    d.pump()
    for _ in range(100):
        wait = d.deliver_next("hook")
        if wait is None:
            break
        clock.advance(wait)
    assert d.pending("hook") == 0 and clock() < 7 + 60 + 61  # given up after about a minute
    d.close(drain_seconds=0)


def test_backoff_is_exponential_with_full_jitter_and_capped() -> None:
    rng = random.Random(3)
    for attempt in range(1, 12):
        ceiling = min(60.0, 1.0 * 2 ** (attempt - 1))
        delays = [backoff_delay(attempt, initial=1, maximum=60, rng=rng) for _ in range(200)]
        assert all(0 <= d <= ceiling for d in delays)
        assert max(delays) > 0.8 * ceiling  # spread over the whole range, not a constant


def test_retry_after_reads_seconds_and_http_dates() -> None:
    now = datetime(2026, 1, 5, 6, 0, tzinfo=UTC)
    assert parse_retry_after("120", now=now) == 120
    assert parse_retry_after("Mon, 05 Jan 2026 06:00:30 GMT", now=now) == 30
    assert parse_retry_after("soon", now=now) is None
    assert parse_retry_after(None, now=now) is None


def test_token_bucket_spaces_requests_after_the_burst() -> None:
    bucket = TokenBucket(rate_per_second=2.0, burst=2)
    for _ in range(2):
        assert bucket.wait_time(0.0) == 0
        bucket.take(0.0)
    assert bucket.wait_time(0.0) == pytest.approx(0.5)
    assert bucket.wait_time(0.5) == 0


def test_a_literal_secret_is_rejected_without_echoing_it() -> None:
    with pytest.raises(ValidationError) as caught:
        AlertingConfig.model_validate(
            {"receivers": [{"name": "p", "kind": "pagerduty", "routing_key": "abcSECRET"}]}
        )
    messages = " ".join(e["msg"] for e in caught.value.errors())
    assert "secrets come from env or a mounted file" in messages and "abcSECRET" not in messages
    with pytest.raises(ValidationError, match="exactly one of env or file"):
        SecretRef.model_validate({"env": "A", "file": "/b"})


def test_a_missing_secret_names_where_it_should_be_not_what(tmp_path: Path) -> None:
    ref = SecretRef(env="LOOKOUT_TEST_UNSET")
    with pytest.raises(SecretError, match="env LOOKOUT_TEST_UNSET"):
        resolve_secret(ref, receiver="p", field="routing_key", environ={})
    path = tmp_path / "key"
    path.write_text("s3cr3t\n")
    assert resolve_secret(SecretRef(file=str(path)), receiver="p", field="k") == "s3cr3t"


def test_notifications_for_a_receiver_no_longer_configured_are_dropped(tmp_path: Path) -> None:
    clock, old = FakeClock(0), Recording("old")
    d, _ = dispatcher(tmp_path, clock, old)
    old.failures = [RetryableNotifierError("old", "down")]
    d.submit("old", [alert()])
    drain(d, "old")
    assert d.pending("old") == 1
    d.close(drain_seconds=0)
    new = Recording("new")
    again, _ = dispatcher(tmp_path, clock, new)
    assert again.pending("old") == 0  # not kept forever for a receiver nobody configures
    again.close(drain_seconds=0)


def deny_writes(outbox: Outbox, denied: bool) -> None:
    """The outbox file refuses writes (as a full disk or a lock held elsewhere would)."""
    con = outbox._con  # the one connection the outbox writes through

    def authorize(action: int, *_: object) -> int:
        writes = (sqlite3.SQLITE_INSERT, sqlite3.SQLITE_UPDATE, sqlite3.SQLITE_DELETE)
        return sqlite3.SQLITE_DENY if action in writes else sqlite3.SQLITE_OK

    con.set_authorizer(authorize if denied else None)


def test_a_page_the_outbox_file_could_not_take_is_sent_once_it_can(tmp_path: Path) -> None:
    """An outbox that cannot be written (disk full, locked) must not lose a page: queueing
    fails as retryable (the engine keeps the alert and its journal note), and a group the
    scheduler could not flush keeps its change for the next tick. Before, the first was
    terminal (the engine struck the alert) and the second forgot the change."""
    clock, hook = FakeClock(1000), Recording("hook")
    d, _ = dispatcher(tmp_path, clock, hook, routes=[{"receivers": ["hook"], "group_wait": "0s"}])
    outbox = d.outbox
    deny_writes(outbox, True)
    with pytest.raises(RetryableNotifierError, match="queueing alerts failed"):
        d.notifiers()["hook"].send([alert()])
    deny_writes(outbox, False)
    d.notifiers()["hook"].send([alert()])  # the engine's retry
    deny_writes(outbox, True)
    with pytest.raises(sqlite3.DatabaseError):
        d.pump()  # the scheduler's flush fails ...
    deny_writes(outbox, False)
    drain(d, "hook")  # ... and the next tick sends the change it kept
    assert [n.alerts[0].status for n in hook.sent] == ["firing"]


def test_hand_off_marks_are_read_in_chunks_under_sqlite_smallest_variable_limit() -> None:
    """SQLite builds may allow as few as 999 variables a statement: a hand-off of more noted
    alerts than that still finds every mark (a failing lookup dropped the receiver's pages)."""
    outbox = Outbox(":memory:")
    outbox._con.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, 999)
    alerts = [alert(model=f"m{i}") for i in range(1_200)]
    outbox.prepare_handoff(alerts)
    fingerprints = [a.fingerprint for a in alerts]
    outbox.save_submitted("hook", [], fingerprints)
    assert outbox.queued_for("hook", fingerprints) == set(fingerprints)
    assert outbox.queued_for("other", fingerprints) == set()
    outbox.handed_off(alerts)
    assert outbox.queued_for("hook", fingerprints) == set()
