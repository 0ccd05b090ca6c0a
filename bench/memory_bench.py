"""Resident memory while the engine folds 10k → 1M records: bounded by configuration, not input.

Target (issue 15): RSS flat within ±10% from 10k to 1M records and under 400 MB with the
default configuration. Records come straight from the simulator as columns (a 1M-line NDJSON
file with embeddings would be ~4 GB), through the whole engine: windows, all detectors,
checkpoints into a DuckDB file, evaluation and alert state.

Each variant runs in a fresh process, one after the other, so the comparison is in one run:
`tuned` is what `lookout` does at start-up (worker/memory_tuning.py), `glibc-defaults` is the
same process without it (the baseline). Beside RSS each mark shows what it is made of: pages of
shared libraries' code and data (`files`; they grow as code paths run for the first time),
anonymous memory (`anon`: the Python and C heaps, numpy buffers, DuckDB's allocator) and what
DuckDB says it holds (`duckdb`: mostly its cache of the blocks the sink wrote, which grows with
the file until `sink.memory_limit`; `--records 5000000` shows where it stops).

    .venv/bin/python -m bench.memory_bench [--records 1000000] [--variants tuned,glibc-defaults]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

VARIANTS = ("tuned", "glibc-defaults")


def memory_status() -> dict[str, float]:
    """VmRSS, its split into file-backed and anonymous pages, and the peak so far, in MB."""
    wanted = {"VmRSS:": "rss", "RssAnon:": "anon", "RssFile:": "files", "VmHWM:": "peak"}
    values: dict[str, float] = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        fields = line.split()
        if fields and fields[0] in wanted:
            values[wanted[fields[0]]] = int(fields[1]) / 1024
    return values


def measure(records: int, rate: float, tuned: bool) -> None:
    """One variant: fold `records` simulated records, print one JSON line per mark."""
    if tuned:  # and the garbage collector as `lookout` sets it: a long run is its soak
        from bench.process_start import start_as_lookout_does

        start_as_lookout_does()
    from schemas.config import LookoutConfig
    from worker.cli.demo import DEMO_START
    from worker.cli.pipeline import build_pipeline
    from worker.sinks.duckdb_sink import DuckDBSink
    from worker.sources.simulator import SimulationConfig, simulate_batches

    hours = records / (rate * 3 * 60) * 1.05
    marks = [m for m in (10_000, 100_000, 250_000, 500_000, 750_000) if m < records]
    marks += range(1_000_000, records, 1_000_000)
    marks.append(records)
    with tempfile.TemporaryDirectory() as tmp:
        config = LookoutConfig.model_validate(
            {"sink": {"path": str(Path(tmp) / "m.duckdb")}, "metrics": {"enabled": False}}
        )
        pipeline = build_pipeline(config, alert_stream=None)
        sim = SimulationConfig(
            start=DEMO_START, hours=hours, calls_per_minute=rate, embedding_fraction=0.2
        )
        engine = pipeline.engine

        sink = pipeline.sink
        assert isinstance(sink, DuckDBSink)

        def duckdb_mb() -> float:
            used = sink.query("SELECT sum(memory_usage_bytes) FROM duckdb_memory()")
            return float(used[0][0] or 0) / 2**20

        for batch in simulate_batches(sim):
            engine.feed(batch)
            engine.tick()
            if engine.stats.records >= marks[0]:
                marks.pop(0)
                gc.collect()
                mark = {"records": engine.stats.records, "windows": engine.open_windows}
                print(json.dumps(mark | memory_status() | {"duckdb": duckdb_mb()}), flush=True)
            if not marks:
                break
        else:  # the simulation ran out a little before the last mark
            mark = {"records": engine.stats.records, "windows": engine.open_windows}
            print(json.dumps(mark | memory_status() | {"duckdb": duckdb_mb()}), flush=True)
        engine.finish(end_of_input=True)
        pipeline.close()


def run_variant(name: str, records: int, rate: float) -> list[dict[str, float]]:
    command = [sys.executable, "-m", "bench.memory_bench", "--child", name]
    command += ["--records", str(records), "--rate", str(rate)]
    # the baseline must not inherit an operator's MALLOC_* or Arrow tuning from this shell
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("MALLOC_") and k not in ("GLIBC_TUNABLES", "ARROW_DEFAULT_MEMORY_POOL")
    }
    done = subprocess.run(command, capture_output=True, text=True, check=True, env=env)
    return [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]


def report(name: str, marks: list[dict[str, float]]) -> None:
    base = marks[0]["rss"]
    print(f"{name}:")
    for m in marks:
        print(
            f"  {int(m['records']):>10,} records  RSS {m['rss']:6.1f} MB "
            f"({m['rss'] / base - 1:+6.1%} vs 10k)  files {m['files']:5.1f}  "
            f"anon {m['anon']:5.1f}  duckdb {m['duckdb']:5.1f}  open windows {int(m['windows'])}  "
            f"peak so far {m['peak']:6.1f} MB"
        )
    rss = [m["rss"] for m in marks]
    steady = rss[1:] or rss
    late = [m["rss"] for m in marks if m["records"] >= 1_000_000] or steady
    print(
        f"  largest deviation from RSS at 10k: {max(abs(r / base - 1) for r in rss):.1%} "
        f"(target ±10%); max/min {max(rss) / min(rss):.2f}; "
        f"from 100k on: max/min {max(steady) / min(steady):.2f}; "
        f"from 1M on: max/min {max(late) / min(late):.2f}; peak {marks[-1]['peak']:.0f} MB "
        f"(target < 400 MB)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--rate", type=float, default=2000.0, help="calls/min per model")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--child", choices=VARIANTS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        measure(args.records, args.rate, tuned=args.child == "tuned")
        return
    results = {}
    for name in args.variants.split(","):
        if name not in VARIANTS:
            parser.error(f"unknown variant {name!r}; choose from {', '.join(VARIANTS)}")
        results[name] = run_variant(name, args.records, args.rate)
        report(name, results[name])
    if len(results) == len(VARIANTS):
        peak = {name: marks[-1]["peak"] for name, marks in results.items()}
        print(f"peak RSS tuned / glibc defaults: {peak['tuned'] / peak['glibc-defaults']:.2f}")


if __name__ == "__main__":
    main()
