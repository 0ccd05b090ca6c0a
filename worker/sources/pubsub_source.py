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
  waits for Pub/Sub to confirm.

Why unary pull is the default (`mode="unary"`): the engine already polls in batches and holds
messages until its checkpoint, which is exactly unary pull's shape; memory is bounded by what we
ask for. On the emulator (`python -m bench.pubsub_bench --singles 20000 --batches 300`, best of
2, 2-core machine) unary reached 41.5k records/s with single-record messages (0.89x a bare
pull-and-ack loop) where streaming stayed at ~2k (the emulator paces a stream), and 1.13M vs
0.23M records/s with 100-record NDJSON.
Streaming pull (`mode="streaming"`) stays available for production subscriptions where the
lower delivery latency of a held-open stream matters more than throughput per worker.
"""

from __future__ import annotations

import logging
import threading
import time
import zlib
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from google.cloud import pubsub_v1

from schemas.errors import DecodeError
from worker.failure_policy import InvalidSetting, describe
from worker.source import SourceMessage
from worker.sources.grpc_channel import (
    ChannelFactory,
    channel_factory,
    emulator_host_from_env,
    publisher_client,
    subscriber_client,
)
from worker.sources.pubsub_receivers import Counters, Received, StreamingReceiver, UnaryReceiver

log = logging.getLogger(__name__)

PullMode = Literal["unary", "streaming"]
_DEAD_LETTER_TIMEOUT_SECONDS = 30.0


@dataclass(frozen=True)
class PubSubSourceSettings:
    """Where to read and how much to hold. `max_lease_duration_seconds` must exceed the window
    length plus checkpoint interval, or messages are redelivered while still being counted."""

    project: str
    subscription: str
    dead_letter_topic: str | None = None
    mode: PullMode = "unary"
    max_messages: int = 2000
    max_bytes: int = 256 * 1024 * 1024
    max_lease_duration_seconds: float = 900.0
    ack_deadline_seconds: int = 60
    max_inflated_bytes: int = 64 * 1024 * 1024
    recent_ids: int = 100_000

    def __post_init__(self) -> None:
        checks = {
            "max_messages": (self.max_messages, 1, 1_000_000),
            "max_bytes": (self.max_bytes, 1024, 1 << 40),
            "ack_deadline_seconds": (self.ack_deadline_seconds, 10, 600),
            "max_lease_duration_seconds": (self.max_lease_duration_seconds, 10, 86_400),
            "max_inflated_bytes": (self.max_inflated_bytes, 1024, 1 << 34),
            "recent_ids": (self.recent_ids, 0, 10_000_000),
        }
        for name, (value, low, high) in checks.items():
            if not low <= value <= high:
                msg = f"pubsub source setting {name} must be between {low} and {high} (got {value})"
                raise InvalidSetting(msg)
        if self.mode not in ("unary", "streaming"):
            msg = f"pubsub source mode must be 'unary' or 'streaming' (got {self.mode!r})"
            raise InvalidSetting(msg)


@dataclass(frozen=True)
class PubSubSourceStats:
    """A snapshot of counters for /metrics; every field only grows."""

    received: int
    redelivered_acked: int
    redelivered_held: int
    bad_encoding: int
    dead_lettered_records: int
    dead_letter_failures: int
    callback_errors: int
    stream_restarts: int
    lease_extensions: int
    lease_expired: int
    ack_failures: int
    held: int


class InflateError(ValueError):
    """A gzip body that is corrupt, truncated, or inflates past the configured limit."""


def inflate(data: bytes, limit: int) -> bytes:
    """Gunzip all members of `data`, refusing to produce more than `limit` bytes."""
    out: list[bytes] = []
    size = 0
    rest = data
    try:
        while rest:
            decoder = zlib.decompressobj(wbits=31)
            chunk = decoder.decompress(rest, limit - size + 1)
            size += len(chunk)
            if size > limit or decoder.unconsumed_tail:
                msg = f"gzip body inflates past {limit} bytes"
                raise InflateError(msg)
            if not decoder.eof:
                msg = "gzip body is truncated"
                raise InflateError(msg)
            out.append(chunk)
            rest = decoder.unused_data.lstrip(b"\0")
    except zlib.error as e:
        msg = f"gzip body is corrupt ({e})"
        raise InflateError(msg) from e
    return b"".join(out)


class PubSubSource:
    """Reads one subscription; see the module docstring for the delivery guarantees."""

    def __init__(
        self, settings: PubSubSourceSettings, *, channel_factory: ChannelFactory | None = None
    ) -> None:
        self.settings = settings
        self._channels = channel_factory or _default_channels()
        self._client = subscriber_client(self._channels)
        self._path = self._client.subscription_path(settings.project, settings.subscription)
        self.name = f"pubsub:{self._path}"
        self._lock = threading.Lock()
        self._held: dict[str, Received] = {}  # ack_id -> message the engine holds
        self._holder: dict[str, str] = {}  # message_id -> ack_id handed to the engine
        self._dupes: dict[str, list[Received]] = {}  # message_id -> redeliveries held with it
        self._recent: OrderedDict[str, None] = OrderedDict()  # message ids acked recently
        self._counters = Counters()
        self._counts = {
            "received": 0,
            "redelivered_acked": 0,
            "redelivered_held": 0,
            "bad_encoding": 0,
            "dead_lettered_records": 0,
            "dead_letter_failures": 0,
        }
        self._publisher: pubsub_v1.PublisherClient | None = None
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
            )
        else:
            self._receiver = UnaryReceiver(
                self._client,
                self._path,
                ack_deadline_seconds=settings.ack_deadline_seconds,
                max_lease_duration_seconds=settings.max_lease_duration_seconds,
                counters=self._counters,
                held=self._held_snapshot,
            )

    @property
    def exhausted(self) -> bool:
        return False

    def _held_snapshot(self) -> list[Received]:
        with self._lock:
            return [*self._held.values(), *(d for ds in self._dupes.values() for d in ds)]

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
        for item in received:
            with self._lock:
                self._counts["received"] += 1
                if item.message_id in self._recent:
                    self._counts["redelivered_acked"] += 1
                    ack_now.append(item)
                    continue
                if item.message_id in self._holder:
                    self._counts["redelivered_held"] += 1
                    self._dupes.setdefault(item.message_id, []).append(item)
                    continue
                self._held[item.ack_id] = item
                self._holder[item.message_id] = item.ack_id
            message = self._to_source_message(item)
            if message is not None:
                out.append(message)
        if ack_now:
            self._receiver.ack(ack_now)
        return out

    def _to_source_message(self, item: Received) -> SourceMessage | None:
        """Inflate gzip bodies; a body that cannot be read is dead-lettered here, not returned."""
        encoding = item.attributes.get("Content-Encoding", "").strip().lower()
        raw = SourceMessage(item.message_id, item.data, item.ack_id, item.attributes)
        if encoding in ("", "identity"):
            return raw
        try:
            if encoding != "gzip":
                msg = f"unsupported Content-Encoding {encoding!r} (expected gzip or none)"
                raise InflateError(msg)
            data = inflate(item.data, self.settings.max_inflated_bytes)
        except InflateError as e:
            with self._lock:
                self._counts["bad_encoding"] += 1
            log.warning("message %s on %s: %s", item.message_id, self._path, e)
            error = DecodeError(line=1, reason=str(e), raw=item.data, error_type="bad_encoding")
            if self.dead_letter(raw, [error]):
                self.ack([item.ack_id])
            else:
                self.nack([item.ack_id])
            return None
        return SourceMessage(item.message_id, data, item.ack_id, item.attributes)

    def _release(self, ack_ids: Sequence[str], *, done: bool) -> list[Received]:
        """Forget held messages (and their held redeliveries); remember acked message ids."""
        items: list[Received] = []
        with self._lock:
            for ack_id in ack_ids:
                item = self._held.pop(ack_id, None)
                if item is None:
                    continue
                items.append(item)
                self._holder.pop(item.message_id, None)
                items.extend(self._dupes.pop(item.message_id, ()))
                if done and self.settings.recent_ids:
                    self._recent[item.message_id] = None
                    while len(self._recent) > self.settings.recent_ids:
                        self._recent.popitem(last=False)
        return items

    def ack(self, ack_ids: Sequence[str]) -> None:
        items = self._release(ack_ids, done=True)
        if items:
            self._receiver.ack(items)

    def nack(self, ack_ids: Sequence[str]) -> None:
        items = self._release(ack_ids, done=False)
        if items:
            self._receiver.nack(items)

    def dead_letter(self, message: SourceMessage, errors: Sequence[DecodeError]) -> bool:
        """Publish each bad record to the dead-letter topic and wait; False if any publish failed.

        Without a dead-letter topic the errors are logged (message id, line, field, reason) and
        True is returned: the records are reported, and nacking would only loop them forever.
        """
        if not errors:
            return True
        topic = self.settings.dead_letter_topic
        if topic is None:
            for error in errors:
                log.warning(
                    "bad record in message %s on %s (no dead-letter topic): %s",
                    message.message_id,
                    self._path,
                    error.describe(),
                )
            return True
        if self._publisher is None:
            self._publisher = publisher_client(
                self._channels,
                pubsub_v1.types.BatchSettings(max_messages=100, max_latency=0.005),
            )
        topic_path = self._publisher.topic_path(self.settings.project, topic)
        futures = []
        for error in errors:
            attributes = {
                "error": error.error_type,
                "error_detail": error.describe()[:1024],
                "source_message_id": message.message_id,
                "source_subscription": self._path,
            }
            if "format" in message.attributes:
                attributes["format"] = message.attributes["format"]
            futures.append(self._publisher.publish(topic_path, error.raw, **attributes))
        failed = 0
        reason = ""
        for future in futures:
            try:
                future.result(timeout=_DEAD_LETTER_TIMEOUT_SECONDS)
            except Exception as e:  # any failure means: do not ack, let Pub/Sub redeliver
                failed += 1
                reason = describe(e)
        with self._lock:
            self._counts["dead_lettered_records"] += len(futures) - failed
            self._counts["dead_letter_failures"] += 1 if failed else 0
        if failed:
            log.error(
                "dead-lettering %d of %d bad records of message %s to %s failed: %s",
                failed,
                len(futures),
                message.message_id,
                topic_path,
                reason,
            )
            return False
        return True

    def stats(self) -> PubSubSourceStats:
        with self._lock:
            c = self._counters
            return PubSubSourceStats(
                **self._counts,
                callback_errors=c.callback_errors,
                stream_restarts=c.stream_restarts,
                lease_extensions=c.lease_extensions,
                lease_expired=c.lease_expired,
                ack_failures=c.ack_failures,
                held=len(self._held),
            )

    def ready(self) -> bool:
        return self._receiver.ready()

    def stop(self) -> None:
        self._receiver.stop()

    def close(self) -> None:
        """Nack whatever is still held (it was never made durable), then drop connections."""
        self._receiver.stop()
        with self._lock:
            leftover = list(self._held)
        self.nack(leftover)
        self._receiver.close()
        if self._publisher is not None:
            self._publisher.stop()
            self._publisher.transport.close()
        self._client.close()


def _default_channels() -> ChannelFactory:
    """Production by default; `PUBSUB_EMULATOR_HOST` honoured when a caller passes nothing."""
    return channel_factory(emulator_host_from_env())
