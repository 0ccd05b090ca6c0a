"""Grouping, repeats and delivery: alerts in, notifications out, one thread per receiver.

`submit` (what the engine's notify calls, through `notifier(name)`) only records the change
in the persisted outbox and returns: the engine never waits for a receiver. A scheduler thread
turns groups into notifications on Alertmanager's timing — `group_wait` before a new group's
first notification, `group_interval` between a group's notifications, `repeat_interval` to
re-notify while still firing. Each receiver has its own delivery thread that sends its
notifications in order, retrying retryable failures with jittered exponential backoff (or the
receiver's `Retry-After`) under a per-receiver token bucket, so a receiver that stays down
blocks nobody else. Every notification ends in `lookout_notifications_total{receiver,outcome}`
as delivered, retried (each failed attempt that will be retried), failed, or dropped (outbox
full).
"""

from __future__ import annotations

import logging
import random
import sqlite3
import threading
import time
from collections import Counter as Tally
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import timedelta

from prometheus_client import CollectorRegistry, Counter, Gauge

from alerts.notifiers import NotifierError, RetryableNotifierError, notifier_error
from alerts.receivers.outbox import GroupState, Outbox, pending_key
from alerts.receivers.payloads import render_links
from alerts.receivers.policy import TokenBucket, backoff_delay
from alerts.receivers.senders import Notification, RateLimited, Sender, only_firing_or_all
from alerts.routing import Grouping, Router
from schemas.alert_config import AlertmanagerReceiver, ReceiverConfig
from schemas.detection import Alert

log = logging.getLogger("lookout.receivers")

OUTCOMES = ("delivered", "retried", "failed", "dropped")


class NotificationMetrics:
    """`lookout_notifications_total{receiver,outcome}` and the outbox depth per receiver;
    receiver label values come from config only (bounded cardinality)."""

    def __init__(self, registry: CollectorRegistry, receivers: Sequence[str]) -> None:
        self.total = Counter(
            "lookout_notifications",
            "Notifications per receiver by outcome: delivered, retried (an attempt failed and "
            "will be retried), failed (given up), dropped (outbox full).",
            ["receiver", "outcome"],
            registry=registry,
        )
        self.depth = Gauge(
            "lookout_notification_outbox",
            "Notifications waiting in the persisted outbox, per receiver.",
            ["receiver"],
            registry=registry,
        )
        for name in receivers:
            for outcome in OUTCOMES:
                self.total.labels(name, outcome)
            self.depth.labels(name)


@dataclass
class _Receiver:
    sender: Sender
    config: ReceiverConfig
    bucket: TokenBucket
    wake: threading.Event


class _QueueNotifier:
    """The `Notifier` the router calls for one receiver: records, never waits on the network."""

    def __init__(self, dispatcher: Dispatcher, name: str) -> None:
        self._dispatcher = dispatcher
        self._name = name

    def send(self, alerts: Sequence[Alert]) -> None:
        try:
            self._dispatcher.submit(self._name, alerts)
        except (sqlite3.Error, OSError) as exc:
            # the outbox file failed (locked, disk full): nothing was queued, and the engine
            # keeps and retries these (a terminal error would strike them off the journal)
            message = f"queueing alerts failed: {type(exc).__name__}: {exc}"
            raise RetryableNotifierError(self._name, message) from exc
        except Exception as exc:
            raise notifier_error(self._name, "queueing alerts", exc) from exc


#: alerts a delivery log line names, before "and N more"
_NAMED = 3


def what_is_sent(notification: Notification) -> str:
    """The alerts of a notification as a log line names them (dedup key and status, as the
    `alerts` table and PagerDuty show them, and whether it is a repeat): "giving up" alone
    did not say which page was lost (an SRE's trial)."""
    alerts = notification.alerts
    named = ", ".join(f"{a.dedup_key} {a.status}" for a in alerts[:_NAMED])
    more = f" and {len(alerts) - _NAMED} more" if len(alerts) > _NAMED else ""
    repeat = " (repeat)" if notification.repeat else ""
    return f"{named}{more}{repeat}"


class Dispatcher:
    """See the module docstring. `clock` is wall time in seconds (injected for tests)."""

    #: how long `close` waits for each delivery thread to finish the send it is in
    join_seconds: float = 15.0

    def __init__(
        self,
        router: Router,
        receivers: Sequence[tuple[Sender, ReceiverConfig]],
        outbox: Outbox,
        *,
        registry: CollectorRegistry,
        links: Mapping[str, str] | None = None,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
        tick_seconds: float = 0.1,
    ) -> None:
        self._router = router
        self._outbox = outbox
        self._links = dict(links or {})
        self._clock = clock
        self._rng = rng or random.Random()
        self._tick = tick_seconds
        self._receivers = {
            config.name: _Receiver(
                sender,
                config,
                TokenBucket(config.rate_limit_per_minute / 60.0, config.rate_limit_burst),
                threading.Event(),
            )
            for sender, config in receivers
        }
        self.metrics = NotificationMetrics(registry, list(self._receivers))
        #: notifications given up on (or dropped, the outbox full) in this process, and those
        #: still queued when it closed: what a finite run must not report as delivered
        self.undelivered: Tally[str] = Tally()
        self.left_queued: Tally[str] = Tally()
        self._delivered = 0
        self._lock = threading.Lock()
        forgotten = outbox.forget_receivers_except(frozenset(self._receivers))
        if forgotten:
            log.warning("dropped %d notifications for receivers no longer configured", forgotten)
        # a start is when an operator expects a retry (`Outbox.retry_now`)
        outbox.retry_now(clock())
        self._groups = outbox.groups()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._threads: list[threading.Thread] = []
        for name in self._receivers:
            left = outbox.depth(name)
            self.metrics.depth.labels(name).set(left)
            if left:
                log.warning(
                    "receiver %s: %d notification(s) left in the outbox by the previous run, "
                    "sending them (one it got just before that run stopped may come again)",
                    name,
                    left,
                )

    # -- the engine side -------------------------------------------------------------------

    @property
    def outbox(self) -> Outbox:
        """Also the engine's alert hand-off journal (`Outbox.prepare_handoff`)."""
        return self._outbox

    def names(self) -> frozenset[str]:
        return frozenset(self._receivers)

    def notifiers(self) -> dict[str, _QueueNotifier]:
        return {name: _QueueNotifier(self, name) for name in self._receivers}

    def submit(self, receiver: str, alerts: Sequence[Alert]) -> None:
        """Record state changes of `alerts` for `receiver`'s groups (persisted at once, in one
        transaction with the marks that say this receiver took them: `Outbox.queued_for`)."""
        now = self._clock()
        with self._lock:
            fingerprints = [alert.fingerprint for alert in alerts]
            taken = self._outbox.queued_for(receiver, fingerprints)
            if taken:
                log.info(
                    "receiver %s: %d alert change(s) handed over again (a restart, or a retry "
                    "for another receiver) were queued for it already: not queued twice",
                    receiver,
                    len(taken),
                )
            changed: dict[tuple[str, str], GroupState] = {}
            alone = 0
            for alert, fingerprint in zip(alerts, fingerprints, strict=True):
                if fingerprint in taken:
                    continue
                if self._links and not alert.links:
                    alert = alert.model_copy(update={"links": render_links(alert, self._links)})
                if alert.status == "firing":
                    key = (receiver, self._grouping(receiver, alert).key(alert))
                    before = self._take_active(receiver, alert.dedup_key)
                else:
                    held = self._holding(receiver, alert.dedup_key)
                    if held is None:  # this receiver never got the page: a resolve alone
                        alone += 1
                        continue
                    key, before = held, None
                state = self._groups.setdefault(key, GroupState())
                if before is not None and self._relabelled(receiver, before[1], alert):
                    # Alertmanager holds one alert per label set: the old one (a warning that
                    # escalated) is resolved, or it would time out while the incident goes on
                    ended = before[1].model_copy(update={"status": "resolved"})
                    state.pending.pop(pending_key(ended), None)
                    state.pending[pending_key(ended)] = ended
                if before is not None and before[0] != key:
                    changed[before[0]] = self._groups[before[0]]
                # latest last: a change re-made before the flush moves behind the others
                state.pending.pop(pending_key(alert), None)
                state.pending[pending_key(alert)] = alert
                if state.pending_since is None:
                    state.pending_since = now
                if alert.status == "firing":
                    state.active[alert.dedup_key] = alert
                else:
                    state.active.pop(alert.dedup_key, None)
                changed[key] = state
            if alone:
                log.info(
                    "receiver %s: %d resolve(s) of alerts it was never sent: not sent",
                    receiver,
                    alone,
                )
            fresh = [f for f in fingerprints if f not in taken]
            self._outbox.save_submitted(receiver, [(k[1], st) for k, st in changed.items()], fresh)
        self._wake.set()

    def _holding(self, receiver: str, dedup_key: str) -> tuple[str, str] | None:
        """The group of `receiver` where the alert is firing (its group by the labels it was
        paged with: with `group_by: [severity]` an escalated resolve would name another)."""
        for key, state in self._groups.items():
            if key[0] == receiver and dedup_key in state.active:
                return key
        return None

    def _take_active(self, receiver: str, dedup_key: str) -> tuple[tuple[str, str], Alert] | None:
        """Stop tracking the alert's earlier firing state in `receiver`'s groups (it fires
        again, maybe escalated into another group, which repeats it from now on); returns
        the group and the alert as it was."""
        key = self._holding(receiver, dedup_key)
        if key is None:
            return None
        return key, self._groups[key].active.pop(dedup_key)

    def _relabelled(self, receiver: str, before: Alert, now: Alert) -> bool:
        runtime = self._receivers.get(receiver)
        if runtime is None or not isinstance(runtime.config, AlertmanagerReceiver):
            return False
        labels = ("severity", "model_version", "tenant")
        return any(getattr(before, name) != getattr(now, name) for name in labels)

    # -- scheduling ------------------------------------------------------------------------

    def _grouping(self, receiver: str, alert: Alert) -> Grouping:
        runtime = self._receivers.get(receiver)
        if runtime is not None and isinstance(runtime.config, AlertmanagerReceiver):
            # Alertmanager groups and repeats itself; it wants every firing alert re-posted
            # well before its endsAt, and each change at once
            every = runtime.config.resend_interval
            return Grouping(("dedup_key",), timedelta(0), timedelta(0), every)
        return self._router.grouping(alert, receiver)

    def pump(self, *, waiting_too: bool = False) -> None:
        """Turn every group that is due into notifications in the outbox; `waiting_too` sends
        pending changes whose `group_wait` or `group_interval` has not passed yet."""
        now = self._clock()
        with self._lock:
            for key, state in list(self._groups.items()):
                before = replace(state, active=dict(state.active), pending=dict(state.pending))
                try:
                    self._pump_group(key, state, now, waiting_too=waiting_too)
                except Exception:
                    # the outbox write failed: keep the group as it was, so its changes are
                    # tried again at the next tick instead of being forgotten
                    self._groups[key] = before
                    raise

    def _pump_group(
        self, key: tuple[str, str], state: GroupState, now: float, *, waiting_too: bool = False
    ) -> None:
        receiver, group_key = key
        runtime = self._receivers.get(receiver)
        sample = next(iter(state.pending.values()), None) or next(iter(state.active.values()), None)
        if runtime is None or sample is None:
            self._groups.pop(key, None)
            self._outbox.save_group(receiver, group_key, None)
            return
        grouping = self._grouping(receiver, sample)
        batch: tuple[Alert, ...] = ()
        repeat = False
        changed = False
        if state.pending:
            since = state.pending_since if state.pending_since is not None else now
            if state.last_sent_at is None:
                due = since + grouping.group_wait.total_seconds()
            else:
                due = state.last_sent_at + grouping.group_interval.total_seconds()
            if now < due and not waiting_too:
                return
            batch = only_firing_or_all(list(state.pending.values()), runtime.config.send_resolved)
            state.pending, state.pending_since = {}, None
            changed = True
        elif state.active and state.last_sent_at is not None:
            if now < state.last_sent_at + grouping.repeat_interval.total_seconds():
                return
            batch, repeat, changed = tuple(state.active.values()), True, True
        if batch:
            state.last_sent_at = now
        new_state = state if (state.active or state.pending) else None
        if new_state is None:
            self._groups.pop(key, None)
            changed = True
        if not changed:
            return
        notifications = (
            [Notification(receiver, group_key, (a,), repeat) for a in batch]
            if runtime.sender.per_alert
            else [Notification(receiver, group_key, part, repeat) for part in _rounds(batch)]
        )
        dropped = self._outbox.flush(
            notifications,
            (receiver, group_key, new_state),
            now=now,
            limit=runtime.config.outbox_max,
        )
        if dropped:
            self.metrics.total.labels(receiver, "dropped").inc(dropped)
            self.undelivered[receiver] += dropped
            log.error(
                "receiver %s: outbox full, dropped %d notifications (repeats first, then the "
                "oldest, and the resolves of pages dropped)",
                receiver,
                dropped,
            )
        self.metrics.depth.labels(receiver).set(self._outbox.depth(receiver))
        if notifications:
            runtime.wake.set()

    # -- delivery --------------------------------------------------------------------------

    def deliver_next(self, receiver: str) -> float | None:
        """Try `receiver`'s oldest notification if it is due. Returns seconds until the next
        try is worth making, 0 to go on at once, None when nothing waits."""
        runtime = self._receivers[receiver]
        entry = self._outbox.head(receiver)
        if entry is None:
            return None
        now = self._clock()
        if entry.next_at > now:
            return entry.next_at - now
        wait = runtime.bucket.wait_time(now)
        if wait > 0:
            return wait
        runtime.bucket.take(now)
        config = runtime.config
        try:
            runtime.sender.send(entry.notification)
        except Exception as exc:
            error = exc if isinstance(exc, NotifierError) else notifier_error(receiver, "send", exc)
            attempts = entry.attempts + 1
            maximum = config.backoff_max.total_seconds()
            if isinstance(error, RateLimited):
                # capped like the backoff: a Retry-After of two hours beyond `give_up_after`
                # dropped the notification on its first try
                delay = min(error.retry_after, maximum)
            else:
                delay = backoff_delay(
                    attempts,
                    initial=config.backoff_initial.total_seconds(),
                    maximum=maximum,
                    rng=self._rng,
                )
            expired = now + delay - entry.first_at > config.give_up_after.total_seconds()
            if error.retryable and not expired:
                self._outbox.retry_at(entry.id, attempts=attempts, next_at=now + delay)
                self.metrics.total.labels(receiver, "retried").inc()
                log.warning(
                    "%s; retry %d in %.1fs (%s)",
                    error,
                    attempts,
                    delay,
                    what_is_sent(entry.notification),
                )
                return delay
            self._outbox.done(entry.id)
            self.metrics.total.labels(receiver, "failed").inc()
            self.undelivered[receiver] += 1
            log.error(
                "%s; giving up after %d attempt(s): %s not delivered",
                error,
                attempts,
                what_is_sent(entry.notification),
            )
        else:
            self._outbox.done(entry.id)
            self.metrics.total.labels(receiver, "delivered").inc()
            self._delivered += 1
            # the on-call's trace of a page (what, never where: no URL or key is logged)
            log.info("receiver %s: delivered %s", receiver, what_is_sent(entry.notification))
        self.metrics.depth.labels(receiver).set(self._outbox.depth(receiver))
        return 0.0

    def pending(self, receiver: str) -> int:
        return self._outbox.depth(receiver)

    # -- threads ---------------------------------------------------------------------------

    def start(self) -> None:
        """Start the scheduler and one delivery thread per receiver (idempotent)."""
        if self._threads:
            return
        self._threads.append(
            threading.Thread(target=self._schedule_loop, name="lookout-alert-groups", daemon=True)
        )
        for name in self._receivers:
            self._threads.append(
                threading.Thread(
                    target=self._deliver_loop,
                    args=(name,),
                    name=f"lookout-receiver-{name}",
                    daemon=True,
                )
            )
        for thread in self._threads:
            thread.start()

    def _schedule_loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.pump()
            except Exception:
                log.exception("alert grouping failed; will try again")
            self._wake.wait(self._tick)
            self._wake.clear()

    def _deliver_loop(self, receiver: str) -> None:
        runtime = self._receivers[receiver]
        while not self._stop.is_set():
            try:
                wait = self.deliver_next(receiver)
            except Exception:
                log.exception("receiver %s: delivery loop failed; will try again", receiver)
                wait = 1.0
            if wait == 0:
                continue
            runtime.wake.wait(1.0 if wait is None else min(wait, 1.0))
            runtime.wake.clear()

    def close(self, *, drain_seconds: float = 2.0, flush_groups: bool = False) -> None:
        """Flush due groups (every pending one with `flush_groups`: the input ended, nothing
        more will join them), give deliveries `drain_seconds` to finish (with `flush_groups`,
        `drain_seconds` since the last one delivered), then stop. What is left stays in the
        outbox for the next start, and the log says so."""
        if self._threads:
            self.pump(waiting_too=flush_groups)
            deadline = time.monotonic() + drain_seconds
            delivered = self._delivered
            while time.monotonic() < deadline and any(self.pending(n) for n in self._receivers):
                time.sleep(0.05)
                if flush_groups and self._delivered != delivered:
                    # the input ended and the receivers take what is sent, at the pace of
                    # their rate limits: wait for all of it, not for a fixed share of the
                    # grace period (a healthy replay of 3 hours left 16 notifications queued)
                    delivered = self._delivered
                    deadline = time.monotonic() + drain_seconds
        self._stop.set()
        self._wake.set()
        for runtime in self._receivers.values():
            runtime.wake.set()
        for thread in self._threads:
            thread.join(timeout=self.join_seconds)
        still_sending = [t.name for t in self._threads if t.is_alive()]
        self._threads = []
        # counted once the delivery threads stopped: a send still on its way when the drain
        # ended (a receiver answering in 10 s) was reported queued, and then delivered
        with self._lock:
            waiting: Tally[str] = Tally()
            for (receiver, _), state in self._groups.items():
                waiting[receiver] += len(state.pending)
        for receiver in self._receivers:
            queued = self.pending(receiver) + waiting[receiver]
            self.left_queued[receiver] = queued
            if queued:
                log.warning(
                    "receiver %s: %d notification(s) not sent yet; they stay in the outbox "
                    "and go out after the next start",
                    receiver,
                    queued,
                )
        if still_sending:
            # closed under it, its send would be cut off or its success not recorded (the
            # page then went out again at the next start, an error logged meanwhile): the
            # process is ending, which releases both
            log.warning(
                "%s still sending after %.0f s; the notification counts as queued and is "
                "struck off if its send succeeds before the process ends",
                ", ".join(still_sending),
                self.join_seconds,
            )
            return
        for runtime in self._receivers.values():
            runtime.sender.close()
        self._outbox.close()


def _rounds(batch: tuple[Alert, ...]) -> list[tuple[Alert, ...]]:
    """A group's changes as messages, each naming an alert at most once: a page and its
    resolve that waited together go out as two messages, in order, not as one message that
    says the same alert is both firing and resolved."""
    rounds: list[tuple[Alert, ...]] = []
    current: list[Alert] = []
    for alert in batch:
        if any(a.dedup_key == alert.dedup_key for a in current):
            rounds.append(tuple(current))
            current = []
        current.append(alert)
    if current:
        rounds.append(tuple(current))
    return rounds
