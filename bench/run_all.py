"""`make bench`: every benchmark in turn, each in its own process, with its default arguments.

Each prints its own figures against a baseline measured in the same run (see its docstring
for what it compares and how long it takes; the whole set took 12 minutes on two cores, 6 of
them `bigquery_bench` on its emulator). A benchmark that fails is named at the end and the
others still run; the exit status is 1 if any failed. The Pub/Sub and BigQuery benchmarks
start their emulators, which `make test` (or `./scripts/install-test-tools`) installs.

    .venv/bin/python -m bench.run_all [--only replay_bench,pubsub_bench]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time

#: in the order the issue's targets list them: decode and replay throughput, ingest, memory,
#: the detectors' own speed, the BigQuery sink, then alert quality (the longest)
BENCHMARKS = (
    "decode_bench",
    "replay_bench",
    "replay_process_bench",
    "pubsub_bench",
    "memory_bench",
    "detector_bench",
    "embedding_drift_bench",
    "bigquery_bench",
    "detection_quality",
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", help="comma-separated benchmark names (default: all)")
    args = parser.parse_args()
    chosen = args.only.split(",") if args.only else list(BENCHMARKS)
    unknown = sorted(set(chosen) - set(BENCHMARKS))
    if unknown:
        raise SystemExit(f"no benchmark named {', '.join(unknown)}; known: {', '.join(BENCHMARKS)}")
    failed = []
    for name in chosen:
        print(f"\n== bench.{name}", flush=True)
        started = time.monotonic()
        done = subprocess.run([sys.executable, "-m", f"bench.{name}"], check=False)
        print(
            f"== bench.{name}: exit {done.returncode} in {time.monotonic() - started:.0f} s",
            flush=True,
        )
        if done.returncode != 0:
            failed.append(name)
    if failed:
        raise SystemExit(f"failed: {', '.join(failed)}")


if __name__ == "__main__":
    main()
