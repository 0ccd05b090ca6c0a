"""The BigQuery sink against the local BigQuery emulator, as a user runs it.

- `lookout bq init` twice: the second run changes nothing; an older table gains new columns;
- a replayed stream lands: the BigQuery view's block rate, token totals and p95 equal the
  DuckDB view's and the engine's (p95 within the histogram's relative error of the exact one);
  replaying it again changes no number;
- the emulator SIGKILLed for about 20 s mid-stream: the engine keeps going, checkpoints fail
  and are retried, and once BigQuery is back every record is there, with no restart.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from detectors.registry import build_detectors
from schemas.batch import LogBatch
from schemas.config import (
    BigQuerySinkConfig,
    DetectorsConfig,
    DuckDBSinkConfig,
    EngineConfig,
    LookoutConfig,
)
from schemas.detector_config import LatencyConfig
from tests.integration.bigquery_emulator import BigQueryEmulator
from worker.cli.pipeline import Pipeline, build_pipeline, reread_windows
from worker.sink import Checkpoint
from worker.sinks.bigquery_sink import BigQuerySink, BigQuerySinkError, KeepWindows
from worker.sinks.duckdb_sink import DuckDBSink
from worker.sources.simulator import Incident, SimulationConfig, simulate_batches
from worker.testing import FakeClock

T0 = datetime(2026, 1, 5, 6, 0, tzinfo=UTC)
LOOKOUT = [str(Path(sys.executable).parent / "lookout")]


def lookout(emulator: BigQueryEmulator, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "BIGQUERY_EMULATOR_HOST": f"127.0.0.1:{emulator.port}"}
    return subprocess.run(
        [*LOOKOUT, *args], capture_output=True, text=True, env=env, timeout=120, check=False
    )


def test_bq_init_twice_changes_nothing_the_second_time(bigquery_emulator: BigQueryEmulator) -> None:
    project, dataset = bigquery_emulator.project, "llm_monitoring_init"
    first = lookout(bigquery_emulator, "bq", "init", "--project", project, "--dataset", dataset)
    assert first.returncode == 0, first.stderr
    assert "created table llm_monitoring_init.window_metrics" in first.stdout
    assert "created or replaced view llm_monitoring_init.window_metrics_merged" in first.stdout
    second = lookout(bigquery_emulator, "bq", "init", "--project", project, "--dataset", dataset)
    assert second.returncode == 0, second.stderr
    assert second.stdout.strip() == f"{project}.{dataset}: up to date, nothing changed"
    assert "not partitioned" not in first.stderr + second.stderr

    client = bigquery_emulator.client()
    table = client.get_table(f"{project}.{dataset}.window_metrics")
    assert table.time_partitioning.field == "window_start"
    assert table.clustering_fields == ["model", "window_start"]
    assert all(field.description for field in table.schema)
    histogram = next(f for f in table.schema if f.name == "latency_histogram")
    assert (histogram.field_type, histogram.mode) == ("RECORD", "REPEATED")
    assert [f.name for f in histogram.fields] == ["bucket", "count"]
    client.close()


def test_bq_init_adds_missing_columns_to_an_older_table(
    bigquery_emulator: BigQueryEmulator,
) -> None:
    project, dataset = bigquery_emulator.project, "llm_monitoring_old"
    client = bigquery_emulator.client()
    client.create_dataset(f"{project}.{dataset}", exists_ok=True)
    client.query_and_wait(  # what an earlier release might have created
        f"CREATE TABLE `{dataset}.detector_references` (model STRING, detector STRING)"
    )
    client.query_and_wait(
        f"INSERT INTO `{dataset}.detector_references` (model, detector) VALUES ('a', 'latency')"
    )
    client.query_and_wait(  # unpartitioned, as before the evaluator's reads were bounded
        f"CREATE TABLE `{dataset}.writer_progress` "
        "(writer_id STRING, frontier_unix FLOAT64, updated_at TIMESTAMP)"
    )
    result = lookout(bigquery_emulator, "bq", "init", "--project", project, "--dataset", dataset)
    assert result.returncode == 0, result.stderr
    assert "added column llm_monitoring_old.detector_references.state" in result.stdout
    assert result.stderr.count("not partitioned") == 1, result.stderr
    assert "llm_monitoring_old.writer_progress is not partitioned by DATE(updated_at)" in (
        result.stderr
    )
    rows = list(client.query_and_wait(f"SELECT model FROM `{dataset}.detector_references`"))
    assert [r["model"] for r in rows] == ["a"]  # the rows stay
    client.close()


def test_bq_init_dry_run_prints_the_ddl_and_touches_nothing(
    bigquery_emulator: BigQueryEmulator,
) -> None:
    result = lookout(
        bigquery_emulator, "bq", "init", "--project", "p", "--dataset", "d", "--dry-run"
    )
    assert result.returncode == 0, result.stderr
    assert "CREATE TABLE IF NOT EXISTS `d.window_metrics`" in result.stdout
    assert "PARTITION BY DATE(window_start)\nCLUSTER BY model" in result.stdout
    assert "CREATE OR REPLACE VIEW `d.window_metrics_merged`" in result.stdout


def test_bq_init_sets_partition_expiration_on_the_window_tables_only(
    bigquery_emulator: BigQueryEmulator,
) -> None:
    """An analyst's dataset grew by every window forever: BigQuery storage billed for years
    of 1-minute rows nobody reads. The window tables' partitions expire; alerts stay."""
    project, dataset = bigquery_emulator.project, "llm_monitoring_expiring"
    init = ("bq", "init", "--project", project, "--dataset", dataset)
    first = lookout(bigquery_emulator, *init, "--partition-expiration-days", "30")
    assert first.returncode == 0, first.stderr
    client = bigquery_emulator.client()

    def expiration_days(table: str) -> float | None:
        ms = client.get_table(f"{project}.{dataset}.{table}").time_partitioning.expiration_ms
        return None if ms is None else int(ms) / 86_400_000

    expiring = ("window_metrics", "window_request_ids", "detections", "writer_progress")
    assert [expiration_days(t) for t in expiring] == [30, 30, 30, 30]
    assert expiration_days("alerts") is None  # an incident's record outlives its windows
    # again with the same value: nothing changes; without the option: left as it is
    for again in ((*init, "--partition-expiration-days", "30"), init):
        second = lookout(bigquery_emulator, *again)
        assert second.stdout.strip() == f"{project}.{dataset}: up to date, nothing changed"
    longer = lookout(bigquery_emulator, *init, "--partition-expiration-days", "90")
    assert f"partition expiration of {dataset}.window_metrics: 90 days (was 30 days)" in (
        longer.stdout
    )
    assert expiration_days("detections") == 90
    # a worker whose late records reach further back than the partitions last refuses to start
    year = KeepWindows(365 * 86_400.0, "a year")
    with pytest.raises(BigQuerySinkError, match=r"and a year: .*--partition-expiration-days 366"):
        BigQuerySink(project, dataset, client=client, keep=year)
    BigQuerySink(project, dataset, client=client, keep=KeepWindows(89 * 86_400.0, "89 days"))
    client.close()


def test_a_worker_whose_baselines_reach_past_the_expiration_refuses_to_start(
    bigquery_emulator: BigQueryEmulator, tmp_path: Path
) -> None:
    """Found in review: 4-hour windows and a 9-day expiration started fine, though a restart
    re-reads 240 windows (40 days) of baselines and open incidents: the older ones would have
    expired, and the restarted evaluator judged against less than the one that kept running."""
    project, dataset = bigquery_emulator.project, "llm_monitoring_long_windows"
    init = ("bq", "init", "--project", project, "--dataset", dataset)
    assert lookout(bigquery_emulator, *init, "--partition-expiration-days", "9").returncode == 0
    (tmp_path / "empty.ndjson").write_text("")
    (tmp_path / "lookout.yaml").write_text(
        f"source: {{kind: file, path: {tmp_path / 'empty.ndjson'}}}\n"
        f"sink: {{kind: bigquery, project: {project}, dataset: {dataset}}}\n"
        "engine: {window_seconds: 14400}\n"
    )
    run = lookout(bigquery_emulator, "run", "--config", str(tmp_path / "lookout.yaml"))
    assert run.returncode != 0, run.stderr
    assert "re-reads its last 240 windows as baselines and open incidents (40.00 days" in (
        run.stderr
    ), run.stderr
    assert "--partition-expiration-days 41" in run.stderr
    # an ingest replica reads no baselines: the late-record horizon alone applies to it
    ingest = LookoutConfig.model_validate({"engine": {"role": "ingest", "window_seconds": 14400}})
    assert reread_windows(ingest, build_detectors(ingest.detector_configs())) == 0
    assert "Traceback" not in run.stderr


def test_bq_init_refuses_an_expiration_shorter_than_late_records_reach(
    bigquery_emulator: BigQueryEmulator,
) -> None:
    """Partitions of day D go at D 00:00 UTC + the expiration, and a record 7 days late (the
    default engine.max_past_seconds) is folded into its window: 8 days could delete a window
    whose late records were still coming, and they would be counted again."""
    init = ("bq", "init", "--project", bigquery_emulator.project, "--dataset", "never_made")
    refused = lookout(bigquery_emulator, *init, "--partition-expiration-days", "8")
    assert refused.returncode == 1
    assert refused.stderr.startswith("lookout bq init: --partition-expiration-days 8 is shorter")
    assert "Traceback" not in refused.stderr
    dry = lookout(bigquery_emulator, *init, "--partition-expiration-days", "9", "--dry-run")
    assert "partition_expiration_days=9)" in dry.stdout
    assert "ALTER TABLE `never_made.window_metrics` SET OPTIONS(partition_expiration_days=9)" in (
        dry.stdout
    )
    assert "never_made" not in [d.dataset_id for d in bigquery_emulator.client().list_datasets()]


# -- a replayed stream ------------------------------------------------------------------------

MODELS = ("gemini-1.5-flash", "text-bison")
REPLAY_CHECKPOINT_SECONDS = 30.0


def stream(minutes: int) -> list[LogBatch]:
    config = SimulationConfig(
        start=T0,
        hours=minutes / 60,
        models=MODELS,
        calls_per_minute=150,
        embedding_fraction=0.0,
        incidents=(
            Incident("latency_regression", timedelta(minutes=minutes // 2), model=MODELS[0]),
        ),
    )
    return list(simulate_batches(config, seconds_per_batch=10))


def config_for(sink: Any, writer: str = "w1", checkpoint_seconds: float = 5.0) -> LookoutConfig:
    return LookoutConfig(
        sink=sink,
        engine=EngineConfig(writer_id=writer, checkpoint_seconds=checkpoint_seconds),
        detectors=DetectorsConfig(enabled=("safety", "latency", "tokens")),
    )


def run(pipeline: Pipeline, clock: FakeClock, batches: list[LogBatch]) -> None:
    for b in batches:
        pipeline.engine.feed(b)
        clock.advance(5.0)
        pipeline.engine.tick()
    assert pipeline.engine.finish(end_of_input=True)


VIEW = (
    "SELECT model, CAST({epoch} AS BIGINT) AS start, records, calls, blocked, block_rate, "
    "input_tokens, output_tokens, latency_p95_ms FROM {ds}window_metrics_merged "
    "ORDER BY model, start"
)


def bq_view(sink: BigQuerySink) -> list[tuple[Any, ...]]:
    rows = sink.query(VIEW.format(epoch="UNIX_SECONDS(window_start)", ds="{ds}."))
    return [tuple(r.values()) for r in rows]


def duck_view(sink: DuckDBSink) -> list[tuple[Any, ...]]:
    return [tuple(r) for r in sink.query(VIEW.format(epoch="epoch(window_start)", ds=""))]


def bigquery_pipeline(
    emulator: BigQueryEmulator,
    dataset: str,
    monkeypatch: pytest.MonkeyPatch,
    clock: FakeClock,
    checkpoint_seconds: float = 5.0,
) -> Pipeline:
    monkeypatch.setenv("BIGQUERY_EMULATOR_HOST", f"127.0.0.1:{emulator.port}")
    sink = BigQuerySinkConfig(project=emulator.project, dataset=dataset, write_timeout_seconds=4)
    config = config_for(sink, checkpoint_seconds=checkpoint_seconds)
    return build_pipeline(config, alert_stream=None, now=clock)


def test_a_replayed_stream_gives_the_duckdb_views_numbers_and_the_engines_p95(
    bigquery_emulator: BigQueryEmulator,
    bigquery_dataset: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    batches = stream(minutes=10)
    total = sum(len(b) for b in batches)

    clock = FakeClock()
    # a checkpoint every 6 batches, not every one: each costs the emulator about a second
    every = REPLAY_CHECKPOINT_SECONDS
    duck_config = config_for(
        DuckDBSinkConfig(path=str(tmp_path / "l.duckdb")), checkpoint_seconds=every
    )
    duck = build_pipeline(duck_config, alert_stream=None, now=clock)
    run(duck, clock, batches)
    bq = bigquery_pipeline(bigquery_emulator, bigquery_dataset, monkeypatch, clock, every)
    run(bq, clock, batches)
    assert bq.engine.stats.records == total

    assert isinstance(bq.sink, BigQuerySink) and isinstance(duck.sink, DuckDBSink)
    got, expected = bq_view(bq.sink), duck_view(duck.sink)
    assert sum(r[3] for r in got) == total  # every call counted once
    assert [r[:5] for r in got] == [r[:5] for r in expected]
    for mine, theirs in zip(got, expected, strict=True):
        assert mine[5:] == pytest.approx(theirs[5:], rel=1e-9), mine[:2]

    # p95 against the exact p95 of the raw latencies of each window: the histogram's bound
    accuracy = LatencyConfig().relative_accuracy
    latencies: dict[tuple[str, int], list[float]] = {}
    for b in batches:
        starts = (b.timestamp // 60 * 60).astype(np.int64)
        for model, start, value in zip(b.model, starts, b.latency_ms, strict=True):
            latencies.setdefault((str(model), int(start)), []).append(float(value))
    for model, start, *_, p95 in got:
        exact = float(np.quantile(latencies[(model, start)], 0.95, method="lower"))
        assert abs(p95 - exact) <= accuracy * exact + 1e-9, (model, start)

    # the engine judged the same windows the same way through either sink
    verdicts = "SELECT model, detector, verdict FROM {ds}detections ORDER BY 1, 2, 3"
    bq_verdicts = [tuple(r.values()) for r in bq.sink.query(verdicts.format(ds="{ds}."))]
    assert bq_verdicts == [tuple(r) for r in duck.sink.query(verdicts.format(ds=""))]
    assert any(v == "alert" for *_, v in bq_verdicts)
    bq.close()
    duck.close()

    # the same stream again (a replay from the start): nothing new is counted, no number moves
    again = bigquery_pipeline(bigquery_emulator, bigquery_dataset, monkeypatch, clock, every)
    run(again, clock, batches)
    assert (again.engine.stats.records, again.engine.stats.duplicates) == (0, total)
    assert isinstance(again.sink, BigQuerySink)
    assert bq_view(again.sink) == got
    again.close()


def test_bigquery_down_for_20_seconds_mid_stream_loses_nothing(
    bigquery_emulator: BigQueryEmulator,
    bigquery_dataset: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    batches = stream(minutes=6)
    total = sum(len(b) for b in batches)
    clock = FakeClock()
    pipeline = bigquery_pipeline(bigquery_emulator, bigquery_dataset, monkeypatch, clock)
    engine = pipeline.engine
    third = len(batches) // 3
    for b in batches[:third]:
        engine.feed(b)
        clock.advance(5.0)
        engine.tick()
    assert engine.checkpoint()

    bigquery_emulator.kill()  # SIGKILL: BigQuery unreachable
    down_since = time.monotonic()
    try:
        failures_before = engine.stats.checkpoint_failures
        for b in batches[third : 2 * third]:
            engine.feed(b)
            clock.advance(5.0)
            engine.tick()  # checkpoints fail after the sink's retries; nothing raises
        while time.monotonic() - down_since < 20:
            clock.advance(5.0)
            engine.tick()
        assert engine.stats.checkpoint_failures > failures_before
        assert not pipeline.sink.writable()
    finally:
        bigquery_emulator.start()  # the same data directory and ports

    deadline = time.monotonic() + 60
    while not engine.checkpoint():  # the same worker recovers by itself
        assert time.monotonic() < deadline, "the sink did not recover within 60 s"
        time.sleep(0.5)
    for b in batches[2 * third :]:
        engine.feed(b)
        clock.advance(5.0)
        engine.tick()
    assert engine.finish(end_of_input=True)
    assert engine.stats.records == total
    sink = pipeline.sink
    assert isinstance(sink, BigQuerySink)
    [row] = sink.query("SELECT SUM(records) AS n, SUM(calls) AS c FROM {ds}.window_metrics_merged")
    assert (row["n"], row["c"]) == (total, total)
    pipeline.close()


def test_a_table_without_a_column_the_sink_writes_stops_it_at_start_naming_both(
    bigquery_emulator: BigQueryEmulator,
) -> None:
    from worker.sinks.bigquery_sink import BigQuerySinkError

    project, dataset = bigquery_emulator.project, "llm_monitoring_short"
    client = bigquery_emulator.client()
    client.create_dataset(f"{project}.{dataset}", exists_ok=True)
    with pytest.raises(BigQuerySinkError, match=r"window_metrics does not exist: run `lookout"):
        BigQuerySink(project, dataset, client=client)
    client.query_and_wait(f"CREATE TABLE `{dataset}.window_metrics` (row_id STRING, model STRING)")
    with pytest.raises(
        BigQuerySinkError,
        match=rf"{project}\.{dataset}\.window_metrics has no column window_start \(TIMESTAMP\)",
    ):
        BigQuerySink(project, dataset, client=client)
    client.close()


def test_a_retry_after_a_half_written_checkpoint_counts_each_record_once(
    bigquery_emulator: BigQueryEmulator, bigquery_dataset: str
) -> None:
    """A checkpoint is one insert per table, so a failure can land part of it. The engine
    retries with the same sequence and at least the same deltas: the newest row of each
    row_id is what counts, in the views and for the evaluator."""
    from tests.sink_cases import S0, batch, ids, partial

    project = bigquery_emulator.project
    client = bigquery_emulator.client()
    sink = BigQuerySink(project, bigquery_dataset, client=client)
    first = batch("x", 6, blocked=1)
    more = batch("y", 4, second=30)
    attempt = Checkpoint("w1", 0, [partial(first)], ids(first), frontier=S0 + 10.0)
    # the first attempt: window_metrics landed, then the connection broke
    for table, rows, insert_ids in sink.stage(attempt):
        if table == "window_metrics":
            ref = f"{project}.{bigquery_dataset}.{table}"
            assert not client.insert_rows_json(ref, rows, row_ids=insert_ids)
    both = LogBatch.concat([first, more])
    retry = Checkpoint("w1", 0, [partial(both)], ids(both), frontier=S0 + 40.0)
    sink.write_checkpoint(retry)
    [row] = sink.query("SELECT records, calls, blocked, partial_rows FROM window_metrics_merged")
    assert (row["records"], row["calls"], row["blocked"], row["partial_rows"]) == (10, 10, 1, 1)
    stored = sink.load_window("a", S0)
    assert (stored.records, len(stored.partial_states)) == (10, 1)
    assert stored.request_ids == frozenset(both.request_id.tolist())
    assert sink.stored_records([("a", S0)]) == {("a", S0): 10}  # the retried row once

    # a restarted writer reusing writer id and sequence numbers (a new sink object) adds rows
    restarted = BigQuerySink(project, bigquery_dataset, client=bigquery_emulator.client())
    late = batch("z", 3, second=50)
    restarted.write_checkpoint(Checkpoint("w1", 0, [partial(late)], ids(late)))
    [row] = sink.query("SELECT records, partial_rows FROM window_metrics_merged")
    assert (row["records"], row["partial_rows"]) == (13, 2)
    restarted.close()
    sink.close()


def test_several_windows_read_in_one_go_are_what_each_read_alone_is(
    bigquery_emulator: BigQueryEmulator, bigquery_dataset: str
) -> None:
    """A poll's windows are opened with one read (three queries) for all of them: each must
    hold exactly what reading it alone holds, from every writer, and a window nothing was
    stored for is empty, not missing."""
    from tests.sink_cases import S0, batch, detection, ids, partial

    sink = BigQuerySink(
        bigquery_emulator.project, bigquery_dataset, client=bigquery_emulator.client()
    )
    a0, a1 = batch("a0-", 5, blocked=1), batch("a1-", 3, second=65)
    b0 = batch("b0-", 4, model="b")
    sink.write_checkpoint(
        Checkpoint(
            "w1",
            0,
            [partial(a0), partial(a1, start=S0 + 60), partial(b0, model="b")],
            [*ids(a0), *ids(a1, start=S0 + 60), *ids(b0, model="b")],
            detections=[detection()],
        )
    )
    more = batch("a0x-", 2, second=30)
    sink.write_checkpoint(Checkpoint("w2", 0, [partial(more)], ids(more)))
    asked = [("a", S0), ("a", S0 + 60), ("b", S0), ("b", S0 + 60)]  # the last: nothing stored
    together = sink.load_windows(asked)
    assert list(together) == asked
    for key in asked:
        alone, got = sink.load_window(*key), together[key]
        assert (got.records, got.request_ids, got.evaluated) == (
            alone.records,
            alone.request_ids,
            alone.evaluated,
        ), key
        assert sorted(map(repr, got.partial_states)) == sorted(map(repr, alone.partial_states))
    assert (together[("a", S0)].records, together[("a", S0)].evaluated) == (7, True)
    assert len(together[("a", S0)].partial_states) == 2
    assert together[("b", S0 + 60)].records == 0 and not together[("b", S0 + 60)].request_ids
    sink.close()
