"""`lookout run` on the real Pub/Sub emulator, as an operator runs it: the promises of issue 4.

Each test drives the CLI in subprocesses (`lookout pubsub init`, `lookout publish`,
`lookout run --config`) and reads the DuckDB sink after the worker exits. A worker never ends by
itself, so every wait is on a condition with a deadline: the worker's `/metrics` (on a free
port it logs at start) say how many records it folded, skipped as duplicates or found invalid;
then SIGTERM, the exit status, and the sink. Figures (records lost, double counted, runtime)
are printed (`pytest -s`) and repeated in assertion messages.

Multi-writer: DuckDB allows one writer process per file, so two workers each write their own
file and the union of their partial rows (`window_metrics`, summed per model and window) is
compared with a single worker's file. In production both write to the one BigQuery sink.
"""

from __future__ import annotations

import math
import random
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from schemas.decode.api import decode_records
from schemas.errors import DecodeError
from tests.integration.pubsub_emulator import PubSubEmulator
from worker.analyst_columns import ANALYST_COLUMNS
from worker.sources.grpc_channel import ChannelFactory, subscriber_client
from worker.sources.pubsub_publish import publish_lines

PROJECT = "lookout-e2e"
LOOKOUT = str(Path(__file__).resolve().parents[2] / ".venv" / "bin" / "lookout")
GOOD_RECORDS = 19_800
BAD_RECORDS = 200  # 1% of the 20,000 published
WINDOW_SECONDS = 60
GRACE_SECONDS = 10.0
#: the subscription's ack deadline (the minimum): a killed worker's messages return within it
ACK_DEADLINE = 10
#: every subscription here is made without a retry policy. The emulator (0.8.20) stops
#: redelivering expired messages of a subscription that has one once some of them expired
#: twice: reproduced without Lookout (300 messages pulled and abandoned again and again, 82
#: never came back within 60 s; 0 without a retry policy). Real Pub/Sub has no such bug, and
#: what these tests check (nothing lost, nothing counted twice) does not depend on backoff.
SUBSCRIPTION_OPTIONS = ("--ack-deadline", str(ACK_DEADLINE), "--immediate-redelivery")

WindowSums = dict[tuple[str, int], dict[str, float]]


# -- the stream ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Stream:
    good: list[bytes]
    bad: list[bytes]
    mixed: list[bytes]  # good and bad interleaved, the order they are published in


def malformed(i: int, rng: random.Random, good: Sequence[bytes]) -> bytes:
    """One bad record: truncated JSON, a wrong type, a NaN or an infinite embedding value."""
    kind = i % 4
    if kind == 0:
        # cut where no whitespace ends the record: the decoder strips it from the bytes it
        # dead-letters (reported as a bug); everything else must come back byte for byte
        line = rng.choice(good)
        return line[: len(line) // 2].rstrip()
    base = {"request_id": f"bad-{i}", "timestamp": "2026-01-05T06:01:00Z", "model": "gpt-4o-mini"}
    if kind == 1:
        return orjson.dumps({**base, "latency_ms": "fast", "input_tokens": [1]})
    if kind == 2:
        return orjson.dumps({**base, "latency_ms": 12.5})[:-1] + b',"embedding":[NaN,0.1,0.2]}'
    return orjson.dumps({**base, "latency_ms": 12.5})[:-1] + b',"embedding":[0.3,1e999,0.2]}'


@pytest.fixture(scope="module")
def stream(tmp_path_factory: pytest.TempPathFactory) -> Stream:
    """20,000 records: `lookout simulate` mixed wire formats with 1% malformed ones mixed in."""
    out = tmp_path_factory.mktemp("stream") / "sim.ndjson"
    subprocess.run(
        [LOOKOUT, "simulate", "--out", str(out), "--hours", "0.18", "--rate", "700"],
        check=True,
        capture_output=True,
        timeout=120,
    )
    good = [line for line in out.read_bytes().split(b"\n") if line][:GOOD_RECORDS]
    assert len(good) == GOOD_RECORDS, "simulate made fewer records than the test needs"
    rng = random.Random(4)
    bad = [malformed(i, rng, good) for i in range(BAD_RECORDS)]
    mixed = list(good)
    for line in bad:
        mixed.insert(rng.randrange(len(mixed) + 1), line)
    return Stream(good, bad, mixed)


def expected_calls(lines: Sequence[bytes]) -> WindowSums:
    """Records per (model, window start), decoded in-process: what the sink must hold."""
    counts: Counter[tuple[str, int]] = Counter()
    for record in decode_records(b"\n".join(lines)):
        assert not isinstance(record, DecodeError), record.describe()
        start = math.floor(record.timestamp.timestamp() / WINDOW_SECONDS) * WINDOW_SECONDS
        counts[(record.model, int(start))] += 1
    return {key: {"calls": float(n), "records": float(n)} for key, n in counts.items()}


# -- Pub/Sub and the CLI ---------------------------------------------------------------------


@dataclass(frozen=True)
class Names:
    topic: str
    subscription: str
    dlq: str

    @property
    def dlq_subscription(self) -> str:
        return f"{self.dlq}-sub"


def cli(emulator: PubSubEmulator, *args: str, stdin: bytes | None = None) -> str:
    """Run `lookout ARGS` against the emulator; its stdout, or fail with its stderr."""
    result = subprocess.run(
        [LOOKOUT, *args], input=stdin, env=emulator.env(), capture_output=True, timeout=120
    )
    assert result.returncode == 0, f"lookout {' '.join(args)}: {result.stderr.decode()}"
    return result.stdout.decode()


def init(emulator: PubSubEmulator, names: Names) -> None:
    cli(
        emulator,
        *("pubsub", "init", "--project", PROJECT, "--topic", names.topic),
        *("--subscription", names.subscription, "--dead-letter-topic", names.dlq),
        *SUBSCRIPTION_OPTIONS,
    )


def pull_all(
    channels: ChannelFactory, subscription: str, *, want: int, quiet_seconds: float
) -> list[tuple[bytes, dict[str, str]]]:
    """Pull and ack until `want` messages came and then nothing more for `quiet_seconds`."""
    client = subscriber_client(channels)
    path = client.subscription_path(PROJECT, subscription)
    out: list[tuple[bytes, dict[str, str]]] = []
    deadline = time.monotonic() + 60
    quiet_since = time.monotonic()
    try:
        while time.monotonic() < deadline:
            if len(out) >= want and time.monotonic() - quiet_since >= quiet_seconds:
                break
            response = client.pull(subscription=path, max_messages=500, timeout=5)
            received = list(response.received_messages)
            if received:
                quiet_since = time.monotonic()
                client.acknowledge(subscription=path, ack_ids=[m.ack_id for m in received])
                out.extend((m.message.data, dict(m.message.attributes)) for m in received)
            else:
                time.sleep(0.1)  # the emulator answers an empty pull at once; do not spin
    finally:
        client.close()
    return out


# -- the worker ------------------------------------------------------------------------------


def write_config(path: Path, names: Names, db: Path) -> Path:
    path.write_text(
        orjson.dumps(  # JSON is YAML
            {
                "source": {
                    "kind": "pubsub",
                    "project": PROJECT,
                    "subscription": names.subscription,
                    "dead_letter_topic": names.dlq,
                    "ack_deadline_seconds": ACK_DEADLINE,
                    # flow control: at most this many messages held un-acked, so ingest is paced
                    # by checkpoints and a kill or SIGTERM finds records in flight
                    "max_messages": 100,
                    # a fold every 20 messages: kills land anywhere in a checkpoint cycle
                    "pull_max_messages": 20,
                },
                "sink": {"kind": "duckdb", "path": str(db)},
                "engine": {
                    "window_seconds": WINDOW_SECONDS,
                    "checkpoint_seconds": 1,
                    # and also every 50 messages, so a kill lands between two of many
                    "checkpoint_max_messages": 50,
                    "grace_period_seconds": GRACE_SECONDS,
                },
                "detectors": {"enabled": ["safety", "latency", "tokens"]},
                "metrics": {"enabled": True, "host": "127.0.0.1", "port": 0},
            }
        ).decode()
    )
    return path


@dataclass
class Worker:
    """One `lookout run` process; its stderr goes to a file (never an unread pipe)."""

    process: subprocess.Popen[bytes]
    db: Path
    log: Path
    port: int = 0
    signalled_at: float | None = None
    stopped_after: float = field(default=float("nan"))

    def log_tail(self) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-20:])

    def wait_until(
        self, what: str, check: Callable[[], bool], timeout: float = 90.0, poll: float = 0.05
    ) -> None:
        deadline = time.monotonic() + timeout
        while not check():
            code = self.process.poll()
            assert code is None, f"worker exited ({code}) waiting for {what}:\n{self.log_tail()}"
            assert time.monotonic() < deadline, f"no {what} after {timeout} s:\n{self.log_tail()}"
            time.sleep(poll)

    def wait_ready(self) -> None:
        def serving() -> bool:
            for line in self.log.read_text(errors="replace").splitlines():
                if "serving /metrics" in line:
                    self.port = int(line.rsplit(":", 1)[1])
                    return True
            return False

        self.wait_until("metrics server", serving)
        self.wait_until("/readyz 200", lambda: self._get("/readyz")[0] == 200)

    def _get(self, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=5) as r:
                return int(r.status), r.read().decode()
        except urllib.error.HTTPError as e:
            return int(e.code), ""
        except OSError:
            return 0, ""

    def metrics(self) -> Counter[str]:
        """Sample sums: records, duplicate, invalid, checkpoints (empty if unreachable)."""
        status, text = self._get("/metrics")
        if status != 200:
            return Counter()
        sums: dict[str, float] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                sums[sample.name] = sums.get(sample.name, 0.0) + sample.value
        return Counter(
            records=int(sums.get("lookout_records_total", 0)),
            duplicate=int(sums.get("lookout_records_duplicate_total", 0)),
            invalid=int(sums.get("lookout_records_invalid_total", 0)),
            checkpoints=int(sums.get("lookout_checkpoint_duration_seconds_count", 0)),
            delivered_again=int(sums.get("lookout_pubsub_delivered_again_total", 0)),
        )

    def seen(self) -> int:
        m = self.metrics()
        return m["records"] + m["duplicate"] + m["invalid"]

    def signal_stop(self) -> None:
        """Send SIGTERM once (a second one during interpreter exit would kill it with -15)."""
        if self.signalled_at is None:
            self.signalled_at = time.monotonic()
            self.process.send_signal(signal.SIGTERM)

    def terminate(self) -> int:
        """SIGTERM, then wait for the exit; `stopped_after` is the time it took."""
        self.signal_stop()
        code = self.process.wait(timeout=GRACE_SECONDS + 30)
        assert self.signalled_at is not None
        self.stopped_after = time.monotonic() - self.signalled_at
        return code

    def kill(self) -> None:
        self.process.kill()
        self.process.wait(timeout=30)


class InFlight:
    """True once the worker has checkpointed twice, folded 30% of the stream, and folded 50
    records more since the scrape that first saw its latest checkpoint: killing it then loses
    records that were folded but not durable (the metrics server answers late while a
    checkpoint is written, so a scrape right after one would find nothing in flight)."""

    def __init__(self, worker: Worker, records: int) -> None:
        self._worker = worker
        self._records = records
        self._checkpoints = -1
        self._at_checkpoint = 0

    def __call__(self) -> bool:
        m = self._worker.metrics()
        if m["checkpoints"] != self._checkpoints:
            self._checkpoints, self._at_checkpoint = m["checkpoints"], m["records"]
            return False
        return (
            m["checkpoints"] >= 2
            and m["records"] >= 0.3 * self._records
            and m["records"] >= self._at_checkpoint + 50
        )


@pytest.fixture
def workers(pubsub_emulator: PubSubEmulator, tmp_path: Path) -> Iterator[Callable[..., Worker]]:
    """`start(names, db)` launches a worker (then `ready`); any still running is killed at exit."""
    started: list[Worker] = []

    def start(names: Names, db: Path) -> Worker:
        n = len(started)
        config = write_config(tmp_path / f"worker{n}.yaml", names, db)
        log = tmp_path / f"worker{n}.log"
        with log.open("wb") as err:
            process = subprocess.Popen(
                [LOOKOUT, "run", "--config", str(config)],
                env=pubsub_emulator.env(),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=err,
            )
        worker = Worker(process, db, log)
        started.append(worker)
        return worker

    yield start
    for worker in started:
        if worker.process.poll() is None:
            worker.kill()


def ready(*started: Worker) -> None:
    """Wait until each worker serves /readyz 200 (they start up in parallel meanwhile)."""
    for worker in started:
        worker.wait_ready()


def window_sums(*dbs: Path) -> WindowSums:
    """Sum of the partial rows of every file, per (model, window start): the merged aggregate."""
    columns = ["records", *(name for name, _ in ANALYST_COLUMNS)]
    out: WindowSums = {}
    for db in dbs:
        con = duckdb.connect(str(db), read_only=True)
        try:
            rows = con.execute(
                "SELECT model, epoch(window_start)::BIGINT, "
                + ", ".join(f"coalesce(sum({c}), 0)::DOUBLE" for c in columns)
                + " FROM window_metrics GROUP BY 1, 2"
            ).fetchall()
        finally:
            con.close()
        for model, start, *values in rows:
            sums = out.setdefault((model, int(start)), dict.fromkeys(columns, 0.0))
            for column, value in zip(columns, values, strict=True):
                sums[column] += value
    return out


def total(sums: WindowSums, column: str = "records") -> int:
    return int(sum(s[column] for s in sums.values()))


def only(sums: WindowSums, *columns: str) -> WindowSums:
    return {key: {c: s[c] for c in columns} for key, s in sums.items()}


@pytest.fixture
def names(pubsub_emulator: PubSubEmulator, unique_name: str) -> Names:
    n = Names(f"{unique_name}-logs", f"{unique_name}-sub", f"{unique_name}-dlq")
    init(pubsub_emulator, n)
    return n


# -- the promises ----------------------------------------------------------------------------


def test_20k_mixed_records_counted_once_and_malformed_ones_dead_lettered(
    pubsub_emulator: PubSubEmulator,
    pubsub_channels: ChannelFactory,
    names: Names,
    stream: Stream,
    workers: Callable[..., Worker],
    tmp_path: Path,
) -> None:
    started = time.monotonic()
    worker = workers(names, tmp_path / "sink.duckdb")
    ready(worker)
    serving = time.monotonic()
    singles, ndjson, gzipped = stream.mixed[:4000], stream.mixed[4000:14000], stream.mixed[14000:]
    publishers = []  # three publishers at once, as three log shippers would
    for i, (part, extra) in enumerate(
        ((singles, ()), (ndjson, ("--batch", "100")), (gzipped, ("--batch", "100", "--gzip")))
    ):
        path = tmp_path / f"part{i}.ndjson"
        path.write_bytes(b"\n".join(part) + b"\n")
        publishers.append(
            subprocess.Popen(
                [LOOKOUT, "publish", str(path), "-p", PROJECT, "-t", names.topic, *extra],
                env=pubsub_emulator.env(),
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
        )
    for process in publishers:
        out, err = process.communicate(timeout=120)
        assert process.returncode == 0, err.decode()
        print(out.decode().strip())
    published = time.monotonic()

    worker.wait_until("all 20,000 records", lambda: worker.seen() >= len(stream.mixed))
    drained = time.monotonic()
    seen = worker.metrics()
    assert worker.terminate() == 0, worker.log_tail()
    sums = window_sums(worker.db)
    dead = pull_all(pubsub_channels, names.dlq_subscription, want=BAD_RECORDS, quiet_seconds=1)
    left = pull_all(pubsub_channels, names.subscription, want=0, quiet_seconds=2)
    seconds = time.monotonic() - started

    counted, calls = total(sums), total(sums, "calls")
    figures = (
        f"20k e2e: published {len(stream.mixed)} records ({len(stream.bad)} malformed) in "
        f"{len(singles)} single + {math.ceil(len(ndjson) / 100)} NDJSON + "
        f"{math.ceil(len(gzipped) / 100)} gzip NDJSON messages; sink counted {counted} "
        f"(calls {calls}); lost {GOOD_RECORDS - counted}, double counted "
        f"{max(counted - GOOD_RECORDS, 0)}; worker skipped {seen['duplicate']} duplicates; "
        f"dead-lettered {len(dead)}; left on subscription {len(left)}; {seconds:.1f} s "
        f"(worker start {serving - started:.1f} s, publish {published - serving:.1f} s, "
        f"then drained after {drained - published:.1f} s)"
    )
    print(figures)
    assert only(sums, "calls", "records") == expected_calls(stream.good), figures
    assert counted == GOOD_RECORDS, figures
    dead_data = Counter(data for data, _ in dead)
    missing, unexpected = Counter(stream.bad) - dead_data, dead_data - Counter(stream.bad)
    assert not missing and not unexpected, (
        f"dead-letter topic lacks {[d[-80:] for d in missing]} and has "
        f"{[(d[-80:], a) for d, a in dead if d in unexpected]}; {figures}"
    )
    reasons = Counter(attributes["error"] for _, attributes in dead)
    print(f"dead-letter reasons: {dict(reasons)}")
    for _, attributes in dead:
        assert attributes["error_detail"].startswith("line "), attributes
        assert attributes["source_message_id"], attributes
        assert attributes["source_subscription"].endswith(f"/subscriptions/{names.subscription}")
    assert left == [], figures


def test_kill_9_mid_stream_then_restart_loses_nothing(
    pubsub_channels: ChannelFactory,
    names: Names,
    stream: Stream,
    workers: Callable[..., Worker],
    tmp_path: Path,
) -> None:
    good = stream.good[:8000]
    db = tmp_path / "sink.duckdb"
    first = workers(names, db)  # starts while the backlog is published: it meets a full stream
    report = publish_lines(good, PROJECT, names.topic, batch=10, channels=pubsub_channels)
    assert report.ok, report.summary()
    ready(first)
    first.wait_until(
        "records folded since the last checkpoint", InFlight(first, len(good)), poll=0.01
    )
    folded_at_kill = first.metrics()["records"]
    first.kill()
    durable_at_kill = total(window_sums(db))

    second = workers(names, db)
    ready(second)
    second.wait_until(
        "the rest of the stream", lambda: durable_at_kill + second.metrics()["records"] >= len(good)
    )
    restart_seen = second.metrics()
    assert second.terminate() == 0, second.log_tail()
    sums = window_sums(db)
    left = pull_all(pubsub_channels, names.subscription, want=0, quiet_seconds=2)

    counted = total(sums)
    figures = (
        f"kill -9: {len(good)} records published; at the kill at least {folded_at_kill} folded, "
        f"{durable_at_kill} durable (the rest went with the process); the restart counted "
        f"{restart_seen['records']} and skipped {restart_seen['duplicate']} redelivered records "
        f"already durable; final {counted}: lost {max(len(good) - counted, 0)}, double counted "
        f"{max(counted - len(good), 0)}; left on subscription {len(left)}"
    )
    print(figures)
    assert durable_at_kill < len(good), f"the kill came after the end of the stream; {figures}"
    assert only(sums, "calls", "records") == expected_calls(good), figures
    assert counted == len(good), figures
    # what the killed worker held un-acked came back: its records were not durable, and the
    # restart says so (a soak trial saw both redelivery counters at 0 after each kill -9)
    assert restart_seen["delivered_again"] >= 1, figures
    # not asserted empty: a message made durable but not yet acked at the kill comes back after
    # the ack deadline, maybe after this point; it is counted already and any worker skips it


#: TARGETS: 0 records lost across 10 kill -9 at random moments
KILLS = 10


def test_repeated_kill_9_at_random_moments_lose_nothing(
    pubsub_emulator: PubSubEmulator,
    pubsub_channels: ChannelFactory,
    unique_name: str,
    stream: Stream,
    workers: Callable[..., Worker],
    tmp_path: Path,
) -> None:
    """0 records lost across repeated kill -9 at random moments; double counting printed.

    Each worker is killed after folding a random number of records (so the kill lands at a
    random point between checkpoints, after it made some records durable; the last worker
    gets the rest); the next starts on the same subscription and sink. Every kill is a
    delivery attempt for the messages that worker held, so the subscription allows more
    attempts than kills: with the default 10, Pub/Sub itself moves messages a crash-looping
    worker kept receiving to the dead-letter topic (seen here: 1,760 of 6,000).
    """
    names = Names(f"{unique_name}-logs", f"{unique_name}-sub", f"{unique_name}-dlq")
    cli(
        pubsub_emulator,
        *("pubsub", "init", "--project", PROJECT, "--topic", names.topic),
        *("--subscription", names.subscription, "--dead-letter-topic", names.dlq),
        *SUBSCRIPTION_OPTIONS,
        *("--max-delivery-attempts", "50"),
    )
    good = stream.good
    db = tmp_path / "sink.duckdb"
    rng = random.Random(20261123)
    report = publish_lines(good, PROJECT, names.topic, batch=10, channels=pubsub_channels)
    assert report.ok, report.summary()
    kills: list[str] = []
    for round_ in range(KILLS):
        worker = workers(names, db)
        ready(worker)
        extra = rng.randint(0, 500)
        worker.wait_until(
            f"a checkpoint and {extra} records folded after it (kill {round_ + 1})",
            KillPoint(worker, extra),
            poll=0.01,
        )
        folded = worker.metrics()["records"]
        worker.kill()
        kills.append(f"#{round_ + 1}: {folded:.0f} folded, {total(window_sums(db))} durable")
    durable_before = total(window_sums(db))
    last = workers(names, db)
    ready(last)

    def rest_counted() -> bool:
        return durable_before + last.metrics()["records"] >= len(good)

    try:
        last.wait_until("the rest of the stream", rest_counted, timeout=90)
    except AssertionError as error:
        m = last.metrics()
        raise AssertionError(f"{kills}; durable before {durable_before}; last {dict(m)}") from error
    assert last.terminate() == 0, last.log_tail()
    sums = window_sums(db)
    counted = total(sums)
    figures = (
        f"{KILLS} x kill -9 on {len(good)} records ({'; '.join(kills)}): final {counted}, "
        f"lost {max(len(good) - counted, 0)}, double counted {max(counted - len(good), 0)}"
    )
    print(figures)
    assert durable_before < len(good), f"the kills came after the end of the stream; {figures}"
    assert only(sums, "calls", "records") == expected_calls(good), figures
    assert counted == len(good), figures


class KillPoint:
    """True once the worker has written a checkpoint and folded `extra` records since the
    scrape that first saw one: a kill then lands at a random point of the checkpoint cycle,
    after the worker made some of its records durable."""

    def __init__(self, worker: Worker, extra: int) -> None:
        self._worker = worker
        self._extra = extra
        self._base: int | None = None

    def __call__(self) -> bool:
        m = self._worker.metrics()
        if m["checkpoints"] < 1:
            return False
        if self._base is None:
            self._base = m["records"]
        return bool(m["records"] >= self._base + self._extra)


def test_sigterm_mid_stream_exits_within_grace_with_everything_durable(
    pubsub_channels: ChannelFactory,
    names: Names,
    stream: Stream,
    workers: Callable[..., Worker],
    tmp_path: Path,
) -> None:
    good = stream.good[8000:14000]
    db = tmp_path / "sink.duckdb"
    first = workers(names, db)
    report = publish_lines(good, PROJECT, names.topic, batch=10, channels=pubsub_channels)
    assert report.ok, report.summary()
    ready(first)
    first.wait_until(
        "records folded since the last checkpoint", InFlight(first, len(good)), poll=0.01
    )
    at_signal = first.metrics()["records"]
    code = first.terminate()
    folded = int(first.log.read_text().rsplit("lookout run: ", 1)[-1].split(" records")[0])
    durable = total(window_sums(db))

    second = workers(names, db)
    ready(second)
    second.wait_until("the rest", lambda: durable + second.metrics()["records"] >= len(good))
    redelivered = second.metrics()["duplicate"]
    assert second.terminate() == 0, second.log_tail()
    counted = total(window_sums(db))
    left = pull_all(pubsub_channels, names.subscription, want=0, quiet_seconds=2)

    figures = (
        f"SIGTERM: exit {code} after {first.stopped_after:.2f} s (grace {GRACE_SECONDS:g} s); "
        f"folded at least {at_signal} at the signal, {folded} at exit, durable {durable}; "
        f"after restart {counted} of {len(good)}: lost "
        f"{max(len(good) - counted, 0)}, double counted {max(counted - len(good), 0)}, "
        f"redelivered after the clean stop {redelivered}, left on subscription {len(left)}"
    )
    print(figures)
    assert code == 0, first.log_tail()
    assert first.stopped_after <= GRACE_SECONDS, figures
    assert durable == folded < len(good), figures
    assert counted == len(good) and redelivered == 0 and left == [], figures
    assert only(window_sums(db), "calls", "records") == expected_calls(good), figures


def test_two_workers_on_one_subscription_merge_to_a_single_workers_aggregates(
    pubsub_emulator: PubSubEmulator,
    pubsub_channels: ChannelFactory,
    names: Names,
    stream: Stream,
    workers: Callable[..., Worker],
    tmp_path: Path,
) -> None:
    good = stream.good[:6000]
    single_names = Names(names.topic, f"{names.subscription}-single", names.dlq)
    init(pubsub_emulator, single_names)  # a second subscription on the same topic
    pair = [workers(names, tmp_path / f"shard{i}.duckdb") for i in range(2)]
    alone = workers(single_names, tmp_path / "single.duckdb")
    ready(*pair, alone)
    report = publish_lines(good, PROJECT, names.topic, batch=10, channels=pubsub_channels)
    assert report.ok, report.summary()

    pair[0].wait_until("every record on the pair", lambda: sum(w.seen() for w in pair) >= len(good))
    alone.wait_until("every record on the single worker", lambda: alone.seen() >= len(good))
    share = [w.metrics()["records"] for w in pair]
    for worker in (*pair, alone):
        worker.signal_stop()
    for worker in (*pair, alone):
        assert worker.terminate() == 0, worker.log_tail()
    merged = window_sums(*(w.db for w in pair))
    single = window_sums(alone.db)

    figures = (
        f"two workers: {len(good)} records split {share[0]} + {share[1]}; merged "
        f"{total(merged)} over {len(merged)} (model, window) vs single worker {total(single)} "
        f"over {len(single)}; DuckDB allows one writer per file, so each worker had its own "
        "file and their partial rows were summed (BigQuery is the shared sink in production)"
    )
    print(figures)
    assert all(share), f"one worker got nothing, the test proves nothing; {figures}"
    assert merged.keys() == single.keys(), figures
    for key, sums in single.items():
        assert merged[key] == pytest.approx(sums, rel=1e-9), f"{key}: {figures}"
    assert only(single, "calls", "records") == expected_calls(good), figures
