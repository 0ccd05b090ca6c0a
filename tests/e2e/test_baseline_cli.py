"""`lookout baseline accept` as an on-call engineer runs it between two replays.

A block-rate incident that does not end: the first replay leaves it firing; the engineer
accepts the new level for one model; the next replay (the stream continuing) resolves that
model's incident saying the level was accepted, while the other models' incidents stay open.
"""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import pytest

from tests.e2e.conftest import REPLAY_TIMEOUT, assert_no_traceback, lookout

MODEL = "gpt-4o-mini"
STREAM = ("--rate", "220", "--seed", "5", "--incident", "safety_spike@25m:3h", "--format", "native")


def _alerts(path: Path) -> list[dict[str, object]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _replayed(tmp_path: Path, stream: str, config: Path) -> list[dict[str, object]]:
    """Replay `stream` with `config`; the alert changes it wrote to its alerts file."""
    alerts = tmp_path / f"{Path(stream).stem}-alerts.ndjson"
    replayed = lookout(
        "replay", stream, "--config", config, "--alerts-out", alerts,
        cwd=tmp_path, timeout=REPLAY_TIMEOUT,
    )  # fmt: skip
    assert replayed.returncode == 0, replayed.describe()
    return _alerts(alerts)


def test_accepting_a_sustained_shift_resolves_it_once_and_only_for_that_model(
    tmp_path: Path,
) -> None:
    db = tmp_path / "lookout.duckdb"
    config = tmp_path / "lookout.yaml"
    config.write_text(f"sink:\n  path: {db}\n")
    for name, hours in (("first.ndjson", "0.6"), ("longer.ndjson", "0.9")):
        made = lookout("simulate", "--out", name, "--hours", hours, *STREAM, cwd=tmp_path)
        assert made.returncode == 0, made.describe()

    first_alerts = _replayed(tmp_path, "first.ndjson", config)
    fired = [a for a in first_alerts if a["detector"] == "safety"]
    assert {a["model"] for a in fired if a["status"] == "firing"} >= {MODEL}
    assert not [a for a in fired if a["status"] == "resolved"]

    nothing = lookout(
        "baseline", "accept", "--model", "no-such-model", "--detector", "safety",
        "--config", config, cwd=tmp_path,
    )  # fmt: skip
    assert nothing.returncode == 1 and "no open incident" in nothing.stderr
    assert_no_traceback(nothing)

    accepted = lookout(
        "baseline", "accept", "--model", MODEL, "--detector", "safety", "--config", config,
        "--by", "alice", cwd=tmp_path,
    )  # fmt: skip
    assert accepted.returncode == 0, accepted.describe()
    assert "accepted the new level of gpt-4o-mini / safety" in accepted.stdout
    again = lookout(
        "baseline", "accept", "--model", MODEL, "--detector", "safety", "--config", config,
        cwd=tmp_path,
    )  # fmt: skip
    assert again.returncode == 0 and "already accepted" in again.stdout
    with duckdb.connect(str(db), read_only=True) as con:
        rows = con.execute("SELECT model, detector, accepted_by FROM baseline_accepts").fetchall()
    assert rows == [(MODEL, "safety", "alice")]

    # the report of the file as it is now: the accepted incident is not "still open" with the
    # advice to run the command just run (the analyst's trial found both)
    report = lookout("report", "--db", db, "--out", "r.html", cwd=tmp_path)
    assert report.returncode == 0, report.describe()
    html = (tmp_path / "r.html").read_text()
    assert "1 accepted as the new baseline" in html
    assert html.count("Its level was accepted as the baseline at") == 1
    assert "still open" in html  # the other models' incidents

    safety = [a for a in _replayed(tmp_path, "longer.ndjson", config) if a["detector"] == "safety"]
    mine = [a for a in safety if a["model"] == MODEL]
    assert [a["status"] for a in mine] == ["resolved"], mine
    assert "accepted" in str(mine[0]["summary"]) and "by alice" in str(mine[0]["summary"])
    others = [a for a in safety if a["model"] != MODEL and a["status"] == "resolved"]
    assert not others, "an acceptance for one model closed another model's incident"


def test_an_unknown_detector_is_one_line_naming_the_known_ones(tmp_path: Path) -> None:
    """A typo'd --detector said nothing about the name (or only "no open incident")."""
    result = lookout("baseline", "accept", "--model", MODEL, "--detector", "saftey", cwd=tmp_path)
    assert_no_traceback(result)
    assert result.returncode == 2, result.describe()
    assert result.stderr.splitlines() == [
        "lookout: baseline accept: --detector: unknown detector(s) saftey; known: safety, "
        "latency, tokens, embedding_drift, descriptor_drift"
    ], result.describe()


def test_db_names_the_duckdb_file_as_for_replay_and_sql(tmp_path: Path) -> None:
    """`replay … --db X` then `baseline accept … --db X` said "No such option: --db"."""
    from worker.sinks.duckdb_sink import DuckDBSink

    made = tmp_path / "accept.duckdb"
    DuckDBSink(made, memory_limit="256MB").close()  # a sink with no open incident
    config = tmp_path / "lookout.yaml"
    config.write_text(f"sink:\n  path: {tmp_path / 'elsewhere.duckdb'}\n")
    accept = ("baseline", "accept", "--model", MODEL, "--detector", "safety")

    given = lookout(*accept, "--db", made, "--config", config, cwd=tmp_path)
    assert_no_traceback(given)
    assert given.returncode == 1 and "no open incident" in given.stderr, given.describe()

    missing = lookout(*accept, "--db", "missing.duckdb", cwd=tmp_path)
    assert missing.returncode == 2, missing.describe()
    assert missing.stderr.splitlines() == [
        "lookout: baseline accept: no sink at missing.duckdb (--db); nothing to accept"
    ], missing.describe()

    from_env = lookout(*accept, cwd=tmp_path, env={"LOOKOUT_SINK__PATH": str(made)})
    assert from_env.returncode == 1 and "no open incident" in from_env.stderr, from_env.describe()
    helped = lookout("baseline", "accept", "--help", cwd=tmp_path).stdout
    assert "DuckDB file (default from config)." in helped, helped


def test_a_duckdb_file_that_is_not_lookouts_is_named_and_left_as_it_was(tmp_path: Path) -> None:
    """It said "no open incident", after adding Lookout's tables to the user's file."""
    import duckdb

    theirs = tmp_path / "theirs.duckdb"
    with duckdb.connect(str(theirs)) as con:
        con.execute("CREATE TABLE sales (amount INTEGER)")
    accept = ("baseline", "accept", "--model", MODEL, "--detector", "safety", "--db", theirs)
    result = lookout(*accept, cwd=tmp_path)
    assert_no_traceback(result)
    assert result.returncode == 2, result.describe()
    assert result.stderr.splitlines() == [
        f"lookout: baseline accept: {theirs} is not a Lookout DuckDB file; nothing to accept"
    ], result.describe()
    with duckdb.connect(str(theirs), read_only=True) as con:
        tables = [row[0] for row in con.execute("SHOW TABLES").fetchall()]
    assert tables == ["sales"]


@pytest.mark.parametrize(
    ("given", "says"),
    [
        (
            "notes.txt",
            "notes.txt is not a DuckDB database file; expected a DuckDB file lookout wrote",
        ),
        ("folder", "folder is a directory; expected a DuckDB file"),
        ("empty.duckdb", "empty.duckdb is empty; expected a DuckDB file lookout wrote"),
    ],
)
@pytest.mark.parametrize("command", ["baseline accept", "report", "sql"])
def test_a_file_that_is_not_duckdb_or_a_directory_is_one_line_and_exit_2(
    tmp_path: Path, given: str, says: str, command: str
) -> None:
    """`--db notes.txt` gave the sink's "give a new path or a Lookout DuckDB file" (and exit 1
    for accept), accept's `--db /tmp` and every reader's empty file DuckDB's IO Error (exit
    1): these read the file lookout wrote, and say so alike."""
    (tmp_path / "notes.txt").write_text("hello\n")
    (tmp_path / "folder").mkdir()
    (tmp_path / "empty.duckdb").touch()
    if command == "report":
        args: tuple[str, ...] = ("report", "--db", given, "--out", "r.html")
    elif command == "sql":
        args = ("sql", "--db", given, "SELECT count(*) FROM alerts")
    else:
        args = ("baseline", "accept", "--model", MODEL, "--detector", "safety", "--db", given)
    result = lookout(*args, cwd=tmp_path)
    assert_no_traceback(result)
    assert result.returncode == 2, result.describe()
    assert result.stderr.splitlines() == [f"lookout: {command}: {says}"], result.describe()
    assert (tmp_path / "notes.txt").read_text() == "hello\n"  # left as it was
    assert (tmp_path / "empty.duckdb").stat().st_size == 0
    assert not (tmp_path / "r.html").exists()


def test_accept_after_records_each_acceptance_beside_the_manual_ones(tmp_path: Path) -> None:
    """`alerting.accept_after` accepts a level shift on its own: the alert says so and the
    acceptance is a row of `baseline_accepts`, as a person's would be, so an analyst sees
    every time a baseline moved to an incident's level (it used to leave no row)."""
    db = tmp_path / "lookout.duckdb"
    config = tmp_path / "lookout.yaml"
    config.write_text(f"sink:\n  path: {db}\nalerting:\n  accept_after: PT20M\n")
    made = lookout("simulate", "--out", "s.ndjson", "--hours", "0.9", *STREAM, cwd=tmp_path)
    assert made.returncode == 0, made.describe()
    accepted = {
        (str(a["model"]), str(a["detector"]))
        for a in _replayed(tmp_path, "s.ndjson", config)
        if a["status"] == "resolved"
        and "accepted as the baseline automatically" in str(a["summary"])
    }
    assert (MODEL, "safety") in accepted
    with duckdb.connect(str(db), read_only=True) as con:
        rows = con.execute(
            "SELECT model, detector, accepted_by, accepted_at >= incident_started_at "
            "FROM baseline_accepts"
        ).fetchall()
    assert {(m, d) for m, d, _, _ in rows} == accepted
    assert all(by == "accept_after" and after for _, _, by, after in rows), rows
