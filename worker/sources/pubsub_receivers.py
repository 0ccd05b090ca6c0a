"""What both Pub/Sub receivers share: the `Received` message, counters, and the ack / deadline
calls.

Both receivers (`UnaryReceiver` in `pubsub_unary`, `StreamingReceiver` in `pubsub_streaming`)
hand out `Received` messages, keep their leases alive until `ack`/`nack`, and bound what they
hold (promise 3). They differ in who drives delivery:
- `UnaryReceiver`: a pull thread keeps a bounded queue filled ahead of the engine's `poll`, an
  ack thread sends acks behind it, a lease thread extends the ack deadline of held messages
  (`ModifyAckDeadline`) until they are acked or `max_lease_duration` passes. Failed pulls back
  off and are reported through `PullHealth`.
- `StreamingReceiver`: `SubscriberClient.subscribe` with `FlowControl`.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from google.api_core import exceptions as gexc
from google.cloud import pubsub_v1
from google.cloud.pubsub_v1.subscriber.message import Message
from google.pubsub_v1.types import AcknowledgeRequest, ModifyAckDeadlineRequest

from worker.failure_policy import RETRYABLE_EXCEPTIONS, describe, reason_of

log = logging.getLogger(__name__)

#: Pub/Sub accepts up to 2,500 ack ids per request; stay well below the 512 KB request limit
_ACK_CHUNK = 1000
#: every call is bounded and made with `retry=None` (we retry ourselves): the library's default
#: retry keeps a call to a dead endpoint going for a minute, past any shutdown grace period
CALL_TIMEOUT_SECONDS = 10.0


@dataclass(slots=True)
class Received:
    """One delivered message and what keeps its lease alive."""

    ack_id: str
    message_id: str
    data: bytes
    attributes: Mapping[str, str]
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
