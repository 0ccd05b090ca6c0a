"""`lookout sql` is read-only and prints every result it runs: a query cannot write a file
(`COPY alerts TO 'out.csv'` wrote one), an empty query is one line (it was an AttributeError),
and several statements are refused rather than all but the last silently dropped."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.e2e.conftest import Result, assert_no_traceback, lookout
from worker.sinks.duckdb_sink import DuckDBSink


@pytest.fixture
def db(tmp_path: Path) -> Path:
    """A Lookout DuckDB file as a new sink leaves it: every table and view, no rows."""
    path = tmp_path / "x.duckdb"
    DuckDBSink(path).close()
    return path


def one_line(result: Result, status: int, starts: str) -> str:
    """The single stderr line of a refused query, after checking its exit status."""
    assert_no_traceback(result)
    assert result.returncode == status, result.describe()
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(starts), result.describe()
    assert result.stdout == "", result.describe()
    return lines[0]


@pytest.mark.parametrize("query", ["", ";", "   ", "/* a comment only */"])
def test_an_empty_query_says_no_statement_was_given(db: Path, query: str) -> None:
    result = lookout("sql", query, "--db", db, cwd=db.parent)
    line = one_line(result, 2, "lookout: sql: no SQL statement given")
    assert "AttributeError" not in line


def test_several_statements_are_refused_not_all_but_the_last_dropped(db: Path) -> None:
    result = lookout("sql", "SELECT 1 AS one; SELECT 2 AS two", "--db", db, cwd=db.parent)
    line = one_line(result, 2, "lookout: sql: 2 statements given")
    assert "one at a time" in line


def test_one_statement_with_its_semicolon_still_runs(db: Path) -> None:
    result = lookout("sql", "SELECT 41 + 1 AS answer;", "--db", db, cwd=db.parent)
    assert result.returncode == 0, result.describe()
    assert "42" in result.stdout and "1 row(s)" in result.stdout


@pytest.mark.parametrize(
    ("query", "written"),
    [
        ("COPY alerts TO 'out.csv'", "out.csv"),
        ("COPY (SELECT * FROM window_metrics_merged) TO 'merged.parquet'", "merged.parquet"),
        ("EXPORT DATABASE 'exported'", "exported"),
        ("ATTACH 'other.duckdb' AS other", "other.duckdb"),
    ],
)
def test_a_query_cannot_write_a_file(db: Path, query: str, written: str) -> None:
    result = lookout("sql", query, "--db", db, cwd=db.parent)
    line = one_line(result, 1, "lookout: sql: ")
    assert "--format csv" in line, line
    assert not (db.parent / written).exists(), f"{query} wrote {written}"


def test_reading_another_file_is_refused(db: Path) -> None:
    (db.parent / "secret.csv").write_text("a\n1\n")
    result = lookout("sql", "SELECT * FROM read_csv('secret.csv')", "--db", db, cwd=db.parent)
    one_line(result, 1, "lookout: sql: ")


@pytest.mark.parametrize(
    "table", ["window_metrics_merged", "model_daily", "alerts", "detections", "window_metrics"]
)
def test_the_files_own_tables_and_views_are_still_read(db: Path, table: str) -> None:
    result = lookout("sql", f"SELECT * FROM {table}", "--db", db, "--format", "csv", cwd=db.parent)
    assert result.returncode == 0, result.describe()
    assert len(result.stdout.splitlines()) == 1  # the header: a new file has no rows


def test_help_says_one_statement_and_no_other_file(tmp_path: Path) -> None:
    result = lookout("sql", "--help", cwd=tmp_path)
    assert result.returncode == 0, result.describe()
    text = re.sub(r"\s+", " ", result.stdout)
    assert "One statement per call (several are refused" in text, result.stdout
    assert "COPY ... TO" in text and "--format csv > out.csv" in text, result.stdout
