"""`.gitignore` keeps what the README's commands write out of `git status`."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _in_a_git_work_tree() -> bool:
    if shutil.which("git") is None:
        return False
    done = subprocess.run(
        ["git", "rev-parse", "--is-inside-work-tree"], cwd=ROOT, capture_output=True, check=False
    )
    return done.returncode == 0


@pytest.mark.skipif(not _in_a_git_work_tree(), reason="needs git and a checkout")
@pytest.mark.parametrize(
    "name",
    [
        "lookout.duckdb",
        "lookout.duckdb.wal",
        # the copy a compaction writes, left behind if the run is killed meanwhile
        ".lookout.duckdb.compact",
        # the receivers' outbox next to the sink (`<sink>.outbox.sqlite`, SQLite in WAL mode)
        "lookout.duckdb.outbox.sqlite",
        "lookout.duckdb.outbox.sqlite-wal",
        "lookout.duckdb.outbox.sqlite-shm",
        "data/accept.duckdb.outbox.sqlite-wal",
    ],
)
def test_files_written_next_to_a_duckdb_sink_are_ignored(name: str) -> None:
    done = subprocess.run(
        ["git", "check-ignore", "--no-index", "-q", name],
        cwd=ROOT,
        capture_output=True,
        check=False,
    )
    assert done.returncode == 0, f"{name} is not ignored by .gitignore ({done.stderr!r})"
