"""`lookout replay --dead-letter FILE` when FILE cannot be written (a full disk).

Before: the OSError escaped the run as `lookout: OSError: [Errno 28] No space left on device`,
with no summary, and not one of the good records was stored. A file cannot redeliver a chunk the
runner nacks, so the source keeps the good records flowing and says which bad records the
dead-letter file lacks (they are on stderr with their line numbers), and the replay exits 1.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import pytest

from alerts.state import AlertTracker
from detectors.registry import build_detectors
from schemas.alert_config import AlertingConfig
from schemas.decode.api import DecodeLimits
from worker.engine import Engine, EngineSettings
from worker.evaluator import WindowEvaluator
from worker.runner import RunSettings, run
from worker.sources.file_source import FileSource
from worker.sources.simulator import SimulationConfig, simulate_logs
from worker.testing import FakeClock, MemorySink, ndjson_messages

FULL = Path("/dev/full")
needs_dev_full = pytest.mark.skipif(not FULL.exists(), reason="needs /dev/full (Linux)")

#: lines that are not JSON, and where they go in the file (1-based, after insertion)
BAD = [b"{bad json", b"not json at all", b'{"x":']


def logs_with_bad_lines(path: Path) -> tuple[int, list[int]]:
    """Write simulated calls with `BAD` spread among them; (good records, bad line numbers)."""
    config = SimulationConfig(
        start=datetime(2026, 1, 5, 6, tzinfo=UTC), hours=0.1, calls_per_minute=50
    )
    good = ndjson_messages(simulate_logs(config), per_message=1_000_000)[0].data.splitlines()
    lines = list(good)
    bad_lines = []
    for bad, at in zip(BAD, (10, 11, len(good) // 2), strict=True):
        lines.insert(at, bad)
        bad_lines.append(at + 1)
    path.write_bytes(b"\n".join(lines) + b"\n")
    return len(good), bad_lines


@needs_dev_full
def test_a_full_dead_letter_file_still_stores_every_good_record(tmp_path: Path) -> None:
    good, bad_lines = logs_with_bad_lines(tmp_path / "bad.ndjson")
    reported: list[int] = []
    source = FileSource(
        tmp_path / "bad.ndjson",
        lines_per_message=50,
        on_invalid=lambda error: reported.append(error.line),
        dead_letter_path=FULL,
        flush_seconds=0.05,
    )
    clock = FakeClock(datetime(2026, 1, 5, 8, tzinfo=UTC).timestamp())
    detectors = build_detectors({"safety": None, "latency": None, "tokens": None})
    evaluator = WindowEvaluator(detectors, 60, AlertTracker(AlertingConfig()))
    engine = Engine(EngineSettings(checkpoint_seconds=5.0), detectors, MemorySink(), evaluator,
                    now=clock)  # fmt: skip
    engine.set_ack_handler(source.ack)

    result = run(source, engine, limits=DecodeLimits(), stop=threading.Event(),
                 settings=RunSettings(poll_timeout_seconds=0.2))  # fmt: skip

    assert engine.stats.records == good  # nothing good lost with the bad records' chunks
    assert result.clean_exit and result.end_of_input
    assert result.invalid_records == len(BAD) and result.nacked_messages == 0
    assert reported == bad_lines  # each bad record still reported, with its line
    assert source.failure == (
        f"cannot write the dead-letter file {FULL}: No space left on device; "
        f"{len(BAD)} bad record(s) are not in it "
        f"(line(s) {', '.join(map(str, bad_lines))}, reported above)"
    )


def test_a_writable_dead_letter_file_gets_every_bad_record_and_no_failure(tmp_path: Path) -> None:
    _, bad_lines = logs_with_bad_lines(tmp_path / "bad.ndjson")
    dead = tmp_path / "dead.ndjson"
    source = FileSource(tmp_path / "bad.ndjson", dead_letter_path=dead, flush_seconds=0.05)
    clock = FakeClock(datetime(2026, 1, 5, 8, tzinfo=UTC).timestamp())
    detectors = build_detectors({"safety": None})
    evaluator = WindowEvaluator(detectors, 60, AlertTracker(AlertingConfig()))
    engine = Engine(EngineSettings(), detectors, MemorySink(), evaluator, now=clock)
    engine.set_ack_handler(source.ack)
    run(source, engine, limits=DecodeLimits(), stop=threading.Event())
    assert source.failure is None
    assert [line.split(b",")[0] for line in dead.read_bytes().splitlines()] == [
        b'{"line":%d' % n for n in bad_lines
    ]


@needs_dev_full
def test_replay_names_the_dead_letter_file_exits_1_and_stores_the_good_records(
    tmp_path: Path,
) -> None:
    """What the user sees: one line naming the file and the lines it lacks, the summary, exit
    1, and the good records in the database."""
    good, bad_lines = logs_with_bad_lines(tmp_path / "bad.ndjson")
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOOKOUT_")}
    done = subprocess.run(
        [str(Path(sys.executable).parent / "lookout"), "replay", "bad.ndjson",
         "--db", "full.duckdb", "--dead-letter", str(FULL)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr and "OSError" not in done.stderr
    named = [line for line in done.stderr.splitlines() if str(FULL) in line]
    assert named == [
        f"cannot write the dead-letter file {FULL}: No space left on device; "
        f"{len(BAD)} bad record(s) are not in it "
        f"(line(s) {', '.join(map(str, bad_lines))}, reported above)"
    ]
    assert f"{good} records counted" in done.stderr
    with duckdb.connect(str(tmp_path / "full.duckdb"), read_only=True) as db:
        row = db.execute("SELECT sum(calls) FROM window_metrics_merged").fetchone()
    assert row is not None and row[0] == good
