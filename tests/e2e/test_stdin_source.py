"""`lookout run` on a stdin kept open: records are checkpointed while the pipe is idle, and
SIGTERM is answered without waiting for the pipe to close."""

from __future__ import annotations

import signal
import time
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.conftest import (
    SHORT_TIMEOUT,
    RunningLookout,
    Stream,
    served_base,
    total_calls,
)
from tests.e2e.test_run_metrics import get, wait_until

GRACE = 5.0


def _sample(exposition: str, name: str) -> float:
    return sum(
        s.value
        for f in text_string_to_metric_families(exposition)
        for s in f.samples
        if s.name == name
    )


def _scraped(url: str, name: str) -> float:
    """A metric's value, or -1 while the server does not answer yet (it is still starting)."""
    status, body = get(url)
    return _sample(body, name) if status == 200 else -1.0


def test_run_on_an_open_stdin_checkpoints_and_stops_on_sigterm(
    incident_stream: Stream, tmp_path: Path
) -> None:
    db = tmp_path / "w.duckdb"
    config = tmp_path / "lookout.yaml"
    config.write_text(
        f'source: {{kind: file, path: "-"}}\nsink: {{kind: duckdb, path: {db}}}\n'
        f"engine: {{checkpoint_seconds: 0.5, grace_period_seconds: {GRACE}}}\n"
        "metrics: {host: 127.0.0.1, port: 0}\n"
    )
    worker = RunningLookout("run", "--config", config, cwd=tmp_path, stdin=True)
    try:
        base = served_base(worker)
        worker.write(b"".join(incident_stream.lines[:100]))
        # (1) the 100 records are folded and checkpointed while the pipe stays open
        wait_until(
            "a checkpoint of the 100 records",
            worker,
            lambda: (
                _scraped(f"{base}/metrics", "lookout_records_total") == 100
                and _scraped(f"{base}/metrics", "lookout_checkpoint_duration_seconds_count") > 0
            ),
            SHORT_TIMEOUT,
        )
        # (2) SIGTERM with stdin still open: exit 0 within the grace period
        worker.proc.send_signal(signal.SIGTERM)
        sent = time.monotonic()
        result = worker.wait(timeout=GRACE + 10)
        assert result.returncode == 0, result.describe()
        assert time.monotonic() - sent <= GRACE
        assert total_calls(db) == 100
    finally:
        worker.kill()


def test_replay_of_stdin_kept_open_stops_on_sigterm(
    incident_stream: Stream, tmp_path: Path
) -> None:
    db = tmp_path / "r.duckdb"
    env = {"LOOKOUT_ENGINE__GRACE_PERIOD_SECONDS": str(GRACE)}
    replay = RunningLookout("replay", "-", "--db", db, cwd=tmp_path, env=env, stdin=True)
    try:
        replay.write(b"".join(incident_stream.lines[:3000]))
        time.sleep(3)  # scratch only: the replay shows nothing to wait on (that is the bug)
        replay.proc.send_signal(signal.SIGTERM)
        sent = time.monotonic()
        result = replay.wait(timeout=GRACE + 10)
        assert result.returncode == 128 + signal.SIGTERM, result.describe()  # as a shell says
        assert time.monotonic() - sent <= GRACE
        assert total_calls(db) == 3000
    finally:
        replay.kill()
