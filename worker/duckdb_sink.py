"""The embedded default sink: one DuckDB file an analyst can open.

Tables (same names and columns as the BigQuery sink):
- `window_metrics`: partial rows, one per (writer, checkpoint, model, window): summable analyst
  columns plus each detector's state as JSON; merge them with the `window_metrics_merged` view;
- `window_request_ids`: which request ids each window counted (replays and redeliveries dedup);
- `detections`: one row per (model, window, detector) verdict;
- `alerts`: every alert state change (firing/resolved) as sent to receivers;
- `alert_state`, `detector_references`: what a restart needs to not re-page and not forget.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import orjson
import pandas as pd

from worker.analyst_columns import ANALYST_COLUMNS, MERGED_VIEW_SQL, analyst_values
from worker.sink import Checkpoint, DetectorRow, StoredWindow

_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS window_metrics (
    model VARCHAR NOT NULL,
    window_start TIMESTAMPTZ NOT NULL,
    window_end TIMESTAMPTZ NOT NULL,
    writer_id VARCHAR NOT NULL,
    checkpoint_seq BIGINT NOT NULL,
    written_at TIMESTAMPTZ NOT NULL,
    records BIGINT NOT NULL,
    late_records BIGINT NOT NULL,
    {", ".join(f"{name} {sql_type}" for name, sql_type in ANALYST_COLUMNS)},
    states JSON NOT NULL
);
CREATE TABLE IF NOT EXISTS window_request_ids (
    model VARCHAR NOT NULL,
    window_start TIMESTAMPTZ NOT NULL,
    request_id VARCHAR NOT NULL
);
CREATE TABLE IF NOT EXISTS detections (
    model VARCHAR NOT NULL,
    detector VARCHAR NOT NULL,
    window_start TIMESTAMPTZ NOT NULL,
    window_end TIMESTAMPTZ NOT NULL,
    verdict VARCHAR NOT NULL,
    condition VARCHAR NOT NULL,
    severity VARCHAR NOT NULL,
    value DOUBLE,
    threshold DOUBLE,
    baseline DOUBLE,
    p_value DOUBLE,
    sample_size BIGINT NOT NULL,
    reason VARCHAR NOT NULL,
    details JSON,
    evaluated_at TIMESTAMPTZ NOT NULL
);
CREATE TABLE IF NOT EXISTS alerts (
    dedup_key VARCHAR NOT NULL,
    status VARCHAR NOT NULL,
    severity VARCHAR NOT NULL,
    detector VARCHAR NOT NULL,
    model VARCHAR NOT NULL,
    condition VARCHAR NOT NULL,
    window_start TIMESTAMPTZ NOT NULL,
    window_end TIMESTAMPTZ NOT NULL,
    value DOUBLE,
    threshold DOUBLE,
    baseline DOUBLE,
    sample_size BIGINT NOT NULL,
    summary VARCHAR NOT NULL,
    emitted_at TIMESTAMPTZ NOT NULL
);
CREATE TABLE IF NOT EXISTS alert_state (row JSON NOT NULL);
CREATE TABLE IF NOT EXISTS detector_references (
    model VARCHAR NOT NULL,
    detector VARCHAR NOT NULL,
    state JSON NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL
);
{MERGED_VIEW_SQL}
"""


def _ts(seconds: int) -> datetime:
    return datetime.fromtimestamp(seconds, tz=UTC)


class DuckDBSink:
    def __init__(self, path: Path | str, *, clock: Any = None, memory_limit: str = "256MB") -> None:
        self.name = f"duckdb:{path}"
        self.path = Path(path)
        # DuckDB's buffer cache defaults to 80% of RAM and grows with the file; a worker's
        # memory must follow its configuration, not the size of what it has written
        self._con = duckdb.connect(str(path), config={"memory_limit": memory_limit})
        self._lock = threading.Lock()
        self._clock = clock or (lambda: datetime.now(tz=UTC))
        with self._lock:
            self._con.execute("SET TimeZone = 'UTC'")
            self._con.execute(_SCHEMA)

    # -- writes --------------------------------------------------------------------------------

    def write_checkpoint(self, checkpoint: Checkpoint) -> None:
        now = self._clock()
        with self._lock:
            con = self._con
            con.execute("BEGIN TRANSACTION")
            try:
                self._write(con, checkpoint, now)
                con.execute("COMMIT")
            except BaseException:
                con.execute("ROLLBACK")
                raise

    def _write(self, con: duckdb.DuckDBPyConnection, cp: Checkpoint, now: datetime) -> None:
        if cp.partials:
            rows = []
            for p in cp.partials:
                flat = analyst_values(p.states, p.extras)
                rows.append(
                    [
                        p.model,
                        _ts(p.window_start),
                        _ts(p.window_end),
                        cp.writer_id,
                        cp.sequence,
                        now,
                        p.records,
                        p.late_records,
                        *(flat[name] for name, _ in ANALYST_COLUMNS),
                        orjson.dumps(p.states).decode(),
                    ]
                )
            placeholders = ", ".join(["?"] * len(rows[0]))
            con.executemany(f"INSERT INTO window_metrics VALUES ({placeholders})", rows)
        if cp.request_ids:
            models, starts, ids = zip(*cp.request_ids, strict=True)
            frame = pd.DataFrame({"model": models, "window_start": starts, "request_id": ids})
            con.register("_lookout_ids", frame)
            con.execute(
                "INSERT INTO window_request_ids "
                "SELECT model, to_timestamp(window_start), request_id FROM _lookout_ids"
            )
            con.unregister("_lookout_ids")
        for d in cp.detections:
            con.execute(
                "DELETE FROM detections WHERE model = ? AND detector = ? AND window_start = ?",
                [d.model, d.detector, d.window_start],
            )
        if cp.detections:
            con.executemany(
                "INSERT INTO detections VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    [
                        d.model,
                        d.detector,
                        d.window_start,
                        d.window_end,
                        d.verdict,
                        d.condition,
                        d.severity,
                        d.value,
                        d.threshold,
                        d.baseline,
                        d.p_value,
                        d.sample_size,
                        d.reason,
                        orjson.dumps(d.details, option=orjson.OPT_SERIALIZE_NUMPY).decode(),
                        now,
                    ]
                    for d in cp.detections
                ],
            )
        if cp.alerts:
            con.executemany(
                "INSERT INTO alerts VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    [
                        a.dedup_key,
                        a.status,
                        a.severity,
                        a.detector,
                        a.model,
                        a.condition,
                        a.window_start,
                        a.window_end,
                        a.value,
                        a.threshold,
                        a.baseline,
                        a.sample_size,
                        a.summary,
                        now,
                    ]
                    for a in cp.alerts
                ],
            )
        if cp.alert_state is not None:
            con.execute("DELETE FROM alert_state")
            if cp.alert_state:
                con.executemany(
                    "INSERT INTO alert_state VALUES (?)",
                    [[orjson.dumps(row).decode()] for row in cp.alert_state],
                )
        for (model, detector), state in cp.references.items():
            con.execute(
                "DELETE FROM detector_references WHERE model = ? AND detector = ?",
                [model, detector],
            )
            con.execute(
                "INSERT INTO detector_references VALUES (?, ?, ?, ?)",
                [model, detector, orjson.dumps(state).decode(), now],
            )

    # -- reads ---------------------------------------------------------------------------------

    def newest_window_start(self, model: str) -> int | None:
        with self._lock:
            row = self._con.execute(
                "SELECT max(epoch(window_start))::BIGINT FROM window_metrics WHERE model = ?",
                [model],
            ).fetchone()
        return None if row is None or row[0] is None else int(row[0])

    def load_window(self, model: str, window_start: int) -> StoredWindow:
        ts = _ts(window_start)
        with self._lock:
            con = self._con
            states = con.execute(
                "SELECT states, records FROM window_metrics WHERE model = ? AND window_start = ?",
                [model, ts],
            ).fetchall()
            ids = con.execute(
                "SELECT request_id FROM window_request_ids WHERE model = ? AND window_start = ?",
                [model, ts],
            ).fetchall()
            evaluated = con.execute(
                "SELECT count(*) FROM detections WHERE model = ? AND window_start = ?",
                [model, ts],
            ).fetchone()
        return StoredWindow(
            partial_states=[orjson.loads(s) for s, _ in states],
            request_ids=frozenset(r for (r,) in ids),
            records=sum(int(n) for _, n in states),
            evaluated=bool(evaluated and evaluated[0]),
        )

    def load_recent_windows(
        self, model: str, since: int, until: int
    ) -> Mapping[int, Sequence[Mapping[str, DetectorRow]]]:
        with self._lock:
            rows = self._con.execute(
                "SELECT epoch(window_start)::BIGINT, states FROM window_metrics "
                "WHERE model = ? AND window_start >= ? AND window_start < ? ORDER BY 1",
                [model, _ts(since), _ts(until)],
            ).fetchall()
        out: dict[int, list[Mapping[str, DetectorRow]]] = {}
        for start, states in rows:
            out.setdefault(int(start), []).append(orjson.loads(states))
        return out

    def models(self) -> Sequence[str]:
        with self._lock:
            rows = self._con.execute(
                "SELECT DISTINCT model FROM window_metrics ORDER BY 1"
            ).fetchall()
        return [r for (r,) in rows]

    def unevaluated_windows(self, limit: int) -> Sequence[tuple[str, int]]:
        with self._lock:
            rows = self._con.execute(
                "SELECT DISTINCT w.model, epoch(w.window_start)::BIGINT AS start "
                "FROM window_metrics w ANTI JOIN detections d "
                "ON d.model = w.model AND d.window_start = w.window_start "
                "ORDER BY start DESC LIMIT ?",
                [limit],
            ).fetchall()
        return [(str(m), int(s)) for m, s in rows]

    def latest_window_start(self) -> int | None:
        with self._lock:
            row = self._con.execute(
                "SELECT max(epoch(window_start))::BIGINT FROM window_metrics"
            ).fetchone()
        return None if row is None or row[0] is None else int(row[0])

    def load_alert_state(self) -> Sequence[Mapping[str, Any]]:
        with self._lock:
            rows = self._con.execute("SELECT row FROM alert_state").fetchall()
        return [orjson.loads(r) for (r,) in rows]

    def load_references(self) -> Mapping[tuple[str, str], DetectorRow]:
        with self._lock:
            rows = self._con.execute(
                "SELECT model, detector, state FROM detector_references"
            ).fetchall()
        return {(m, d): orjson.loads(s) for m, d, s in rows}

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Read-only SQL for reports, on the sink's own connection (it is not thread-safe)."""
        with self._lock:
            return self._con.execute(sql, list(params)).fetchall()

    def query_frame(self, sql: str) -> pd.DataFrame:
        with self._lock:
            return self._con.execute(sql).df()

    def writable(self) -> bool:
        try:
            with self._lock:
                self._con.execute("SELECT 1").fetchone()
        except duckdb.Error:
            return False
        return True

    def close(self) -> None:
        with self._lock:
            self._con.close()
