"""Two options naming one file, and a demo pointed at a file it did not write: each is refused
in one line before anything is written. An operator's trial found `report --out` replacing its
own `--db` with HTML, `replay --dead-letter` appending to the file it read, and `demo --db`
deleting whatever it named (a log file, a worker's database) before checking anything."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from tests.e2e.conftest import Result, assert_no_traceback, lookout, total_calls

#: a day no demo simulates (the demo starts on 2026-01-05): a worker's own traffic
REAL_DAY = "2026-11-30T10:0{minute}:00Z"


def native_lines(count: int) -> bytes:
    return b"".join(
        orjson.dumps(
            {
                "request_id": f"r{i}",
                "model": "gemini-2.0-flash",
                "timestamp": REAL_DAY.format(minute=i % 5),
                "latency_ms": 100 + i,
                "output_tokens": 50,
            }
        )
        + b"\n"
        for i in range(count)
    )


@pytest.fixture
def worker_db(tmp_path: Path) -> Path:
    """A Lookout database holding a worker's windows (not a demo's)."""
    (tmp_path / "logs.ndjson").write_bytes(native_lines(40))
    made = lookout("replay", "logs.ndjson", "--db", "prod.duckdb", cwd=tmp_path)
    assert made.returncode == 0, made.describe()
    return tmp_path / "prod.duckdb"


def refused(result: Result, says: str) -> None:
    assert_no_traceback(result)
    assert result.returncode == 2, result.describe()
    assert says in result.stderr and len(result.stderr.splitlines()) == 1, result.stderr


def test_report_refuses_to_write_over_its_database(worker_db: Path) -> None:
    before = worker_db.read_bytes()
    for out in ("prod.duckdb", "./prod.duckdb"):
        result = lookout("report", "--db", "prod.duckdb", "--out", out, cwd=worker_db.parent)
        refused(result, "is the same file as --db")
    assert worker_db.read_bytes() == before


def test_replay_refuses_a_report_on_its_database_and_a_dead_letter_file_on_its_input(
    worker_db: Path,
) -> None:
    where = worker_db.parent
    result = lookout("replay", "logs.ndjson", "--db", "prod.duckdb", "--report", "prod.duckdb",
                     cwd=where)  # fmt: skip
    refused(result, "--report prod.duckdb is the same file as --db")
    assert total_calls(worker_db) == 40
    before = (where / "logs.ndjson").read_bytes()
    result = lookout("replay", "logs.ndjson", "--db", "b.duckdb", "--dead-letter", "logs.ndjson",
                     cwd=where)  # fmt: skip
    refused(result, "--dead-letter logs.ndjson is the same file as the input")
    assert (where / "logs.ndjson").read_bytes() == before


@pytest.mark.parametrize("where", ["--report", "configuration"])
def test_replay_into_bigquery_with_a_report_is_refused_before_any_record(
    tmp_path: Path, where: str
) -> None:
    """A report is built from the DuckDB file a replay writes. Into BigQuery, `--report` was
    found out only after every record had landed (a trial's 5,630 records and 90 detections),
    in a TypeError's words with exit 1 and no summary. No BigQuery is reachable here: the
    refusal must come before the sink is opened."""
    (tmp_path / "logs.ndjson").write_bytes(native_lines(5))
    config = tmp_path / "bq.yaml"
    config.write_text(
        "sink:\n  kind: bigquery\n  project: my-project\n  dataset: llm\n"
        + ("report: r.html\n" if where == "configuration" else "")
    )
    extra = ("--report", "r.html") if where == "--report" else ()
    result = lookout("replay", "logs.ndjson", "--config", config, *extra, cwd=tmp_path)
    refused(result, "is built from the DuckDB file the replay writes, and this configuration "
            "writes to bigquery (sink.kind)")  # fmt: skip
    assert not (tmp_path / "r.html").exists()


def test_demo_replaces_no_file_it_did_not_write(worker_db: Path) -> None:
    where = worker_db.parent
    logs = (where / "logs.ndjson").read_bytes()
    result = lookout("demo", "--db", "logs.ndjson", cwd=where)
    refused(result, "demo: --db logs.ndjson exists and is not a demo's file")
    assert (where / "logs.ndjson").read_bytes() == logs
    before = worker_db.read_bytes()
    result = lookout("demo", "--db", "prod.duckdb", cwd=where)
    refused(result, "demo: --db prod.duckdb holds windows written by ")
    assert "not by a demo" in result.stderr
    assert worker_db.read_bytes() == before and total_calls(worker_db) == 40


def test_demo_replaces_no_replayed_simulation_but_does_replace_its_own_file(
    tmp_path: Path,
) -> None:
    """`lookout simulate` starts on the demo's day, so a replayed simulation looked like a demo
    by its windows' times and was replaced (a review found it); the demo's own file is marked
    by the writer its windows were written under."""
    from worker.cli.demo import DEMO_WRITER, refuse_to_replace

    made = lookout("simulate", "--out", "sim.ndjson", "--hours", "0.05", "--rate", "30",
                   cwd=tmp_path)  # fmt: skip
    assert made.returncode == 0, made.describe()
    replayed = lookout("replay", "sim.ndjson", "--db", "sim.duckdb", cwd=tmp_path)
    assert replayed.returncode == 0, replayed.describe()
    result = lookout("demo", "--db", "sim.duckdb", cwd=tmp_path)
    refused(result, "demo: --db sim.duckdb holds windows written by ")
    marked = lookout(
        "replay", "sim.ndjson", "--db", "own.duckdb", cwd=tmp_path,
        env={"LOOKOUT_ENGINE__WRITER_ID": DEMO_WRITER},
    )  # fmt: skip
    assert marked.returncode == 0, marked.describe()
    refuse_to_replace(tmp_path / "own.duckdb")  # no exit: the demo may replace it


def test_demo_hours_too_short_for_its_incidents_are_refused_up_front(tmp_path: Path) -> None:
    """`--hours 1` passed the option's check, then failed on a simulation error after the
    file had been deleted; at 2 hours the topic shift never resolved."""
    result = lookout("demo", "--hours", "2", cwd=tmp_path)
    assert_no_traceback(result)
    assert result.returncode == 2 and "greater than or equal to 2.5" in result.stderr
    assert not (tmp_path / "lookout-demo.duckdb").exists()


def test_the_already_counted_hint_for_bigquery_does_not_point_at_duckdb() -> None:
    """Replaying into BigQuery again said "use another --db": `--db` switches the sink to a
    DuckDB file, and a trial's next replay then silently wrote there instead of BigQuery."""
    from schemas.config import LookoutConfig
    from worker.cli.commands import _apart_hint

    bigquery = LookoutConfig.model_validate({"sink": {"kind": "bigquery", "project": "p"}})
    assert "--db" not in _apart_hint(bigquery) and "sink.dataset" in _apart_hint(bigquery)
    assert "--db" in _apart_hint(LookoutConfig())
