"""`lookout report`: the HTML report of a DuckDB file without replaying its logs again (a
newcomer found the only way to a report was to replay the whole file with `--report`)."""

from __future__ import annotations

import re
from pathlib import Path

from tests.e2e.conftest import REPLAY_TIMEOUT, lookout
from worker.sink import Checkpoint, PartialRow
from worker.sinks.duckdb_sink import DuckDBSink

#: plotly names each figure's element with a fresh UUID
_FIGURE_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def test_report_of_a_file_is_the_report_its_replay_wrote(tmp_path: Path) -> None:
    stream = tmp_path / "s.ndjson"
    made = lookout(
        "simulate", "--out", stream, "--hours", "1", "--rate", "60",
        "--incident", "safety_spike@40m", cwd=tmp_path, timeout=REPLAY_TIMEOUT,
    )  # fmt: skip
    assert made.returncode == 0, made.describe()
    replayed = lookout(
        "replay", stream, "--db", "r.duckdb", "--report", "replay.html",
        cwd=tmp_path, timeout=REPLAY_TIMEOUT,
    )  # fmt: skip
    assert replayed.returncode == 0, replayed.describe()
    title = "Lookout replay of " + str(stream)
    done = lookout(
        "report", "--db", "r.duckdb", "--out", "later.html", "--title", title,
        cwd=tmp_path, timeout=REPLAY_TIMEOUT,
    )  # fmt: skip
    assert done.returncode == 0, done.describe()
    assert done.stdout == "wrote later.html\n"
    written, later = ((tmp_path / n).read_text() for n in ("replay.html", "later.html"))
    assert "No alerts." not in later and "safety" in later
    assert _FIGURE_ID.sub("id", later) == _FIGURE_ID.sub("id", written)


def test_report_refuses_what_it_cannot_read(tmp_path: Path) -> None:
    missing = lookout("report", "--db", "none.duckdb", "--out", "r.html", cwd=tmp_path)
    assert (missing.returncode, missing.stderr.strip()) == (
        2,
        "lookout: report: no such DuckDB file: none.duckdb (lookout replay or lookout demo "
        "writes one)",
    )
    (tmp_path / "notes.duckdb").write_bytes(b"not a database")
    foreign = lookout("report", "--db", "notes.duckdb", "--out", "r.html", cwd=tmp_path)
    assert foreign.returncode == 2, foreign.describe()
    assert foreign.stderr.startswith("lookout: report: ")
    assert not (tmp_path / "r.html").exists()


def test_help_explains_since_until_and_model(tmp_path: Path) -> None:
    shown = lookout("report", "--help", cwd=tmp_path)
    assert shown.returncode == 0, shown.describe()
    text = " ".join(shown.stdout.split())
    assert "--since <str> Only windows that start at or after this UTC date or time" in text
    assert "--until <str> Only windows that start before this UTC date or time" in text
    assert "--model <list[str]> Only this model (repeat the option for several)." in text


def test_a_bad_since_until_or_model_is_one_line_and_exit_2(tmp_path: Path) -> None:
    """A ten-day file made a 17.9 MB report with no way to ask for less; the options that
    limit it refuse what they cannot use before reading anything, and write no file."""
    sink = DuckDBSink(tmp_path / "r.duckdb")
    sink.write_checkpoint(Checkpoint("w1", 0, partials=[PartialRow("text-bison", 0, 60, 1, 0, {})]))
    sink.close()
    cases = {
        ("--since", "yesterday"): "lookout: report: --since 'yesterday' is not a date or time; "
        "give e.g. 2026-01-06, 2026-01-06T12:00 or 2026-01-06T12:00:00Z (UTC)",
        ("--since", "2026-01-07", "--until", "2026-01-06"): "lookout: report: --since "
        "2026-01-07 is not before --until 2026-01-06: no window is in that range",
        ("--model", "gpt-5"): "lookout: report: --model gpt-5: no such model in this file (it "
        "has: text-bison)",
    }
    for args, line in cases.items():
        done = lookout("report", "--db", "r.duckdb", "--out", "r.html", *args, cwd=tmp_path)
        assert (done.returncode, done.stderr) == (2, line + "\n"), done.describe()
        assert not (tmp_path / "r.html").exists()
    done = lookout(
        "report", "--db", "r.duckdb", "--out", "r.html", "--since", "1970-01-01",
        "--until", "1970-01-02", "--model", "text-bison", cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.describe()
    assert (
        "Only windows that start from 1970-01-01 00:00 UTC to before 1970-01-02 00:00 UTC, of "
        "model text-bison." in (tmp_path / "r.html").read_text()
    )


def test_a_range_that_holds_no_window_says_so_and_what_the_file_holds(tmp_path: Path) -> None:
    """A newcomer's report of a day the file does not cover printed only `wrote r.html` and
    exited 0: an empty report that read like a quiet day. It still writes the file (a range
    may be empty on purpose), and says in one line why it is empty."""
    sink = DuckDBSink(tmp_path / "r.duckdb")
    sink.write_checkpoint(
        Checkpoint("w1", 0, partials=[PartialRow("text-bison", 120, 180, 1, 0, {})])
    )
    sink.close()
    done = lookout(
        "report", "--db", "r.duckdb", "--out", "r.html", "--since", "2026-01-06",
        "--model", "text-bison", cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.describe()
    assert done.stderr == (
        "lookout: report: no windows that start from 2026-01-06 00:00 UTC, of model text-bison: "
        "the file holds windows from 1970-01-01 00:02 UTC to 1970-01-01 00:02 UTC; the report "
        "is empty\n"
    )
    assert done.stdout == "wrote r.html\n" and (tmp_path / "r.html").exists()
