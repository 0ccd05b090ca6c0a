"""`lookout sql`: an analyst's prompt on the DuckDB file — read-only, whole rows, one-line
errors."""

from __future__ import annotations

import csv
import io
import json
import re
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.e2e.conftest import REPLAY_TIMEOUT, assert_no_traceback, lookout, query
from worker.sinks.duckdb_sink import DuckDBSink


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    where = tmp_path_factory.mktemp("sql")
    made = lookout("simulate", "--out", "logs.ndjson", "--hours", "0.05", "--rate", "60", cwd=where)
    assert made.returncode == 0, made.describe()
    replayed = lookout("replay", "logs.ndjson", cwd=where, timeout=REPLAY_TIMEOUT)
    assert replayed.returncode == 0, replayed.describe()
    return where / "lookout.duckdb"


SQL = "SELECT model, window_start, calls FROM window_metrics_merged ORDER BY window_start, model"


def test_a_table_on_screen_with_every_row_and_whole_names(db: Path) -> None:
    result = lookout("sql", SQL, cwd=db.parent)
    assert result.returncode == 0, result.describe()
    rows = query(db, SQL)
    assert f"{len(rows)} row(s)" in result.stdout
    assert "gemini-1.5-flash" in result.stdout and "…" not in result.stdout


def test_csv_and_json_give_the_same_rows_as_duckdb(db: Path) -> None:
    rows = query(db, SQL)
    as_csv = lookout("sql", "--db", db, "--format", "csv", SQL, cwd=db.parent)
    parsed = list(csv.reader(io.StringIO(as_csv.stdout)))
    assert parsed[0] == ["model", "window_start", "calls"]
    assert [(r[0], int(r[2])) for r in parsed[1:]] == [(m, c) for m, _, c in rows]
    as_json = lookout("sql", "--db", db, "--format", "json", SQL, cwd=db.parent)
    records = [json.loads(line) for line in as_json.stdout.splitlines()]
    assert [(r["model"], r["calls"]) for r in records] == [(m, c) for m, _, c in rows]


def test_detector_states_show_as_their_size_not_as_bytes(db: Path) -> None:
    state = "SELECT states FROM window_metrics ORDER BY octet_length(states) LIMIT 1"
    ((size,),) = query(db, state.replace("SELECT states", "SELECT octet_length(states)"))
    on_screen = lookout("sql", state, cwd=db.parent)
    assert on_screen.returncode == 0, on_screen.describe()
    assert f"<{size} bytes>" in on_screen.stdout and "\\x" not in on_screen.stdout
    as_json = lookout("sql", "--format", "json", state, cwd=db.parent)
    assert json.loads(as_json.stdout) == {"states": f"<{size} bytes>"}


def test_the_file_is_read_only(db: Path) -> None:
    before = query(db, "SELECT count(*) FROM alerts")
    result = lookout("sql", "DELETE FROM window_metrics", cwd=db.parent)
    assert_no_traceback(result)
    assert result.returncode == 1
    assert result.stderr.startswith("lookout: sql: ") and "read-only" in result.stderr
    assert len(result.stderr.splitlines()) == 1
    assert query(db, "SELECT count(*) FROM alerts") == before


@pytest.mark.parametrize(
    ("args", "status", "says"),
    [
        (("--db", "nope.duckdb", "SELECT 1"), 2, "lookout: sql: no such DuckDB file: nope.duckdb"),
        (("SELEC 1",), 1, "lookout: sql: Parser Error: syntax error"),
        (("--format", "xml", "SELECT 1"), 2, "lookout: sql: unknown --format 'xml'"),
    ],
)
def test_mistakes_are_one_line(db: Path, args: tuple[str, ...], status: int, says: str) -> None:
    result = lookout("sql", *args, cwd=db.parent)
    assert_no_traceback(result)
    assert result.returncode == status
    assert result.stderr.startswith(says) and len(result.stderr.splitlines()) == 1


def test_a_file_a_worker_is_writing_is_named_as_busy(db: Path, tmp_path: Path) -> None:
    copy = tmp_path / "busy.duckdb"
    copy.write_bytes(db.read_bytes())
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import duckdb, sys; c = duckdb.connect(sys.argv[1]); print('held', flush=True); "
            "sys.stdin.read()",
            str(copy),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == b"held\n"
        result = lookout("sql", "--db", copy, "SELECT 1", cwd=tmp_path)
        assert_no_traceback(result)
        assert result.returncode == 1  # as `report` and `replay` exit on a held file
        assert "held by a process writing it" in result.stderr, result.describe()
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        holder.wait(timeout=30)
        holder.stdout.close()  # type: ignore[union-attr]


def test_help_names_every_table_and_view_the_sink_creates(tmp_path: Path) -> None:
    """`model_daily` and `baseline_accepts` were missing from the list an analyst reads."""
    made = tmp_path / "fresh.duckdb"
    DuckDBSink(made).close()
    names = {row[0] for row in query(made, "SELECT table_name FROM information_schema.tables")}
    assert {"model_daily", "baseline_accepts", "window_metrics_merged"} <= names
    result = lookout("sql", "--help", cwd=tmp_path)
    assert result.returncode == 0, result.describe()
    shown = set(re.findall(r"\b[a-z_]+\b", result.stdout))
    assert sorted(names - shown) == [], result.stdout


def test_a_table_cut_short_by_head_is_not_an_error(db: Path) -> None:
    """`lookout sql ... | head -3` exits 0 like csv, json, decode and simulate do."""
    shell = f"{Path(sys.executable).parent / 'lookout'} sql --db {db} '{SQL}' | head -3"
    done = subprocess.run(
        ["bash", "-o", "pipefail", "-c", shell], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert len(done.stdout.splitlines()) == 3 and "Traceback" not in done.stderr, done.stderr


def test_whole_token_sums_print_every_digit_on_screen(db: Path) -> None:
    """Token sums are DOUBLE in the views; 45392900 printed as 4.53929e+07 lost digits."""
    result = lookout("sql", "SELECT 45392900.0::DOUBLE AS tokens, 0.125 AS share", cwd=db.parent)
    assert result.returncode == 0, result.describe()
    assert "45392900" in result.stdout and "e+07" not in result.stdout, result.stdout
    assert "0.125" in result.stdout


def test_a_copy_made_without_its_wal_says_what_is_missing(tmp_path: Path) -> None:
    """The README says to query a copy of a file a worker is writing; a copy of the .duckdb
    alone lacks what is still in the .wal, even whole tables, and DuckDB only says the table
    "does not exist"."""
    import duckdb

    live = tmp_path / "live.duckdb"
    con = duckdb.connect(str(live))
    con.execute("CREATE TABLE window_metrics (n INTEGER)")
    con.execute("CHECKPOINT")
    con.execute("CREATE TABLE alerts (n INTEGER)")  # in the .wal only, as a worker leaves it
    copy = tmp_path / "copy.duckdb"
    copy.write_bytes(live.read_bytes())
    con.close()
    result = lookout("sql", "--db", copy, "SELECT count(*) FROM alerts", cwd=tmp_path)
    assert_no_traceback(result)
    assert result.returncode == 1, result.describe()
    assert "does not exist" in result.stderr and "copy copy.duckdb.wal with it" in result.stderr
    assert len(result.stderr.splitlines()) == 1


def test_times_are_utc_whatever_the_host_zone(db: Path) -> None:
    """On a host in Los Angeles a window at 06:00 UTC printed as 22:00 the day before, and the
    README's per-day query cast it to that day: BigQuery says UTC, and so does `lookout sql`."""
    first = query(db, "SELECT epoch(min(window_start))::BIGINT FROM window_metrics_merged")[0][0]
    utc = datetime.fromtimestamp(first, tz=UTC)
    asked = (
        "SELECT min(window_start) AS first, CAST(min(window_start) AS DATE) AS day "
        "FROM window_metrics_merged"
    )
    result = lookout(
        "sql", "--format", "csv", asked, cwd=db.parent, env={"TZ": "America/Los_Angeles"}
    )
    assert result.returncode == 0, result.describe()
    [header, row] = list(csv.reader(io.StringIO(result.stdout)))
    assert header == ["first", "day"]
    assert row[0] == utc.isoformat()
    assert row[1] == utc.strftime("%Y-%m-%d")


@pytest.mark.parametrize(
    ("sql", "suggests"),
    [
        ("SELECT * FROM window_metric_merged", 'Did you mean "window_metrics_merged"?'),
        ("SELECT * FROM window_metric", 'Did you mean "window_metrics"?'),
        ("SELECT blcok_rate FROM model_windows", 'Candidate bindings: "block_rate"'),
    ],
)
def test_a_typo_gets_duckdbs_suggestion_and_no_talk_of_a_wal(
    db: Path, sql: str, suggests: str
) -> None:
    """The one-line error dropped DuckDB's "Did you mean" and, for a missing table, asked
    about a `.wal` copy on a finished file that never had one."""
    result = lookout("sql", "--db", db, sql, cwd=db.parent)
    assert_no_traceback(result)
    assert result.returncode == 1, result.describe()
    assert suggests in result.stderr and ".wal" not in result.stderr, result.stderr
    assert len(result.stderr.splitlines()) == 1


def test_a_file_lookout_did_not_write_is_named_as_such(tmp_path: Path) -> None:
    import duckdb

    (tmp_path / "logs.ndjson").write_text('{"model": "m"}\n')
    result = lookout("sql", "--db", "logs.ndjson", "SELECT 1", cwd=tmp_path)
    assert_no_traceback(result)
    assert result.returncode == 2, result.describe()
    assert result.stderr.strip() == (
        "lookout: sql: logs.ndjson is not a DuckDB database file; expected a DuckDB file "
        "lookout wrote"
    )

    other = tmp_path / "other.duckdb"
    duckdb.connect(str(other)).execute("CREATE TABLE t (a INTEGER)").close()
    result = lookout("sql", "--db", other, "SELECT * FROM alerts", cwd=tmp_path)
    assert_no_traceback(result)
    assert result.returncode == 1, result.describe()
    assert "holds none of Lookout's tables" in result.stderr and ".wal" not in result.stderr
    # DuckDB's "did you mean" named its own catalogue there (pg_tablespace): only misleading
    assert "Did you mean" not in result.stderr, result.describe()


@pytest.mark.parametrize("table", ["nosuch", "main.nosuch"])
def test_a_table_nothing_resembles_names_the_files_tables_not_duckdbs_catalogue(
    db: Path, table: str
) -> None:
    """`SELECT * FROM nosuch` said `Did you mean "pg_sequences"?` (for `main.nosuch`,
    "sqlite_schema"): a DuckDB catalogue table, which holds nothing of the analyst's."""
    result = lookout("sql", "--db", db, f"SELECT * FROM {table}", cwd=db.parent)
    assert_no_traceback(result)
    assert result.returncode == 1, result.describe()
    [line] = result.stderr.splitlines()
    said = "lookout: sql: Catalog Error: Table with name nosuch does not exist! (tables here: "
    assert line.startswith(said) and line.endswith(")"), line
    assert "Did you mean" not in line and "pg_" not in line, line
    named = line.removeprefix(said).removesuffix(")").split(", ")
    assert named[:2] == ["window_metrics_merged", "model_windows"], line  # the views first
    tables = query(db, "SELECT table_name FROM information_schema.tables")
    assert sorted(named) == sorted(name for (name,) in tables), line


def test_a_table_missing_from_a_file_lookout_did_not_write_names_its_tables(
    tmp_path: Path,
) -> None:
    import duckdb

    other = tmp_path / "other.duckdb"
    duckdb.connect(str(other)).execute("CREATE TABLE sales (a INTEGER)").close()
    result = lookout("sql", "--db", other, "SELECT * FROM nosuch", cwd=tmp_path)
    assert_no_traceback(result)
    assert result.returncode == 1, result.describe()
    assert result.stderr.splitlines() == [
        "lookout: sql: Catalog Error: Table with name nosuch does not exist! (tables here: sales)"
    ], result.describe()


def test_large_numbers_keep_their_digits_and_null_is_not_blank(db: Path) -> None:
    """A latency total of 130,009,683.2 ms printed as 1.3001e+08 on screen; NULL and an empty
    tenant both printed as nothing."""
    sql = "SELECT 130009683.2::DOUBLE AS total, 0.0208333333 AS rate, NULL AS tenant, '' AS e"
    result = lookout("sql", "--db", db, sql, cwd=db.parent)
    assert result.returncode == 0, result.describe()
    assert "130009683.2" in result.stdout and "e+08" not in result.stdout, result.stdout
    assert "0.0208333" in result.stdout and "NULL" in result.stdout
    as_csv = lookout("sql", "--db", db, "--format", "csv", sql, cwd=db.parent)
    assert as_csv.stdout.splitlines()[1] == "130009683.2,0.0208333333,,"


def test_lists_and_json_columns_read_as_json(db: Path) -> None:
    """CSV printed a histogram as Python's repr ("[{'bucket': 327, …"), and JSON lines held
    `details` as a string inside a string."""
    histogram = "SELECT latency_histogram FROM window_metrics WHERE calls > 0 LIMIT 1"
    as_csv = lookout("sql", "--db", db, "--format", "csv", histogram, cwd=db.parent)
    assert as_csv.returncode == 0, as_csv.describe()
    cell = list(csv.reader(io.StringIO(as_csv.stdout)))[1][0]
    assert json.loads(cell) == query(db, histogram)[0][0]
    details = "SELECT details FROM detections WHERE detector = 'safety' LIMIT 1"
    as_json = lookout("sql", "--db", db, "--format", "json", details, cwd=db.parent)
    record = json.loads(as_json.stdout)
    assert isinstance(record["details"], dict) and "block_rate" in record["details"]


def test_a_query_file_that_starts_with_a_comment_is_read_from_stdin(db: Path) -> None:
    """`lookout sql "$(cat q.sql)"` with a leading `-- comment` was taken for an option."""
    text = b"-- calls per model\nSELECT model, sum(calls) AS calls FROM model_windows\n"
    text += b"GROUP BY model ORDER BY model"
    result = lookout("sql", "--db", db, "--format", "csv", "-", cwd=db.parent, stdin=text)
    assert result.returncode == 0, result.describe()
    expected = query(db, text.decode())
    assert list(csv.reader(io.StringIO(result.stdout)))[1:] == [[m, str(n)] for m, n in expected]


def test_json_text_orjson_cannot_hold_exactly_stays_text(db: Path) -> None:
    """A review found `'1e400'::JSON` failing the whole query once JSON columns were parsed,
    and CSV losing digits of a large integer inside one."""
    sql = "SELECT '1e400'::JSON AS big, '{\"a\": 123456789012345678901234567890}'::JSON AS huge"
    as_json = lookout("sql", "--db", db, "--format", "json", sql, cwd=db.parent)
    assert as_json.returncode == 0, as_json.describe()
    assert json.loads(as_json.stdout)["big"] == "1e400"
    as_csv = lookout("sql", "--db", db, "--format", "csv", sql, cwd=db.parent)
    assert "123456789012345678901234567890" in as_csv.stdout, as_csv.describe()


def test_whole_token_sums_are_whole_in_csv(db: Path) -> None:
    """The views' token sums are DOUBLE: CSV wrote `243384.0` where a spreadsheet or `cut`
    expects the whole number."""
    sql = "SELECT 243384.0::DOUBLE AS tokens, 0.5::DOUBLE AS share"
    as_csv = lookout("sql", "--db", db, "--format", "csv", sql, cwd=db.parent)
    assert as_csv.returncode == 0, as_csv.describe()
    assert as_csv.stdout.splitlines() == ["tokens,share", "243384,0.5"]
