"""The embedded default sink: one DuckDB file an analyst can open.

Tables (same names and columns as the BigQuery sink):
- `window_metrics`: partial rows, one per (writer, checkpoint, model, window): summable analyst
  columns plus each detector's state (compact bytes, `state_codec`); merge them with the
  `window_metrics_merged` view;
- `window_request_ids`: which request ids each window counted (replays and redeliveries dedup);
- `detections`: one row per (model, window, detector) verdict;
- `alerts`: every alert state change (firing/resolved) as sent to receivers;
- `alert_state`, `detector_references`: what a restart needs to not re-page and not forget;
- `quarantined_records`: records whose event time was too far from the stream's to fold;
- `writer_progress`: each writer's event-time frontier, which a separate evaluator waits for;
- `applied_checkpoints`: (writer, sequence, digest) of every checkpoint stored, so writing the
  same checkpoint again changes nothing;
- `baseline_accepts`: new levels a person accepted as the baseline (`lookout baseline accept`);
- views `window_metrics_merged` (per version and tenant slice, with p50/p95/p99 from the
  summed latency histogram), `model_windows` (per model window, all slices merged) and
  `model_daily`.

Only these tables are checked and written: an analyst's own tables in the same file are theirs.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import duckdb
import numpy as np
import orjson
import pyarrow as pa

from schemas.detection import Alert, AlertChangeKey
from worker.analyst_columns import ANALYST_COLUMNS, MERGED_VIEW_SQL, slice_rows
from worker.errors import SetupError, SinkBroken
from worker.sink import (
    BaselineAccept,
    Checkpoint,
    DetectorRow,
    StoredWindow,
    add_version_records,
    checkpoint_digest,
    request_id_groups,
    windows_one_by_one,
)
from worker.sinks.arrow_columns import arrow_column, timestamps_from_seconds
from worker.sinks.state_codec import decode_states, encode_states

log = logging.getLogger("lookout.sink.duckdb")

if TYPE_CHECKING:  # `query_frame` returns one; the sink itself never needs pandas
    import pandas as pd

_HISTOGRAM = "STRUCT(bucket BIGINT, count BIGINT)[]"

#: columns added after the first release: ALTER TABLE adds them to an older file
_ADDED_COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("window_metrics", "latency_histogram", _HISTOGRAM),
    ("window_metrics", "latency_bucket_gamma", "DOUBLE"),
    ("window_metrics", "latency_bucket_min_ms", "DOUBLE"),
    ("window_metrics", "model_version", "VARCHAR"),
    ("window_metrics", "tenant", "VARCHAR"),
)

_ALTERS = "".join(
    f"ALTER TABLE {table} ADD COLUMN IF NOT EXISTS {column} {sql_type};\n"
    for table, column, sql_type in _ADDED_COLUMNS
)

_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS window_metrics (
    model VARCHAR NOT NULL,
    model_version VARCHAR,
    tenant VARCHAR,
    window_start TIMESTAMPTZ NOT NULL,
    window_end TIMESTAMPTZ NOT NULL,
    writer_id VARCHAR NOT NULL,
    checkpoint_seq BIGINT NOT NULL,
    written_at TIMESTAMPTZ NOT NULL,
    records BIGINT NOT NULL,
    late_records BIGINT NOT NULL,
    {", ".join(f"{name} {sql_type}" for name, sql_type in ANALYST_COLUMNS)},
    states BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS applied_checkpoints (
    writer_id VARCHAR NOT NULL,
    checkpoint_seq BIGINT NOT NULL,
    digest VARCHAR NOT NULL,
    applied_at TIMESTAMPTZ NOT NULL
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
CREATE TABLE IF NOT EXISTS writer_progress (
    writer_id VARCHAR NOT NULL,
    frontier_unix DOUBLE NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL
);
CREATE TABLE IF NOT EXISTS quarantined_records (
    model VARCHAR NOT NULL,
    request_id VARCHAR NOT NULL,
    event_time_unix DOUBLE NOT NULL,
    reason VARCHAR NOT NULL,
    writer_id VARCHAR NOT NULL,
    quarantined_at TIMESTAMPTZ NOT NULL
);
CREATE TABLE IF NOT EXISTS baseline_accepts (
    model VARCHAR NOT NULL,
    detector VARCHAR NOT NULL,
    incident_started_at TIMESTAMPTZ NOT NULL,
    accepted_at TIMESTAMPTZ NOT NULL,
    accepted_by VARCHAR NOT NULL
);
CREATE TABLE IF NOT EXISTS detector_references (
    model VARCHAR NOT NULL,
    detector VARCHAR NOT NULL,
    state BLOB NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL
);
{_ALTERS}
{MERGED_VIEW_SQL}
"""

#: the tables this sink owns (and checks); anything else in the file is left alone
OWN_TABLES = frozenset(
    {
        "window_metrics",
        "window_request_ids",
        "detections",
        "alerts",
        "alert_state",
        "writer_progress",
        "quarantined_records",
        "detector_references",
        "applied_checkpoints",
        "baseline_accepts",
    }
)


def _ts(seconds: int) -> datetime:
    return datetime.fromtimestamp(seconds, tz=UTC)


def _request_id_columns(rows: Sequence[tuple[str, int, str]]) -> dict[str, Any]:
    """The window_request_ids columns, built window by window rather than row by row. The
    model column is dictionary-encoded: it repeats a few names on every row, and building
    their text took as long as the request ids' own."""
    groups = request_id_groups(rows)
    names: dict[str, int] = {}
    ids: list[str] = []
    for model, _, window_ids in groups:
        names.setdefault(model, len(names))
        ids += window_ids
    lengths = [len(window_ids) for _, _, window_ids in groups]
    starts = np.repeat(np.array([start for _, start, _ in groups], dtype=np.int64), lengths)
    codes = np.repeat(np.array([names[model] for model, _, _ in groups], dtype=np.int32), lengths)
    # from buffers: `pa.array` imports pandas (0.25 s) to look at its argument
    indices = pa.Array.from_buffers(pa.int32(), len(codes), [None, pa.py_buffer(codes)])
    models = pa.DictionaryArray.from_arrays(indices, arrow_column(list(names), pa.string()))
    return {"model": models, "window_start": timestamps_from_seconds(starts), "request_id": ids}


def _arrow_column(values: Sequence[Any] | pa.Array, arrow_type: pa.DataType) -> pa.Array:
    """A column of an insert: built already (`timestamps_from_seconds`), or from its values."""
    if isinstance(values, pa.Array):
        return values
    return arrow_column(values, arrow_type)


_ARROW_TYPES = {
    "VARCHAR": pa.string(),
    "JSON": pa.string(),
    "BLOB": pa.binary(),
    "BIGINT": pa.int64(),
    "DOUBLE": pa.float64(),
    "TIMESTAMP WITH TIME ZONE": pa.timestamp("us", tz="UTC"),
    _HISTOGRAM: pa.list_(pa.struct([("bucket", pa.int64()), ("count", pa.int64())])),
}


#: detector states: JSON text before, compact bytes (`state_codec`) since
_STATE_COLUMNS = (("window_metrics", "states"), ("detector_references", "state"))


def _table_columns(con: duckdb.DuckDBPyConnection) -> list[tuple[str, str, str]]:
    """(table, column, type) of each of the sink's tables, in column order, as DuckDB has them.

    Read through the relation API: the first `duckdb_columns()` query of a connection cost
    25-30 ms (an `information_schema` one about 8 ms each), a fifth of opening a new file;
    this takes 3-4 ms for every table."""
    rows: list[tuple[str, str, str]] = []
    for table in sorted(OWN_TABLES):
        relation = con.table(table)
        rows += [(table, c, str(t)) for c, t in zip(relation.columns, relation.types, strict=True)]
    return rows


def _migrate_json_states(
    con: duckdb.DuckDBPyConnection, columns: list[tuple[str, str, str]]
) -> bool:
    """A file written with JSON states gets BLOB columns, once: the JSON text is kept as its
    bytes (`decode_states` reads both), and new rows are written compactly. True if it did."""
    json_columns = {(t, c) for t, c, sql_type in columns if sql_type == "JSON"}
    migrated = False
    for table, column in _STATE_COLUMNS:
        if (table, column) in json_columns:
            con.execute(
                f"ALTER TABLE {table} ALTER {column} SET DATA TYPE BLOB "
                f"USING encode({column}::VARCHAR)"
            )
            migrated = True
    return migrated


def _arrow_schemas(rows: list[tuple[str, str, str]]) -> dict[str, pa.Schema]:
    """Each table's columns as an Arrow schema, read from DuckDB itself so the two cannot
    drift apart (a column of ints and floats, or of None only, is then typed correctly)."""
    fields: dict[str, list[pa.Field]] = {}
    for table, column, sql_type in rows:
        if table not in OWN_TABLES:
            continue
        if sql_type not in _ARROW_TYPES:  # a schema change that forgot this mapping
            msg = f"{table}.{column} has type {sql_type}, which the sink cannot write"
            raise TypeError(msg)
        fields.setdefault(table, []).append(pa.field(column, _ARROW_TYPES[sql_type]))
    return {table: pa.schema(f) for table, f in fields.items()}


#: a DuckDB database file says "DUCK" at bytes 8-11 of its header
_DUCKDB_MAGIC = (8, b"DUCK")


def refuse_foreign_file(path: Path) -> None:
    """DuckDB opens an existing file it does not recognise by its name (`logs.ndjson`) as an
    in-memory database: the command then succeeded and stored nothing."""
    if str(path) == ":memory:" or not path.is_file() or path.stat().st_size == 0:
        return
    offset, magic = _DUCKDB_MAGIC
    with path.open("rb") as f:
        head = f.read(offset + len(magic))
    if head[offset:] != magic:
        msg = f"{path} is not a DuckDB database file; give a new path or a Lookout DuckDB file"
        raise SetupError(msg)


def refuse_foreign_database(path: Path, con: duckdb.DuckDBPyConnection) -> None:
    """A DuckDB file with tables or views of its own and no `window_metrics` (which every
    release wrote first) is someone else's database: Lookout's twelve tables and views were
    added to it, or, where a name clashed (`alerts`), some were and the write then failed.
    `report`, `sql` and `baseline accept` already refused such a file; a replay or worker now
    does too, before it changes anything. An empty database is fine to fill."""
    rows = con.execute(
        "SELECT table_name FROM duckdb_tables() "
        "WHERE database_name = current_database() AND schema_name = 'main' "
        "UNION SELECT view_name FROM duckdb_views() "
        "WHERE database_name = current_database() AND schema_name = 'main' AND NOT internal "
        "ORDER BY 1"
    ).fetchall()
    names = [name for (name,) in rows]
    if not names or "window_metrics" in names:
        return
    shown = ", ".join(names[:4]) + (f" and {len(names) - 4} more" if len(names) > 4 else "")
    msg = (
        f"{path} is a DuckDB database that is not Lookout's (it holds {shown}, none of "
        "Lookout's tables), left as it was: give a new path or a Lookout DuckDB file"
    )
    raise SetupError(msg)


#: the window tables `retention_days` prunes by `window_start` (stream time), together: a
#: window's metrics without its verdicts would be judged again
_WINDOW_TABLES = ("window_metrics", "window_request_ids", "detections")
#: ...and the bookkeeping it prunes by when the row was written (wall clock)
_WRITTEN_AT_TABLES = (
    ("quarantined_records", "quarantined_at"),
    ("applied_checkpoints", "applied_at"),
)
#: DuckDB compresses long blobs with Zstandard at a checkpoint, over many rows at once, and
#: reading one state back then needs the whole frame in memory: a restart reading 8 hours of
#: one model's windows (25 MB of states) failed within 64 MB, a compacted demo file asked for
#: 128 MB to read one row. The states are Zstandard-compressed already (`state_codec`), so the
#: file is the same size without it (77 MB either way), and the same restart ran within 32 MB.
_NO_ZSTD = "SET disabled_compression_methods = 'zstd'"
#: windows a restart reads in one query: 2-3 MB of states with embeddings, far inside any
#: `memory_limit` DuckDB can hold a sort of
_WINDOWS_PER_READ = 12
#: how far the stream moves between two prunes: each is a few deletes over zone maps
PRUNE_STEP_SECONDS = 3600.0


class DuckDBSink:
    def __init__(
        self,
        path: Path | str,
        *,
        clock: Any = None,
        memory_limit: str = "64MB",
        retention_days: float | None = None,
    ) -> None:
        self.name = f"duckdb:{path}"
        #: why `writable` last said no ("" when it said yes), for /readyz
        self.unwritable_reason = ""
        self.path = Path(path)
        # DuckDB's buffer cache defaults to 80% of RAM and grows with the file; a worker's
        # memory must follow its configuration, not the size of what it has written
        # (its allocator's background threads hand freed memory back: 20-35 MB less RSS).
        # No vacuum tasks at checkpoints: they merged the small row groups each checkpoint
        # appends, re-reading every state blob written so far, and a checkpoint's memory grew
        # with the file (+260 MB after a 6-hour replay, 635 MB peak; 404 MB without, and a
        # file of 127 MB instead of 218). The sink only appends, bar two tables of a few rows
        # (alert state, references) rewritten at checkpoints; without vacuum some of their old
        # blocks are not reused: 400 alert-state rows rewritten at 2,000 checkpoints (2.8 h
        # at 5 s) left 7.7 MB more file; three models' few dozen rows leave a tenth of that,
        # about 1% of what their window rows add meanwhile. A vacuuming checkpoint of a
        # 6-hour file took 1.1 s and +215 MB: not worth it for that.
        refuse_foreign_file(self.path)
        self._con = duckdb.connect(
            str(path),
            config={
                "memory_limit": memory_limit,
                "allocator_background_threads": True,
                "max_vacuum_tasks": 0,
            },
        )
        self._memory_limit = memory_limit
        self._retention = None if retention_days is None else retention_days * 86_400.0
        #: the newest window written (stream time), read from the file at the first prune
        self._newest_window: float | None = None
        #: the stream-time cutoff of the last prune (None: none yet in this process)
        self._pruned_through: float | None = None
        self._lock = threading.Lock()
        self._clock = clock or (lambda: datetime.now(tz=UTC))
        with self._lock:
            try:
                refuse_foreign_database(self.path, self._con)
            except SetupError:
                self._con.close()
                raise
            self._con.execute("SET TimeZone = 'UTC'")
            self._con.execute(_NO_ZSTD)
            # one transaction: a commit per statement took twice as long on a new file
            self._con.execute("BEGIN TRANSACTION")
            self._con.execute(_SCHEMA)
            columns = _table_columns(self._con)
            if _migrate_json_states(self._con, columns):
                columns = _table_columns(self._con)
            self._con.execute("COMMIT")
            self._schemas = _arrow_schemas(columns)

    # -- writes --------------------------------------------------------------------------------

    def write_checkpoint(self, checkpoint: Checkpoint) -> None:
        now = self._clock()
        digest = checkpoint_digest(checkpoint)
        with self._lock:
            con = self._con
            con.execute("BEGIN TRANSACTION")
            try:
                seen = con.execute(
                    "SELECT count(*) FROM applied_checkpoints "
                    "WHERE writer_id = ? AND checkpoint_seq = ? AND digest = ?",
                    [checkpoint.writer_id, checkpoint.sequence, digest],
                ).fetchall()
                if not seen[0][0]:  # the same checkpoint again: already stored
                    self._write(con, checkpoint, now)
                    con.execute(
                        "INSERT INTO applied_checkpoints "
                        "(writer_id, checkpoint_seq, digest, applied_at) VALUES (?, ?, ?, ?)",
                        [checkpoint.writer_id, checkpoint.sequence, digest, now],
                    )
                elif checkpoint.frontier is not None:
                    # ...but its report is news: a replica restarted under its predecessor's id
                    # before either checkpointed reports its start exactly as it did, and the
                    # evaluator must count it from now, not from the predecessor's start
                    con.execute(
                        "UPDATE writer_progress SET updated_at = ? WHERE writer_id = ?",
                        [now, checkpoint.writer_id],
                    )
                con.execute("COMMIT")
            except BaseException as error:
                if _is_fatal(error):
                    raise SinkBroken(
                        _broken_message(self.path, self._memory_limit, error)
                    ) from error
                con.execute("ROLLBACK")
                raise
            if self._retention is not None:
                self._prune_if_due(con, checkpoint, now, self._retention)

    # -- retention -----------------------------------------------------------------------------

    def _prune_if_due(
        self, con: duckdb.DuckDBPyConnection, cp: Checkpoint, now: datetime, retention: float
    ) -> None:
        """Delete what `retention_days` no longer keeps, once per `PRUNE_STEP_SECONDS` of stream
        time, after the checkpoint is durable and in a transaction of its own: a prune that
        fails is logged and tried again at the next checkpoint, never costs a checkpoint.

        Windows are cut in stream time (the newest window written minus the retention), so a
        replay of old logs keeps what it just wrote; DuckDB reuses the freed blocks, so the
        file stops growing instead of shrinking. Windows a restarted evaluator would re-read
        (`Checkpoint.keep_windows_from`: an open incident's frozen baseline) are kept however
        old. Alerts, alert state, references, baseline accepts and writers' progress are kept:
        small, and what a restart needs."""
        if self._newest_window is None:
            row = con.execute("SELECT max(epoch(window_start)) FROM window_metrics").fetchone()
            self._newest_window = None if row is None or row[0] is None else float(row[0])
        if cp.partials:
            newest = float(max(p.window_start for p in cp.partials))
            self._newest_window = max(self._newest_window or newest, newest)
        if self._newest_window is None:
            return
        cutoff = self._newest_window - retention
        if cp.keep_windows_from is not None:  # a restart re-reads those: an incident's baseline
            cutoff = min(cutoff, float(cp.keep_windows_from))
        if self._pruned_through is not None and cutoff - self._pruned_through < PRUNE_STEP_SECONDS:
            return
        window_cutoff = datetime.fromtimestamp(cutoff, tz=UTC)
        written_cutoff = datetime.fromtimestamp(now.timestamp() - retention, tz=UTC)
        deleted: dict[str, int] = {}
        try:
            con.execute("BEGIN TRANSACTION")
            for table in _WINDOW_TABLES:
                deleted[table] = _deleted(
                    con.execute(f"DELETE FROM {table} WHERE window_start < ?", [window_cutoff])
                )
            for table, column in _WRITTEN_AT_TABLES:
                deleted[table] = _deleted(
                    con.execute(f"DELETE FROM {table} WHERE {column} < ?", [written_cutoff])
                )
            con.execute("COMMIT")
        except duckdb.Error as error:
            with contextlib.suppress(duckdb.Error):
                con.execute("ROLLBACK")
            log.warning(
                "pruning windows before %s (sink.retention_days) failed, tried again at the "
                "next checkpoint: %s",
                window_cutoff.isoformat(),
                str(error).splitlines()[0] if str(error) else type(error).__name__,
            )
            return
        self._pruned_through = cutoff
        if any(deleted.values()):
            log.info(
                "pruned windows before %s (sink.retention_days %g): %s",
                window_cutoff.isoformat(),
                retention / 86_400.0,
                ", ".join(f"{n} {table} rows" for table, n in deleted.items() if n),
            )

    def _write(self, con: duckdb.DuckDBPyConnection, cp: Checkpoint, now: datetime) -> None:
        if cp.baseline_accepts:
            _write_baseline_accepts(con, cp.baseline_accepts)
        if cp.partials:
            # one row per (model_version, tenant) slice; the states ride on the first
            parts = [(p, row, k == 0) for p in cp.partials for k, row in enumerate(slice_rows(p))]
            self._append(
                con,
                "window_metrics",
                {
                    "model": [p.model for p, _, _ in parts],
                    "window_start": [_ts(p.window_start) for p, _, _ in parts],
                    "window_end": [_ts(p.window_end) for p, _, _ in parts],
                    "writer_id": [cp.writer_id] * len(parts),
                    "checkpoint_seq": [cp.sequence] * len(parts),
                    "written_at": [now] * len(parts),
                    **{name: [row[name] for _, row, _ in parts] for name in parts[0][1]},
                    "states": [encode_states(p.states if first else {}) for p, _, first in parts],
                },
            )
        if cp.request_ids:
            self._append(con, "window_request_ids", _request_id_columns(cp.request_ids))
        if cp.detections:
            ds = cp.detections
            rows: dict[str, Sequence[Any]] = {
                "model": [d.model for d in ds],
                "detector": [d.detector for d in ds],
                "window_start": [d.window_start for d in ds],
                "window_end": [d.window_end for d in ds],
                "verdict": [d.verdict for d in ds],
                "condition": [d.condition for d in ds],
                "severity": [d.severity for d in ds],
                "value": [d.value for d in ds],
                "threshold": [d.threshold for d in ds],
                "baseline": [d.baseline for d in ds],
                "p_value": [d.p_value for d in ds],
                "sample_size": [d.sample_size for d in ds],
                "reason": [d.reason for d in ds],
                "details": [
                    orjson.dumps(d.details, option=orjson.OPT_SERIALIZE_NUMPY).decode() for d in ds
                ],
                "evaluated_at": [now] * len(ds),
            }
            # a window judged again (after a restart) replaces its verdict, never adds a second
            self._append(
                con,
                "detections",
                rows,
                replace_on=("model", "detector", "window_start"),
            )
        if cp.alerts:
            alerts = cp.alerts
            self._append(
                con,
                "alerts",
                {
                    "dedup_key": [a.dedup_key for a in alerts],
                    "status": [a.status for a in alerts],
                    "severity": [a.severity for a in alerts],
                    "detector": [a.detector for a in alerts],
                    "model": [a.model for a in alerts],
                    "condition": [a.condition for a in alerts],
                    "window_start": [a.window_start for a in alerts],
                    "window_end": [a.window_end for a in alerts],
                    "value": [a.value for a in alerts],
                    "threshold": [a.threshold for a in alerts],
                    "baseline": [a.baseline for a in alerts],
                    "sample_size": [a.sample_size for a in alerts],
                    "summary": [a.summary for a in alerts],
                    "emitted_at": [now] * len(alerts),
                },
            )
        if cp.alert_state is not None:
            con.execute("DELETE FROM alert_state")
            if cp.alert_state:
                self._append(
                    con,
                    "alert_state",
                    {"row": [orjson.dumps(row).decode() for row in cp.alert_state]},
                )
        if cp.frontier is not None:
            # one row: plain statements, where an Arrow view (`_append`) costs 2-4 ms each
            con.execute("DELETE FROM writer_progress WHERE writer_id = ?", [cp.writer_id])
            con.execute(
                "INSERT INTO writer_progress (writer_id, frontier_unix, updated_at) "
                "VALUES (?, ?, ?)",
                [cp.writer_id, cp.frontier, now],
            )
        if cp.quarantined:
            q = cp.quarantined
            self._append(
                con,
                "quarantined_records",
                {
                    "model": [r.model for r in q],
                    "request_id": [r.request_id for r in q],
                    "event_time_unix": [r.event_time for r in q],
                    "reason": [r.reason for r in q],
                    "writer_id": [cp.writer_id] * len(q),
                    "quarantined_at": [now] * len(q),
                },
            )
        if cp.references:
            keys = list(cp.references)
            self._append(
                con,
                "detector_references",
                {
                    "model": [m for m, _ in keys],
                    "detector": [d for _, d in keys],
                    "state": [encode_states(cp.references[k]) for k in keys],
                    "updated_at": [now] * len(keys),
                },
                replace_on=("model", "detector"),
            )

    def _append(
        self,
        con: duckdb.DuckDBPyConnection,
        table: str,
        columns: Mapping[str, Sequence[Any] | pa.Array],
        *,
        replace_on: Sequence[str] = (),
    ) -> None:
        """Insert many rows in one statement: DuckDB's `executemany` costs about a millisecond per
        row (225 detections took 0.3 s of a 1.7 s replay). With `replace_on`, rows matching on
        those columns are deleted first. Arrow, not pandas, carries the rows: a pandas float
        column turns None into NaN, which DuckDB would store as NaN instead of NULL."""
        fields, arrays = [], []
        for field in self._schemas[table]:
            array = _arrow_column(columns[field.name], field.type)
            if pa.types.is_dictionary(array.type) and array.type.value_type == field.type:
                field = field.with_type(array.type)  # DuckDB decodes it; a cast would copy
            fields.append(field)
            arrays.append(array)
        rows = pa.Table.from_arrays(arrays, schema=pa.schema(fields))
        # no try/finally: after a failed statement the transaction is aborted and even
        # `unregister` fails; the next `register` under this name replaces the view anyway
        con.register("_lookout_rows", rows)
        if replace_on:
            match = " AND ".join(f"t.{c} = r.{c}" for c in replace_on)
            con.execute(f"DELETE FROM {table} t USING _lookout_rows r WHERE {match}")
        con.execute(f"INSERT INTO {table} BY NAME SELECT * FROM _lookout_rows")
        con.unregister("_lookout_rows")

    # -- reads ---------------------------------------------------------------------------------

    def stored_records(self, windows: Sequence[tuple[str, int]]) -> Mapping[tuple[str, int], int]:
        if not windows:
            return {}
        models = sorted({m for m, _ in windows})
        starts = sorted({_ts(s) for _, s in windows})
        with self._lock:
            rows = self._con.execute(
                "SELECT model, epoch(window_start)::BIGINT, sum(records)::BIGINT "
                "FROM window_metrics WHERE list_contains(?, model) "
                "AND list_contains(?, window_start) GROUP BY 1, 2",
                [models, starts],
            ).fetchall()
        wanted = set(windows)
        found = {(str(m), int(s)): int(n) for m, s, n in rows}
        return {key: n for key, n in found.items() if key in wanted}

    def judged_windows(self, windows: Sequence[tuple[str, int]]) -> frozenset[tuple[str, int]]:
        if not windows:
            return frozenset()
        models = sorted({m for m, _ in windows})
        starts = sorted({_ts(s) for _, s in windows})
        with self._lock:
            rows = self._con.execute(
                "SELECT DISTINCT model, epoch(window_start)::BIGINT FROM detections "
                "WHERE list_contains(?, model) AND list_contains(?, window_start)",
                [models, starts],
            ).fetchall()
        return frozenset((str(m), int(s)) for m, s in rows).intersection(windows)

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
                "SELECT states, records, model_version FROM window_metrics "
                "WHERE model = ? AND window_start = ?",
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
        versions: dict[str | None, int] = {}
        for _, n, version in states:
            add_version_records(versions, version, n)
        return StoredWindow(
            partial_states=[d for s, _, _ in states if (d := decode_states(s))],
            request_ids=frozenset(r for (r,) in ids),
            records=sum(int(n) for _, n, _ in states),
            evaluated=bool(evaluated and evaluated[0]),
            versions=versions,
        )

    def load_windows(
        self, windows: Sequence[tuple[str, int]]
    ) -> Mapping[tuple[str, int], StoredWindow]:
        return windows_one_by_one(self.load_window, windows)

    def load_recent_windows(
        self, model: str, since: int, until: int
    ) -> Mapping[int, Sequence[Mapping[str, DetectorRow]]]:
        """A restart's history, read a few windows at a time: in one query, sorting 231
        windows' states (31 MB with embeddings) needed more than a 64 MB `memory_limit`, and a
        worker with a few busy hours behind it could not start."""
        out: dict[int, list[Mapping[str, DetectorRow]]] = {}
        with self._lock:
            starts = [
                int(start)
                for (start,) in self._con.execute(
                    "SELECT DISTINCT epoch(window_start)::BIGINT FROM window_metrics "
                    "WHERE model = ? AND window_start >= ? AND window_start < ? ORDER BY 1",
                    [model, _ts(since), _ts(until)],
                ).fetchall()
            ]
        for first in range(0, len(starts), _WINDOWS_PER_READ):
            chunk = starts[first : first + _WINDOWS_PER_READ]
            with self._lock:
                rows = self._con.execute(
                    "SELECT epoch(window_start)::BIGINT, states FROM window_metrics "
                    "WHERE model = ? AND window_start >= ? AND window_start <= ? ORDER BY 1",
                    [model, _ts(chunk[0]), _ts(chunk[-1])],
                ).fetchall()
            for start, states in rows:
                if decoded := decode_states(states):  # slice rows past the first carry none
                    out.setdefault(int(start), []).append(decoded)
        return out

    def models(self) -> Sequence[str]:
        with self._lock:
            rows = self._con.execute(
                "SELECT DISTINCT model FROM window_metrics ORDER BY 1"
            ).fetchall()
        return [r for (r,) in rows]

    def unevaluated_windows(
        self, limit: int, *, since: int | None = None
    ) -> Sequence[tuple[str, int]]:
        with self._lock:
            rows = self._con.execute(
                "SELECT DISTINCT w.model, epoch(w.window_start)::BIGINT AS start "
                "FROM window_metrics w ANTI JOIN detections d "
                "ON d.model = w.model AND d.window_start = w.window_start "
                "WHERE w.window_start >= to_timestamp(?) "
                "ORDER BY start, w.model LIMIT ?",
                [-(2**40) if since is None else since, limit],
            ).fetchall()
        return [(str(m), int(s)) for m, s in rows]

    def latest_window_start(self) -> int | None:
        with self._lock:
            row = self._con.execute(
                "SELECT max(epoch(window_start))::BIGINT FROM window_metrics"
            ).fetchone()
        return None if row is None or row[0] is None else int(row[0])

    def load_frontier(
        self, active_within: float = 60.0, *, excluding: str | None = None
    ) -> float | None:
        (row,) = self.query(
            "SELECT min(frontier_unix) FROM writer_progress WHERE updated_at >= "
            "(SELECT max(updated_at) FROM writer_progress) - to_microseconds(?::BIGINT) "
            "AND writer_id IS DISTINCT FROM ?",
            [round(active_within * 1e6), excluding],
        )
        return None if row[0] is None else float(row[0])

    def any_writer_progress(self) -> bool:
        (row,) = self.query("SELECT EXISTS (SELECT 1 FROM writer_progress)")
        return bool(row[0])

    def newest_frontier(self, *, excluding: str) -> float | None:
        (row,) = self.query(
            "SELECT max(frontier_unix) FROM writer_progress WHERE writer_id IS DISTINCT FROM ?",
            [excluding],
        )
        return None if row[0] is None else float(row[0])

    def writer_frontier(self, writer_id: str) -> float | None:
        rows = self.query(
            "SELECT frontier_unix FROM writer_progress WHERE writer_id = ? "
            "ORDER BY updated_at DESC LIMIT 1",
            [writer_id],
        )
        return float(rows[0][0]) if rows else None

    def load_alert_state(self) -> Sequence[Mapping[str, Any]]:
        with self._lock:
            rows = self._con.execute("SELECT row FROM alert_state").fetchall()
        return [orjson.loads(r) for (r,) in rows]

    def load_references(self) -> Mapping[tuple[str, str], DetectorRow]:
        with self._lock:
            rows = self._con.execute(
                "SELECT model, detector, state FROM detector_references"
            ).fetchall()
        return {(m, d): decode_states(s) for m, d, s in rows}

    def stored_alerts(self, alerts: Sequence[Alert]) -> frozenset[AlertChangeKey]:
        keys = {a.change_key for a in alerts}
        if not keys:
            return frozenset()
        with self._lock:
            rows = self._con.execute(
                "SELECT dedup_key, status, epoch_ms(window_end) FROM alerts "
                "WHERE dedup_key IN (SELECT unnest(?))",
                [sorted({k[0] for k in keys})],
            ).fetchall()
        return frozenset((str(d), str(s), int(ms)) for d, s, ms in rows) & keys

    def load_baseline_accepts(self) -> Sequence[BaselineAccept]:
        with self._lock:
            return read_baseline_accepts(self._con)

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
        except duckdb.Error as error:
            self.unwritable_reason = f"{self.name}: {error}"[:300]
            return False
        self.unwritable_reason = ""
        return True

    def close(self) -> None:
        with self._lock:
            self._con.close()


def _deleted(result: duckdb.DuckDBPyConnection) -> int:
    """The row count DuckDB answers a DELETE with."""
    row = result.fetchone()
    return int(row[0]) if row and row[0] is not None else 0


# -- baseline acceptances (`lookout baseline accept`): their own small table -------------------


def _write_baseline_accepts(
    con: duckdb.DuckDBPyConnection, accepts: Sequence[BaselineAccept]
) -> None:
    con.executemany(
        "INSERT INTO baseline_accepts VALUES (?, ?, ?, ?, ?)",
        [
            [a.model, a.detector, a.incident_started_at, a.accepted_at, a.accepted_by]
            for a in accepts
        ],
    )


def read_baseline_accepts(
    con: duckdb.DuckDBPyConnection, table: str = "baseline_accepts"
) -> list[BaselineAccept]:
    rows = con.execute(
        "SELECT model, detector, epoch(incident_started_at), epoch(accepted_at), accepted_by "
        f"FROM {table} ORDER BY accepted_at"
    ).fetchall()
    return [
        BaselineAccept(
            m, d, datetime.fromtimestamp(started, UTC), datetime.fromtimestamp(at, UTC), by
        )
        for m, d, started, at, by in rows
    ]


def compact_file(path: Path, memory_limit: str = "256MB") -> int:
    """Rewrite a closed DuckDB file without its free blocks; returns the new size in bytes.

    A file that took many checkpoints is about half free blocks (rows rewritten during the run),
    which DuckDB keeps rather than returning them; a copy of the database holds only the live
    data. The copy replaces the file only once it is complete. It runs on one thread within
    `memory_limit` first: with DuckDB's defaults the copy of the demo's 3 hours took the process
    from 450 to 980 MB (704 MB within 256 MB). A copy that does not fit is made again with
    DuckDB's defaults: compacting saves disk, it must never fail the command (64 MB fitted one
    demo run and not another)."""
    target = path.with_name(f".{path.name}.compact")
    try:
        # out of memory shows as an OutOfMemoryException or, at the copy's commit, as a
        # TransactionException: any failure of the bounded copy gets the unbounded one
        _copy_database(path, target, {"memory_limit": memory_limit, "threads": 1})
    except duckdb.Error:
        try:
            _copy_database(path, target, {})
        except duckdb.Error as error:
            target.unlink(missing_ok=True)
            log.warning("could not compact %s (%s); it keeps its free blocks", path, error)
            return path.stat().st_size
    target.replace(path)
    return path.stat().st_size


def _copy_database(
    source: Path, target: Path, config: dict[str, str | bool | int | float | list[str]]
) -> None:
    target.unlink(missing_ok=True)
    con = duckdb.connect(config=config)
    try:
        con.execute(_NO_ZSTD)
        con.execute(f"ATTACH '{source}' AS lookout_source (READ_ONLY)")
        con.execute(f"ATTACH '{target}' AS lookout_target")
        con.execute("COPY FROM DATABASE lookout_source TO lookout_target")
    finally:
        con.close()


def _is_fatal(error: BaseException) -> bool:
    """DuckDB's fatal errors invalidate the database: every later statement fails the same way."""
    return isinstance(error, duckdb.FatalException) or "database has been invalidated" in str(error)


def _broken_message(path: Path | str, memory_limit: str, error: BaseException) -> str:
    detail = str(error).splitlines()[0] if str(error) else type(error).__name__
    return (
        f"the DuckDB sink {path} stopped accepting writes after a fatal error ({detail}); "
        f"if it ran out of memory, raise sink.memory_limit (now {memory_limit}) and restart: "
        "what was not checkpointed was not acknowledged, so nothing is lost"
    )
