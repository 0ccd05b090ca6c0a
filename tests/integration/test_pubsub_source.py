"""`PubSubSource` and `publish_lines` against the real emulator: what a user would notice.

Every wait is on a condition with a deadline (`collect`), never a bare sleep.
"""

from __future__ import annotations

import gzip
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import orjson
import pytest

from schemas.errors import DecodeError
from worker.source import SourceMessage
from worker.sources.grpc_channel import ChannelFactory, publisher_client, subscriber_client
from worker.sources.pubsub_admin import init_pubsub
from worker.sources.pubsub_publish import publish_lines
from worker.sources.pubsub_source import PubSubSource, PubSubSourceSettings, PullMode

PROJECT = "lookout-test"
MODES: list[PullMode] = ["unary", "streaming"]


@dataclass(frozen=True)
class Names:
    topic: str
    subscription: str
    dlq: str
    dlq_subscription: str


@pytest.fixture
def names(pubsub_channels: ChannelFactory, unique_name: str) -> Names:
    n = Names(
        f"{unique_name}-logs", f"{unique_name}-sub", f"{unique_name}-dlq", f"{unique_name}-dlq-sub"
    )
    init_pubsub(
        PROJECT, n.topic, n.subscription, n.dlq, ack_deadline_seconds=10, channels=pubsub_channels
    )
    return n


def lines(n: int, start: int = 0) -> list[bytes]:
    return [orjson.dumps({"request_id": f"r{i}", "latency_ms": i}) for i in range(start, start + n)]


def make_source(channels: ChannelFactory, names: Names, mode: PullMode) -> PubSubSource:
    settings = PubSubSourceSettings(
        project=PROJECT,
        subscription=names.subscription,
        dead_letter_topic=names.dlq,
        mode=mode,
    )
    return PubSubSource(settings, channel_factory=channels)


def collect(source: PubSubSource, want: int, timeout: float = 20.0) -> list[SourceMessage]:
    """Poll until `want` messages arrived or `timeout` passed; returns what came."""
    got: list[SourceMessage] = []
    deadline = time.monotonic() + timeout
    while len(got) < want and time.monotonic() < deadline:
        got.extend(source.poll(1000, min(1.0, max(deadline - time.monotonic(), 0.01))))
    return got


def records(messages: list[SourceMessage]) -> list[bytes]:
    return [line for m in messages for line in m.data.split(b"\n") if line]


@pytest.fixture
def opened() -> Iterator[list[PubSubSource]]:
    """Sources a test opened; closed at the end even when the test fails."""
    sources: list[PubSubSource] = []
    yield sources
    for s in sources:
        s.close()


@pytest.mark.parametrize("mode", MODES)
def test_single_and_ndjson_messages_arrive_whole_and_ack_removes_them(
    pubsub_channels: ChannelFactory, names: Names, mode: PullMode, opened: list[PubSubSource]
) -> None:
    singles, batched = lines(30), lines(250, start=30)
    assert publish_lines(singles, PROJECT, names.topic, channels=pubsub_channels).ok
    assert publish_lines(
        batched, PROJECT, names.topic, batch=100, format_hint="native", channels=pubsub_channels
    ).ok
    source = make_source(pubsub_channels, names, mode)
    opened.append(source)

    got = collect(source, 33)

    assert sorted(records(got)) == sorted(singles + batched)
    assert {m.attributes.get("format") for m in got if m.data.count(b"\n")} == {"native"}
    assert source.ready()
    source.ack([m.ack_id for m in got])
    assert_nothing_left(pubsub_channels, names, source, opened)


def assert_nothing_left(
    channels: ChannelFactory, names: Names, source: PubSubSource, opened: list[PubSubSource]
) -> None:
    """Close `source` (which nacks anything it still holds, so it would be redelivered at once)
    and check that a fresh worker receives nothing: every message was really acked."""
    source.close()
    opened.remove(source)
    again = make_source(channels, names, "unary")
    opened.append(again)
    assert collect(again, 1, timeout=3.0) == []


@pytest.mark.parametrize("mode", MODES)
def test_unacked_messages_come_back_after_the_worker_dies(
    pubsub_channels: ChannelFactory, names: Names, mode: PullMode, opened: list[PubSubSource]
) -> None:
    sent = lines(200)
    assert publish_lines(sent, PROJECT, names.topic, batch=10, channels=pubsub_channels).ok
    first = make_source(pubsub_channels, names, mode)
    opened.append(first)
    partial = collect(first, 20)
    first.ack([m.ack_id for m in partial[:5]])  # one checkpoint's worth made durable
    first.close()  # the worker goes away holding the rest unacked
    opened.remove(first)

    second = make_source(pubsub_channels, names, mode)
    opened.append(second)
    rest = collect(second, 15)

    assert len(rest) == 15
    assert sorted(records(partial[:5]) + records(rest)) == sorted(sent)


def test_nack_redelivers_and_a_duplicate_delivery_is_never_handed_out_twice(
    pubsub_channels: ChannelFactory, names: Names, opened: list[PubSubSource]
) -> None:
    assert publish_lines(lines(3), PROJECT, names.topic, channels=pubsub_channels).ok
    source = make_source(pubsub_channels, names, "unary")
    opened.append(source)
    got = collect(source, 3)
    source.nack([got[0].ack_id])
    redelivered = collect(source, 1)
    assert [m.message_id for m in redelivered] == [got[0].message_id]

    # Pub/Sub redelivers a message the engine still holds (its lease lapsed): held, not counted
    raw = subscriber_client(pubsub_channels)
    try:
        raw.modify_ack_deadline(
            subscription=raw.subscription_path(PROJECT, names.subscription),
            ack_ids=[got[1].ack_id],
            ack_deadline_seconds=0,
        )
    finally:
        raw.close()
    deadline = time.monotonic() + 10
    while source.stats().redelivered_held < 1 and time.monotonic() < deadline:
        assert source.poll(10, 0.5) == []
    assert source.stats().redelivered_held == 1

    source.ack([redelivered[0].ack_id, got[1].ack_id, got[2].ack_id])
    assert source.stats().held == 0
    assert_nothing_left(pubsub_channels, names, source, opened)  # the duplicate went with it


@pytest.mark.parametrize("mode", MODES)
def test_gzip_bodies_are_inflated_and_a_corrupt_one_is_dead_lettered(
    pubsub_channels: ChannelFactory, names: Names, mode: PullMode, opened: list[PubSubSource]
) -> None:
    sent = lines(50)
    assert publish_lines(
        sent, PROJECT, names.topic, batch=50, gzip=True, channels=pubsub_channels
    ).ok
    publisher = publisher_client(pubsub_channels)
    corrupt = gzip.compress(b'{"request_id": "x"}')[:-6]
    publisher.publish(
        publisher.topic_path(PROJECT, names.topic), corrupt, **{"Content-Encoding": "gzip"}
    ).result(timeout=10)
    publisher.transport.close()
    source = make_source(pubsub_channels, names, mode)
    opened.append(source)

    got = collect(source, 1)
    deadline = time.monotonic() + 15
    while source.stats().bad_encoding < 1 and time.monotonic() < deadline:
        got.extend(source.poll(10, 0.5))  # the corrupt message is never handed out
    dead = pull_all(pubsub_channels, names.dlq_subscription, 1)

    assert records(got) == sent
    assert [d.data for d in dead] == [corrupt]
    assert dead[0].attributes["error"] == "bad_encoding"
    assert "truncated" in dead[0].attributes["error_detail"]
    assert source.stats().bad_encoding == 1


def pull_all(channels: ChannelFactory, subscription: str, want: int, timeout: float = 15.0):
    """Unary-pull and ack `want` messages from a subscription (the dead-letter inspector)."""
    client = subscriber_client(channels)
    path = client.subscription_path(PROJECT, subscription)
    out: list[Any] = []
    deadline = time.monotonic() + timeout
    try:
        while len(out) < want and time.monotonic() < deadline:
            response = client.pull(subscription=path, max_messages=100, timeout=5)
            if response.received_messages:
                client.acknowledge(
                    subscription=path, ack_ids=[m.ack_id for m in response.received_messages]
                )
            out.extend(m.message for m in response.received_messages)
    finally:
        client.close()
    return out


def test_dead_letter_carries_original_bytes_and_reason(
    pubsub_channels: ChannelFactory, names: Names, opened: list[PubSubSource]
) -> None:
    source = make_source(pubsub_channels, names, "unary")
    opened.append(source)
    message = SourceMessage("m-1", b"good\n{bad\n", "ack-1", {"format": "openai"})
    errors = [
        DecodeError(line=2, reason="invalid JSON", raw=b"{bad"),
        DecodeError(
            line=3,
            reason="must be >= 0 (got -3)",
            raw=b'{"latency_ms":-3}',
            field="latency_ms",
            error_type="invalid_value",
        ),
    ]

    assert source.dead_letter(message, errors) is True
    dead = sorted(pull_all(pubsub_channels, names.dlq_subscription, 2), key=lambda m: m.data)

    assert [d.data for d in dead] == [b'{"latency_ms":-3}', b"{bad"]
    assert dict(dead[0].attributes) == {
        "error": "invalid_value",
        "error_detail": "line 3: field latency_ms: must be >= 0 (got -3)",
        "source_message_id": "m-1",
        "source_subscription": f"projects/{PROJECT}/subscriptions/{names.subscription}",
        "format": "openai",
    }
    assert dead[1].attributes["error_detail"] == "line 2: invalid JSON"


def test_dead_letter_to_a_missing_topic_returns_false(
    pubsub_channels: ChannelFactory, names: Names, opened: list[PubSubSource]
) -> None:
    source = PubSubSource(
        PubSubSourceSettings(
            project=PROJECT, subscription=names.subscription, dead_letter_topic="no-such-topic"
        ),
        channel_factory=pubsub_channels,
    )
    opened.append(source)
    message = SourceMessage("m-1", b"{bad", "ack-1")

    assert source.dead_letter(message, [DecodeError(1, "invalid JSON", b"{bad")]) is False
    assert source.stats().dead_letter_failures == 1


@pytest.mark.parametrize("mode", MODES)
def test_large_ndjson_messages_do_not_stall_past_the_4mib_grpc_limit(
    pubsub_channels: ChannelFactory, names: Names, mode: PullMode, opened: list[PubSubSource]
) -> None:
    pad = "x" * 600
    big = [orjson.dumps({"request_id": f"r{i}", "pad": pad}) for i in range(12_000)]
    report = publish_lines(big, PROJECT, names.topic, batch=100, channels=pubsub_channels)
    assert report.ok and report.messages == 120  # ~61 KB each, ~7 MB per full pull response
    source = make_source(pubsub_channels, names, mode)
    opened.append(source)

    got = collect(source, 120, timeout=30)

    assert len(records(got)) == 12_000


def test_publish_batches_lines_into_exactly_n_messages(
    pubsub_channels: ChannelFactory, names: Names
) -> None:
    sent = lines(1000)
    seen: list[int] = []

    report = publish_lines(
        iter(sent), PROJECT, names.topic, batch=100, progress=seen.append, channels=pubsub_channels
    )
    messages = pull_all(pubsub_channels, names.subscription, 10)

    assert (report.lines, report.messages, report.failed_messages) == (1000, 10, 0)
    assert sum(seen) == 1000
    assert len(messages) == 10
    assert sorted(line for m in messages for line in m.data.split(b"\n")) == sorted(sent)


def test_publish_to_a_missing_topic_reports_every_line_failed(
    pubsub_channels: ChannelFactory,
) -> None:
    report = publish_lines(lines(25), PROJECT, "no-such-topic", batch=10, channels=pubsub_channels)

    assert not report.ok
    assert (report.failed_lines, report.failed_messages) == (25, 3)
    assert "NotFound" in report.summary()


def test_pulling_ahead_holds_no_more_than_max_messages_and_leaves_the_rest_to_others(
    pubsub_channels: ChannelFactory, names: Names, opened: list[PubSubSource]
) -> None:
    """Unary mode pulls ahead of the engine, but held + queued stays within `max_messages`
    (promise 3: memory follows configuration, not the backlog): another worker on the same
    subscription receives everything else meanwhile, and acks sent behind reach Pub/Sub."""
    assert publish_lines(lines(60), PROJECT, names.topic, channels=pubsub_channels).ok
    settings = PubSubSourceSettings(
        project=PROJECT,
        subscription=names.subscription,
        max_messages=10,
        pull_max_messages=4,
        concurrent_pulls=3,
    )
    source = PubSubSource(settings, channel_factory=pubsub_channels)
    opened.append(source)
    first = collect(source, 3)
    deadline = time.monotonic() + 10
    while source.stats().held + source.stats().queued < 10 and time.monotonic() < deadline:
        time.sleep(0.05)  # waiting on a condition: the pull threads fill their room
    other = make_source(pubsub_channels, names, "unary")
    opened.append(other)
    theirs = collect(other, 60 - 10)
    stats = source.stats()

    assert stats.held + stats.queued == 10, stats
    assert len(theirs) == 50
    rest = collect(source, 10 - len(first))
    mine = first + rest
    assert sorted(records(mine) + records(theirs)) == sorted(lines(60))
    source.ack([m.ack_id for m in mine])
    other.ack([m.ack_id for m in theirs])
    assert source.flush_acks(5.0) and other.flush_acks(5.0)
    assert source.stats().held == 0
    assert_nothing_left(pubsub_channels, names, source, opened)
