"""Dead-lettering that cannot take the worker down: oversized bodies, broken topics, retries.

Why a module of its own: the dead-letter path is where the worst input ends up, so it must
hold whatever that input is. Measured before this existed: a 12 MB line (sent gzip-compressed)
could not be published to the dead-letter topic (Pub/Sub refuses requests over 10 MB), the
publisher raised outside any handler, and the worker crash-looped on the same message.

What it promises:
- a record too large to publish as it is is still dead-lettered, as a *finder*: a small JSON
  body with its reason, size, sha256, first bytes, source message id and attributes; with
  `overflow_path` set, the whole body is also written there, named by its sha256;
- no exception escapes `DeadLetterer.send`: every failure becomes an `Outcome` the caller can
  act on (nack and retry later, classified by `worker.failure_policy`);
- `FailureMemory` counts failures per message id (bounded), so a message whose bad records
  cannot be dead-lettered N times is given up on — logged with its finder facts and written to
  the overflow path when there is one — instead of being redelivered forever;
- waiting is bounded: all records of one message share one `timeout_seconds`, and after a
  publish timed out, `send` fails at once (uncounted) for the next `timeout_seconds`, so a
  poll full of bad messages cannot hold the worker (and its SIGTERM) for minutes.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path

import orjson
from google.cloud import pubsub_v1

from schemas.errors import DecodeError
from worker.failure_policy import InvalidSetting, bounded_retry, describe, is_retryable, reason_of
from worker.source import SourceMessage

log = logging.getLogger(__name__)

#: Pub/Sub refuses a publish request over 10,000,000 bytes (body + attributes + framing)
MAX_DEAD_LETTER_BODY_BYTES = 9_500_000
#: how much of an oversized body the finder carries, to recognise it by eye
FINDER_PREFIX_BYTES = 1024
#: Pub/Sub's limit on one attribute value
_MAX_ATTRIBUTE_BYTES = 1024


def check_overflow_path(path: str | None) -> Path | None:
    """The overflow directory, created if missing; `gs://` is refused with what to do instead."""
    if path is None:
        return None
    if "://" in path:
        msg = (
            f"dead_letter_overflow_path {path!r}: only a local directory is supported "
            "(gs:// is not built); mount the bucket as a volume (e.g. Cloud Storage FUSE) and "
            "give its mount path"
        )
        raise InvalidSetting(msg)
    directory = Path(path)
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        msg = f"dead_letter_overflow_path {path!r} cannot be created: {e.strerror or e}"
        raise InvalidSetting(msg) from e
    if not os.access(directory, os.W_OK):
        msg = f"dead_letter_overflow_path {path!r} is not writable by this process"
        raise InvalidSetting(msg)
    return directory


@dataclass(frozen=True)
class Finder:
    """Enough to find a body that is not published itself: its hash, size and first bytes."""

    sha256: str
    size: int
    first_bytes: str
    overflow_file: str | None = None

    @classmethod
    def of(cls, raw: bytes, overflow_file: str | None = None) -> Finder:
        return cls(
            sha256=hashlib.sha256(raw).hexdigest(),
            size=len(raw),
            first_bytes=raw[:FINDER_PREFIX_BYTES].decode("utf-8", errors="replace"),
            overflow_file=overflow_file,
        )


def write_overflow(directory: Path, raw: bytes, sidecar: Mapping[str, object]) -> str:
    """Write `raw` as `<sha256>.body` (atomically, idempotent) with a `.json` sidecar."""
    digest = hashlib.sha256(raw).hexdigest()
    target = directory / f"{digest}.body"
    if not target.exists():
        staging = directory / f".{digest}.{os.getpid()}.tmp"
        staging.write_bytes(raw)
        staging.replace(target)
    (directory / f"{digest}.json").write_bytes(orjson.dumps(sidecar, option=orjson.OPT_INDENT_2))
    return str(target)


def _clip(text: str) -> str:
    """An attribute value under Pub/Sub's 1,024-byte limit, cut on a character boundary."""
    data = text.encode()[:_MAX_ATTRIBUTE_BYTES]
    return data.decode("utf-8", errors="ignore")


@dataclass(frozen=True)
class Outcome:
    """What one `send` achieved: `ok`, or why not and whether trying again may help."""

    ok: bool
    reason: str = ""
    retryable: bool = True
    error_reason: str = ""  # a `failure_policy.ERROR_REASONS` label
    oversized: int = 0  # records sent as finders
    #: False when nothing was tried (the topic timed out moments ago): not a failed attempt
    attempted: bool = True


class FailureMemory:
    """Dead-letter failures per message id, the oldest forgotten past `capacity` ids."""

    def __init__(self, capacity: int = 10_000) -> None:
        self._capacity = capacity
        self._counts: OrderedDict[str, int] = OrderedDict()

    def add(self, message_id: str) -> int:
        count = self._counts.pop(message_id, 0) + 1
        self._counts[message_id] = count
        while len(self._counts) > self._capacity:
            self._counts.popitem(last=False)
        return count

    def forget(self, message_id: str) -> None:
        self._counts.pop(message_id, None)

    def __len__(self) -> int:
        return len(self._counts)


class DeadLetterer:
    """Publishes bad records to one topic; `send` never raises (see the module docstring)."""

    def __init__(
        self,
        publisher: pubsub_v1.PublisherClient,
        topic_path: str,
        subscription_path: str,
        *,
        overflow: Path | None = None,
        timeout_seconds: float = 10.0,
    ) -> None:
        self._publisher = publisher
        self.topic_path = topic_path
        self._subscription = subscription_path
        self._overflow = overflow
        self._timeout = timeout_seconds
        self._quiet_until = float("-inf")  # after a timeout, do not wait again before this

    def _attributes(self, message: SourceMessage, error: DecodeError) -> dict[str, str]:
        attributes = {
            "error": error.error_type,
            "error_detail": _clip(error.describe()),
            "source_message_id": message.message_id,
            "source_subscription": self._subscription,
        }
        if "format" in message.attributes:
            attributes["format"] = _clip(message.attributes["format"])
        return attributes

    def finder_body(
        self, message: SourceMessage, error: DecodeError, finder: Finder, note: str = ""
    ) -> bytes:
        """The JSON published in place of a body too large for Pub/Sub."""
        return orjson.dumps(
            {
                "lookout_dead_letter": "body too large to publish; this record describes it",
                "error": error.error_type,
                "reason": error.describe(),
                "size": finder.size,
                "sha256": finder.sha256,
                "first_bytes": finder.first_bytes,
                "source_message_id": message.message_id,
                "source_subscription": self._subscription,
                "attributes": dict(message.attributes),
                "overflow_file": finder.overflow_file,
                "note": note or None,
            }
        )

    def _overflow_write(self, message: SourceMessage, error: DecodeError) -> tuple[str | None, str]:
        """Write the whole body to the overflow directory; (file, problem) — never raises."""
        if self._overflow is None:
            return None, ""
        sidecar = {
            "reason": error.describe(),
            "error": error.error_type,
            "source_message_id": message.message_id,
            "source_subscription": self._subscription,
            "attributes": dict(message.attributes),
        }
        try:
            return write_overflow(self._overflow, error.raw, sidecar), ""
        except OSError as e:
            problem = f"overflow write to {self._overflow} failed: {e.strerror or e}"
            log.error("message %s: %s", message.message_id, problem)
            return None, problem

    def _body(self, message: SourceMessage, error: DecodeError) -> tuple[bytes, dict[str, str]]:
        attributes = self._attributes(message, error)
        if len(error.raw) <= MAX_DEAD_LETTER_BODY_BYTES:
            return error.raw, attributes
        file, problem = self._overflow_write(message, error)
        finder = Finder.of(error.raw, file)
        attributes |= {
            "body": "finder",
            "original_size": str(finder.size),
            "original_sha256": finder.sha256,
        }
        if file is not None:
            attributes["overflow_file"] = _clip(file)
        return self.finder_body(message, error, finder, problem), attributes

    def send(self, message: SourceMessage, errors: Sequence[DecodeError]) -> Outcome:
        """Publish every bad record of `message` and wait for all; never raises."""
        now = time.monotonic()
        if now < self._quiet_until:
            return Outcome(
                False,
                f"not tried: the topic did not answer within {self._timeout:g} s moments ago",
                retryable=True,
                error_reason="deadline_exceeded",
                attempted=False,
            )
        futures: list[Future[str]] = []
        oversized = 0
        try:
            for error in errors:
                body, attributes = self._body(message, error)
                oversized += body is not error.raw
                futures.append(self._publisher.publish(self.topic_path, body, **attributes))
        except Exception as e:  # a refusal before sending (size, closed client): never a crash
            return self._failed(e, oversized)
        first: BaseException | None = None
        failed = 0
        deadline = now + self._timeout
        for future in futures:
            try:
                future.result(timeout=max(deadline - time.monotonic(), 0.0))
            except Exception as e:  # any failure means: not dead-lettered, decide below
                failed += 1
                first = first or e
        if first is not None:
            outcome = self._failed(first, oversized)
            if outcome.error_reason == "deadline_exceeded":
                self._quiet_until = time.monotonic() + self._timeout
            return Outcome(
                False,
                f"{failed} of {len(futures)} records: {outcome.reason}",
                outcome.retryable,
                outcome.error_reason,
                oversized,
            )
        return Outcome(True, oversized=oversized)

    def _failed(self, error: BaseException, oversized: int) -> Outcome:
        return Outcome(
            ok=False,
            reason=describe(error),
            retryable=is_retryable(error),
            error_reason=reason_of(error),
            oversized=oversized,
        )

    def give_up(self, message: SourceMessage, errors: Sequence[DecodeError], why: str) -> None:
        """The last resort when the topic keeps refusing: the log and the overflow directory.

        Logged at ERROR with each record's finder facts (never its content: it may hold
        prompts) so an operator can find it; its whole body goes to the overflow directory
        when one is configured.
        """
        for error in errors:
            file, _ = self._overflow_write(message, error)
            finder = Finder.of(error.raw, file)
            log.error(
                "gave up dead-lettering a bad record of message %s to %s (%s): %s; "
                "size %d bytes, sha256 %s%s",
                message.message_id,
                self.topic_path,
                why,
                error.describe(),
                finder.size,
                finder.sha256,
                f", body kept in {file}" if file else "",
            )

    def close(self) -> None:
        try:
            self._publisher.stop()
        except Exception as e:  # closing must not hide the exit status
            log.debug("closing the dead-letter publisher: %s", describe(e))
        self._publisher.transport.close()


def publisher_options(timeout_seconds: float) -> pubsub_v1.types.PublisherOptions:
    """Bounded retries: a dead endpoint fails a dead-letter publish in time, not in minutes."""
    return pubsub_v1.types.PublisherOptions(
        retry=bounded_retry(timeout_seconds), timeout=timeout_seconds
    )
