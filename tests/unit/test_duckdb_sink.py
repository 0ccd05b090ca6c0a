"""The DuckDB sink beyond the shared contract (tests/integration/test_sink_contract.py): what
an analyst opening the file sees (`window_metrics_merged`), atomic rollback, replays and
restarts that leave it unchanged, and an analyst's own tables in the same file.
"""

from __future__ import annotations

import base64
import zlib
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import duckdb
import msgspec
import numpy as np
import orjson
import pytest

from detectors.latency import LatencyDetector
from schemas.batch import LogBatch
from schemas.config import DetectorsConfig, DuckDBSinkConfig, EngineConfig, LookoutConfig
from schemas.detector_config import LatencyConfig
from tests.sink_cases import (
    S0,
    T0,
    batch,
    detection,
    ids,
    merged_state,
    partial,
    rows_of,
    states_of,
    tracker_rows,
)
from worker.cli.pipeline import build_pipeline
from worker.errors import SetupError
from worker.sink import Checkpoint, PartialRow
from worker.sinks.duckdb_sink import DuckDBSink
from worker.sources.simulator import SimulationConfig, simulate_batches

# -- DuckDB: what an analyst opening the file sees ---------------------------------------------


def query(path: Path, sql: str) -> list[tuple[Any, ...]]:
    """Read the file the way an analyst would, after the worker closed it."""
    with duckdb.connect(str(path), read_only=True) as con:
        return con.execute(sql).fetchall()


MERGED = (
    "SELECT model, epoch(window_start)::BIGINT, records, late_records, partial_rows, calls, "
    "blocked, latency_count, latency_sum_ms, token_calls FROM window_metrics_merged ORDER BY 1, 2"
)


def test_merged_view_sums_the_partial_rows_of_every_writer(tmp_path: Path) -> None:
    path = tmp_path / "lookout.duckdb"
    sink = DuckDBSink(path)
    whole = batch("r", 20, blocked=4)
    first, second = whole.take(np.arange(12)), whole.take(np.arange(12, 20))
    sink.write_checkpoint(Checkpoint("w1", 0, [partial(first)], ids(first)))
    sink.write_checkpoint(Checkpoint("w2", 0, [partial(second, late=3)], ids(second)))
    sink.close()

    latency_sum = float(sum(100 + 10 * i for i in range(20)))
    assert query(path, MERGED) == [("a", S0, 20, 3, 2, 20, 4, 20, latency_sum, 20)]
    [(rate,)] = query(path, "SELECT block_rate FROM window_metrics_merged")
    assert rate == pytest.approx(0.2)


def test_checkpoints_survive_closing_and_reopening_the_file(tmp_path: Path) -> None:
    path = tmp_path / "lookout.duckdb"
    sink = DuckDBSink(path)
    logs = batch("r", 6, blocked=2)
    sink.write_checkpoint(
        Checkpoint(
            "w1",
            0,
            [partial(logs)],
            ids(logs),
            [detection()],
            alert_state=tracker_rows(detection()),
        )
    )
    sink.close()
    assert not sink.writable()
    with pytest.raises(duckdb.Error):
        sink.write_checkpoint(Checkpoint("w1", 1, alert_state=[]))

    reopened = DuckDBSink(path)
    stored = reopened.load_window("a", S0)
    assert (stored.records, stored.evaluated) == (6, True)
    assert stored.request_ids == frozenset(logs.request_id.tolist())
    assert merged_state(reopened, "a", S0) == states_of(logs)
    assert list(reopened.load_alert_state()) == tracker_rows(detection())
    reopened.close()


def test_a_constraint_violation_midway_rolls_back_the_whole_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "lookout.duckdb"
    sink = DuckDBSink(path)
    good = batch("good", 5)
    bad = PartialRow(
        model=None,  # type: ignore[arg-type]  # NOT NULL in window_metrics
        window_start=S0 + 60,
        window_end=S0 + 120,
        records=1,
        late_records=0,
        states=rows_of(states_of(batch("x", 1))),
    )
    with pytest.raises(duckdb.ConstraintException):
        sink.write_checkpoint(
            Checkpoint("w1", 0, [partial(good), bad], ids(good), alert_state=[{"kind": "x"}])
        )
    assert sink.newest_window_start("a") is None
    assert sink.load_window("a", S0).request_ids == frozenset()
    assert list(sink.load_alert_state()) == []
    sink.write_checkpoint(Checkpoint("w1", 0, [partial(good)], ids(good)))
    sink.close()
    assert query(path, "SELECT count(*), sum(records) FROM window_metrics") == [(1, 5)]
    assert query(path, "SELECT count(*) FROM window_request_ids") == [(5,)]


def test_rewriting_a_verdict_replaces_it(tmp_path: Path) -> None:
    path = tmp_path / "lookout.duckdb"
    sink = DuckDBSink(path)
    sink.write_checkpoint(Checkpoint("w1", 0, detections=[detection()]))
    sink.write_checkpoint(Checkpoint("w2", 0, detections=[detection()]))
    sink.close()
    assert query(path, "SELECT count(*) FROM detections") == [(1,)]


def pipeline_config(path: Path, writer: str = "w1") -> LookoutConfig:
    return LookoutConfig(
        sink=DuckDBSinkConfig(path=str(path)),
        engine=EngineConfig(writer_id=writer),
        detectors=DetectorsConfig(enabled=("safety", "latency", "tokens")),
    )


def simulated(minutes: int, tenants: tuple[str, ...] = ()) -> list[LogBatch]:
    config = SimulationConfig(
        start=T0,
        hours=minutes / 60,
        models=("gemini-1.5-flash", "text-bison"),
        calls_per_minute=120,
        embedding_fraction=0.0,
        tenants=tenants,
    )
    return list(simulate_batches(config, seconds_per_batch=20))


def test_model_daily_counts_windows_not_tenant_slices(tmp_path: Path) -> None:
    """Three tenants give each window three rows of the merged view: `model_daily` counted
    them as three windows."""
    path = tmp_path / "lookout.duckdb"
    replay(path, simulated(12, tenants=("acme", "globex", "initech")))
    slices, windows = query(
        path,
        "SELECT count(*), count(DISTINCT (model, window_start)) FROM window_metrics_merged",
    )[0]
    assert slices == 3 * windows > 0
    daily = query(path, "SELECT sum(windows), sum(calls) FROM model_daily")[0]
    merged_calls = query(path, "SELECT sum(calls) FROM window_metrics_merged")[0][0]
    assert daily == (windows, merged_calls)


def test_a_model_window_s_p95_is_the_one_its_latency_detector_judged(tmp_path: Path) -> None:
    """`model_daily`'s worst p95 was the worst (version, tenant) slice's, a p95 of a few dozen
    calls (5,005 ms where no judged window passed 3,112). `model_windows` merges every slice
    of a window, as the detectors do, and the day's worst is the worst of those."""
    path = tmp_path / "lookout.duckdb"
    replay(path, simulated(12, tenants=("acme", "globex", "initech")))
    pairs = query(
        path,
        "SELECT w.latency_p95_ms, d.value FROM model_windows w JOIN detections d "
        "ON d.model = w.model AND d.window_start = w.window_start "
        "WHERE d.detector = 'latency' AND d.value IS NOT NULL",
    )
    assert len(pairs) == query(path, "SELECT count(*) FROM model_windows")[0][0] > 10
    assert all(view == pytest.approx(judged, rel=1e-12) for view, judged in pairs)
    worst = dict(query(path, "SELECT model, max(latency_p95_ms) FROM model_windows GROUP BY 1"))
    daily = dict(query(path, "SELECT model, worst_window_p95_ms FROM model_daily"))
    assert daily == worst
    slices = dict(
        query(path, "SELECT model, max(latency_p95_ms) FROM window_metrics_merged GROUP BY 1")
    )
    assert any(slices[m] > worst[m] for m in worst)  # what the slices said, and was wrong


def test_model_daily_takes_the_utc_day_in_any_session_time_zone(tmp_path: Path) -> None:
    """20 minutes around 08:00 UTC, midnight in Los Angeles: DuckDB cast a TIMESTAMPTZ to the
    session zone's date, so a client there saw one UTC day as two."""
    path = tmp_path / "lookout.duckdb"
    config = SimulationConfig(
        start=datetime(2026, 1, 5, 7, 50, tzinfo=UTC),
        hours=20 / 60,
        models=("gemini-1.5-flash",),
        calls_per_minute=120,
        embedding_fraction=0.0,
    )
    replay(path, list(simulate_batches(config, seconds_per_batch=20)))
    with duckdb.connect(str(path), read_only=True) as con:
        con.execute("SET TimeZone = 'America/Los_Angeles'")
        local_days = con.execute(
            "SELECT count(DISTINCT CAST(window_start AS DATE)) FROM window_metrics_merged"
        ).fetchall()
        daily = con.execute("SELECT day, windows, calls FROM model_daily").fetchall()
        calls = con.execute("SELECT sum(calls) FROM window_metrics_merged").fetchall()[0][0]
    assert local_days == [(2,)]  # the session's own casts do split it: the view must not
    assert daily == [(date(2026, 1, 5), 20, calls)]


def replay(path: Path, batches: list[LogBatch]) -> tuple[int, int]:
    """A `lookout replay` of the batches: a fresh process on the file; (counted, duplicates)."""
    pipeline = build_pipeline(pipeline_config(path), alert_stream=None)
    for b in batches:
        pipeline.engine.feed(b)
        pipeline.engine.tick()
    assert pipeline.engine.finish(end_of_input=True)
    pipeline.close()
    return pipeline.engine.stats.records, pipeline.engine.stats.duplicates


def test_replaying_the_same_stream_into_the_same_file_changes_no_number(tmp_path: Path) -> None:
    path = tmp_path / "lookout.duckdb"
    batches = simulated(minutes=8)
    total = sum(len(b) for b in batches)
    assert replay(path, batches) == (total, 0)
    merged = query(path, MERGED)
    detections = query(path, "SELECT model, detector, epoch(window_start), verdict FROM detections")
    alerts = query(path, "SELECT count(*) FROM alerts")
    assert sum(row[5] for row in merged) == total  # every call counted, in `calls`

    assert replay(path, batches) == (0, total)  # a second run counts nothing new
    assert query(path, MERGED) == merged
    assert sorted(
        query(path, "SELECT model, detector, epoch(window_start), verdict FROM detections")
    ) == sorted(detections)
    assert query(path, "SELECT count(*) FROM alerts") == alerts

    assert replay(path, batches[3:7]) == (0, sum(len(b) for b in batches[3:7]))
    assert query(path, MERGED) == merged


def test_an_analysts_own_tables_in_the_file_do_not_stop_the_sink(tmp_path: Path) -> None:
    """Issue 9: a table of the analyst's with an INTEGER column made the sink refuse to start."""
    path = tmp_path / "lookout.duckdb"
    DuckDBSink(path).close()  # a Lookout file, to which the analyst adds a table
    with duckdb.connect(str(path)) as con:
        con.execute("CREATE TABLE my_notes (id INTEGER, note VARCHAR, seen_on DATE)")
        con.execute("INSERT INTO my_notes VALUES (1, 'latency looked odd', DATE '2026-01-05')")
    sink = DuckDBSink(path)
    logs = batch("r", 4)
    sink.write_checkpoint(Checkpoint("w1", 0, [partial(logs)], ids(logs)))
    sink.close()
    assert query(path, "SELECT id, note FROM my_notes") == [(1, "latency looked odd")]
    assert query(path, "SELECT sum(records) FROM window_metrics") == [(4,)]


def test_a_file_of_someone_elses_tables_is_refused_and_left_as_it_was(tmp_path: Path) -> None:
    """Lookout added its tables to any DuckDB file it was given; one without `window_metrics`
    (which every release wrote) is not Lookout's, and a sink refuses it before changing it."""
    path = tmp_path / "analytics.duckdb"
    with duckdb.connect(str(path)) as con:
        con.execute("CREATE TABLE my_notes (id INTEGER, note VARCHAR)")
        con.execute("CREATE VIEW recent AS SELECT * FROM my_notes")
    with pytest.raises(SetupError, match="not Lookout's \\(it holds my_notes, recent, none of"):
        DuckDBSink(path)
    assert query(path, "SELECT table_name FROM duckdb_tables() ORDER BY 1") == [("my_notes",)]


def test_a_file_from_before_the_latency_columns_gains_them_and_keeps_its_rows(
    tmp_path: Path,
) -> None:
    path = tmp_path / "lookout.duckdb"
    sink = DuckDBSink(path)
    old = batch("old", 5)
    sink.write_checkpoint(Checkpoint("w1", 0, [partial(old)], ids(old)))
    sink.close()
    with duckdb.connect(str(path)) as con:  # the file as the previous release left it
        con.execute("DROP VIEW model_daily")
        con.execute("DROP VIEW window_metrics_merged")
        for column in ("latency_histogram", "latency_bucket_gamma", "latency_bucket_min_ms"):
            con.execute(f"ALTER TABLE window_metrics DROP COLUMN {column}")
    reopened = DuckDBSink(path)
    new = batch("new", 3, second=70)
    reopened.write_checkpoint(Checkpoint("w1", 0, [partial(new, start=S0 + 60)], ids(new)))
    reopened.close()
    rows = query(
        path,
        "SELECT epoch(window_start)::BIGINT, records, latency_p95_ms IS NOT NULL "
        "FROM window_metrics_merged ORDER BY 1",
    )
    assert rows == [(S0, 5, False), (S0 + 60, 3, True)]


def test_merged_view_p95_is_the_detectors_p95_and_model_daily_sums_windows(tmp_path: Path) -> None:
    path = tmp_path / "lookout.duckdb"
    sink = DuckDBSink(path)
    whole = batch("r", 40, blocked=6)
    first, second = whole.take(np.arange(25)), whole.take(np.arange(25, 40))
    sink.write_checkpoint(Checkpoint("w1", 0, [partial(first)], ids(first)))
    sink.write_checkpoint(Checkpoint("w2", 0, [partial(second)], ids(second)))
    sink.close()
    latency = states_of(whole)["latency"]
    expected = LatencyDetector(LatencyConfig()).quantiles(latency)
    [(p50, p95, p99)] = query(
        path, "SELECT latency_p50_ms, latency_p95_ms, latency_p99_ms FROM window_metrics_merged"
    )
    assert (p50, p95, p99) == pytest.approx(
        (expected["p50_ms"], expected["p95_ms"], expected["p99_ms"]), rel=1e-12
    )
    [(calls, blocked, rate)] = query(path, "SELECT calls, blocked, block_rate FROM model_daily")
    assert (calls, blocked) == (40, 6)
    assert rate == pytest.approx(0.15)


def test_a_file_with_json_states_from_the_previous_release_reads_and_takes_new_rows(
    tmp_path: Path,
) -> None:
    path = tmp_path / "lookout.duckdb"
    reference = {"sample": {"keys": "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=", "n": 3}}
    old = batch("old", 5)
    sink = DuckDBSink(path)
    sink.write_checkpoint(
        Checkpoint("w1", 0, [partial(old)], ids(old), references={("a", "latency"): reference})
    )
    sink.close()
    with duckdb.connect(str(path)) as con:  # states as the previous release stored them: JSON
        for table, column, value in (
            ("window_metrics", "states", orjson.dumps(rows_of(states_of(old))).decode()),
            ("detector_references", "state", orjson.dumps(reference).decode()),
        ):
            con.execute(f"ALTER TABLE {table} ALTER {column} SET DATA TYPE VARCHAR USING ''")
            con.execute(f"UPDATE {table} SET {column} = ?", [value])
            con.execute(f"ALTER TABLE {table} ALTER {column} SET DATA TYPE JSON")
    assert query(path, "SELECT typeof(states) FROM window_metrics") == [("JSON",)]

    reopened = DuckDBSink(path)
    assert merged_state(reopened, "a", S0) == states_of(old)
    assert reopened.load_references() == {("a", "latency"): reference}
    new = batch("new", 3, second=70)
    reopened.write_checkpoint(Checkpoint("w1", 1, [partial(new, start=S0 + 60)], ids(new)))
    assert merged_state(reopened, "a", S0 + 60) == states_of(new)
    reopened.close()
    assert query(path, "SELECT typeof(states) FROM window_metrics") == [("BLOB",), ("BLOB",)]
    assert query(path, MERGED)[0][:3] == ("a", S0, 5)


def test_a_file_with_zlib_states_from_the_previous_release_reads_and_takes_new_rows(
    tmp_path: Path,
) -> None:
    """States were zlib-compressed MessagePack before Zstandard: such a file still merges."""
    path = tmp_path / "lookout.duckdb"
    reference = {"sample": {"keys": "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=", "n": 3}}
    old = batch("old", 5)
    sink = DuckDBSink(path)
    sink.write_checkpoint(
        Checkpoint("w1", 0, [partial(old)], ids(old), references={("a", "latency"): reference})
    )
    sink.close()
    with duckdb.connect(str(path)) as con:  # rewritten as the previous release stored them
        con.execute("UPDATE window_metrics SET states = ?", [zlib_states(rows_of(states_of(old)))])
        con.execute("UPDATE detector_references SET state = ?", [zlib_states(reference)])
    [(stored,)] = query(path, "SELECT states FROM window_metrics")
    assert stored[:1] == b"\x78"  # a zlib stream

    reopened = DuckDBSink(path)
    assert merged_state(reopened, "a", S0) == states_of(old)
    assert reopened.load_references() == {("a", "latency"): reference}
    more = batch("more", 3, second=30)
    reopened.write_checkpoint(Checkpoint("w1", 1, [partial(more)], ids(more)))
    assert merged_state(reopened, "a", S0) == states_of(LogBatch.concat([old, more]))
    reopened.close()
    assert query(path, MERGED)[0][:3] == ("a", S0, 8)


def zlib_states(rows: Any) -> bytes:
    """The previous release's `encode_states`: base64 strings as raw bytes, zlib level 1."""

    def pack(value: Any) -> Any:
        if isinstance(value, str) and len(value) >= 32 and len(value) % 4 == 0:
            raw = base64.b64decode(value, validate=True)
            return msgspec.msgpack.Ext(1, raw) if base64.b64encode(raw).decode() == value else value
        if isinstance(value, dict):
            return {k: pack(v) for k, v in value.items()}
        if isinstance(value, list):
            return [pack(v) for v in value]
        return value

    return zlib.compress(msgspec.msgpack.encode(pack(rows)), 1)


def test_compacting_a_file_drops_free_blocks_and_keeps_every_row(tmp_path: Path) -> None:
    from worker.sinks.duckdb_sink import compact_file

    path = tmp_path / "lookout.duckdb"
    sink = DuckDBSink(path)
    for i in range(40):  # many checkpoints, each rewriting blocks, as a long demo does
        logs = batch(f"r{i}", 50, blocked=i % 5, second=5 + i)
        sink.write_checkpoint(Checkpoint("w1", i, partials=[partial(logs)], request_ids=ids(logs)))
    sink.close()
    merged = "SELECT records, calls, blocked, latency_p95_ms FROM window_metrics_merged"
    rows, size = query(path, merged), path.stat().st_size

    assert compact_file(path) <= size
    assert query(path, merged) == rows
    reopened = DuckDBSink(path)
    assert reopened.load_window("a", S0).records == 40 * 50
    reopened.close()

    # a copy that does not fit in its memory limit is made again without one, never an error
    assert compact_file(path, memory_limit="256KB") <= size
    assert query(path, merged) == rows


def test_a_restart_reads_hours_of_embedding_windows_within_a_small_memory_limit(
    tmp_path: Path,
) -> None:
    """A restart reads each model's recent windows, states included (about 140 KB a window
    with embeddings). In one sorted query, 231 windows needed more than the 64 MB default and
    the worker could not start (a review's find), and DuckDB's own Zstandard frames over the
    stored states made even one row cost tens of MB: the sink now reads a few windows at a
    time and stores states as they come. Eight hours of one model's windows (25 MB of states)
    are read back whole within 32 MB."""
    db = tmp_path / "history.duckdb"
    config = LookoutConfig.model_validate(
        {"sink": {"path": str(db)}, "metrics": {"enabled": False}}
    )
    pipeline = build_pipeline(config, alert_stream=None)
    sim = SimulationConfig(
        start=datetime(2026, 1, 5, 6, tzinfo=UTC),
        hours=0.25,
        calls_per_minute=100,
        embedding_fraction=1.0,
    )
    for logs in simulate_batches(sim):
        pipeline.engine.feed(logs)
        pipeline.engine.tick()
    pipeline.engine.finish(end_of_input=True)
    pipeline.close()
    writer = DuckDBSink(db)  # the same quarter hour again, 31 times, as the sink stores it
    con = writer._con
    con.execute("CREATE TEMP TABLE quarter AS SELECT * FROM window_metrics")
    for shift in range(1, 32):
        con.execute(
            "INSERT INTO window_metrics SELECT * REPLACE ("
            f"window_start + INTERVAL {15 * shift} MINUTE AS window_start, "
            f"window_end + INTERVAL {15 * shift} MINUTE AS window_end) FROM quarter"
        )
    model, windows, state_bytes = con.execute(
        "SELECT model, count(DISTINCT window_start), sum(octet_length(states)) "
        "FROM window_metrics GROUP BY model ORDER BY model LIMIT 1"
    ).fetchone() or ("", 0, 0)
    writer.close()
    assert windows >= 32 * 15 and state_bytes > 16 * 2**20
    sink = DuckDBSink(db, memory_limit="32MB")
    try:
        history = sink.load_recent_windows(model, 0, 4_000_000_000)
    finally:
        sink.close()
    assert len(history) == windows
    assert all(rows and "embedding_drift" in rows[0] for rows in history.values())
