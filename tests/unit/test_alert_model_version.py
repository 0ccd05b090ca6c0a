"""An alert names the model version its calls named: the on-call's first question after a
model update that doubles the block rate is which release did it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

from schemas.config import DuckDBSinkConfig, EngineConfig, LookoutConfig
from worker.cli.pipeline import build_pipeline
from worker.sources.simulator import Incident, SimulationConfig, simulate_batches
from worker.testing import FakeClock
from worker.window_state import describe_versions

T0 = datetime(2026, 1, 5, 6, 0, tzinfo=UTC)


def alerts_of(path: Path, rollout: str | None) -> list[tuple[str, str, str | None]]:
    """(status, dedup key, model_version) of every alert change of a safety spike on
    text-bison; `rollout`: the version a quarter of the spike's window calls name instead."""
    config = SimulationConfig(
        start=T0,
        hours=0.75,
        models=("text-bison",),
        calls_per_minute=400,
        embedding_fraction=0.0,
        incidents=(
            Incident(
                "safety_spike", timedelta(minutes=20), timedelta(minutes=6), model="text-bison"
            ),
        ),
    )
    clock = FakeClock()
    lookout = LookoutConfig(
        sink=DuckDBSinkConfig(path=str(path)),
        engine=EngineConfig(writer_id="w1", checkpoint_seconds=5.0),
    )
    pipeline = build_pipeline(lookout, alert_stream=None, now=clock)
    rng = np.random.default_rng(3)
    for batch in simulate_batches(config, seconds_per_batch=10):
        if rollout is not None:
            versions = batch.model_version.copy()
            versions[rng.random(len(versions)) < 0.25] = rollout
            batch = type(batch)(**{**batch.__dict__, "model_version": versions})
        pipeline.engine.feed(batch)
        clock.advance(5.0)
        pipeline.engine.tick()
    assert pipeline.engine.finish(end_of_input=True)
    pipeline.close()
    return [(a.status, a.dedup_key, a.model_version) for a in pipeline.engine.stats.alerts]


def test_a_page_and_its_resolve_name_the_model_version_of_the_window_that_opened_it(
    tmp_path: Path,
) -> None:
    alerts = alerts_of(tmp_path / "one.duckdb", None)
    safety = [a for a in alerts if ":safety:" in a[1]]
    assert [status for status, _, _ in safety][:1] == ["firing"] and len(safety) >= 2
    assert {version for _, _, version in safety} == {"text-bison@002"}


def test_a_rollout_in_progress_names_both_versions_and_keeps_the_label_for_the_incident(
    tmp_path: Path,
) -> None:
    alerts = alerts_of(tmp_path / "two.duckdb", "text-bison@003")
    safety = [a for a in alerts if ":safety:" in a[1]]
    assert safety and {version for _, _, version in safety} == {"text-bison@002, text-bison@003"}


def test_versions_are_named_by_calls_the_largest_first() -> None:
    assert describe_versions({"v2": 95, "v1": 5}) == "v2"
    assert describe_versions({"v1": 40, "v2": 60}) == "v2, v1"
    assert describe_versions({None: 10}) is None
    assert describe_versions({"a": 1, "b": 1, "c": 1, "d": 1}) == "a, b, c"
