"""`lookout sql`: an analyst's prompt on the embedded DuckDB file, read-only.

The file is opened read-only, so a query can never change what the worker wrote, and a typo'd
`DELETE` is refused by DuckDB itself. Nor can a query touch any other file: DuckDB's external
access is off, so `COPY ... TO`, `EXPORT DATABASE`, `ATTACH` and `read_csv` are refused (a
"read-only" command that wrote `out.csv` was not read-only). One statement per call: with
several, DuckDB returned only the last result, and the others vanished without a word. The
result prints as a table on a terminal, or as CSV or JSON lines for a script.
"""

from __future__ import annotations

import contextlib
import csv
import re
import sys
from collections.abc import Sequence
from datetime import date, datetime, time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import orjson
import typer

from worker.cli.app import app, fail, output_console, quiet_broken_pipe
from worker.cli.records import columns_fit, print_records

if TYPE_CHECKING:  # imported when a query runs: `--help` stays fast
    import duckdb

SQL_FORMATS = ("table", "csv", "json")

#: what an analyst queries in the DuckDB file, and what one row is (README: Tables); a test
#: checks `lookout sql --help` names every table and view the DuckDB sink creates
ANALYST_TABLES = {
    "window_metrics_merged": (
        "view, (model, version, tenant, window): calls, block rate, latency, tokens, cost"
    ),
    "model_windows": (
        "view, (model, window) over all versions and tenants, as the detectors judge it: "
        "calls, block rate, latency, tokens, cost"
    ),
    "model_daily": "view, (model, UTC day): windows, calls, block rate, tokens, cost",
    "window_metrics": "a window's partial row, as one worker checkpointed it",
    "detections": "(model, window, detector) verdict",
    "alerts": "alert state change (firing / resolved), as sent to receivers",
    "baseline_accepts": "a level shift accepted as the new normal (lookout baseline accept)",
    "quarantined_records": "a record set aside for its event time (too far ahead or behind)",
    "window_request_ids": "request id counted in a window (dedup of replays)",
}
#: the sink's own bookkeeping: readable, but not what a question is answered from
BOOKKEEPING_TABLES = (
    "alert_state",
    "writer_progress",
    "detector_references",
    "applied_checkpoints",
)
LOOKOUT_TABLES = frozenset(ANALYST_TABLES) | frozenset(BOOKKEEPING_TABLES)


def _sql_help() -> str:
    """`lookout sql --help`, its table list built from ANALYST_TABLES so the two agree."""
    # one paragraph per table: at 80 columns the help is click's, which joins a paragraph's lines
    tables = "\n\n".join(f"* `{name}`: {what}" for name, what in ANALYST_TABLES.items())
    return (
        "Run a query on the DuckDB file, read-only, and print the result.\n\n"
        "One statement per call (several are refused: run one lookout sql each). The query "
        "can read the file's tables and views and nothing else: it changes no row and writes "
        "or reads no other file (COPY ... TO, EXPORT DATABASE, ATTACH, read_csv are refused); "
        "for a CSV file, use --format csv > out.csv.\n\n"
        f"Tables and views (see README: Tables):\n\n{tables}\n\n"
        f"Bookkeeping: {', '.join(BOOKKEEPING_TABLES)}.\n\n"
        'E.g. `lookout sql "SELECT model, count(*) FROM alerts GROUP BY model"`.'
    )


def _text(value: Any, *, exact: bool = False) -> str:
    """A cell: ISO dates, whole numbers whole, lists and structs as JSON, NULL as NULL on screen
    (empty in CSV, where an empty string is not). On screen, floats below 100,000 keep 6
    significant digits and larger ones every integer digit and at most 3 decimals: `%.6g`
    printed a latency total of 130,009,683.2 ms as 1.3001e+08. Exact in CSV."""
    if value is None:
        return "" if exact else "NULL"
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        # token sums (DOUBLE in the views): every digit, not 4.5e+07 on screen nor 243384.0 in
        # CSV, where a spreadsheet or `cut` then sees the whole number it is
        return str(int(value))
    if isinstance(value, float) and not exact:
        if 1e5 <= abs(value) < 1e15:
            return f"{value:.3f}".rstrip("0").rstrip(".")
        return f"{value:.6g}"
    if isinstance(value, bytes):  # detector states: encoded for the worker, not for reading
        return f"<{len(value)} bytes>"
    if isinstance(value, list | dict):  # LIST and STRUCT columns: JSON, not Python's repr
        return orjson.dumps(value, default=_json_default).decode()
    return str(value)


def _json_default(value: Any) -> Any:
    return _text(value, exact=True)


def run_query(db: Path, query: str) -> tuple[list[str], list[tuple[Any, ...]], list[int]]:
    """Column names and rows of `query` on `db`, opened read-only; one-line errors."""
    import duckdb

    if not db.exists():
        fail(f"sql: no such DuckDB file: {db} (lookout replay or lookout demo writes one)")
    refuse_non_duckdb("sql", db)
    try:
        # no external access: the query reads this file's tables and can write no other file
        # (`COPY alerts TO 'out.csv'` wrote one); it cannot be turned back on by the query
        con = duckdb.connect(str(db), read_only=True, config={"enable_external_access": False})
    except duckdb.Error as error:
        fail(f"sql: {duckdb_open_problem(db, error)}", code=1)  # as report and replay
    try:
        # times in UTC, as the sink writes them and BigQuery shows them: in the host's zone a
        # window at 00:30 UTC printed as the evening before, and `CAST(ts AS DATE)` split days
        con.execute("SET TimeZone = 'UTC'")
        _one_statement(con, query)
        cursor = con.execute(query)
        described = cursor.description or ()
        names = [d[0] for d in described]
        rows = cursor.fetchall() if names else []
    except duckdb.Error as error:
        fail(f"sql: {_error_line(con, db, error)}", code=1)
    finally:
        con.close()
    json_columns = [i for i, d in enumerate(described) if str(d[1]) == "JSON"]
    return names, rows, json_columns


def refuse_non_duckdb(command: str, db: Path) -> None:
    """Exit 2 with one line if `db`, which exists, is a directory or a file that is not a DuckDB
    database (`notes.txt`). For `sql` and `baseline accept`, which read what lookout wrote, the
    sink's own advice, "give a new path", is wrong: a new path has nothing to read."""
    if db.is_dir():
        fail(f"{command}: {db} is a directory; expected a DuckDB file")
    if db.is_file() and db.stat().st_size == 0:
        # a writer fills an empty file (`touch lookout.duckdb` first is fine for replay), but
        # there is nothing in one to read: DuckDB said "exists, but it is not a valid DuckDB
        # database file!" with its exception's name, and exit 1
        fail(f"{command}: {db} is empty; expected a DuckDB file lookout wrote")
    from worker.errors import SetupError
    from worker.sinks.duckdb_sink import refuse_foreign_file

    try:
        refuse_foreign_file(db)
    except SetupError as error:
        # the sink's reason without its advice, which follows the last "; " (a path may hold one)
        reason = str(error).rsplit("; ", 1)[0]
        fail(f"{command}: {reason}; expected a DuckDB file lookout wrote")


def _parsed(row: tuple[Any, ...], json_columns: Sequence[int]) -> tuple[Any, ...]:
    """A JSON column (`detections.details`) as the object it holds, for JSON lines, which wrote
    it as a string inside a string (`"details":"{\\"tests\\":…"`). Text orjson cannot hold
    exactly (an integer past 64 bits, 1e400) stays the text DuckDB gave."""
    cells = list(row)
    for i in json_columns:
        if isinstance(cells[i], str):
            with contextlib.suppress(orjson.JSONDecodeError):
                cells[i] = orjson.loads(cells[i])
    return tuple(cells)


def _one_statement(con: duckdb.DuckDBPyConnection, query: str) -> None:
    """Exit 2 with one line unless `query` is exactly one statement: an empty one (`""`, `;`)
    made DuckDB return no result at all, which surfaced as an AttributeError, and of several
    only the last one's rows were printed, the others dropped without a word. A syntax error
    raises DuckDB's ParserException, for the caller's one line."""
    statements = con.extract_statements(query)
    if not statements:
        fail('sql: no SQL statement given; e.g. lookout sql "SELECT count(*) FROM alerts"')
    if len(statements) > 1:
        fail(
            f"sql: {len(statements)} statements given; run one at a time (one lookout sql "
            "for each), so that no result goes unprinted"
        )


def _error_line(con: duckdb.DuckDBPyConnection, db: Path, error: BaseException) -> str:
    """A failed query's DuckDB error as one line: DuckDB's suggestion for a typo when it names
    one of this file's own tables or columns, else the tables the file has, and a hint, all in
    one parenthesis (two read as two afterthoughts)."""
    hint = _hint(con, db, error)
    # in a file that is not Lookout's, the hint says what to know: DuckDB's "did you mean"
    # names one of its own catalogue tables (pg_tablespace for alerts), which only misleads
    instead = "" if _NOT_LOOKOUTS in hint else _tables_instead(con, db, error)
    dropped = bool(instead) or _NOT_LOOKOUTS in hint
    said = first_line(error) if dropped else message_with_suggestion(error)
    notes = "; ".join(note for note in (instead, hint) if note)
    return f"{said} ({notes})" if notes else said


def _hint(con: duckdb.DuckDBPyConnection, db: Path, error: BaseException) -> str:
    """What a one-line DuckDB error leaves a newcomer to guess: why writing a file was refused
    (`COPY ... TO`) and what does it instead, or why one of Lookout's tables is missing. The
    words alone, "" for none: the caller puts them in parentheses."""
    import duckdb

    if isinstance(error, duckdb.PermissionException):
        return "lookout sql reads the DuckDB file only; for a CSV file, --format csv > FILE"
    return _missing_table_hint(con, db, error)


#: what the hint says of a file without any of Lookout's tables
_NOT_LOOKOUTS = "holds none of Lookout's tables"

#: "Catalog Error: Table with name X does not exist!"
_MISSING_TABLE = re.compile(r"Table with name (\S+) does not exist")


def _missing_table_hint(con: duckdb.DuckDBPyConnection, db: Path, error: BaseException) -> str:
    """One of Lookout's tables missing: from a file Lookout did not write, or from a copy of a
    file a worker is writing made without its `.wal` (the newest checkpoints, even whole
    tables, are there). Any other name is a typo, which DuckDB's own suggestion answers: the
    `.wal` hint on every finished file sent analysts looking for a file that never existed."""
    missing = _MISSING_TABLE.search(str(error))
    if missing is None or missing.group(1).lower() not in LOOKOUT_TABLES:
        return ""
    tables = _file_tables(con)
    if tables is None:
        return ""
    names = {name.lower() for name in tables}
    if not names & LOOKOUT_TABLES:
        return f"{db.name} {_NOT_LOOKOUTS}: not a file lookout wrote?"
    if Path(f"{db}.wal").exists():
        return ""
    return (
        f"if {db.name} is a copy of a file a worker was writing, copy {db.name}.wal with it:"
        " the newest checkpoints are there"
    )


#: DuckDB's suggestion for a missing table: `Did you mean "window_metrics"?`
_SUGGESTED_TABLE = re.compile(r'Did you mean "([^"]+)"\?')
#: at most this many of a file's tables named in one error line; a Lookout file has 13
_TABLES_SHOWN = 15


def _tables_instead(con: duckdb.DuckDBPyConnection, db: Path, error: BaseException) -> str:
    """For a table the file does not have, the tables and views it does, when DuckDB suggests
    none of them: for `nosuch` on a Lookout file it suggested `pg_sequences`, one of its own
    catalogue tables, which sent an analyst looking for a table that holds nothing of theirs.
    Empty when DuckDB's suggestion is one of the file's tables (`window_metric`: "Did you mean
    "window_metrics"?" answers the typo) or the error is not a missing table."""
    if _MISSING_TABLE.search(str(error)) is None:
        return ""
    tables = _file_tables(con)
    if tables is None:  # cannot tell a real suggestion from a catalogue one: DuckDB's words
        return ""
    suggested = _SUGGESTED_TABLE.search(str(error))
    if suggested is not None:
        name = suggested.group(1).lower().rsplit(".", 1)[-1]  # "main.alerts", if ever qualified
        if name in {table.lower() for table in tables}:
            return ""
    if not tables:
        return f"{db.name} holds no tables or views"
    shown = ", ".join(tables[:_TABLES_SHOWN])
    more = len(tables) - _TABLES_SHOWN
    return f"tables here: {shown}" + (f" and {more} more" if more > 0 else "")


def _file_tables(con: duckdb.DuckDBPyConnection) -> list[str] | None:
    """The tables and views of the file's main schema, Lookout's in the order of
    ANALYST_TABLES (what to query first), then the others by name; None if they cannot be
    read. DuckDB's own catalogue (`pg_*`, `duckdb_*`, `sqlite_*`) is not among them."""
    import duckdb

    try:
        rows = con.execute(
            "SELECT table_name FROM duckdb_tables() "
            "WHERE database_name = current_database() AND schema_name = 'main' "
            "UNION SELECT view_name FROM duckdb_views() "
            "WHERE database_name = current_database() AND schema_name = 'main' "
            "AND NOT internal"
        ).fetchall()
    except duckdb.Error:
        return None
    order = {name: i for i, name in enumerate((*ANALYST_TABLES, *BOOKKEEPING_TABLES))}
    return sorted((str(name) for (name,) in rows), key=lambda n: (order.get(n, len(order)), n))


def duckdb_open_problem(db: Path, error: BaseException) -> str:
    """What went wrong opening a DuckDB file, as the one line every command prints: DuckDB's
    own message names its exception class and a PID, which tells a newcomer nothing about the
    usual cause (another lookout has the file) or what to do."""
    if "lock" in str(error).lower():
        return (
            f"{db} is held by a process writing it (a running lookout?); stop it or let it "
            "finish, then try again"
        )
    if not Path(db).parent.is_dir():  # DuckDB says only "Cannot open file ...: No such file"
        return f"cannot open {db}: no such directory {Path(db).parent}"
    return f"cannot open {db}: {first_line(error)}"


def first_line(error: BaseException) -> str:
    """DuckDB's message without the context lines it adds (LINE 1: ..., a caret)."""
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__


#: the lines of a DuckDB error that answer a typo: `Did you mean "window_metrics_merged"?`,
#: `Candidate bindings: "block_rate", …`
_SUGGESTION = re.compile(r"^(Did you mean|Candidate bindings)")


def message_with_suggestion(error: BaseException) -> str:
    """`first_line`, with DuckDB's suggestion for a mistyped table or column on the same line."""
    lines = str(error).strip().splitlines()
    suggestion = next((line.strip() for line in lines[1:] if _SUGGESTION.match(line)), None)
    return first_line(error) + (f" {suggestion}" if suggestion else "")


def print_rows(
    names: Sequence[str],
    rows: Sequence[tuple[Any, ...]],
    fmt: str,
    json_columns: Sequence[int] = (),
) -> None:
    """CSV, JSON lines, or on screen: a table when each column can be at least
    `MIN_COLUMN_WIDTH` wide, else one record per block (psql's `\\x`), so that `SELECT *` on a
    wide table is read at 80 columns instead of squeezed to `│ loo │ fir │`. Not on a terminal
    the console is 10,000 columns wide: a table, as before."""
    if fmt == "csv":
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(names)
        writer.writerows([_text(v, exact=True) for v in row] for row in rows)
    elif fmt == "json":
        out = sys.stdout.buffer
        for row in rows:
            parsed = _parsed(row, json_columns) if json_columns else row
            record = dict(zip(names, parsed, strict=True))
            out.write(orjson.dumps(record, default=_json_default) + b"\n")
        out.flush()
    else:
        console = output_console()
        cells = [[_text(v) for v in row] for row in rows]
        if columns_fit(console, names, cells):
            from rich.table import Table
            from rich.text import Text

            table = Table(show_lines=False)
            for name in names:
                table.add_column(Text(name), overflow="fold")
            for row_cells in cells:
                # plain text: a value is data, never markup ("[red]x" is what the row holds)
                table.add_row(*(Text(cell) for cell in row_cells))
            console.print(table)
        else:
            print_records(console, names, cells)
            if cells:
                console.print()
        console.print(f"{len(rows)} row(s)", highlight=False)


@app.command(help=_sql_help())
def sql(
    query: Annotated[
        str,
        typer.Argument(
            help="The SQL to run (DuckDB dialect), quoted; - reads it from standard input "
            "(lookout sql - < query.sql: a query that starts with a -- comment would be read "
            "as an option)."
        ),
    ],
    db: Annotated[
        Path, typer.Option(help="DuckDB file written by lookout run, replay or demo.")
    ] = Path("lookout.duckdb"),
    fmt: Annotated[
        str,
        typer.Option("--format", help="table (default), csv, or json (one object per row)."),
    ] = "table",
) -> None:
    """Run a query on the DuckDB file, read-only (help: `_sql_help`)."""
    if fmt not in SQL_FORMATS:
        fail(f"sql: unknown --format {fmt!r}; expected one of {', '.join(SQL_FORMATS)}")
    if query == "-":
        query = sys.stdin.read()
    names, rows, json_columns = run_query(db, query)
    try:
        print_rows(names, rows, fmt, json_columns)
    except BrokenPipeError:
        quiet_broken_pipe()
