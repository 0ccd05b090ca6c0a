"""The README's "For analysts" queries, executed on BigQuery (the emulator) and on DuckDB after
the same replay: each returns rows, and both sinks return the same rows."""

from __future__ import annotations

import math
import re
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from schemas.batch import LogBatch
from schemas.config import BigQuerySinkConfig, DuckDBSinkConfig, EngineConfig, LookoutConfig
from tests.integration.bigquery_emulator import BigQueryEmulator
from worker.cli.pipeline import Pipeline, build_pipeline
from worker.sinks.bigquery_sink import BigQuerySink
from worker.sinks.duckdb_sink import DuckDBSink
from worker.sources.simulator import Incident, SimulationConfig, simulate_batches
from worker.testing import FakeClock

README = Path(__file__).resolve().parents[2] / "README.md"
T0 = datetime(2026, 1, 5, 6, 0, tzinfo=UTC)


def analyst_queries() -> list[str]:
    text = README.read_text()
    section = text[text.index("## For analysts") :]
    section = section[: section.index("\n## ", 1)]
    return [q.strip().rstrip(";") for q in re.findall(r"^```sql\n(.*?)^```", section, re.M | re.S)]


def stream() -> list[LogBatch]:
    config = SimulationConfig(
        start=T0,
        hours=10 / 60,
        models=("gemini-1.5-flash", "text-bison"),
        calls_per_minute=150,
        embedding_fraction=1.0,
        tenants=("acme", "globex", "initech"),
        incidents=(Incident("latency_regression", timedelta(minutes=5), model="text-bison"),),
    )
    batches = list(simulate_batches(config, seconds_per_batch=10))
    for batch in batches:
        # records without a tenant (OTLP spans carry none): BigQuery sorts NULL first, DuckDB
        # last, and the README's queries must give the same rows in the same order anyway
        batch.tenant[::7] = None
    return batches


def replay(sink: Any, clock: FakeClock, batches: list[LogBatch]) -> Pipeline:
    config = LookoutConfig(sink=sink, engine=EngineConfig(writer_id="w1", checkpoint_seconds=5.0))
    pipeline = build_pipeline(config, alert_stream=None, now=clock)
    for b in batches:
        pipeline.engine.feed(b)
        clock.advance(5.0)
        pipeline.engine.tick()
    assert pipeline.engine.finish(end_of_input=True)
    return pipeline


def normal(value: Any) -> Any:
    if isinstance(value, float):
        return None if math.isnan(value) else float(f"{value:.9g}")
    if isinstance(value, datetime):
        return value.astimezone(UTC)
    if isinstance(value, date | str | int) or value is None:
        return value
    return float(f"{float(value):.9g}")  # DuckDB's HUGEINT sums, decimals


def test_the_readme_analyst_queries_give_the_same_rows_on_bigquery_and_duckdb(
    bigquery_emulator: BigQueryEmulator,
    bigquery_dataset: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    queries = analyst_queries()
    assert len(queries) == 5
    batches = stream()
    clock = FakeClock()
    duck = replay(DuckDBSinkConfig(path=str(tmp_path / "l.duckdb")), clock, batches)
    monkeypatch.setenv("BIGQUERY_EMULATOR_HOST", f"127.0.0.1:{bigquery_emulator.port}")
    bq = replay(
        BigQuerySinkConfig(project=bigquery_emulator.project, dataset=bigquery_dataset),
        clock,
        batches,
    )
    assert isinstance(duck.sink, DuckDBSink) and isinstance(bq.sink, BigQuerySink)
    for sql in queries:
        from_bq = [tuple(normal(v) for v in row.values()) for row in bq.sink.query(sql)]
        from_duck = [tuple(normal(v) for v in row) for row in duck.sink.query(sql)]
        assert from_bq, sql
        assert from_bq == from_duck, sql
    tenants = bq.sink.query("SELECT DISTINCT tenant FROM window_metrics_merged ORDER BY tenant")
    assert [r["tenant"] for r in tenants] == [None, "acme", "globex", "initech"]
    alerts = bq.sink.query("SELECT status FROM alerts")
    assert {"firing"} <= {r["status"] for r in alerts}
    bq.close()
    duck.close()
