"""Issue 9 through the real emulator: a line that breaks parsers costs only itself.

Before, a 50,000-deep line or a line of invalid UTF-8 inside a 50-line NDJSON message
dead-lettered the whole message as one `internal_error`, with its 49 good neighbours. Now each
bad line is dead-lettered alone with its reason, every good record is counted once, the worker
keeps running, and nothing is left on the subscription.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.lookout_worker import Worker, write_config
from tests.integration.pubsub_emulator import PubSubEmulator
from tests.integration.test_pubsub_robust import PROJECT, good_lines, init, pull_all
from worker.sources.grpc_channel import ChannelFactory
from worker.sources.pubsub_publish import publish_lines

DEPTH = 50_000


@pytest.fixture
def workers() -> Iterator[list[Worker]]:
    started: list[Worker] = []
    yield started
    for worker in started:
        worker.kill()


def poison_lines() -> dict[str, bytes]:
    """error type → one line that used to take its whole message down with it."""
    deep = b'{"a":' * DEPTH + b"1" + b"}" * DEPTH
    utf8 = good_lines(1, "latin1-")[0].replace(b'"model":"m"', b'"model":"caf\xe9"')
    return {"too_deep": deep, "invalid_utf8": utf8, "invalid_record": b"[1,2,3]"}


def test_each_poison_line_is_dead_lettered_alone_and_its_neighbours_counted_once(
    pubsub_emulator: PubSubEmulator,
    pubsub_channels: ChannelFactory,
    unique_name: str,
    workers: list[Worker],
    tmp_path: Path,
) -> None:
    init(pubsub_channels, unique_name, f"{unique_name}-dlq")
    config = write_config(
        tmp_path / "w.yaml",
        {
            "project": PROJECT,
            "subscription": f"{unique_name}-sub",
            "dead_letter_topic": f"{unique_name}-dlq",
            "ack_deadline_seconds": 10,
        },
        tmp_path / "sink.duckdb",
    )
    worker = Worker.start(config, pubsub_emulator.env(), tmp_path / "w.log")
    workers.append(worker)
    poison = poison_lines()
    good = 0
    started = time.monotonic()
    for n, (kind, bad) in enumerate(poison.items()):
        lines = good_lines(49, f"{kind}-")
        lines.insert(17 + n, bad)  # one message: 49 good records around one bad line
        good += 49
        report = publish_lines(
            lines, PROJECT, f"{unique_name}-logs", batch=50, channels=pubsub_channels
        )
        assert report.ok, report.summary()

    def settled() -> bool:
        return (
            worker.sample("lookout_records_total") >= good
            and worker.sample("lookout_pubsub_dead_lettered_records_total") >= len(poison)
            and worker.sample("lookout_pubsub_held_messages") == 0
        )

    worker.wait_until("the good records and the dead-lettered lines", settled, timeout=90)
    took = time.monotonic() - started
    records = worker.sample("lookout_records_total")
    assert worker.process.poll() is None, worker.text()
    assert worker.terminate() == 0, worker.text()
    dead = pull_all(pubsub_channels, f"{unique_name}-dlq-sub")
    left = pull_all(pubsub_channels, f"{unique_name}-sub")
    kinds = Counter(attributes["error"] for _, attributes in dead)
    figures = (
        f"3 messages of 49 good + 1 poison line: counted {records:.0f} of {good}, "
        f"dead-lettered {dict(kinds)}, left on subscription {len(left)}, settled in {took:.1f} s"
    )
    print(figures)
    assert records == good, figures
    assert kinds == Counter(poison.keys()), figures
    assert left == [], figures
    for body, attributes in dead:
        assert body == poison[attributes["error"]], attributes  # the bad line itself, alone
        assert attributes["error_detail"], attributes
    assert "Traceback" not in worker.text(), worker.text()
    # the log names each one with its message, as DESIGN promises (a soak trial found the
    # dead-letter topic and a counter, which a restart resets, the only trace)
    said = [line for line in worker.text().splitlines() if "dead-lettered 1 bad record" in line]
    assert len(said) == len(poison), worker.text()
    assert all(f"-dlq ({n} so far): line " in line for n, line in enumerate(said, 1)), said
