"""Three `lookout run --role ingest` replicas and one `--role evaluate` over one Pub/Sub
subscription and one BigQuery dataset judge and page exactly as one process doing everything,
even when an ingest replica is killed with SIGKILL holding messages it pulled and folded but
could not yet make durable (they come back to the other two once their leases run out, while
the stream goes on) and when the evaluator is
killed mid-stream and a new one takes over. No window is judged before the dead replica's
messages are durable elsewhere: its last frontier holds them open for `writer_active_seconds`,
and the live replicas keep reporting on a quiet stream so that it then stops counting.

Everything is real and run as a user runs it: `lookout simulate` (two tenants, a safety spike),
`lookout pubsub init`, the Cloud Pub/Sub emulator, the BigQuery emulator, and
`lookout run` subprocesses configured by YAML files.

The reference is `lookout replay` of the same file into DuckDB, with the same engine and
detector settings: one process reading the file in order, so every window holds all of its
records when it is judged and the baselines are its in-process history. That comparison is
exact (same records per window, same verdicts, same sample sizes, same alert transitions); a
second `--role all` worker over Pub/Sub would itself depend on delivery order and would double
the BigQuery load of this test.

Why the split run can equal it although Pub/Sub hands the stream to three replicas in any
interleaving: the allowed lateness is a promise about time. In production event time moves with
the wall clock, and a replica that makes what it folded durable within the lateness (30 s by
default, checkpoints every 5 s) never has records for a window the evaluator judged. Publishing
15 simulated minutes at full speed compresses time ~20-fold, so a replica whose checkpoint
stalls a few seconds under load falls minutes of event time behind the others: measured once
here, window 06:03 of one model was judged on 77 of its 92 calls (the evaluator takes the
newest frontier of any replica). So the stream is published as it happens, one simulated minute
after another (`lookout publish`'s in-process helper, `PUBLISH_BATCH` lines per message), each
minute durable in BigQuery before the next: the frontier can only pass a window by 120 s
(`LATENESS`) once the minutes before it are durable, as in production.

Windows "certainly closed" are those the final ingest frontier (max over the replicas'
`writer_progress`) closes: window end <= frontier - lateness. Later windows stay open in the
split run (no end of input), while replay judges them at the end; only closed ones compare.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import orjson
import pytest

from tests.integration.bigquery_emulator import BigQueryEmulator
from tests.integration.lookout_worker import LOOKOUT, Worker
from tests.integration.pubsub_emulator import PubSubEmulator
from tests.integration.tcp_gate import TcpGate
from worker.sources.grpc_channel import ChannelFactory
from worker.sources.pubsub_publish import publish_lines

PROJECT = "lookout-split"
WINDOW = 60
LATENESS = 120
MAX_MESSAGES = 20
PUBLISH_BATCH = 5
MINUTES = 15
INGEST_REPLICAS = 3
#: the minute during which one ingest replica is killed with SIGKILL (and not restarted)
KILL_INGEST_AT = 4
ACK_DEADLINE = 20
#: the stream: 15 simulated minutes, ~100 calls/min for each of 3 models, over two tenants
SIMULATE = (
    *("--hours", "0.25", "--rate", "100", "--seed", "11", "--no-text"),
    *("--tenant", "acme", "--tenant", "globex", "--incident", "safety_spike@5m:5m"),
)
#: detectors limited to what the comparison needs, with baselines short enough for 15 minutes
DETECTORS: dict[str, Any] = {
    "enabled": ["safety", "latency", "tokens"],
    "safety": {"min_calls": 50, "min_baseline_calls": 250, "alpha": 0.02},
    "latency": {"min_baseline_calls": 250},
    "tokens": {"min_baseline_calls": 250},
}
ENGINE: dict[str, Any] = {
    "window_seconds": WINDOW,
    "allowed_lateness_seconds": LATENESS,
    "checkpoint_seconds": 0.5,
    "checkpoint_max_messages": 10,
    "grace_period_seconds": 10,
}
VERDICT_SQL = "SELECT model, detector, {epoch} AS s, verdict, sample_size FROM {ds}detections"
ALERT_SQL = "SELECT dedup_key, status, {epoch} AS s FROM {ds}alerts"
CALLS_SQL = (
    "SELECT model, {epoch} AS s, tenant, SUM(calls) AS calls FROM {ds}window_metrics_merged "
    "GROUP BY model, s, tenant"
)

Verdict = tuple[str, str, int, str, int]


def cli(env: dict[str, str], *args: str | Path, timeout: float = 120) -> str:
    result = subprocess.run(
        [LOOKOUT, *map(str, args)], env=env, capture_output=True, timeout=timeout
    )
    assert result.returncode == 0, f"lookout {args}: {result.stderr.decode()}"
    return result.stdout.decode()


def write_config(path: Path, role: str, sink: dict[str, Any], **extra: Any) -> Path:
    config = {
        "sink": sink,
        "engine": {**ENGINE, "role": role},
        "detectors": DETECTORS,
        "metrics": {"enabled": True, "host": "127.0.0.1", "port": 0},
        **extra,
    }
    path.write_bytes(orjson.dumps(config))  # JSON is YAML
    return path


def wait_for(what: str, check: Callable[[], bool], workers: list[Worker], timeout: float) -> None:
    """Poll `check` until it holds; fail if a worker exits or the deadline passes."""
    deadline = time.monotonic() + timeout
    while not check():
        for w in workers:
            code = w.process.poll()
            assert code is None, f"{w.log.name} exited ({code}) waiting for {what}:\n{w.text()}"
        assert time.monotonic() < deadline, f"no {what} in {timeout} s"
        time.sleep(0.25)


class BigQuery:
    """Reads the split run's dataset with a client of the test's own."""

    def __init__(self, emulator: BigQueryEmulator, dataset: str) -> None:
        self._client = emulator.client()
        self._ds = f"`{emulator.project}.{dataset}`."

    def rows(self, template: str) -> list[tuple[Any, ...]]:
        sql = template.format(ds=self._ds, epoch="UNIX_SECONDS(window_start)")
        return [tuple(r.values()) for r in self._client.query_and_wait(sql)]

    def scalar(self, sql: str) -> Any:
        return self.rows(sql)[0][0]

    def close(self) -> None:
        self._client.close()


def paged(pages: Path) -> bool:
    """True once an evaluator appended a firing alert to the alerts file (as sent to receivers)."""
    return pages.exists() and b'"status":"firing"' in pages.read_bytes()


def reference_rows(db: Path, template: str) -> list[tuple[Any, ...]]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        sql = template.format(ds="", epoch="epoch(window_start)::BIGINT")
        return [tuple(r) for r in con.execute(sql).fetchall()]
    finally:
        con.close()


@pytest.fixture
def workers() -> Iterator[Callable[..., Worker]]:
    """`start(name, role, config, env)` runs `lookout run --role R --config C`; every process
    still running at the end is killed."""
    started: list[Worker] = []

    def start(log: Path, role: str, config: Path, env: dict[str, str]) -> Worker:
        with log.open("wb") as err:
            process = subprocess.Popen(
                [LOOKOUT, "run", "--role", role, "--config", str(config)],
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=err,
            )
        worker = Worker(process, log)
        started.append(worker)
        return worker

    try:
        yield start
    finally:
        for worker in started:
            worker.kill()


def test_three_ingest_replicas_and_a_killed_evaluator_judge_and_page_like_one_process(
    pubsub_emulator: PubSubEmulator,
    bigquery_emulator: BigQueryEmulator,
    bigquery_dataset: str,
    pubsub_channels: ChannelFactory,
    workers: Callable[..., Worker],
    tcp_gate: Callable[[int], TcpGate],
    tmp_path: Path,
) -> None:
    env = {
        **pubsub_emulator.env(),
        "BIGQUERY_EMULATOR_HOST": f"127.0.0.1:{bigquery_emulator.port}",
    }
    t0 = time.monotonic()
    phases: dict[str, float] = {}
    stream = tmp_path / "logs.ndjson"
    cli(env, "simulate", "--out", stream, *SIMULATE)
    lines = [line for line in stream.read_bytes().split(b"\n") if line]

    # the reference: one process does everything
    reference = tmp_path / "reference.duckdb"
    replay_config = write_config(tmp_path / "replay.yaml", "all", {"kind": "duckdb"})
    cli(env, "replay", stream, "--config", replay_config, "--db", reference)

    phases["simulate+replay"] = time.monotonic() - t0
    topic, subscription = f"{bigquery_dataset}-logs", f"{bigquery_dataset}-sub"
    cli(
        env,
        *("pubsub", "init", "--project", PROJECT, "--topic", topic),
        *("--subscription", subscription, "--ack-deadline", str(ACK_DEADLINE)),
        "--immediate-redelivery",
    )
    sink = {"kind": "bigquery", "project": bigquery_emulator.project, "dataset": bigquery_dataset}
    source = {
        "kind": "pubsub",
        "project": PROJECT,
        "subscription": subscription,
        "ack_deadline_seconds": ACK_DEADLINE,
        "max_messages": MAX_MESSAGES,
        "pull_max_messages": MAX_MESSAGES,
    }
    ingest_config = write_config(tmp_path / "ingest.yaml", "ingest", sink, source=source)
    pages = tmp_path / "pages.jsonl"  # every alert change an evaluator sent, both of them
    # the replicas' source too, as the chart gives it: the evaluator derives from its ack
    # deadline how long a silent replica holds windows open (`writer_active_seconds`)
    eval_config = write_config(
        tmp_path / "evaluate.yaml", "evaluate", sink, source=source, alerts_out=str(pages)
    )

    # the replica to be killed reaches BigQuery through a gate the test shuts before its last
    # minute: it folds records it can never make durable, so it dies holding their messages
    gate = tcp_gate(bigquery_emulator.port)
    gated_env = {**env, "BIGQUERY_EMULATOR_HOST": f"127.0.0.1:{gate.port}"}
    ingest = [
        workers(tmp_path / f"ingest{i}.log", "ingest", ingest_config, gated_env if i == 0 else env)
        for i in range(INGEST_REPLICAS)
    ]
    evaluator = workers(tmp_path / "evaluate1.log", "evaluate", eval_config, env)
    bq = BigQuery(bigquery_emulator, bigquery_dataset)
    try:
        for w in [*ingest, evaluator]:
            w.wait_until("the metrics server", w._serving, timeout=60)

        phases["started"] = time.monotonic() - t0
        minutes = [
            lines[i * len(lines) // MINUTES : (i + 1) * len(lines) // MINUTES]
            for i in range(MINUTES)
        ]
        published = 0

        def send(minute: list[bytes]) -> None:
            nonlocal published
            report = publish_lines(
                minute, PROJECT, topic, batch=PUBLISH_BATCH, channels=pubsub_channels
            )
            assert report.ok, report.summary()
            published += len(minute)

        def durable(timeout: float = 60) -> None:
            wait_for(
                f"{published} records durable",
                lambda: (
                    (bq.scalar("SELECT SUM(calls) FROM {ds}window_metrics_merged") or 0)
                    >= published
                ),
                [*ingest, evaluator],
                timeout=timeout,
            )

        def publish(minute: list[bytes]) -> None:
            send(minute)
            durable()

        # two thirds of the stream; an ingest replica dies holding messages it pulled, the
        # evaluator judges and pages, then dies too
        first_part = minutes[: MINUTES * 2 // 3]
        for minute in first_part[:KILL_INGEST_AT]:
            publish(minute)
        folded_before = ingest[0].sample("lookout_records_total")
        gate.shut()
        send(first_part[KILL_INGEST_AT])
        # killed as soon as it folds some of this minute: nothing of it can be durable, so
        # nothing of it was acked (what it pulled ahead is not acked either)
        wait_for(
            "the replica to be killed to fold some of the minute",
            lambda: ingest[0].sample("lookout_records_total") > folded_before,
            [*ingest, evaluator],
            timeout=30,
        )
        os.kill(ingest[0].process.pid, signal.SIGKILL)
        killed_at = time.monotonic()
        ingest[0].process.wait(timeout=30)
        ingest.pop(0)
        # the next minutes go to the two left at once: their frontiers pass the dead replica's
        # windows while its messages wait out their ack deadline before coming back; the
        # evaluator must keep those windows open until they are durable at another replica
        for minute in first_part[KILL_INGEST_AT + 1 : KILL_INGEST_AT + 3]:
            send(minute)
        durable(timeout=120)
        phases["ingest replica killed and its messages durable"] = time.monotonic() - t0
        # what it held came back only when its leases ran out: the scenario happened
        held_for = time.monotonic() - killed_at
        assert held_for > ACK_DEADLINE - 10, f"all durable {held_for:.1f} s after the SIGKILL"
        for minute in first_part[KILL_INGEST_AT + 3 :]:
            publish(minute)
        wait_for("a page from the first evaluator", lambda: paged(pages), [*ingest, evaluator], 90)
        phases["first page"] = time.monotonic() - t0
        judged_before_kill = evaluator.sample("lookout_detections_total")
        os.kill(evaluator.process.pid, signal.SIGKILL)
        evaluator.process.wait(timeout=30)

        evaluator = workers(tmp_path / "evaluate2.log", "evaluate", eval_config, env)
        for minute in minutes[MINUTES * 2 // 3 :]:  # while the new evaluator starts
            publish(minute)
        evaluator.wait_until("the metrics server", evaluator._serving, timeout=60)

        assert published == len(lines)
        durable(timeout=90)  # the replica killed folded some: its count died with it
        phases["all folded"] = time.monotonic() - t0
        frontier = 0.0

        def all_closed_windows_judged() -> bool:
            nonlocal frontier
            value = bq.scalar("SELECT MAX(frontier_unix) FROM {ds}writer_progress")
            frontier = float(value or 0.0)
            closed = frontier - LATENESS
            unjudged = bq.scalar(
                "SELECT COUNT(*) FROM (SELECT DISTINCT model, window_start FROM "
                "{ds}window_metrics WHERE UNIX_SECONDS(window_start) + "
                f"{WINDOW} <= {closed}) AS w WHERE NOT EXISTS (SELECT 1 FROM {{ds}}detections "
                "AS d WHERE d.model = w.model AND d.window_start = w.window_start)"
            )
            return frontier > 0 and unjudged == 0

        wait_for("every closed window judged", all_closed_windows_judged, [*ingest, evaluator], 90)
        phases["all judged"] = time.monotonic() - t0
        assert evaluator.terminate(timeout=30) == 0, evaluator.text()
        for w in ingest:
            assert w.terminate(timeout=30) == 0, w.text()

        phases["stopped"] = time.monotonic() - t0
        got_verdicts = bq.rows(VERDICT_SQL)
        got_alerts = bq.rows(ALERT_SQL)
        got_calls = bq.rows(CALLS_SQL)
    finally:
        bq.close()

    def closed(start: int) -> bool:
        return start + WINDOW <= frontier - LATENESS

    want_verdicts: list[Verdict] = [
        (m, d, int(s), v, int(n)) for m, d, s, v, n in reference_rows(reference, VERDICT_SQL)
    ]
    want = sorted(r for r in want_verdicts if closed(r[2]))
    got = sorted((m, d, int(s), v, int(n)) for m, d, s, v, n in got_verdicts)
    judged = Counter((m, d, s) for m, d, s, _, _ in got)
    print(
        f"\nsplit run: {len(lines)} records, frontier "
        f"{datetime.fromtimestamp(frontier, UTC):%H:%M:%S}, {len(want)} closed-window verdicts, "
        f"{int(judged_before_kill)} judged before the SIGKILL, {len(got_alerts)} alert changes, "
        "one ingest replica killed mid-minute; "
        + ", ".join(f"{k} at {v:.1f} s" for k, v in phases.items())
    )
    assert 0 < judged_before_kill < len(want), "the SIGKILL must land mid-stream"
    assert len(want) >= 3 * 3 * 8, "too few closed windows to compare"
    assert [k for k, n in judged.items() if n > 1] == [], "a window was judged twice"
    assert got == want, "the split run's verdicts differ from one process's"

    want_alerts = sorted(
        (k, st, int(s)) for k, st, s in reference_rows(reference, ALERT_SQL) if closed(int(s))
    )
    assert any(st == "firing" for _, st, _ in want_alerts), "the stream must page someone"
    assert sorted((k, st, int(s)) for k, st, s in got_alerts) == want_alerts

    sent = [orjson.loads(line) for line in pages.read_bytes().splitlines() if line]
    firing: set[str] = set()
    for page in sent:  # nobody is paged twice for one incident, whichever evaluator sent it
        key, status = page["dedup_key"], page["status"]
        assert not (status == "firing" and key in firing), f"{key} paged twice: {sent}"
        (firing.add if status == "firing" else firing.discard)(key)
    pages_sent = sorted(
        (p["dedup_key"], p["status"], int(datetime.fromisoformat(p["window_start"]).timestamp()))
        for p in sent
    )
    assert pages_sent == want_alerts, "every page one process sends, sent once"

    by_tenant = {(m, int(s), t): int(c) for m, s, t, c in reference_rows(reference, CALLS_SQL)}
    got_by_tenant = {(m, int(s), t): int(c) for m, s, t, c in got_calls}
    want_calls: Counter[tuple[str, int]] = Counter()
    for (m, s, _), c in by_tenant.items():
        want_calls[(m, s)] += c
    got_calls_summed: Counter[tuple[str, int]] = Counter()
    for (m, s, _), c in got_by_tenant.items():
        got_calls_summed[(m, s)] += c
    assert got_calls_summed == want_calls, "calls per (model, window) differ"
    assert sum(want_calls.values()) == len(lines)
    assert {"acme", "globex"} <= {t for _, _, t in got_by_tenant}, "rows per tenant"
    assert got_by_tenant == by_tenant, "calls per (model, window, tenant) differ"
