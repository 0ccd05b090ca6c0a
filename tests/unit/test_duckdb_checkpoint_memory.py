"""A long-running worker's DuckDB checkpoints must not need more memory the longer it runs.

DuckDB checkpoints its write-ahead log into the file every 16 MB of writes. With its default
vacuum tasks, each checkpoint merged the small row groups the previous ones had appended,
re-reading every detector-state blob written so far: after a 6-hour replay a checkpoint took
260 MB more than the worker held (635 MB peak). The sink turns vacuum tasks off.
"""

from __future__ import annotations

import base64
import os
from pathlib import Path

from worker.sink import Checkpoint, PartialRow
from worker.sinks.duckdb_sink import DuckDBSink


def _rss_mb(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key):
            return int(line.split()[1]) // 1024
    raise AssertionError(f"{key} not in /proc/self/status")


def _reset_peak() -> None:
    Path("/proc/self/clear_refs").write_text("5")


def test_checkpoint_memory_does_not_grow_with_what_was_written(tmp_path: Path) -> None:
    """150 checkpoints of 15 windows with 70 KB of (incompressible) state each, 160 MB in all:
    no write may take 80 MB more than the process held before it (measured 10-20 MB; with
    DuckDB's vacuum tasks the late ones took 120-260 MB)."""
    sink = DuckDBSink(tmp_path / "lookout.duckdb")
    growths = []
    for seq in range(150):
        partials = [
            PartialRow(
                model="a",
                window_start=60 * (15 * seq + k),
                window_end=60 * (15 * seq + k + 1),
                records=1,
                late_records=0,
                states={"blob": {"data": base64.b64encode(os.urandom(52_000)).decode()}},
            )
            for k in range(15)
        ]
        before = _rss_mb("VmRSS:")
        _reset_peak()
        sink.write_checkpoint(Checkpoint("w1", seq, partials, []))
        growths.append(_rss_mb("VmHWM:") - before)
    sink.close()
    print(f"largest growth during a checkpoint: {max(growths)} MB (median {sorted(growths)[75]})")
    assert max(growths) < 80
