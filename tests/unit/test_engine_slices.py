"""Tenants split the analysts' rows, never the detection: a stream spread over tenants gives
the same detections as the same stream without them, and per-tenant rows that add up."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from schemas.config import DuckDBSinkConfig, EngineConfig, LookoutConfig
from worker.cli.pipeline import build_pipeline
from worker.sinks.duckdb_sink import DuckDBSink
from worker.sources.simulator import Incident, SimulationConfig, simulate_batches
from worker.testing import FakeClock

T0 = datetime(2026, 1, 5, 6, 0, tzinfo=UTC)


def replay(path: Path, tenants: tuple[str, ...]) -> DuckDBSink:
    config = SimulationConfig(
        start=T0,
        hours=0.25,
        models=("gemini-1.5-flash", "text-bison"),
        calls_per_minute=200,
        embedding_fraction=0.2,
        tenants=tenants,
        incidents=(Incident("safety_spike", timedelta(minutes=8), model="text-bison"),),
    )
    clock = FakeClock()
    lookout = LookoutConfig(
        sink=DuckDBSinkConfig(path=str(path)),
        engine=EngineConfig(writer_id="w1", checkpoint_seconds=5.0),
    )
    pipeline = build_pipeline(lookout, alert_stream=None, now=clock)
    for batch in simulate_batches(config, seconds_per_batch=10):
        pipeline.engine.feed(batch)
        clock.advance(5.0)
        pipeline.engine.tick()
    assert pipeline.engine.finish(end_of_input=True)
    assert isinstance(pipeline.sink, DuckDBSink)
    return pipeline.sink


DETECTIONS = (
    "SELECT model, detector, window_start, verdict, round(value, 9) FROM detections "
    "ORDER BY model, detector, window_start"
)


def test_tenants_slice_the_rows_and_leave_the_detections_alone(tmp_path: Path) -> None:
    plain = replay(tmp_path / "plain.duckdb", ())
    sliced = replay(tmp_path / "sliced.duckdb", ("acme", "globex"))
    try:
        assert sliced.query(DETECTIONS) == plain.query(DETECTIONS)
        alerts = "SELECT dedup_key, status FROM alerts ORDER BY 1, 2"
        assert any(s == "firing" for _, s in sliced.query(alerts))
        assert sliced.query(alerts) == plain.query(alerts)

        per_model = "SELECT model, sum(calls), sum(blocked) FROM window_metrics_merged GROUP BY 1"
        assert sorted(sliced.query(per_model)) == sorted(plain.query(per_model))
        rows: list[Any] = sliced.query(
            "SELECT tenant, model_version, count(*) FROM window_metrics_merged GROUP BY 1, 2"
        )
        assert {t for t, _, _ in rows} == {"acme", "globex"}
        assert all(v is not None for _, v, _ in rows)
    finally:
        plain.close()
        sliced.close()
