"""`lookout report` only reads the DuckDB file. It opened it as the sink: a DuckDB file that
was not Lookout's gained all of Lookout's tables and an empty report (exit 0), one with its own
`alerts` table printed a TypeError, and an older Lookout file was migrated in place."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import duckdb
import pytest

from tests.e2e.conftest import REPLAY_TIMEOUT, Result, assert_no_traceback, lookout

#: plotly names each figure's element with a fresh UUID
_FIGURE_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def digest(path: Path) -> str:
    """The file's bytes, hashed, with its .wal's if it has one: "unchanged" means both."""
    wal = path.with_name(path.name + ".wal")
    data = path.read_bytes() + (wal.read_bytes() if wal.exists() else b"")
    return hashlib.sha256(data).hexdigest()


def made(tmp_path: Path, *statements: str) -> Path:
    """A DuckDB file someone else made, with `statements` run in it."""
    path = tmp_path / "f3.duckdb"
    con = duckdb.connect(str(path))
    for statement in statements:
        con.execute(statement)
    con.close()
    return path


def refused(result: Result) -> str:
    assert_no_traceback(result)
    assert result.returncode == 2, result.describe()
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("lookout: report: "), result.describe()
    return lines[0]


def test_a_duckdb_file_without_lookouts_tables_is_named_and_left_unchanged(
    tmp_path: Path,
) -> None:
    db = made(tmp_path, "CREATE TABLE t (a INTEGER)", "INSERT INTO t VALUES (1)")
    before = digest(db)
    result = lookout("report", "--db", db.name, "--out", "f3.html", cwd=tmp_path)
    assert refused(result) == (
        "lookout: report: f3.duckdb is a DuckDB file without Lookout's tables (window_metrics, "
        "detections, alerts, detector_references): not a Lookout sink"
    )
    assert digest(db) == before, "report changed the file"
    assert not (tmp_path / "f3.html").exists()
    assert duckdb.connect(str(db), read_only=True).execute("SHOW TABLES").fetchall() == [("t",)]


def test_a_table_of_lookouts_name_with_other_columns_is_one_line(tmp_path: Path) -> None:
    db = made(
        tmp_path,
        *(f"CREATE TABLE {t} (model VARCHAR)" for t in ("window_metrics", "detections")),
        "CREATE TABLE detector_references (model VARCHAR)",
        "CREATE TABLE alerts (a INTEGER, note VARCHAR)",
    )
    before = digest(db)
    line = refused(lookout("report", "--db", db, "--out", "f3.html", cwd=tmp_path))
    assert "without Lookout's columns" in line and "not a Lookout sink" in line, line
    assert "Exception" not in line and "TypeError" not in line, line
    assert digest(db) == before, "report changed the file"
    assert not (tmp_path / "f3.html").exists()


@pytest.fixture(scope="module")
def replayed(tmp_path_factory: pytest.TempPathFactory, small_incident_stream: Path) -> Path:
    """A Lookout file with an incident in it, written by `lookout replay`."""
    where = tmp_path_factory.mktemp("report")
    done = lookout(
        "replay", small_incident_stream, "--db", "inc.duckdb", cwd=where, timeout=REPLAY_TIMEOUT
    )
    assert done.returncode == 0, done.describe()
    return where / "inc.duckdb"


def report_of(db: Path, out: Path) -> str:
    result = lookout(
        "report", "--db", db, "--out", out, "--title", "T", cwd=db.parent, timeout=REPLAY_TIMEOUT
    )
    assert_no_traceback(result)
    assert result.returncode == 0, result.describe()
    # the file's path is in each open incident's `lookout baseline accept --db …`
    return _FIGURE_ID.sub("id", out.read_text()).replace(str(db), "DB")


def test_a_lookout_file_is_read_and_not_written(replayed: Path, tmp_path: Path) -> None:
    before = digest(replayed)
    html = report_of(replayed, tmp_path / "now.html")
    assert "safety" in html and "No alerts." not in html
    assert digest(replayed) == before, "report changed the file"


def test_a_file_from_an_older_release_reports_the_same_and_is_not_migrated(
    replayed: Path, tmp_path: Path
) -> None:
    """As the sink's migration tests make one: no views, no latency histogram, model version
    or tenant columns, a reference state stored as JSON. The sink would add them; `report`
    reads the file as the sink would see it, without writing."""
    old = tmp_path / "old.duckdb"
    old.write_bytes(replayed.read_bytes())
    with duckdb.connect(str(old)) as con:
        con.execute("DROP VIEW model_daily")
        con.execute("DROP VIEW window_metrics_merged")
        for column in (
            "latency_histogram",
            "latency_bucket_gamma",
            "latency_bucket_min_ms",
            "model_version",
            "tenant",
        ):
            con.execute(f"ALTER TABLE window_metrics DROP COLUMN {column}")
        con.execute("ALTER TABLE detector_references ALTER state SET DATA TYPE VARCHAR USING '{}'")
        con.execute("ALTER TABLE detector_references ALTER state SET DATA TYPE JSON")
    before = digest(old)
    assert report_of(old, tmp_path / "old.html") == report_of(replayed, tmp_path / "new.html")
    assert digest(old) == before, "report migrated the file"
