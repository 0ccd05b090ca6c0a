"""`UnaryReceiver`: unary pulls made ahead of the engine, and acks sent behind it.

Why threads: ingest of single-record messages spent about 27% of its time waiting for a `Pull`
and 7% waiting for an `Acknowledge`, during which it did nothing else; the emulator or the
service answers them while we decode, fold and checkpoint. So:
- a pull thread keeps a queue of received messages filled while the engine works; `receive`
  only takes from it. What is queued counts against flow control with what the engine holds:
  the thread pulls at most `pull_max_messages` at a time and only while held + queued stays
  under `max_messages` and `max_bytes` (the bytes bound is passed by at most one pull), so
  memory follows configuration, never the backlog (promise 3);
- an ack thread sends the acks the engine decided (after its checkpoint is durable: promise 1
  does not move) in one request per batch, while the next pull is in flight. `flush` waits for
  them; `close` flushes before anything is handed back. A kill -9 between a checkpoint and its
  ack means a redelivery of that checkpoint's messages, which the recent request ids remove;
- a lease thread extends the ack deadline of every message held or queued, until it is acked
  or `max_lease_duration` passes.
Messages queued but never handed out are nacked at `stop`, so another worker gets them at once.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType

from google.api_core import exceptions as gexc
from google.cloud import pubsub_v1

from worker.failure_policy import describe
from worker.sources.pubsub_pull_health import PullHealth
from worker.sources.pubsub_receivers import (
    CALL_TIMEOUT_SECONDS,
    Counters,
    Received,
    unary_ack,
    unary_modify,
)

log = logging.getLogger(__name__)

#: the attributes of a message that has none: shared, read-only (most messages have none)
NO_ATTRIBUTES: Mapping[str, str] = MappingProxyType({})
#: how long one pull may wait for messages on an idle subscription; also the longest wait at
#: `stop` for a pull in flight (its messages are nacked when they come)
PULL_WAIT_SECONDS = 1.0
#: how often a backing-off puller looks whether the channel came back
RECONNECT_POLL_SECONDS = 0.1


@dataclass(frozen=True)
class PullLimits:
    """Flow control for unary pull: what one pull asks for, what may be held at once."""

    pull_max_messages: int = 1000
    max_messages: int = 10_000
    max_bytes: int = 256 * 1024 * 1024
    #: pulls in flight at once: a pull returns at most a few hundred messages (the emulator
    #: 100) and waits one round trip, so one pull at a time caps throughput at that
    concurrent_pulls: int = 2
    #: once a message is queued, how long `receive` waits for a fuller batch while pulls are
    #: in flight: the engine pays about 1 ms per poll (a fold and a decode call), so polls of
    #: 100 single-record messages cost it 10 us a record more than polls of 1,000
    linger_seconds: float = 0.05


class AckSender:
    """Sends acks on its own thread, many decisions per request; `flush` waits for them."""

    def __init__(
        self,
        client: pubsub_v1.SubscriberClient,
        subscription: str,
        counters: Counters,
        call_timeout: Callable[[], float],
    ) -> None:
        self._client = client
        self._subscription = subscription
        self._counters = counters
        self._call_timeout = call_timeout
        self._cond = threading.Condition()
        self._pending: list[str] = []
        self._sending = False
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name="lookout-ack", daemon=True)
        self._thread.start()

    def send(self, ack_ids: Sequence[str]) -> None:
        with self._cond:
            if self._closed:  # after close: send now, on this thread (nothing may be dropped)
                closed = True
            else:
                closed = False
                self._pending.extend(ack_ids)
                self._cond.notify_all()
        if closed:
            self._ack(list(ack_ids))

    def _ack(self, ack_ids: list[str]) -> None:
        unary_ack(
            self._client, self._subscription, ack_ids, self._counters, timeout=self._call_timeout()
        )

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._pending and not self._closed:
                    self._cond.wait()
                if not self._pending:
                    return
                batch, self._pending = self._pending, []
                self._sending = True
            try:
                self._ack(batch)
            except Exception as e:  # unary_ack counts API errors; anything else is ours
                self._counters.ack_failures += 1
                log.error(
                    "sending %d acks failed, they will be redelivered: %s", len(batch), describe(e)
                )
            finally:
                with self._cond:
                    self._sending = False
                    self._cond.notify_all()

    def flush(self, timeout: float) -> bool:
        """Wait until every ack given so far was sent (or failed); False if `timeout` passed."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._pending or self._sending:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
        return True

    def close(self, timeout: float) -> None:
        """Send what is pending, then stop the thread; later acks are sent synchronously."""
        self.flush(timeout)
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._thread.join(timeout=max(timeout, 0.1))


class UnaryReceiver:
    """Pulls ahead into a bounded queue; acks behind; extends leases. See the module doc."""

    def __init__(
        self,
        client: pubsub_v1.SubscriberClient,
        subscription: str,
        *,
        ack_deadline_seconds: int,
        max_lease_duration_seconds: float,
        limits: PullLimits,
        counters: Counters,
        held: Callable[[], list[Received]],
        holding: Callable[[], tuple[int, int]],
        health: PullHealth,
        connected: Callable[[], bool],
        reconnected_since: Callable[[float], bool] = lambda _moment: False,
    ) -> None:
        self._client = client
        self._subscription = subscription
        self._deadline = ack_deadline_seconds
        self._max_lease = max_lease_duration_seconds
        self._limits = limits
        self._counters = counters
        self._held = held
        self._holding = holding
        self._health = health
        self._connected = connected
        self._reconnected_since = reconnected_since
        self._stopped = threading.Event()
        self._closed = threading.Event()
        #: seconds allowed per ack/nack call; the source lowers it for the final nack at close
        self.call_timeout = CALL_TIMEOUT_SECONDS
        self._cond = threading.Condition()
        self._queue: list[Received] = []
        self._queued_bytes = 0
        self._asked = 0  # messages asked for by pulls in flight: counted against flow control
        self._acks = AckSender(client, subscription, counters, lambda: self.call_timeout)
        self._pullers = [
            threading.Thread(
                target=self._pull_loop, args=(i == 0,), name=f"lookout-pull-{i}", daemon=True
            )
            for i in range(limits.concurrent_pulls)
        ]
        self._lease = threading.Thread(target=self._extend_loop, name="lookout-lease", daemon=True)
        for thread in self._pullers:
            thread.start()
        self._lease.start()

    # -- receiving -----------------------------------------------------------------------------

    def receive(self, max_messages: int, timeout_seconds: float) -> list[Received]:
        """Up to `max_messages` queued messages, waiting at most `timeout_seconds` for one,
        then up to `linger_seconds` more (within the timeout) for the rest while pulls are in
        flight. When the engine is the slower side the queue is full and nothing waits."""
        deadline = time.monotonic() + timeout_seconds
        with self._cond:
            while not self._queue:
                left = deadline - time.monotonic()
                if left <= 0 or self._stopped.is_set():
                    return []
                self._cond.wait(left)
            linger_end = min(time.monotonic() + self._limits.linger_seconds, deadline)
            while len(self._queue) < max_messages and self._asked and not self._stopped.is_set():
                left = linger_end - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
            items = self._queue[:max_messages]
            del self._queue[:max_messages]
            self._queued_bytes -= sum(len(i.data) for i in items)
            return items

    def queued(self) -> int:
        """Messages pulled ahead and not yet handed out."""
        with self._cond:
            return len(self._queue)

    def _reserve(self) -> int:
        """Messages the next pull may ask for, reserved until it returns (0: flow control is
        full). The caller gives it back when the pull returned."""
        held, held_bytes = self._holding()
        limits = self._limits
        with self._cond:
            if held_bytes + self._queued_bytes >= limits.max_bytes:
                return 0
            count = held + len(self._queue) + self._asked
            room = max(0, min(limits.pull_max_messages, limits.max_messages - count))
            self._asked += room
            return room

    def _pull_loop(self, prober: bool) -> None:
        """Pull until stopped. Until a pull has worked (and after one failed) only the prober
        pulls, so a missing subscription or a dead endpoint costs one attempt per backoff."""
        while not self._stopped.is_set():
            if not prober and not self._health.ready:
                self._stopped.wait(0.05)
                continue
            try:
                self._pull_once()
            except Exception as e:  # the thread must live: report and back off
                log.error(
                    "pulling from %s failed unexpectedly: %s", self._subscription, describe(e)
                )
                self._health.failed(e)

    def _pull_once(self) -> None:
        now = time.monotonic()
        if now < self._health.retry_at:  # backing off after a failure
            self._back_off(self._health.retry_at)
            if self._stopped.is_set():
                return
        room = self._reserve()
        if room == 0:
            with self._cond:  # woken when the engine takes, acks or nacks messages
                self._cond.wait(0.05)
            return
        items: list[Received] = []
        try:
            items = self._pull(room)
        finally:
            with self._cond:
                self._asked -= room
                stopped = self._stopped.is_set()
                if items and not stopped:
                    self._queue.extend(items)
                    self._queued_bytes += sum(len(i.data) for i in items)
                    self._cond.notify_all()
        if items and stopped:  # stopped while this pull was in flight: hand them straight back
            self._nack_ids([i.ack_id for i in items])
        elif not items:
            self._stopped.wait(0.01)  # the emulator answers an empty pull at once

    def _back_off(self, until: float) -> None:
        """Wait until `until`, or less: a channel that reconnected after the failure ends the
        wait, so pulls resume within a reconnect of the endpoint's return, whatever the
        backoff grew to over a long outage."""
        failed_at = self._health.failed_at
        # a missing subscription or a refused permission fails on a connected channel: a
        # reconnect says nothing about it, and must not cut its backoff short
        early = self._health.unreachable
        while not self._stopped.is_set():
            left = until - time.monotonic()
            if left <= 0 or (early and self._reconnected_since(failed_at)):
                return
            self._stopped.wait(min(left, RECONNECT_POLL_SECONDS))

    def _pull(self, room: int) -> list[Received]:
        """One pull of up to `room` messages; [] when none came or it failed (reported)."""
        try:
            response = self._client.pull(
                subscription=self._subscription,
                max_messages=room,
                timeout=PULL_WAIT_SECONDS,
                retry=None,
            )
        except gexc.DeadlineExceeded as e:
            # an idle subscription on a live connection; a dead endpoint if not connected
            if not self._connected():
                self._health.failed(e)
            return []
        except gexc.GoogleAPICallError as e:
            if not self._stopped.is_set():
                self._health.failed(e)
            return []
        self._health.succeeded()
        # the raw protobuf: proto-plus attribute access cost half the loop's time
        received = type(response).pb(response).received_messages
        now = time.monotonic()
        first = now + 5.0  # before the subscription's own deadline (10 s at the least)
        return [
            Received(
                m.ack_id,
                m.message.message_id,
                m.message.data,
                dict(m.message.attributes) if m.message.attributes else NO_ATTRIBUTES,
                now,
                None,
                m.delivery_attempt,
                0,
                first,
            )
            for m in received
        ]

    # -- leases, acks, nacks -------------------------------------------------------------------

    def _extend_loop(self) -> None:
        while not self._closed.wait(1.0):
            now = time.monotonic()
            due: list[str] = []
            with self._cond:
                queued = list(self._queue)
            for item in [*self._held(), *queued]:
                if item.next_extension > now:
                    continue
                if now - item.received_at > self._max_lease:
                    if item.next_extension != float("inf"):
                        self._counters.lease_expired += 1
                        item.next_extension = float("inf")
                    continue
                due.append(item.ack_id)
                item.next_extension = now + self._deadline / 2
            if due:
                unary_modify(self._client, self._subscription, due, self._deadline, self._counters)
                self._counters.lease_extensions += len(due)

    def _wake(self) -> None:
        with self._cond:
            self._cond.notify_all()

    def ack(self, items: Sequence[Received]) -> None:
        """Queued for the ack thread; the engine made these durable already."""
        self._acks.send([i.ack_id for i in items])
        self._wake()

    def nack(self, items: Sequence[Received]) -> None:
        self._nack_ids([i.ack_id for i in items])
        self._wake()

    def _nack_ids(self, ack_ids: list[str]) -> None:
        if ack_ids:
            unary_modify(
                self._client, self._subscription, ack_ids, 0, self._counters, self.call_timeout
            )

    def flush(self, timeout: float) -> bool:
        """Wait for the acks given so far to be sent; False if `timeout` passed first."""
        return self._acks.flush(timeout)

    def ready(self) -> bool:
        return self._health.ready and not self._stopped.is_set()

    def stop(self) -> None:
        """Stop pulling and nack what was queued but never handed out; held messages keep
        their leases (and can still be acked) until `close`."""
        if self._stopped.is_set():
            return
        self._stopped.set()
        with self._cond:
            unpolled, self._queue, self._queued_bytes = self._queue, [], 0
            self._cond.notify_all()
        self._nack_ids([i.ack_id for i in unpolled])

    def close(self) -> None:
        """Send pending acks, wait a bounded time for a pull in flight, stop the threads."""
        self.stop()
        self._acks.close(self.call_timeout)
        deadline = time.monotonic() + PULL_WAIT_SECONDS + 0.5
        for thread in self._pullers:
            thread.join(timeout=max(deadline - time.monotonic(), 0.0))
        self._closed.set()
        self._lease.join(timeout=2)
