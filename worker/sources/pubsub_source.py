"""`PubSubSource`: the engine's `Source` on a Cloud Pub/Sub subscription.

What it adds on top of receiving (see `pubsub_receivers`):
- messages are acked only when the engine says so (after its checkpoint is durable), nacked on
  request, and their leases kept alive meanwhile, up to `max_lease_duration_seconds`;
- `Content-Encoding: gzip` bodies are inflated (bounded, against gzip bombs). A body that does
  not inflate is itself a bad record: it is dead-lettered here and acked, or nacked when the
  dead-letter publish fails, and never reaches the engine;
- redelivery: a message id acked recently is acked again at once and not handed out; a
  duplicate of a message the engine still holds is held with it and acked or nacked with it
  (acking it early would ack the original too, and a crash before the checkpoint would lose it);
- `dead_letter` publishes each bad record's original bytes with the reason as attributes and
  waits for Pub/Sub to confirm (see `pubsub_dead_letter`: a body too large for Pub/Sub goes
  as a finder record, nothing on that path raises, and a message whose bad records cannot be
  dead-lettered `max_dead_letter_failures` times is given up on, logged with its finder facts,
  rather than redelivered forever);
- pulls that fail back off and say why once (see `pubsub_pull_health`); `ready` is False until
  a pull has worked.

Why unary pull is the default (`mode="unary"`): the engine already polls in batches and holds
messages until its checkpoint, which is exactly unary pull's shape; memory is bounded by what we
ask for. Pulls run ahead of the engine on `concurrent_pulls` threads and acks are sent behind it
(see `pubsub_unary`). On the emulator (`python -m bench.pubsub_bench`, best of 2, 2-core shared
machine) unary poll+ack reached 1.3-2.2x a bare pull+parse+ack loop with single-record
messages where streaming stayed at ~2k records/s (the emulator paces a stream), and 2-3.7x
with 100-record NDJSON, where streaming reached 0.3-0.5x.
Streaming pull (`mode="streaming"`) stays available for production subscriptions where the
lower delivery latency of a held-open stream matters more than throughput per worker.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Sequence

from google.auth import exceptions as google_auth_exceptions
from google.cloud import pubsub_v1

from schemas.errors import DecodeError
from worker.failure_policy import ERROR_REASONS, SetupError, describe
from worker.source import SourceMessage
from worker.sources.grpc_channel import (
    ChannelFactory,
    ConnectivityWatch,
    channel_factory,
    describe_endpoint,
    emulator_host_from_env,
    publisher_client,
    subscriber_client,
    what_to_check,
)
from worker.sources.pubsub_dead_letter import (
    DeadLetterer,
    FailureMemory,
    check_overflow_path,
    publisher_options,
)
from worker.sources.pubsub_pull_health import PullHealth, PullTarget
from worker.sources.pubsub_receivers import Counters, Received
from worker.sources.pubsub_settings import (
    ERROR_STEPS,
    InflateError,
    PubSubSourceSettings,
    PubSubSourceStats,
    PullMode,
    inflate,
)
from worker.sources.pubsub_streaming import StreamingReceiver
from worker.sources.pubsub_unary import NO_ATTRIBUTES, PullLimits, UnaryReceiver

__all__ = [
    "ERROR_STEPS",
    "InflateError",
    "PubSubSource",
    "PubSubSourceSettings",
    "PubSubSourceStats",
    "PullMode",
    "inflate",
]

log = logging.getLogger(__name__)


class PubSubSource:
    """Reads one subscription; see the module docstring for the delivery guarantees."""

    def __init__(
        self, settings: PubSubSourceSettings, *, channel_factory: ChannelFactory | None = None
    ) -> None:
        self.settings = settings
        self._overflow = check_overflow_path(settings.dead_letter_overflow_path)
        self._channels = channel_factory or _default_channels()
        try:
            channel = self._channels()
        except google_auth_exceptions.GoogleAuthError as e:
            msg = (
                f"no Google credentials for Pub/Sub ({describe(e)}): use Workload Identity or "
                "`gcloud auth application-default login`, or set PUBSUB_EMULATOR_HOST"
            )
            raise SetupError(msg) from e
        self._watch = ConnectivityWatch(channel)
        self._client = subscriber_client(self._channels, channel)
        self._path = self._client.subscription_path(settings.project, settings.subscription)
        self.name = f"pubsub:{self._path}"
        self.health = PullHealth(
            PullTarget(
                project=settings.project,
                subscription=settings.subscription,
                path=self._path,
                endpoint=describe_endpoint(self._channels),
                what_to_check=what_to_check(self._channels),
                dead_letter_topic=settings.dead_letter_topic,
            ),
            max_backoff=settings.max_backoff_seconds,
        )
        self._failures = FailureMemory()
        self._dead_letter_errors: Counter[str] = Counter()
        self._topic_problem_logged = False
        self._lock = threading.Lock()
        self._held: dict[str, Received] = {}  # ack_id -> message the engine holds
        self._holder: dict[str, str] = {}  # message_id -> ack_id handed to the engine
        self._dupes: dict[str, list[Received]] = {}  # message_id -> redeliveries held with it
        self._held_bytes = 0  # bytes of `_held` and `_dupes`, for flow control
        self._dupe_count = 0
        self._recent: OrderedDict[str, None] = OrderedDict()  # message ids acked recently
        self._counters = Counters()
        #: told the error type of each message dead-lettered here, before any decode (a body
        #: that cannot be inflated), so the invalid-records metric counts it like a bad record
        self.on_invalid: Callable[[str], None] | None = None
        self._counts = {
            "received": 0,
            "redelivered_acked": 0,
            "redelivered_held": 0,
            "delivered_again": 0,
            "bad_encoding": 0,
            "dead_lettered_records": 0,
            "dead_letter_failures": 0,
            "dead_letter_oversized": 0,
            "dead_letter_given_up": 0,
        }
        #: made now, not at the first bad record: nothing on the dead-letter path may fail late
        self._dlq = self._dead_letterer()
        self._receiver: UnaryReceiver | StreamingReceiver
        if settings.mode == "streaming":
            self._receiver = StreamingReceiver(
                self._client,
                self._path,
                flow_control=pubsub_v1.types.FlowControl(
                    max_messages=settings.max_messages,
                    max_bytes=settings.max_bytes,
                    max_lease_duration=settings.max_lease_duration_seconds,
                ),
                ack_deadline_seconds=settings.ack_deadline_seconds,
                counters=self._counters,
                held=self._held_snapshot,
                health=self.health,
                connected=lambda: self._watch.connected,
            )
        else:
            self._receiver = UnaryReceiver(
                self._client,
                self._path,
                ack_deadline_seconds=settings.ack_deadline_seconds,
                max_lease_duration_seconds=settings.max_lease_duration_seconds,
                limits=PullLimits(
                    pull_max_messages=settings.pull_max_messages,
                    max_messages=settings.max_messages,
                    max_bytes=settings.max_bytes,
                    concurrent_pulls=settings.concurrent_pulls,
                    linger_seconds=settings.poll_linger_seconds,
                ),
                counters=self._counters,
                held=self._held_snapshot,
                holding=self._holding,
                health=self.health,
                connected=lambda: self._watch.connected,
                reconnected_since=self._watch.reconnected_since,
            )

    @property
    def exhausted(self) -> bool:
        return False

    def _held_snapshot(self) -> list[Received]:
        with self._lock:
            return [*self._held.values(), *(d for ds in self._dupes.values() for d in ds)]

    def _holding(self) -> tuple[int, int]:
        """Messages and bytes held for the engine (redeliveries included): flow control."""
        with self._lock:
            return len(self._held) + self._dupe_count, self._held_bytes

    def poll(self, max_messages: int, timeout_seconds: float) -> Sequence[SourceMessage]:
        """Up to `max_messages` new messages; fewer (maybe none) when `max_messages` are held."""
        with self._lock:
            room = self.settings.max_messages - len(self._held)
        if room <= 0:
            time.sleep(min(timeout_seconds, 0.05))  # the engine must checkpoint and ack first
            return []
        received = self._receiver.receive(min(max_messages, room), timeout_seconds)
        out: list[SourceMessage] = []
        ack_now: list[Received] = []
        fresh: list[Received] = []
        recent, holder, held = self._recent, self._holder, self._held
        with self._lock:  # once per poll, not per message
            self._counts["received"] += len(received)
            for item in received:
                message_id = item.message_id
                if message_id in recent:
                    ack_now.append(item)
                elif message_id in holder:
                    self._dupes.setdefault(message_id, []).append(item)
                    self._dupe_count += 1
                    self._held_bytes += len(item.data)
                else:
                    held[item.ack_id] = item
                    holder[message_id] = item.ack_id
                    self._held_bytes += len(item.data)
                    fresh.append(item)
                    # a crash's redeliveries are new to this process: only Pub/Sub's count
                    # tells them (the two counters above stayed 0 after a kill -9)
                    self._counts["delivered_again"] += item.delivery_attempt > 1
            self._counts["redelivered_acked"] += len(ack_now)
            self._counts["redelivered_held"] += len(received) - len(ack_now) - len(fresh)
        for item in fresh:
            if not item.attributes:  # the common case: nothing to inflate
                out.append(
                    SourceMessage(
                        item.message_id,
                        item.data,
                        item.ack_id,
                        NO_ATTRIBUTES,
                        delivery_attempt=item.delivery_attempt,
                    )
                )
                continue
            message = self._to_source_message(item)
            if message is not None:
                out.append(message)
        if ack_now:
            self._receiver.ack(ack_now)
        return out

    def _to_source_message(self, item: Received) -> SourceMessage | None:
        """Inflate gzip bodies; a body that cannot be read is dead-lettered here, not returned."""
        encoding = item.attributes.get("Content-Encoding", "").strip().lower()
        raw = SourceMessage(
            item.message_id,
            item.data,
            item.ack_id,
            item.attributes,
            delivery_attempt=item.delivery_attempt,
        )
        if encoding in ("", "identity"):
            return raw
        try:
            if encoding != "gzip":
                msg = f"unsupported Content-Encoding {encoding!r} (expected gzip or none)"
                raise InflateError(msg)
            data = inflate(item.data, self.settings.max_inflated_bytes)
        except InflateError as e:
            log.warning("message %s on %s: %s", item.message_id, self._path, e)
            error = DecodeError(line=1, reason=str(e), raw=item.data, error_type="bad_encoding")
            if self.dead_letter(raw, [error]):
                with self._lock:  # once per message, not per try of a broken dead-letter topic
                    self._counts["bad_encoding"] += 1
                if self.on_invalid is not None:
                    self.on_invalid(error.error_type)
                self.ack([item.ack_id])
            else:
                self.nack([item.ack_id])
            return None
        return dataclasses.replace(raw, data=data)

    def _release(self, ack_ids: Sequence[str], *, done: bool) -> list[Received]:
        """Forget held messages (and their held redeliveries); remember acked message ids.

        Runs on the engine's thread for every message of a checkpoint: one lock, no per-item
        work that is not needed (redeliveries and the recent-id bound are rare)."""
        items: list[Received] = []
        add = items.append
        limit = self.settings.recent_ids if done else 0
        with self._lock:
            held, holder, dupes, recent = self._held, self._holder, self._dupes, self._recent
            freed = 0
            for ack_id in ack_ids:
                item = held.pop(ack_id, None)
                if item is None:
                    continue
                add(item)
                freed += len(item.data)
                message_id = item.message_id
                holder.pop(message_id, None)
                if dupes and message_id in dupes:
                    more = dupes.pop(message_id)
                    self._dupe_count -= len(more)
                    freed += sum(len(d.data) for d in more)
                    items.extend(more)
                if limit:
                    recent[message_id] = None
            self._held_bytes -= freed
            for _ in range(len(recent) - limit if limit else 0):
                recent.popitem(last=False)
        return items

    def ack(self, ack_ids: Sequence[str]) -> None:
        items = self._release(ack_ids, done=True)
        if items:
            self._receiver.ack(items)

    def flush_acks(self, timeout_seconds: float) -> bool:
        """Wait until the acks given so far reached Pub/Sub (they are sent on a thread, behind
        the engine); False if `timeout_seconds` passed first. `close` does this itself."""
        return self._receiver.flush(timeout_seconds)

    def nack(self, ack_ids: Sequence[str]) -> None:
        items = self._release(ack_ids, done=False)
        if items:
            self._receiver.nack(items)

    def dead_letter(self, message: SourceMessage, errors: Sequence[DecodeError]) -> bool:
        """Publish each bad record to the dead-letter topic and wait; False if it failed.

        Never raises. Without a dead-letter topic the errors are logged (message id, line,
        field, reason) and True is returned: the records are reported, and nacking would only
        loop them forever. A failure returns False (the caller nacks; Pub/Sub redelivers)
        until the message has failed `max_dead_letter_failures` times (our count, or Pub/Sub's
        delivery_attempt when larger): then it is given up on — logged with each record's
        size and sha256, its body kept in the overflow directory if set — and True returned.
        """
        if not errors:
            return True
        dlq = self._dlq
        if dlq is None:
            for error in errors:
                log.warning(
                    "bad record in message %s on %s (no dead-letter topic): %s",
                    message.message_id,
                    self._path,
                    error.describe(),
                )
            return True
        outcome = dlq.send(message, errors)
        with self._lock:
            self._counts["dead_letter_oversized"] += outcome.oversized
            if outcome.ok:
                self._counts["dead_lettered_records"] += len(errors)
                self._failures.forget(message.message_id)
                so_far = self._counts["dead_lettered_records"]
                crossed = so_far // 1000 > (so_far - len(errors)) // 1000
                if so_far - len(errors) < 20 or crossed:
                    # each message while they are rare, then about every 1,000th record, so a
                    # producer sending garbage cannot flood the log (the metric counts all);
                    # without it a bad record showed only in a counter a restart resets
                    log.warning(
                        "dead-lettered %d bad record(s) of message %s to %s (%d so far): %s",
                        len(errors),
                        message.message_id,
                        dlq.topic_path,
                        so_far,
                        errors[0].describe(),
                    )
                return True
            self._counts["dead_letter_failures"] += 1
            self._dead_letter_errors[outcome.error_reason] += 1
            held = self._held.get(message.ack_id)
            ours = self._failures.add(message.message_id) if outcome.attempted else 0
            attempts = max(ours, held.delivery_attempt if held else 0)
        limit = self.settings.max_dead_letter_failures
        if attempts >= limit:
            dlq.give_up(message, errors, f"{attempts} attempts failed, the last: {outcome.reason}")
            with self._lock:
                self._counts["dead_letter_given_up"] += len(errors)
                self._failures.forget(message.message_id)
            return True
        if not outcome.retryable and not self._topic_problem_logged:
            self._topic_problem_logged = True
            log.error(
                "the dead-letter topic %s refuses publishes (%s): create it with `lookout "
                "pubsub init --project %s --topic TOPIC --subscription %s --dead-letter-topic "
                "%s --update` (which also gives the subscription that dead-letter policy) or "
                "grant roles/pubsub.publisher on it; messages with bad records are nacked and "
                "given up on after %d attempts each",
                dlq.topic_path,
                outcome.reason,
                self.settings.project,
                self.settings.subscription,
                self.settings.dead_letter_topic,
                limit,
            )
        log.log(
            logging.WARNING if outcome.attempted else logging.DEBUG,
            "dead-lettering the bad records of message %s to %s failed (attempt %d of %d, "
            "nacked for redelivery): %s",
            message.message_id,
            dlq.topic_path,
            attempts,
            limit,
            outcome.reason,
        )
        return False

    def _dead_letterer(self) -> DeadLetterer | None:
        topic = self.settings.dead_letter_topic
        if topic is None:
            return None
        timeout = self.settings.dead_letter_timeout_seconds
        publisher = publisher_client(
            self._channels,
            pubsub_v1.types.BatchSettings(max_messages=100, max_latency=0.005),
            publisher_options(timeout),
        )
        return DeadLetterer(
            publisher,
            publisher.topic_path(self.settings.project, topic),
            self._path,
            overflow=self._overflow,
            timeout_seconds=timeout,
        )

    def stats(self) -> PubSubSourceStats:
        with self._lock:
            c = self._counters
            errors = {("pull", reason): self.health.errors[reason] for reason in ERROR_REASONS}
            errors |= {("ack", reason): c.call_errors[reason] for reason in ERROR_REASONS}
            errors |= {
                ("dead_letter", reason): self._dead_letter_errors[reason]
                for reason in ERROR_REASONS
            }
            return PubSubSourceStats(
                **self._counts,
                callback_errors=c.callback_errors,
                stream_restarts=c.stream_restarts,
                lease_extensions=c.lease_extensions,
                lease_expired=c.lease_expired,
                ack_failures=c.ack_failures,
                held=len(self._held),
                queued=self._receiver.queued(),
                errors=tuple(errors.items()),
            )

    def ready(self) -> bool:
        """Connected: a pull has worked and none has failed since (see `PullHealth`)."""
        return self._receiver.ready()

    def status(self) -> str:
        """Why not ready, for the /readyz body."""
        return self.health.status()

    def stop(self) -> None:
        """Stop pulling; from now on every call is bounded by `close_timeout_seconds`, so the
        final checkpoint's ack and the nacks at close fit in the grace period."""
        self._receiver.call_timeout = self.settings.close_timeout_seconds
        self._receiver.stop()

    def close(self) -> None:
        """Send the acks given so far, nack whatever is still held (it was never made
        durable), then drop connections.

        Bounded by `close_timeout_seconds` for the acks and nacks together, plus a pull in
        flight, whatever the network does: an ack that does not arrive means a redelivery the
        recent request ids remove; a nack that does not, a redelivery after the ack deadline.
        """
        budget = self.settings.close_timeout_seconds
        deadline = time.monotonic() + budget
        self._receiver.call_timeout = budget
        self._receiver.stop()
        self._receiver.flush(max(deadline - time.monotonic(), 0.1))
        with self._lock:
            leftover = list(self._held)
        self._receiver.call_timeout = max(deadline - time.monotonic(), 0.5)
        self.nack(leftover)
        self._receiver.close()
        if self._dlq is not None:
            self._dlq.close()
        self._watch.close()
        self._client.close()


def _default_channels() -> ChannelFactory:
    """Production by default; `PUBSUB_EMULATOR_HOST` honoured when a caller passes nothing."""
    return channel_factory(emulator_host_from_env())
