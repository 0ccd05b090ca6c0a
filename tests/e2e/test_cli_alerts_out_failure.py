"""`lookout replay` exits 1 naming what its outputs lack when one cannot be written (a full
disk). Alert changes that never reached `--alerts-out FILE`: the engine retries them after its
next checkpoint and a replay ends without one, so they were lost from the file while the run
said "will retry" and exited 0. A `--report` file: the run ended in `lookout: OSError`."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.e2e.conftest import REPLAY_TIMEOUT, assert_no_traceback, lookout, query

pytestmark = pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")


@pytest.fixture
def stream(small_incident_stream: Path) -> Path:
    return small_incident_stream


def test_alerts_that_never_reached_the_file_fail_the_replay(stream: Path, tmp_path: Path) -> None:
    result = lookout(
        "replay", stream, "--db", "inc.duckdb", "--alerts-out", "/dev/full",
        cwd=tmp_path, timeout=REPLAY_TIMEOUT,
    )  # fmt: skip
    assert_no_traceback(result)
    assert result.returncode == 1, result.describe()
    ((stored,),) = query(tmp_path / "inc.duckdb", "SELECT count(*) FROM alerts")
    assert stored > 0
    assert result.stderr.splitlines()[-1] == (
        f"{stored} alert change(s) did not reach /dev/full (see the errors above); they are in "
        "the alerts table of inc.duckdb"
    ), result.describe()


def test_alerts_that_reached_the_file_exit_0(stream: Path, tmp_path: Path) -> None:
    result = lookout(
        "replay", stream, "--db", "inc.duckdb", "--alerts-out", "alerts.jsonl",
        cwd=tmp_path, timeout=REPLAY_TIMEOUT,
    )  # fmt: skip
    assert result.returncode == 0, result.describe()
    ((stored,),) = query(tmp_path / "inc.duckdb", "SELECT count(*) FROM alerts")
    assert len((tmp_path / "alerts.jsonl").read_text().splitlines()) == stored > 0
    assert "did not reach" not in result.stderr


def test_a_report_that_cannot_be_written_is_named_after_the_summary(
    stream: Path, tmp_path: Path
) -> None:
    """`--report` on a full disk: the records are stored and summarised, and the last line
    names the report file (it was `lookout: OSError: …`, with no summary)."""
    result = lookout(
        "replay", stream, "--db", "inc.duckdb", "--report", "/dev/full",
        cwd=tmp_path, timeout=REPLAY_TIMEOUT,
    )  # fmt: skip
    assert_no_traceback(result)
    assert result.returncode == 1, result.describe()
    lines = result.stderr.splitlines()
    assert lines[-1] == "cannot write the report file /dev/full: No space left on device", lines
    assert any(line.startswith("replayed ") for line in lines), result.describe()
    ((calls,),) = query(tmp_path / "inc.duckdb", "SELECT sum(calls) FROM window_metrics_merged")
    assert calls == len(stream.read_bytes().splitlines())
