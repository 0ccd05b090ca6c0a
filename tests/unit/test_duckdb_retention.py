"""`sink.retention_days`: a long-running worker's DuckDB file keeps that many days of windows
and stops growing, without touching a verdict of the windows it keeps."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import pytest

from schemas.batch import LogBatch
from schemas.config import DetectorsConfig, DuckDBSinkConfig, EngineConfig, LookoutConfig
from tests.sink_cases import S0, batch, detection, partial, rows_of, states_of, tracker_rows
from worker.cli.pipeline import build_pipeline
from worker.sink import Checkpoint
from worker.sinks.duckdb_sink import DuckDBSink
from worker.sources.simulator import Incident, SimulationConfig, simulate_batches

DAY = 86_400
HOUR = 3_600


def query(path: Path, sql: str) -> list[tuple[Any, ...]]:
    with duckdb.connect(str(path), read_only=True) as con:
        return con.execute(sql).fetchall()


def oldest_window(path: Path, table: str) -> int:
    [(oldest,)] = query(path, f"SELECT min(epoch(window_start))::BIGINT FROM {table}")
    return int(oldest)


def write_hourly_windows(sink: DuckDBSink, hours: range, ids_per_window: int) -> None:
    """One checkpoint per hour-long window, as a worker at steady traffic writes them."""
    logs = batch("r", 20, blocked=2)
    states = rows_of(states_of(logs))
    for hour in hours:
        start = S0 + hour * HOUR
        row = partial(logs, start=start)
        row = type(row)(row.model, start, start + HOUR, ids_per_window, 0, states)
        request_ids = [("a", start, f"req-{hour}-{i:06d}") for i in range(ids_per_window)]
        sink.write_checkpoint(
            Checkpoint(
                "w1",
                hour,
                [row],
                request_ids,
                [detection(start=start)],
                alert_state=[],
            )
        )


def test_the_file_stops_growing_once_it_holds_retention_days_of_windows(tmp_path: Path) -> None:
    kept, unbounded = tmp_path / "kept.duckdb", tmp_path / "unbounded.duckdb"
    sizes: dict[Path, list[int]] = {kept: [], unbounded: []}
    for path, retention in ((kept, 1.0), (unbounded, None)):
        sink = DuckDBSink(path, retention_days=retention)
        for day in range(4):
            write_hourly_windows(sink, range(day * 24, (day + 1) * 24), ids_per_window=30_000)
            sink._con.execute("CHECKPOINT")  # what DuckDB does on its own as the WAL grows
            sizes[path].append(path.stat().st_size)
        sink.close()

    # four days written: the unbounded file holds them all, the other one day (and the hour
    # the stream moves between two prunes)
    newest = S0 + 95 * HOUR
    for table in ("window_metrics", "window_request_ids", "detections"):
        assert oldest_window(unbounded, table) == S0
        assert newest - DAY - HOUR <= oldest_window(kept, table) <= newest - DAY + HOUR
    assert query(kept, "SELECT count(*) FROM window_request_ids")[0][0] <= 26 * 30_000
    # the file's size: the unbounded one grows by a day's worth a day; the kept one levels off
    # at about two days' worth (DuckDB reuses a row group's blocks once all its rows are gone)
    day_of_data = sizes[unbounded][3] - sizes[unbounded][2]
    assert day_of_data > 0.2 * sizes[unbounded][3]
    assert sizes[kept][3] - sizes[kept][2] < 0.25 * day_of_data, sizes
    assert sizes[kept][3] < 0.6 * sizes[unbounded][3], sizes


def test_retention_cuts_in_stream_time_so_a_replay_of_old_logs_keeps_what_it_wrote(
    tmp_path: Path,
) -> None:
    """The windows below are from January; the wall clock is December. Cut by the wall clock,
    a replay of last month's logs would delete everything it had just written."""
    path = tmp_path / "lookout.duckdb"
    sink = DuckDBSink(path, retention_days=1)
    write_hourly_windows(sink, range(6), ids_per_window=10)
    sink.close()
    assert query(path, "SELECT count(*) FROM window_metrics") == [(6,)]
    assert query(path, "SELECT count(*) FROM detections") == [(6,)]


def test_alerts_alert_state_and_references_outlive_the_windows(tmp_path: Path) -> None:
    path = tmp_path / "lookout.duckdb"
    sink = DuckDBSink(path, retention_days=1)
    old = detection(start=S0)
    sink.write_checkpoint(Checkpoint("w1", 0, detections=[old], alert_state=[]))
    rows = tracker_rows(old)
    sink.write_checkpoint(Checkpoint("w1", 1, alert_state=rows))
    write_hourly_windows(sink, range(2, 60), ids_per_window=5)
    sink.write_checkpoint(Checkpoint("w1", 100, alert_state=rows))
    assert list(sink.load_alert_state()) == rows
    sink.close()
    assert oldest_window(path, "detections") > S0 + DAY


START = datetime(2026, 1, 5, tzinfo=UTC)


def simulated(hours: float, incidents: tuple[Incident, ...] = ()) -> list[LogBatch]:
    config = SimulationConfig(
        start=START,
        hours=hours,
        models=("gemini-1.5-flash",),
        calls_per_minute=30,
        embedding_fraction=0.0,
        incidents=incidents,
    )
    return list(simulate_batches(config, seconds_per_batch=300))


def lookout_config(
    path: Path,
    retention: float | None,
    detectors: tuple[str, ...] = ("safety", "latency", "tokens"),
) -> LookoutConfig:
    return LookoutConfig(
        sink=DuckDBSinkConfig(path=str(path), retention_days=retention),
        # records up to 20 hours behind the stream are folded: a day's retention covers them
        engine=EngineConfig(
            writer_id="w1",
            window_seconds=300,
            checkpoint_max_records=3000,
            max_past_seconds=20 * HOUR,
            max_future_skew_seconds=600,
        ),
        detectors=DetectorsConfig(enabled=detectors),
    )


def replay(
    path: Path, batches: list[LogBatch], retention: float | None, *, end: bool = True, **kw: Any
) -> None:
    """One worker process over the batches; `end=False` stops it as SIGTERM would."""
    pipeline = build_pipeline(lookout_config(path, retention, **kw), alert_stream=None)
    for b in batches:
        pipeline.engine.feed(b)
        pipeline.engine.tick()
    assert pipeline.engine.finish(end_of_input=end)
    pipeline.close()


def test_a_worker_with_retention_judges_the_windows_it_keeps_exactly_as_one_without(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    batches = simulated(hours=40)
    kept, everything = tmp_path / "kept.duckdb", tmp_path / "all.duckdb"
    replay(everything, batches, None)
    with caplog.at_level(logging.INFO, logger="lookout.sink.duckdb"):
        replay(kept, batches, 1)

    cutoff = oldest_window(kept, "window_metrics")
    [(newest,)] = query(everything, "SELECT max(epoch(window_start))::BIGINT FROM window_metrics")
    assert newest - DAY - HOUR <= cutoff <= newest - DAY + HOUR
    assert oldest_window(everything, "window_metrics") < cutoff - 10 * HOUR
    verdicts = (
        "SELECT epoch(window_start)::BIGINT, detector, verdict, value, threshold FROM detections "
        f"WHERE window_start >= to_timestamp({cutoff}) ORDER BY 1, 2"
    )
    kept_verdicts = query(kept, verdicts)
    assert len(kept_verdicts) > 200
    assert kept_verdicts == query(everything, verdicts)
    assert query(kept, "SELECT count(*) FROM alerts") == query(
        everything, "SELECT count(*) FROM alerts"
    )
    pruned = [r.getMessage() for r in caplog.records if r.getMessage().startswith("pruned")]
    assert pruned, "a prune says what it deleted"
    assert "sink.retention_days 1" in pruned[-1] and "window_metrics rows" in pruned[-1]


def test_less_than_a_day_of_retention_is_refused_naming_the_key() -> None:
    with pytest.raises(ValueError, match="retention_days"):
        DuckDBSinkConfig(retention_days=0.5)


def test_a_restart_in_an_incident_older_than_the_retention_still_finds_its_baseline(
    tmp_path: Path,
) -> None:
    """Found in review: an incident open for longer than the retention had its frozen baseline
    (the windows before it) pruned; a restarted worker re-read nothing, judged every window
    `insufficient_data` and resolved the incident while it went on."""
    token_explosion = Incident("token_explosion", timedelta(hours=10), timedelta(hours=42))
    batches = simulated(hours=52, incidents=(token_explosion,))
    restart_at = (START + timedelta(hours=45)).timestamp()
    before = [b for b in batches if b.timestamp.min() < restart_at]
    after = batches[len(before) :]
    verdicts = (
        "SELECT epoch(window_start)::BIGINT, verdict, round(threshold, 1), round(baseline, 1) "
        f"FROM detections WHERE window_start >= to_timestamp({restart_at}) ORDER BY 1"
    )
    seen: dict[Any, list[tuple[Any, ...]]] = {}
    for retention, name in ((None, "kept"), (1.0, "pruned")):
        path = tmp_path / f"{name}.duckdb"
        replay(path, before, retention, end=False, detectors=("tokens",))
        replay(path, after, retention, detectors=("tokens",))  # the restarted worker
        seen[name] = query(path, verdicts)
        seen[name, "alerts"] = query(path, "SELECT status FROM alerts ORDER BY emitted_at")
    # the incident began 35 hours before the restart: pruned to a day, its baseline is kept
    assert (
        oldest_window(tmp_path / "pruned.duckdb", "window_metrics") < START.timestamp() + 10 * HOUR
    )
    assert len(seen["kept"]) > 50 and {row[1] for row in seen["kept"]} == {"alert"}
    assert seen["pruned"] == seen["kept"]
    assert "resolved" not in {status for (status,) in seen["pruned", "alerts"]}


def test_retention_shorter_than_the_late_records_it_folds_is_refused() -> None:
    """Found in review: a record 38 hours behind the stream (`max_past_seconds` is 7 days) was
    folded into a window a 1-day retention had deleted, counted again and judged again."""
    with pytest.raises(ValueError, match=r"sink\.retention_days \(1\) must cover") as caught:
        LookoutConfig(sink=DuckDBSinkConfig(retention_days=1))
    assert "7.04 days" in str(caught.value) and "max_past_seconds" in str(caught.value)
    assert LookoutConfig(sink=DuckDBSinkConfig(retention_days=8)).engine.max_past_seconds == 604800
