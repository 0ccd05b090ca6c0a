"""`lookout replay` as a whole process, in alternating pairs against a bare parse process.

`bench.replay_bench` times the replay inside its own interpreter, best of a few; on a shared
two-core machine that moved ±15% between invocations and could not show a 10-20% change. This
one runs whole processes, as a user runs them (imports and the CLI's start-up included), in
turn: a bare `orjson.loads` loop over the same file, then `lookout replay` into a fresh DuckDB
file, N times. Each process's CPU (user + system) and peak RSS come from the kernel's own
accounting (`os.wait4`). It prints the medians, and the median of the pairs' wall-time ratios
(the issue's target: ≥ 1.0x), which holds when the machine's speed drifts.

`--vs-checkout DIR` adds a third process to each round: the same replay by another checkout of
Lookout (a `git worktree` of an older commit with its compiled extensions built, run with this
interpreter), and prints the CPU and wall ratios against it pair by pair: how a change was
measured against the commit before it.

    .venv/bin/python -m bench.replay_process_bench [--hours 2] [--pairs 8] [--vs-checkout DIR]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from bench.replay_bench import add_stream_arguments, write_stream

BARE_LOOP = (
    "import sys, orjson\n"
    "with open(sys.argv[1], 'rb') as stream:\n"
    "    for line in stream:\n"
    "        orjson.loads(line)\n"
)
#: `lookout` as its console script runs it, from whichever checkout is first on the path
LOOKOUT = "import sys; from worker.cli import main; sys.argv[0] = 'lookout'; main()"


@dataclass(frozen=True)
class Finished:
    wall: float
    cpu: float
    peak_mib: float


def timed(
    command: list[str], cwd: Path | None = None, env: dict[str, str] | None = None
) -> Finished:
    """Run `command` to its end with its output thrown away; the kernel's figures for it."""
    started = time.perf_counter()
    process = subprocess.Popen(
        command, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    assert process.stderr is not None
    errors = process.stderr.read()
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        tail = errors.decode(errors="replace").strip().splitlines()[-3:]
        raise SystemExit(f"{' '.join(command[:4])} … exited {process.returncode}: {tail}")
    return Finished(wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024)


def replay_command(stream: Path, db: Path) -> list[str]:
    db.unlink(missing_ok=True)
    Path(f"{db}.wal").unlink(missing_ok=True)
    return [sys.executable, "-c", LOOKOUT, "replay", str(stream), "--db", str(db)]


def median(values: list[float]) -> float:
    return statistics.median(values)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_stream_arguments(parser, hours=2.0)
    parser.add_argument("--pairs", type=int, default=8)
    parser.add_argument("--vs-checkout", type=Path, help="another checkout's replay, in turn")
    args = parser.parse_args()
    here = Path(__file__).resolve().parents[1]
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        stream = workdir / "stream.ndjson"
        lines = write_stream(stream, args.hours, args.rate, args.embedding_fraction)
        runs: dict[str, list[Finished]] = {"bare": [], "lookout": [], "other": []}
        env = {**os.environ, "PYTHONPATH": str(here)}
        other = args.vs_checkout.resolve() if args.vs_checkout else None
        other_env = {**os.environ, "PYTHONPATH": str(other)} if other else None
        for round_ in range(args.pairs + 1):  # the first round warms the page cache
            bare = timed([sys.executable, "-c", BARE_LOOP, str(stream)])
            ours = timed(replay_command(stream, workdir / "a.duckdb"), cwd=here, env=env)
            theirs = (
                timed(replay_command(stream, workdir / "b.duckdb"), cwd=other, env=other_env)
                if other
                else None
            )
            if round_:
                runs["bare"].append(bare)
                runs["lookout"].append(ours)
                if theirs:
                    runs["other"].append(theirs)
    print(f"input: {lines} lines, embeddings on {args.embedding_fraction:.0%}, {args.pairs} pairs")
    for name in ("bare", "lookout", "other"):
        done = runs[name]
        if done:
            # (a bare loop's peak is its parent's at the fork: not printed)
            peak = f"  peak {median([r.peak_mib for r in done]):5.0f} MiB" if name != "bare" else ""
            print(
                f"{name:8s} wall {median([r.wall for r in done]):6.2f} s  "
                f"CPU {1000 * median([r.cpu for r in done]) / lines:.4f} s per 1k records{peak}"
            )
    ratio = median([b.wall / r.wall for b, r in zip(runs["bare"], runs["lookout"], strict=True)])
    print(f"lookout replay / bare parse, whole processes: {ratio:.2f}x (target >= 1.0x)")
    if runs["other"]:
        pairs = list(zip(runs["lookout"], runs["other"], strict=True))
        print(
            f"this checkout / {other}: CPU {median([a.cpu / b.cpu for a, b in pairs]):.2f}x, "
            f"wall {median([a.wall / b.wall for a, b in pairs]):.2f}x (medians of the pairs)"
        )


if __name__ == "__main__":
    main()
