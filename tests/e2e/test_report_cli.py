"""`lookout report`: the HTML report of a DuckDB file without replaying its logs again (a
newcomer found the only way to a report was to replay the whole file with `--report`)."""

from __future__ import annotations

import re
from pathlib import Path

from tests.e2e.conftest import REPLAY_TIMEOUT, lookout

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
