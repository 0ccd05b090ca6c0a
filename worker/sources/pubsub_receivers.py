"""Unary pull for `PubSubSource`, and the ack / deadline calls both receivers share.

Both receivers (`UnaryReceiver` here, `StreamingReceiver` in `pubsub_streaming`) hand out
`Received` messages, keep their leases alive until `ack`/`nack`, and bound what they hold
(promise 3). They differ in who drives delivery:
- `UnaryReceiver`: the engine's `poll` issues a `Pull`; a lease thread extends the ack deadline
  of held messages (`ModifyAckDeadline`) until they are acked or `max_lease_duration` passes.
  Failed pulls back off and are reported through `PullHealth`.
- `StreamingReceiver`: `SubscriberClient.subscribe` with `FlowControl`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from google.api_core import exceptions as gexc
from google.cloud import pubsub_v1
from google.cloud.pubsub_v1.subscriber.message import Message
from google.pubsub_v1.types import AcknowledgeRequest, ModifyAckDeadlineRequest

from worker.failure_policy import RETRYABLE_EXCEPTIONS, describe, reason_of
from worker.sources.pubsub_pull_health import PullHealth

log = logging.getLogger(__name__)

#: Pub/Sub accepts up to 2,500 ack ids per request; stay well below the 512 KB request limit
_ACK_CHUNK = 1000
#: every call is bounded and made with `retry=None` (we retry ourselves): the library's default
#: retry keeps a call to a dead endpoint going for a minute, past any shutdown grace period
CALL_TIMEOUT_SECONDS = 10.0


@dataclass
class Received:
    """One delivered message and what keeps its lease alive."""

    ack_id: str
    message_id: str
    data: bytes
    attributes: dict[str, str]
    received_at: float
    message: Message | None = None  # streaming only: acks go through the stream while it lives
    #: Pub/Sub's count of deliveries (set when the subscription has a dead-letter policy), or 0
    delivery_attempt: int = 0
    generation: int = 0
    next_extension: float = field(default=0.0)


@dataclass
class Counters:
    """Shared, monotonically increasing counts the source exposes as stats."""

    callback_errors: int = 0
    stream_restarts: int = 0
    lease_extensions: int = 0
    ack_failures: int = 0
    lease_expired: int = 0
    #: ack/nack/extension failures by `failure_policy.reason_of` label
    call_errors: Counter[str] = field(default_factory=Counter)


def _chunks(items: Sequence[str]) -> list[Sequence[str]]:
    return [items[i : i + _ACK_CHUNK] for i in range(0, len(items), _ACK_CHUNK)]


def _ack_request(subscription: str, ack_ids: Sequence[str]) -> AcknowledgeRequest:
    """Built as raw protobuf and wrapped: proto-plus copied ack ids one by one, 2 µs each."""
    raw = AcknowledgeRequest.pb()(subscription=subscription, ack_ids=ack_ids)
    request: AcknowledgeRequest = AcknowledgeRequest.wrap(raw)
    return request


def unary_modify(
    client: pubsub_v1.SubscriberClient,
    subscription: str,
    ack_ids: Sequence[str],
    deadline: int,
    counters: Counters,
    timeout: float = CALL_TIMEOUT_SECONDS,
) -> None:
    """ModifyAckDeadline (0 = nack) in chunks; failures are counted and logged, not raised.

    A failed nack or extension only means Pub/Sub redelivers later than hoped: nothing is lost.
    """
    for chunk in _chunks(ack_ids):
        try:
            request = ModifyAckDeadlineRequest.pb()(
                subscription=subscription, ack_ids=chunk, ack_deadline_seconds=deadline
            )
            client.modify_ack_deadline(
                request=ModifyAckDeadlineRequest.wrap(request), timeout=timeout, retry=None
            )
        except gexc.GoogleAPICallError as e:
            counters.ack_failures += 1
            counters.call_errors[reason_of(e)] += 1
            log.warning(
                "modify_ack_deadline(%ss) of %d messages failed: %s",
                deadline,
                len(chunk),
                describe(e),
            )


def unary_ack(
    client: pubsub_v1.SubscriberClient,
    subscription: str,
    ack_ids: Sequence[str],
    counters: Counters,
    attempts: int = 3,
    timeout: float = CALL_TIMEOUT_SECONDS,
) -> None:
    """Acknowledge in chunks, retrying transient errors, all within `timeout` seconds; a lost
    ack only means a redelivery."""
    deadline = time.monotonic() + timeout  # all attempts of all chunks together
    for chunk in _chunks(ack_ids):
        request = _ack_request(subscription, chunk)
        for attempt in range(attempts):
            try:
                left = max(deadline - time.monotonic(), 0.1)
                client.acknowledge(request=request, timeout=left, retry=None)
                break
            except RETRYABLE_EXCEPTIONS as e:
                if attempt + 1 == attempts or time.monotonic() >= deadline:
                    counters.ack_failures += 1
                    counters.call_errors[reason_of(e)] += 1
                    log.warning(
                        "ack of %d messages failed, they will be redelivered: %s",
                        len(chunk),
                        describe(e),
                    )
                    break
                time.sleep(min(0.2 * 2**attempt, max(deadline - time.monotonic(), 0.0)))
            except gexc.GoogleAPICallError as e:
                counters.ack_failures += 1
                counters.call_errors[reason_of(e)] += 1
                log.warning(
                    "ack of %d messages failed, they will be redelivered: %s",
                    len(chunk),
                    describe(e),
                )
                break


class UnaryReceiver:
    """Pull on demand; a daemon thread extends the deadlines of held messages."""

    def __init__(
        self,
        client: pubsub_v1.SubscriberClient,
        subscription: str,
        *,
        ack_deadline_seconds: int,
        max_lease_duration_seconds: float,
        counters: Counters,
        held: Callable[[], list[Received]],
        health: PullHealth,
        connected: Callable[[], bool],
    ) -> None:
        self._client = client
        self._subscription = subscription
        self._deadline = ack_deadline_seconds
        self._max_lease = max_lease_duration_seconds
        self._counters = counters
        self._held = held
        self._health = health
        self._connected = connected
        self._stopped = threading.Event()
        #: seconds allowed per ack/nack call; the source lowers it for the final nack at close
        self.call_timeout = CALL_TIMEOUT_SECONDS
        self._thread = threading.Thread(target=self._extend_loop, name="lookout-lease", daemon=True)
        self._thread.start()

    def receive(self, max_messages: int, timeout_seconds: float) -> list[Received]:
        """Pull until messages come or `timeout_seconds` pass; failures back off (PullHealth)."""
        deadline = time.monotonic() + timeout_seconds
        while not self._stopped.is_set():
            now = time.monotonic()
            if now < self._health.retry_at:  # backing off after a failure
                if now >= deadline:
                    return []
                self._stopped.wait(min(self._health.retry_at, deadline) - now)
                continue
            remaining = deadline - now
            try:
                response = self._client.pull(
                    subscription=self._subscription,
                    max_messages=max_messages,
                    timeout=max(remaining, 1.0),
                    retry=None,
                )
            except gexc.DeadlineExceeded as e:
                # an idle subscription on a live connection; a dead endpoint if not connected
                if not self._connected():
                    self._health.failed(e)
                    continue
                response = None
            except gexc.GoogleAPICallError as e:
                self._health.failed(e)
                continue
            self._health.succeeded()
            # the raw protobuf: proto-plus attribute access cost half the loop's time
            raw = None if response is None else type(response).pb(response)
            if raw is not None and raw.received_messages:
                now = time.monotonic()
                # the first extension must land before the subscription's own deadline
                # (10 s at the least), whatever it is
                return [
                    Received(
                        ack_id=m.ack_id,
                        message_id=m.message.message_id,
                        data=m.message.data,
                        attributes=dict(m.message.attributes),
                        received_at=now,
                        next_extension=now + 5.0,
                        delivery_attempt=m.delivery_attempt,
                    )
                    for m in raw.received_messages
                ]
            if time.monotonic() >= deadline:
                return []
            self._stopped.wait(min(0.05, max(deadline - time.monotonic(), 0.0)))
        return []

    def _extend_loop(self) -> None:
        while not self._stopped.wait(1.0):
            now = time.monotonic()
            due: list[str] = []
            for item in self._held():
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

    def ack(self, items: Sequence[Received]) -> None:
        unary_ack(
            self._client,
            self._subscription,
            [i.ack_id for i in items],
            self._counters,
            timeout=self.call_timeout,
        )

    def nack(self, items: Sequence[Received]) -> None:
        unary_modify(
            self._client,
            self._subscription,
            [i.ack_id for i in items],
            0,
            self._counters,
            timeout=self.call_timeout,
        )

    def ready(self) -> bool:
        return self._health.ready and not self._stopped.is_set()

    def stop(self) -> None:
        """Stop pulling; keep extending leases of held messages until `close`."""
        self._stopped.set()

    def close(self) -> None:
        self._stopped.set()
        self._thread.join(timeout=2)
