"""A DuckDB file that cannot be opened is one readable line and a non-zero exit, for every
command that writes it, in the words `lookout sql` already uses: a second `lookout replay` on a
file another process holds, a `--db` in a folder that does not exist, a sink that is not a
DuckDB file. DuckDB's own message (its exception class, a PID) is not what a user should see.
"""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.conftest import Result, assert_no_traceback, lookout

CONFIG = "sink:\n  kind: duckdb\n  path: {db}\n"


@pytest.fixture
def logs(tmp_path: Path) -> Path:
    made = lookout(
        "simulate", "--out", "logs.ndjson", "--hours", "0.02", "--seed", "3", cwd=tmp_path
    )
    assert made.returncode == 0, made.describe()
    return tmp_path / "logs.ndjson"


@pytest.fixture
def held(tmp_path: Path) -> Iterator[Path]:
    """A DuckDB file another process has open for writing, as a running worker has it."""
    db = tmp_path / "held.duckdb"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import duckdb, sys; c = duckdb.connect(sys.argv[1]); print('held', flush=True); "
            "sys.stdin.read()",
            str(db),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == b"held\n"
        yield db
    finally:
        assert holder.stdin is not None and holder.stdout is not None
        holder.stdin.close()
        holder.wait(timeout=30)
        holder.stdout.close()


def assert_one_line(result_stderr: str, says: str) -> None:
    lines = result_stderr.strip().splitlines()
    assert len(lines) == 1 and says in lines[0], result_stderr
    assert "IOException" not in lines[0] and "(set LOOKOUT_DEBUG=1" not in lines[0], lines[0]


def test_replay_on_a_held_file_says_who_holds_it(logs: Path, held: Path) -> None:
    result = lookout("replay", logs, "--db", held, cwd=logs.parent)
    assert_no_traceback(result)
    assert result.returncode == 1, result.describe()
    assert_one_line(result.stderr, f"lookout: {held} is held by a process writing it")


def test_replay_with_a_db_in_a_missing_folder_is_a_usage_error_like_report(logs: Path) -> None:
    """Exit 2 and the words of --report / --alerts-out: exit 1 means a bad record."""
    db = logs.parent / "no-such-folder" / "x.duckdb"
    result = lookout("replay", logs, "--db", db, cwd=logs.parent)
    assert_no_traceback(result)
    assert result.returncode == 2, result.describe()
    assert_one_line(result.stderr, f"lookout: replay: --db {db}: no such directory {db.parent}")


def test_replay_into_a_file_that_is_not_duckdb_is_one_line(logs: Path) -> None:
    db = logs.parent / "notes.duckdb"
    db.write_text("my notes\n")
    result = lookout("replay", logs, "--db", db, cwd=logs.parent)
    assert_no_traceback(result)
    assert result.returncode == 1, result.describe()
    assert_one_line(result.stderr, "is not a DuckDB database file")
    assert db.read_text() == "my notes\n", "the file was changed"


def _someone_elses_database(path: Path, tables: str) -> list[tuple[str, ...]]:
    """A DuckDB file of the user's own (analytics tables), and what it holds."""
    import duckdb

    con = duckdb.connect(str(path))
    con.execute(tables)
    con.close()
    return _catalog(path)


def _catalog(path: Path) -> list[tuple[str, ...]]:
    import duckdb

    con = duckdb.connect(str(path), read_only=True)
    try:
        rows = con.execute(
            "SELECT table_name, column_name, data_type FROM duckdb_columns() "
            "WHERE schema_name = 'main' ORDER BY ALL"
        ).fetchall()
        counts = [
            (table, str(con.execute(f"SELECT count(*) FROM {table}").fetchone()))
            for table in sorted({r[0] for r in rows})
        ]
    finally:
        con.close()
    return [*rows, *counts]


@pytest.mark.parametrize(
    "tables",
    [
        "CREATE TABLE revenue (day DATE, usd DOUBLE); INSERT INTO revenue VALUES ('2026-01-01', 5)",
        # a name Lookout uses too: some tables were added, then the write failed on the clash
        "CREATE TABLE alerts (id INTEGER, note VARCHAR); INSERT INTO alerts VALUES (1, 'mine')",
    ],
    ids=["own-tables", "a-table-named-alerts"],
)
def test_replay_and_run_leave_someone_elses_duckdb_file_as_it_was(logs: Path, tables: str) -> None:
    """A newcomer's `--db analytics.duckdb` (a file of their own) exited 0 and added Lookout's
    twelve tables and views to it; with a table named `alerts` it added eleven and then failed
    with a TypeError. `report` and `sql` refused the same file; now `replay` and `run` do."""
    db = logs.parent / "analytics.duckdb"
    before = _someone_elses_database(db, tables)
    replayed = lookout("replay", logs, "--db", db, cwd=logs.parent)
    assert_no_traceback(replayed)
    assert replayed.returncode == 1, replayed.describe()
    assert_one_line(replayed.stderr, f"{db} is a DuckDB database that is not Lookout's (it holds")
    _, ran = run_logs(logs, db)
    assert ran.returncode == 1, ran.describe()
    assert "that is not Lookout's" in ran.stderr, ran.describe()
    assert _catalog(db) == before, "the file was changed"
    # a Lookout file, and an empty DuckDB file, are written as before
    fresh = logs.parent / "empty.duckdb"
    _someone_elses_database(fresh, "SELECT 1")
    assert lookout("replay", logs, "--db", fresh, cwd=logs.parent).returncode == 0
    assert lookout("replay", logs, "--db", fresh, cwd=logs.parent).returncode == 0


def test_a_second_run_on_a_busy_metrics_port_names_the_port_and_the_setting(
    logs: Path, tmp_path: Path
) -> None:
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    config = tmp_path / "busy.yaml"
    config.write_text(
        f"source: {{kind: file, path: {logs}}}\nsink: {{kind: duckdb, path: {tmp_path}/b.duckdb}}"
        f"\nmetrics: {{host: 127.0.0.1, port: {port}}}\n"
    )
    try:
        result = lookout("run", "--config", config, cwd=tmp_path)
    finally:
        taken.close()
    assert_no_traceback(result)
    assert result.returncode == 1, result.describe()
    said = [line for line in result.stderr.splitlines() if "metrics" in line]
    assert said and f"127.0.0.1:{port}" in said[-1] and "metrics.port" in said[-1], result.stderr
    assert "OSError" not in result.stderr


def test_run_on_a_held_file_says_who_holds_it(logs: Path, held: Path) -> None:
    config = logs.parent / "lookout.yaml"
    config.write_text(f"source:\n  kind: file\n  path: {logs}\n" + CONFIG.format(db=held))
    result = lookout("run", "--config", config, cwd=logs.parent)
    assert_no_traceback(result)
    assert result.returncode == 1, result.describe()
    assert f"lookout: {held} is held by a process writing it" in result.stderr, result.describe()
    assert "IOException" not in result.stderr, result.describe()


def test_baseline_accept_on_a_held_file_says_who_holds_it(held: Path, tmp_path: Path) -> None:
    config = tmp_path / "lookout.yaml"
    config.write_text(CONFIG.format(db=held))
    result = lookout(
        "baseline",
        "accept",
        "--model",
        "m",
        "--detector",
        "safety",
        "--config",
        config,
        cwd=tmp_path,
    )
    assert_no_traceback(result)
    assert result.returncode == 1, result.describe()
    assert_one_line(result.stderr, f"lookout: {held} is held by a process writing it")


def run_logs(logs: Path, db: Path, extra: str = "") -> tuple[Path, Result]:
    """`lookout run` of the file source `logs` into `db`, with `extra` lines of config."""
    config = logs.parent / "lookout.yaml"
    config.write_text(f"source:\n  kind: file\n  path: {logs}\n" + CONFIG.format(db=db) + extra)
    result = lookout("run", "--config", config, cwd=logs.parent)
    assert_no_traceback(result)
    return config, result


def test_run_with_a_sink_or_alerts_out_in_a_missing_folder_refuses_as_config_check_does(
    logs: Path,
) -> None:
    """`run` printed DuckDB's `IO Error: Cannot open file ...: No such file or directory` for
    the sink, and created a missing alerts_out folder behind the operator's back, where
    `config check` refused both."""
    missing = logs.parent / "no" / "such" / "x.duckdb"
    alerts = logs.parent / "typo" / "alerts.jsonl"
    config, result = run_logs(logs, missing, f"alerts_out: {alerts}\n")
    assert result.returncode == 2, result.describe()
    assert result.stderr.splitlines() == [
        f"lookout run: {config}: sink.path {missing}: no such directory {missing.parent}",
        f"lookout run: {config}: alerts_out {alerts}: no such directory {alerts.parent}",
    ], result.describe()
    assert not alerts.parent.exists()


def test_a_sink_out_of_its_memory_limit_is_one_line_naming_the_setting(logs: Path) -> None:
    """`sink.memory_limit: 1KB` passes the check; DuckDB then ran out of memory and its 8-line
    message advised `SET threads=X`, which an operator cannot do."""
    _, result = run_logs(logs, logs.parent / "tiny.duckdb", "  memory_limit: 1KB\n")
    assert result.returncode == 1, result.describe()
    (line,) = result.stderr.strip().splitlines()
    assert "Out of Memory" in line and "raise sink.memory_limit" in line, line
    assert "SET threads" not in line


def test_run_is_not_refused_over_report_which_only_replay_writes(logs: Path) -> None:
    """A review found `run` refusing to start over `report:` in a missing folder: a key only
    `replay` writes."""
    nowhere = logs.parent / "nowhere" / "r.html"
    extra = f"report: {nowhere}\nmetrics: {{enabled: false}}\n"
    _, result = run_logs(logs, logs.parent / "ok.duckdb", extra)
    assert result.returncode == 0, result.describe()
