"""A sink file opened for reading only, as `lookout report` reads it.

Opening the file as the sink wrote to it: Lookout's tables and views were added to any DuckDB
file, and a file from an older release was migrated. Here an in-memory database attaches the
file read-only and its migration is views in memory (columns added since read as NULL, JSON
states as the bytes the sink converts them to), so the file stays byte for byte as it was.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from functools import cache
from pathlib import Path

import duckdb

from worker.analyst_columns import MERGED_VIEW_SQL
from worker.errors import LookoutError, SetupError
from worker.sink import BaselineAccept
from worker.sinks.duckdb_sink import (
    _ADDED_COLUMNS,
    _STATE_COLUMNS,
    DuckDBSink,
    read_baseline_accepts,
)

#: the sink's tables a report reads (through its views too): a file without them is not one
#: Lookout wrote, and every release's file has them
REPORT_TABLES = ("window_metrics", "detections", "alerts", "detector_references")


class NotALookoutFile(SetupError):
    """A DuckDB file without the tables or columns of a Lookout sink."""


class UnreadableLookoutFile(LookoutError):
    """Lookout's tables are there, but reading them failed (a column of another type)."""

    def __init__(self, path: Path, cause: duckdb.Error) -> None:
        super().__init__(f"cannot read {path}: {cause}")
        self.cause = cause


class _ReadOnlySink(DuckDBSink):
    """The reads of `DuckDBSink` over a connection that holds the file attached read-only."""

    def __init__(self, path: Path, con: duckdb.DuckDBPyConnection) -> None:
        # no super().__init__(): it opens the file for writing and creates the tables
        self.name = f"duckdb:{path} (read-only)"
        self.path = path
        self._con = con
        self._memory_limit = "256MB"
        self._lock = threading.Lock()

    def load_baseline_accepts(self) -> Sequence[BaselineAccept]:
        """The file's acceptances (the report marks those incidents), none from a release
        before them; not one of the views the report reads, so straight from the file."""
        with self._lock:
            try:
                return read_baseline_accepts(self._con, "lookout_file.baseline_accepts")
            except duckdb.CatalogException:
                return []


def open_read_only(path: Path) -> DuckDBSink:
    """`path` for reading, or `NotALookoutFile`, `UnreadableLookoutFile`, or the
    `duckdb.Error` of attaching it (a running worker holds it)."""
    con = duckdb.connect(config={"memory_limit": "256MB"})
    try:
        con.execute("SET TimeZone = 'UTC'")  # as the sink's connection
        quoted = str(path).replace("'", "''")
        con.execute(f"ATTACH '{quoted}' AS lookout_file (READ_ONLY)")
        found: dict[str, dict[str, str]] = {}
        for table, column, sql_type in con.execute(
            "SELECT table_name, column_name, data_type FROM duckdb_columns() "
            "WHERE database_name = 'lookout_file' AND schema_name = 'main'"
        ).fetchall():
            found.setdefault(table, {})[column] = sql_type
        added = {(table, column): sql_type for table, column, sql_type in _ADDED_COLUMNS}
        problem = _not_lookout(path, found, added)
        if problem:
            raise NotALookoutFile(problem)
        views = []
        for table in REPORT_TABLES:
            columns = []
            for column, _ in _sink_columns()[table]:
                if column not in found[table]:
                    columns.append(f"NULL::{added[table, column]} AS {column}")
                elif (table, column) in _STATE_COLUMNS and found[table][column] == "JSON":
                    columns.append(f"encode({column}::VARCHAR) AS {column}")
                else:
                    columns.append(column)
            views.append(
                f"CREATE VIEW {table} AS SELECT {', '.join(columns)} FROM lookout_file.{table}"
            )
        try:
            con.execute(";\n".join([*views, MERGED_VIEW_SQL]))
        except duckdb.Error as error:  # a column of Lookout's name and another type
            raise UnreadableLookoutFile(path, error) from error
    except BaseException:
        con.close()
        raise
    return _ReadOnlySink(path, con)


def _not_lookout(
    path: Path, found: dict[str, dict[str, str]], added: dict[tuple[str, str], str]
) -> str | None:
    """Why `path` is not a file Lookout wrote, or None: a table the report reads is missing,
    or lacks a column every release wrote (the file would otherwise have to be changed, or the
    report would stop at DuckDB's BinderException)."""
    missing = [table for table in REPORT_TABLES if table not in found]
    if missing:
        copy = (
            f" (if it is a copy of a file a worker was writing, copy {path.name}.wal with it)"
            if len(missing) < len(REPORT_TABLES) and not Path(f"{path}.wal").exists()
            else ""
        )
        return (
            f"{path} is a DuckDB file without Lookout's tables ({', '.join(missing)}): "
            f"not a Lookout sink{copy}"
        )
    for table in REPORT_TABLES:
        lacking = [
            column
            for column, _ in _sink_columns()[table]
            if column not in found[table] and (table, column) not in added
        ]
        if lacking:
            named = ", ".join(lacking[:4]) + (", …" if len(lacking) > 4 else "")
            return (
                f"{path} has a table {table} without Lookout's columns ({named}): "
                "not a Lookout sink"
            )
    return None


@cache
def _sink_columns() -> dict[str, list[tuple[str, str]]]:
    """(column, type) of each table the report reads, in order, as the sink creates them now:
    read from a new in-memory sink, so this cannot drift from the sink's schema."""
    sink = DuckDBSink(":memory:")
    try:
        rows = sink.query(
            "SELECT table_name, column_name, data_type FROM duckdb_columns() "
            "WHERE schema_name = 'main' ORDER BY table_name, column_index"
        )
    finally:
        sink.close()
    columns: dict[str, list[tuple[str, str]]] = {}
    for table, column, sql_type in rows:
        if table in REPORT_TABLES:
            columns.setdefault(table, []).append((column, sql_type))
    return columns
