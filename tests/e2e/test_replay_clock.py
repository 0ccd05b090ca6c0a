"""`lookout replay` of a stream with one record from a broken clock (2099) and one from 1970:
every window is judged on the same samples as without them, late counts are unchanged, and
both records are named on stderr and kept in `quarantined_records` with their reason."""

from __future__ import annotations

import re
from pathlib import Path

import orjson

from tests.e2e.conftest import REPLAY_TIMEOUT, Result, assert_no_traceback, lookout, query

LATE = re.compile(r"(\d+) late, ")
QUARANTINED = re.compile(r"(\d+) quarantined \(event time\)")


def _with_timestamp(line: bytes, timestamp: str, request_id: str) -> bytes:
    doc = orjson.loads(line)
    doc["timestamp"] = timestamp
    doc["request_id"] = request_id
    return orjson.dumps(doc)


def _replay(tmp_path: Path, name: str, lines: list[bytes]) -> tuple[Result, Path]:
    path = tmp_path / f"{name}.ndjson"
    path.write_bytes(b"\n".join(lines) + b"\n")
    db = tmp_path / f"{name}.duckdb"
    result = lookout("replay", path, "--db", db, cwd=tmp_path, timeout=REPLAY_TIMEOUT)
    assert result.returncode == 0, result.describe()
    assert_no_traceback(result)
    return result, db


def _verdicts(db: Path) -> list[tuple[object, ...]]:
    return query(
        db,
        "SELECT model, detector, window_start, sample_size, verdict FROM detections ORDER BY ALL",
    )


def test_far_future_and_far_past_records_change_no_verdict_and_are_reported(
    tmp_path: Path,
) -> None:
    simulated = tmp_path / "sim.ndjson"
    made = lookout(
        "simulate", "--out", simulated, "--hours", "0.5", "--rate", "60", "--format", "native",
        "--seed", "11", cwd=tmp_path, timeout=REPLAY_TIMEOUT,
    )  # fmt: skip
    assert made.returncode == 0, made.describe()
    lines = simulated.read_bytes().splitlines()
    middle = len(lines) // 2
    poisoned = [
        *lines[:middle],
        _with_timestamp(lines[middle], "2099-01-01T00:00:00Z", "clock-2099"),
        *lines[middle : middle + 50],
        _with_timestamp(lines[middle], "1970-01-02T00:00:00Z", "clock-1970"),
        *lines[middle + 50 :],
    ]

    clean_result, clean_db = _replay(tmp_path, "clean", lines)
    result, db = _replay(tmp_path, "poisoned", poisoned)

    assert _verdicts(db) == _verdicts(clean_db)
    late = LATE.search(result.stderr)
    clean_late = LATE.search(clean_result.stderr)
    assert late and clean_late and late.group(1) == clean_late.group(1), result.describe()
    count = QUARANTINED.search(result.stderr)
    assert count and count.group(1) == "2", result.describe()
    named = [line for line in result.stderr.splitlines() if ": quarantined record clock-" in line]
    named = [line for line in named if line.startswith(str(tmp_path / "poisoned.ndjson"))]
    assert len(named) == 2 and any("2099-01-01" in line for line in named), result.describe()
    # named by line, like a bad record: the 2099 one follows the first half, the 1970 one 50 later
    file = tmp_path / "poisoned.ndjson"
    assert any(line.startswith(f"{file}: line {middle + 1}: ") for line in named), named
    assert any(line.startswith(f"{file}: line {middle + 52}: ") for line in named), named
    stored = query(db, "SELECT request_id, reason FROM quarantined_records ORDER BY request_id")
    assert [r[0] for r in stored] == ["clock-1970", "clock-2099"]
    assert "behind the stream" in str(stored[0][1]) and "ahead" in str(stored[1][1])


def test_a_quarantined_record_is_reported_once(tmp_path: Path) -> None:
    """It was said twice on stderr: a log warning while reading, a summary line at the end."""
    simulated = tmp_path / "sim.ndjson"
    made = lookout(
        "simulate", "--out", simulated, "--hours", "0.1", "--rate", "60", "--format", "native",
        "--seed", "3", cwd=tmp_path, timeout=REPLAY_TIMEOUT,
    )  # fmt: skip
    assert made.returncode == 0, made.describe()
    lines = simulated.read_bytes().splitlines()
    middle = len(lines) // 2
    poisoned = [
        *lines[:middle],
        _with_timestamp(lines[middle], "2099-01-01T00:00:00Z", "clock-2099"),
    ]
    result, _ = _replay(tmp_path, "poisoned", [*poisoned, *lines[middle:]])
    said = [line for line in result.stderr.splitlines() if "clock-2099" in line]
    assert len(said) == 1, result.describe()
    assert said[0].startswith(
        f"{tmp_path / 'poisoned.ndjson'}: line {middle + 1}: quarantined record clock-2099"
    )


def test_quarantined_records_past_those_named_are_counted(tmp_path: Path) -> None:
    """Replay names the last 20 quarantined records; the rest were neither named nor pointed to."""
    simulated = tmp_path / "sim.ndjson"
    made = lookout(
        "simulate", "--out", simulated, "--hours", "0.05", "--rate", "60", "--format", "native",
        "--seed", "3", cwd=tmp_path, timeout=REPLAY_TIMEOUT,
    )  # fmt: skip
    assert made.returncode == 0, made.describe()
    lines = simulated.read_bytes().splitlines()
    future = [_with_timestamp(lines[5], "2099-01-01T00:00:00Z", f"clock-{i}") for i in range(25)]
    result, _ = _replay(tmp_path, "poisoned", [*lines[:10], *future, *lines[10:]])
    named = [line for line in result.stderr.splitlines() if ": quarantined record clock-" in line]
    assert len(named) == 20, result.describe()
    # the last 20 of lines 11-35, each by its line
    assert [line.split(": ")[1] for line in named] == [f"line {n}" for n in range(16, 36)]
    assert (
        f"{tmp_path / 'poisoned.ndjson'}: 5 more quarantined, in the table quarantined_records"
        in (result.stderr.splitlines())
    ), result.describe()
