"""The Pub/Sub source's settings and counters, and bounded gzip inflation.

Apart from `pubsub_source` so that settings can be validated (and tested) without a client,
and so the source module keeps to its one job: delivery.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from typing import Literal

from worker.failure_policy import InvalidSetting

PullMode = Literal["unary", "streaming"]
#: the steps `lookout_source_errors_total` counts failures of (a closed set, like the reasons)
ERROR_STEPS: tuple[str, ...] = ("pull", "ack", "dead_letter")


@dataclass(frozen=True)
class PubSubSourceSettings:
    """Where to read and how much to hold. `max_lease_duration_seconds` must exceed the window
    length plus checkpoint interval, or messages are redelivered while still being counted."""

    project: str
    subscription: str
    dead_letter_topic: str | None = None
    mode: PullMode = "unary"
    #: flow control: messages (and bytes, passed by at most one pull) held for the engine or
    #: pulled ahead of it, at once
    max_messages: int = 10_000
    max_bytes: int = 256 * 1024 * 1024
    #: unary mode: messages one pull asks for (Pub/Sub returns at most 1,000)
    pull_max_messages: int = 1000
    #: unary mode: pulls in flight at once (one pull waits a round trip for a few hundred
    #: messages at most; the emulator sends 100)
    concurrent_pulls: int = 2
    #: unary mode: once a poll has a message, how long it may wait for a fuller batch while
    #: pulls are in flight (bigger polls: fewer per-poll decode and fold costs)
    poll_linger_seconds: float = 0.05
    max_lease_duration_seconds: float = 900.0
    ack_deadline_seconds: int = 60
    max_inflated_bytes: int = 64 * 1024 * 1024
    recent_ids: int = 100_000
    #: the whole body of a record too large to publish is written here (a local directory)
    dead_letter_overflow_path: str | None = None
    #: after this many failed dead-letter attempts of one message (counted here, or Pub/Sub's
    #: delivery_attempt when larger) it is given up on: logged and acked, not redelivered
    max_dead_letter_failures: int = 5
    dead_letter_timeout_seconds: float = 10.0
    #: longest wait between pulls while pulling fails (exponential from 0.5 s)
    max_backoff_seconds: float = 30.0
    #: time allowed at close to hand un-acked messages back, whatever the network does
    close_timeout_seconds: float = 5.0

    def __post_init__(self) -> None:
        checks = {
            "max_messages": (self.max_messages, 1, 1_000_000),
            "max_bytes": (self.max_bytes, 1024, 1 << 40),
            "pull_max_messages": (self.pull_max_messages, 1, 1000),
            "concurrent_pulls": (self.concurrent_pulls, 1, 16),
            "poll_linger_seconds": (self.poll_linger_seconds, 0, 1),
            "ack_deadline_seconds": (self.ack_deadline_seconds, 10, 600),
            "max_lease_duration_seconds": (self.max_lease_duration_seconds, 10, 86_400),
            "max_inflated_bytes": (self.max_inflated_bytes, 1024, 1 << 34),
            "recent_ids": (self.recent_ids, 0, 10_000_000),
            "max_dead_letter_failures": (self.max_dead_letter_failures, 1, 1000),
            "dead_letter_timeout_seconds": (self.dead_letter_timeout_seconds, 1, 600),
            "max_backoff_seconds": (self.max_backoff_seconds, 0.5, 3600),
            "close_timeout_seconds": (self.close_timeout_seconds, 0.5, 600),
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
    """A snapshot of counters for /metrics; every field but `held` and `queued` only grows."""

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
    dead_letter_oversized: int = 0
    dead_letter_given_up: int = 0
    #: messages Pub/Sub says it delivered before (delivery_attempt above 1)
    delivered_again: int = 0
    #: received but not yet handed to the engine (unary mode pulls ahead); not a counter
    queued: int = 0
    #: ((step, reason), count) for `lookout_source_errors_total{step,reason}`
    errors: tuple[tuple[tuple[str, str], int], ...] = field(default=())


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
