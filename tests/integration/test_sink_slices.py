"""Analysts slice a window by model version and tenant: DuckDB and BigQuery answer alike.

A partial row becomes one `window_metrics` row per (model_version, tenant); the merged view
gives each slice its own calls, block rate and p95, while the evaluator still reads one state
per partial row (detection runs per model). On BigQuery a retried checkpoint that gained a
slice must not leave the model's detector state twice.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from detectors.latency import LatencyDetector
from schemas.batch import LogBatch
from schemas.detector_config import LatencyConfig
from tests.integration.bigquery_emulator import BigQueryEmulator
from tests.sink_cases import DETECTORS, S0, batch, merged_state, states_of
from worker.sink import Checkpoint, PartialRow, Sink
from worker.sinks.duckdb_sink import DuckDBSink
from worker.window_state import OpenWindow

LATENCY = LatencyDetector(LatencyConfig())
SLICE_SQL = (
    "SELECT tenant, model_version, records, calls, blocked, input_tokens, latency_p95_ms "
    "FROM {ds}window_metrics_merged ORDER BY tenant"
)


def tenanted(prefix: str, tenants: Sequence[str | None], *, blocked: int = 0) -> LogBatch:
    logs = batch(prefix, len(tenants), blocked=blocked)
    return replace(
        logs,
        tenant=np.array(tenants, dtype=object),
        model_version=np.full(len(tenants), "v2", dtype=object),
    )


def fold(*batches: LogBatch) -> PartialRow:
    window = OpenWindow.fresh("a", S0, S0 + 60, DETECTORS)
    for b in batches:
        window.fold(b, DETECTORS)
    return window.partial_row(DETECTORS)


def bigquery_sink(request: pytest.FixtureRequest) -> Sink:
    from worker.sinks.bigquery_sink import BigQuerySink

    emulator: BigQueryEmulator = request.getfixturevalue("bigquery_emulator")
    dataset = request.getfixturevalue("bigquery_dataset")
    return BigQuerySink(emulator.project, dataset, client=emulator.client(), write_timeout=20)


@pytest.fixture(params=["duckdb", "bigquery"])
def sink(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Sink]:
    made: Sink
    if request.param == "duckdb":
        made = DuckDBSink(tmp_path / "lookout.duckdb")
    else:
        made = bigquery_sink(request)
    yield made
    made.close()


@pytest.fixture
def bigquery(request: pytest.FixtureRequest) -> Iterator[Sink]:
    """A retry after a partly written checkpoint happens only on BigQuery (DuckDB commits a
    checkpoint whole or not at all)."""
    made = bigquery_sink(request)
    yield made
    made.close()


def slices_view(sink: Sink) -> list[tuple[Any, ...]]:
    if isinstance(sink, DuckDBSink):
        return [tuple(r) for r in sink.query(SLICE_SQL.format(ds=""))]
    return [tuple(r.values()) for r in sink.query(SLICE_SQL.format(ds="{ds}."))]  # type: ignore[attr-defined]


def expected_row(logs: LogBatch, tenant: str) -> tuple[Any, ...]:
    part = logs.take(logs.tenant == tenant)
    state = states_of(part)
    p95 = LATENCY.quantiles(state["latency"])["p95_ms"]
    return (tenant, "v2", len(part), len(part), int(part.blocked.sum()),
            float(np.nansum(part.input_tokens)), p95)  # fmt: skip


def close(a: list[tuple[Any, ...]], b: list[tuple[Any, ...]]) -> bool:
    def norm(row: tuple[Any, ...]) -> tuple[Any, ...]:
        return tuple(round(float(v), 6) if isinstance(v, float | int) else v for v in row)

    return [norm(r) for r in a] == [norm(r) for r in b]


def test_each_tenant_gets_its_own_row_and_the_evaluator_one_state(sink: Sink) -> None:
    logs = tenanted("r", ["acme"] * 6 + ["globex"] * 4 + ["acme"] * 2, blocked=5)
    sink.write_checkpoint(Checkpoint("w1", 0, partials=[fold(logs)]))

    assert close(slices_view(sink), [expected_row(logs, "acme"), expected_row(logs, "globex")])
    stored = sink.load_window("a", S0)
    assert len(stored.partial_states) == 1
    assert stored.records == len(logs)
    whole = merged_state(sink, "a", S0)
    assert whole["safety"] == states_of(logs)["safety"]

    sink.write_checkpoint(Checkpoint("w1", 0, partials=[fold(logs)]))  # a replayed checkpoint
    assert close(slices_view(sink), [expected_row(logs, "acme"), expected_row(logs, "globex")])


def test_a_retry_that_gained_a_slice_replaces_the_first_attempt(bigquery: Sink) -> None:
    sink = bigquery
    first = tenanted("r", ["globex"] * 3)
    more = tenanted("s", ["acme"] * 4, blocked=2)
    sink.write_checkpoint(Checkpoint("w1", 0, partials=[fold(first)]))
    # the engine retries the same sequence with a superset: now "acme" sorts first
    sink.write_checkpoint(Checkpoint("w1", 0, partials=[fold(first, more)]))

    both = LogBatch.concat([first, more])
    assert close(slices_view(sink), [expected_row(both, "acme"), expected_row(both, "globex")])
    assert len(sink.load_window("a", S0).partial_states) == 1
    assert merged_state(sink, "a", S0)["safety"] == states_of(both)["safety"]
