"""Publish prediction-log lines to a topic: one line per message, or NDJSON batches of N lines.

Why it waits on every future: the client publishes in background threads, and a failure only
shows on the future. A tool that returns before checking them can drop logs without a word, so
`publish_lines` resolves every future, counts failed messages and lines, and returns them in
the report. In-flight futures are bounded (`max_in_flight`) so publishing a 10 GB file does not
hold it in memory; progress is reported from the caller's thread as futures resolve.
"""

from __future__ import annotations

import gzip as gzip_module
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass

from google.cloud import pubsub_v1

from worker.failure_policy import InvalidSetting, bounded_retry, describe
from worker.sources.grpc_channel import (
    ChannelFactory,
    channel_factory,
    describe_endpoint,
    publisher_client,
)

#: Pub/Sub's hard limit is 10 MB per message; stay under it with room for attributes
MAX_MESSAGE_BYTES = 8 * 1024 * 1024
_MAX_ERRORS_KEPT = 5


@dataclass(frozen=True)
class PublishReport:
    """What was published; `ok` only when every message was accepted by Pub/Sub."""

    lines: int
    messages: int
    failed_lines: int
    failed_messages: int
    errors: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return self.failed_messages == 0

    def summary(self) -> str:
        text = f"published {self.lines - self.failed_lines} lines in {self.messages} messages"
        if self.failed_messages:
            text += (
                f"; FAILED {self.failed_lines} lines in {self.failed_messages} messages: "
                + " | ".join(self.errors)
            )
        return text


def _batches(lines: Iterable[bytes], batch: int) -> Iterator[list[bytes]]:
    """Groups of up to `batch` non-blank lines, cut early so a message stays under the limit."""
    group: list[bytes] = []
    size = 0
    for raw in lines:
        line = raw.rstrip(b"\r\n")
        if not line.strip():
            continue
        if group and (len(group) >= batch or size + len(line) + 1 > MAX_MESSAGE_BYTES):
            yield group
            group, size = [], 0
        group.append(line)
        size += len(line) + 1
    if group:
        yield group


def publish_lines(
    lines: Iterable[bytes],
    project: str,
    topic: str,
    *,
    batch: int = 1,
    gzip: bool = False,
    format_hint: str | None = None,
    progress: Callable[[int], None] | None = None,
    channels: ChannelFactory | None = None,
    max_in_flight: int = 1000,
    timeout_seconds: float = 60.0,
) -> PublishReport:
    """Publish `lines` (blank ones skipped), `batch` lines per NDJSON message, and wait for all.

    `progress(n)` is called with the number of lines just confirmed. Attributes: `format` when
    `format_hint` is given, `Content-Encoding: gzip` when `gzip`. A message Pub/Sub has not
    confirmed within `timeout_seconds` (retries included) counts as failed, with the endpoint
    named in the report.
    """
    if batch < 1:
        msg = f"batch must be at least 1 (got {batch})"
        raise InvalidSetting(msg)
    if max_in_flight < 1:
        msg = f"max_in_flight must be at least 1 (got {max_in_flight})"
        raise InvalidSetting(msg)
    attributes: dict[str, str] = {}
    if format_hint:
        attributes["format"] = format_hint
    if gzip:
        attributes["Content-Encoding"] = "gzip"
    factory = channels or channel_factory(None)
    publisher = publisher_client(
        factory,
        pubsub_v1.types.BatchSettings(max_messages=100, max_bytes=9_000_000, max_latency=0.01),
        pubsub_v1.types.PublisherOptions(
            retry=bounded_retry(timeout_seconds), timeout=timeout_seconds
        ),
    )
    topic_path = publisher.topic_path(project, topic)
    pending: deque[tuple[Future[str], int]] = deque()
    counts = {"lines": 0, "messages": 0, "failed_lines": 0, "failed_messages": 0}
    errors: list[str] = []

    def settle(future: Future[str], n_lines: int) -> None:
        try:
            # the publish retries for up to `timeout_seconds`; allow it that, and a margin
            future.result(timeout=timeout_seconds + 5.0)
        except Exception as e:  # every failure is counted and reported, never dropped
            counts["failed_lines"] += n_lines
            counts["failed_messages"] += 1
            error = describe(e)
            if isinstance(e, TimeoutError):
                error = (
                    f"no confirmation from Pub/Sub at {describe_endpoint(factory)} "
                    f"within {timeout_seconds:g} s"
                )
            if error not in errors and len(errors) < _MAX_ERRORS_KEPT:
                errors.append(error)
            return
        if progress is not None:
            progress(n_lines)

    try:
        for group in _batches(lines, batch):
            data = b"\n".join(group)
            if gzip:
                data = gzip_module.compress(data, compresslevel=6)
            future = publisher.publish(topic_path, data, **attributes)
            pending.append((future, len(group)))
            counts["lines"] += len(group)
            counts["messages"] += 1
            while len(pending) > max_in_flight:
                settle(*pending.popleft())
        while pending:
            settle(*pending.popleft())
    finally:
        publisher.stop()
        publisher.transport.close()
    return PublishReport(
        lines=counts["lines"],
        messages=counts["messages"],
        failed_lines=counts["failed_lines"],
        failed_messages=counts["failed_messages"],
        errors=tuple(errors),
    )
