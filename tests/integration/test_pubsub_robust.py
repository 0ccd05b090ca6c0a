"""Bad input and a broken setup against the real emulator: the worker keeps going and says why.

Issue 9: a 12 MB line (gzip-compressed) crash-looped the worker because it could not be
dead-lettered as it was; a dead-letter topic that refuses publishes must neither crash the
worker nor loop a message forever. Issue 14: a missing subscription must back off, say once
what to run, count the failures, and keep /readyz at 503.

Figures (counts, attempts, seconds) are printed (`pytest -s`) and repeated in assertion messages.
"""

from __future__ import annotations

import gzip
import hashlib
import itertools
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest

from schemas.errors import DecodeError
from tests.integration.lookout_worker import Worker, write_config
from tests.integration.pubsub_emulator import PubSubEmulator
from worker.source import SourceMessage
from worker.sources.grpc_channel import ChannelFactory, publisher_client, subscriber_client
from worker.sources.pubsub_admin import init_pubsub
from worker.sources.pubsub_publish import publish_lines
from worker.sources.pubsub_source import PubSubSource, PubSubSourceSettings

PROJECT = "lookout-robust"
BIG_LINE_BYTES = 12 * 1024 * 1024


def good_lines(n: int, prefix: str) -> list[bytes]:
    """Valid native records stamped now (the live clock guard admits them)."""
    stamp = datetime.now(UTC).isoformat()
    return [
        orjson.dumps(
            {"request_id": f"{prefix}{i}", "timestamp": stamp, "model": "m", "latency_ms": 10 + i}
        )
        for i in range(n)
    ]


def big_line() -> bytes:
    """One 12 MB record: too large for the decoder's 1 MB limit and for Pub/Sub's 10 MB."""
    head = orjson.dumps({"request_id": "big", "model": "m", "latency_ms": 1})[:-1]
    return head + b',"response":"' + b"x" * (BIG_LINE_BYTES - len(head) - 16) + b'"}'


def pull_all(
    channels: ChannelFactory, subscription: str, *, quiet_seconds: float = 1.0
) -> list[tuple[bytes, dict[str, str]]]:
    """Pull and ack until nothing came for `quiet_seconds` (60 s at most)."""
    client = subscriber_client(channels)
    path = client.subscription_path(PROJECT, subscription)
    out: list[tuple[bytes, dict[str, str]]] = []
    deadline = time.monotonic() + 60
    quiet_since = time.monotonic()
    try:
        while time.monotonic() < deadline and time.monotonic() - quiet_since < quiet_seconds:
            response = client.pull(subscription=path, max_messages=100, timeout=5)
            received = list(response.received_messages)
            if received:
                quiet_since = time.monotonic()
                client.acknowledge(subscription=path, ack_ids=[m.ack_id for m in received])
                out.extend((m.message.data, dict(m.message.attributes)) for m in received)
            else:
                time.sleep(0.1)  # the emulator answers an empty pull at once
    finally:
        client.close()
    return out


@pytest.fixture
def workers() -> Iterator[list[Worker]]:
    started: list[Worker] = []
    yield started
    for worker in started:
        worker.kill()


def init(channels: ChannelFactory, name: str, dlq: str | None = None) -> None:
    """Topic + subscription with the shortest ack deadline and immediate redelivery (the
    emulator's retry-policy bug: see pubsub_emulator.py)."""
    report = init_pubsub(
        PROJECT,
        f"{name}-logs",
        f"{name}-sub",
        dlq,
        ack_deadline_seconds=10,
        retry_policy=False,
        channels=channels,
    )
    assert report.ok, report.lines()


def test_a_12mb_gzip_line_is_dead_lettered_as_a_finder_and_the_good_records_counted_once(
    pubsub_emulator: PubSubEmulator,
    pubsub_channels: ChannelFactory,
    unique_name: str,
    workers: list[Worker],
    tmp_path: Path,
) -> None:
    init(pubsub_channels, unique_name, f"{unique_name}-dlq")
    overflow = tmp_path / "overflow"
    config = write_config(
        tmp_path / "w.yaml",
        {
            "project": PROJECT,
            "subscription": f"{unique_name}-sub",
            "dead_letter_topic": f"{unique_name}-dlq",
            "ack_deadline_seconds": 10,
            "dead_letter_overflow_path": str(overflow),
        },
        tmp_path / "sink.duckdb",
    )
    worker = Worker.start(config, pubsub_emulator.env(), tmp_path / "w.log")
    workers.append(worker)
    before, after, big = good_lines(150, "a"), good_lines(150, "b"), big_line()
    started = time.monotonic()
    for part, batch in ((before, 10), ([big], 1), (after, 10)):
        report = publish_lines(
            part, PROJECT, f"{unique_name}-logs", batch=batch, gzip=True, channels=pubsub_channels
        )
        assert report.ok, report.summary()

    def settled() -> bool:
        return (
            worker.sample("lookout_records_total") >= len(before) + len(after)
            and worker.sample("lookout_pubsub_dead_lettered_records_total") >= 1
            and worker.sample("lookout_pubsub_held_messages") == 0
        )

    worker.wait_until("the good records and the dead-lettered 12 MB line", settled, timeout=90)
    took = time.monotonic() - started
    records = worker.sample("lookout_records_total")
    invalid = worker.sample("lookout_records_invalid_total")
    oversized = worker.sample("lookout_pubsub_dead_letter_oversized_total")
    assert worker.process.poll() is None, worker.text()
    assert worker.terminate() == 0, worker.text()
    dead = pull_all(pubsub_channels, f"{unique_name}-dlq-sub")
    left = pull_all(pubsub_channels, f"{unique_name}-sub")
    figures = (
        f"12 MB gzip line among {len(before) + len(after)} good records: folded {records:.0f}, "
        f"invalid {invalid:.0f}, finder records {oversized:.0f}, dead-letter messages "
        f"{len(dead)}, left on subscription {len(left)}, settled in {took:.1f} s, "
        f"SIGTERM to exit {worker.stopped_after:.1f} s"
    )
    print(figures)
    assert records == len(before) + len(after), figures
    assert invalid == 1 and oversized == 1, figures
    assert len(dead) == 1 and left == [], figures
    body, attributes = dead[0]
    finder = orjson.loads(body)
    digest = hashlib.sha256(big).hexdigest()
    assert finder["sha256"] == digest and finder["size"] == len(big), finder
    assert finder["first_bytes"].startswith('{"request_id":"big"'), finder["first_bytes"][:80]
    assert "larger than the limit" in finder["reason"], finder["reason"]
    assert finder["source_message_id"] == attributes["source_message_id"]
    assert finder["attributes"]["Content-Encoding"] == "gzip"
    assert attributes["body"] == "finder" and attributes["original_sha256"] == digest, attributes
    kept = Path(attributes["overflow_file"])
    assert kept.parent == overflow and kept.read_bytes() == big
    assert "Traceback" not in worker.text(), worker.text()


def test_a_dead_letter_topic_that_does_not_exist_costs_n_attempts_then_the_record_is_logged(
    pubsub_emulator: PubSubEmulator,
    pubsub_channels: ChannelFactory,
    unique_name: str,
    workers: list[Worker],
    tmp_path: Path,
) -> None:
    init(pubsub_channels, unique_name)
    overflow = tmp_path / "overflow"
    config = write_config(
        tmp_path / "w.yaml",
        {
            "project": PROJECT,
            "subscription": f"{unique_name}-sub",
            "dead_letter_topic": f"{unique_name}-no-such-topic",
            "ack_deadline_seconds": 10,
            "dead_letter_overflow_path": str(overflow),
            "max_dead_letter_failures": 3,
        },
        tmp_path / "sink.duckdb",
    )
    worker = Worker.start(config, pubsub_emulator.env(), tmp_path / "w.log")
    workers.append(worker)
    good, bad = good_lines(100, "g"), b'{"request_id": "broken", "latency_ms": '
    report = publish_lines(
        [*good[:50], bad, *good[50:]], PROJECT, f"{unique_name}-logs", channels=pubsub_channels
    )
    assert report.ok, report.summary()
    publisher = publisher_client(pubsub_channels)
    topic = publisher.topic_path(PROJECT, f"{unique_name}-logs")
    not_gzip = b"plain text sent as gzip"
    publisher.publish(topic, not_gzip, **{"Content-Encoding": "gzip"}).result(timeout=30)
    publisher.transport.close()

    def settled() -> bool:
        return (
            worker.sample("lookout_records_total") >= len(good)
            and worker.sample("lookout_pubsub_dead_letter_given_up_total") >= 2
            and worker.sample("lookout_pubsub_held_messages") == 0
        )

    took = worker.wait_until("the good records and the two bad ones given up on", settled)
    failures = worker.sample("lookout_pubsub_dead_letter_failures_total")
    not_found = worker.sample("lookout_source_errors_total", step="dead_letter", reason="not_found")
    records = worker.sample("lookout_records_total")
    # each bad record once, however many tries the broken topic cost: the dead-letter rate
    # alert divides this by the records
    invalid = worker.sample("lookout_records_invalid_total", reason="malformed_json")
    undecodable = worker.sample("lookout_records_invalid_total", reason="bad_encoding")
    assert worker.terminate() == 0, worker.text()
    left = pull_all(pubsub_channels, f"{unique_name}-sub")
    log = worker.text()
    figures = (
        f"missing dead-letter topic: {records:.0f} of {len(good)} good records folded, "
        f"{failures:.0f} failed dead-letter attempts (not_found {not_found:.0f}), "
        f"invalid {invalid:.0f} + {undecodable:.0f} undecodable, left {len(left)}, "
        f"settled in {took:.1f} s"
    )
    print(figures)
    assert records == len(good) and failures == 6 and not_found == 6, figures
    assert invalid == 1 and undecodable == 1, figures
    assert left == [], figures
    assert log.count("refuses publishes") == 1, log
    assert f"--dead-letter-topic {unique_name}-no-such-topic" in log, log
    assert log.count("gave up dead-lettering") == 2, log
    assert f"{len(good)} records, 0 duplicates, 2 invalid" in log, log
    assert hashlib.sha256(bad).hexdigest() in log, log
    assert (overflow / f"{hashlib.sha256(bad).hexdigest()}.body").read_bytes() == bad
    assert "Traceback" not in log, log


def test_pubsubs_delivery_attempt_counts_failures_across_restarts(
    pubsub_channels: ChannelFactory, unique_name: str
) -> None:
    """A crash forgets our own count; Pub/Sub's delivery_attempt (set because the subscription
    has a dead-letter policy) does not: a fresh worker, whose own count is 1, gives up once
    Pub/Sub has delivered the message 3 times. Each worker is told which delivery it got (the
    engine re-reads what other replicas stored for a redelivered message).

    A worker pulls ahead of its engine, so the redelivery of its own nack can land in its queue
    and be handed back at close: Pub/Sub counts that delivery too, and the give-up can come
    with the second worker instead of the third — never with the first."""
    init(pubsub_channels, unique_name, f"{unique_name}-dlq")
    publish_lines([b"{broken"], PROJECT, f"{unique_name}-logs", channels=pubsub_channels)
    outcomes: list[bool] = []
    attempts: list[int] = []
    while not (outcomes and outcomes[-1]) and len(outcomes) < 3:  # workers in a row
        source = PubSubSource(
            PubSubSourceSettings(
                project=PROJECT,
                subscription=f"{unique_name}-sub",
                dead_letter_topic=f"{unique_name}-missing",
                max_dead_letter_failures=3,
            ),
            channel_factory=pubsub_channels,
        )
        try:
            got: list[SourceMessage] = []
            deadline = time.monotonic() + 20
            while not got and time.monotonic() < deadline:
                got = list(source.poll(10, 1.0))
            assert len(got) == 1, f"the message did not come back after {outcomes}"
            attempts.append(got[0].delivery_attempt)
            error = DecodeError(1, "invalid JSON", got[0].data)
            ok = source.dead_letter(got[0], [error])
            outcomes.append(ok)
            (source.ack if ok else source.nack)([got[0].ack_id])
        finally:
            source.close()
    assert outcomes in ([False, True], [False, False, True]), outcomes
    assert attempts[0] >= 1 and all(a < b for a, b in itertools.pairwise(attempts)), attempts
    assert pull_all(pubsub_channels, f"{unique_name}-sub", quiet_seconds=1.0) == []


def test_a_gzip_bomb_is_one_bad_message_not_an_oom(
    pubsub_channels: ChannelFactory, unique_name: str
) -> None:
    init(pubsub_channels, unique_name, f"{unique_name}-dlq")
    bomb = gzip.compress(b"\0" * 200_000_000, compresslevel=9)  # ~200 KB → 200 MB
    source = PubSubSource(
        PubSubSourceSettings(
            project=PROJECT,
            subscription=f"{unique_name}-sub",
            dead_letter_topic=f"{unique_name}-dlq",
            max_inflated_bytes=1024 * 1024,
        ),
        channel_factory=pubsub_channels,
    )
    try:
        publisher = publisher_client(pubsub_channels)
        topic = publisher.topic_path(PROJECT, f"{unique_name}-logs")
        publisher.publish(topic, bomb, **{"Content-Encoding": "gzip"}).result(timeout=30)
        publisher.publish(topic, good_lines(1, "ok")[0]).result(timeout=30)
        publisher.transport.close()
        handed: list[bytes] = []
        deadline = time.monotonic() + 20
        while source.stats().bad_encoding < 1 or not handed:
            assert time.monotonic() < deadline, source.stats()
            handed.extend(m.data for m in source.poll(10, 1.0))
        assert len(handed) == 1 and handed[0].startswith(b'{"request_id":"ok0"'), handed
    finally:
        source.close()
    dead = pull_all(pubsub_channels, f"{unique_name}-dlq-sub", quiet_seconds=1.0)
    assert len(dead) == 1 and dead[0][0] == bomb, dead
    assert "inflates past 1048576 bytes" in dead[0][1]["error_detail"], dead[0][1]
