"""`lookout replay` end to end against a bare `orjson.loads` loop over the same NDJSON lines.

TARGETS.md: replay (read, decode, window, detect, dedup, write DuckDB) ≥ 1.0× the bare parse,
i.e. monitoring costs no more than parsing the logs. Both are measured in this process, on the
same file, interleaved, best of N, so a noisy shared machine affects both alike. The replay runs
twice per round: with the compiled decoder (the default) and with the Python reference alone
(`LOOKOUT_DECODER=python`), so before/after comes out of one run. CPU-seconds per 1,000 records
(all threads of the process) are printed beside the wall-clock ratio. The process is set up
first as `lookout` sets itself up (`bench.process_start`: one BLAS thread, the garbage collector
and glibc's allocator tuned): OpenBLAS's default threads made the embedding features 10-40x
slower per row on a busy two-core machine, which no user of the CLI pays.

    .venv/bin/python -m bench.replay_bench [--hours 0.5] [--rate 700] [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import threading
import time
from pathlib import Path

import orjson

from bench.process_start import start_as_lookout_does
from schemas.config import LookoutConfig
from worker.cli.demo import DEMO_START
from worker.cli.pipeline import build_pipeline
from worker.cli.serve import file_run_settings
from worker.runner import run
from worker.sources.file_source import FileSource
from worker.sources.simulator import SimulationConfig, simulate_logs
from worker.sources.wire_encode import encode_mixed


def write_stream(path: Path, hours: float, rate: float, embedding_fraction: float) -> int:
    sim = SimulationConfig(
        start=DEMO_START,
        hours=hours,
        calls_per_minute=rate,
        embedding_fraction=embedding_fraction,
        with_text=True,
    )
    count = 0
    with path.open("wb") as out:
        for line in encode_mixed(simulate_logs(sim), seed=7):
            out.write(line + b"\n")
            count += 1
    return count


def add_stream_arguments(parser: argparse.ArgumentParser, *, hours: float) -> None:
    """The simulated stream's options (`write_stream`), shared by the replay benchmarks."""
    parser.add_argument("--hours", type=float, default=hours)
    parser.add_argument("--rate", type=float, default=350.0, help="calls/min per model")
    parser.add_argument("--embedding-fraction", type=float, default=0.2)


def bare_parse(path: Path) -> float:
    started = time.perf_counter()
    with path.open("rb") as stream:
        for line in stream:
            orjson.loads(line)
    return time.perf_counter() - started


def replay(path: Path, workdir: Path, run_number: str) -> tuple[float, float, int]:
    """Wall seconds, CPU seconds (all threads) and records of one `lookout replay`."""
    db = workdir / f"replay-{run_number}.duckdb"
    config = LookoutConfig.model_validate(
        {"sink": {"path": str(db)}, "metrics": {"enabled": False}}
    )
    started, cpu = time.perf_counter(), time.process_time()
    pipeline = build_pipeline(config, alert_stream=None)
    source = FileSource(path)
    pipeline.engine.set_ack_handler(source.ack)
    run(
        source,
        pipeline.engine,
        limits=pipeline.limits,
        stop=threading.Event(),
        settings=file_run_settings(config),  # as `lookout replay` runs
    )
    pipeline.close()
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu
    return wall, cpu, pipeline.engine.stats.records


def replay_python(path: Path, workdir: Path, run_number: str) -> tuple[float, float, int]:
    """The same replay with the Python reference decoder only."""
    os.environ["LOOKOUT_DECODER"] = "python"
    try:
        return replay(path, workdir, run_number)
    finally:
        del os.environ["LOOKOUT_DECODER"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_stream_arguments(parser, hours=0.5)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    start_as_lookout_does()  # the replay measured is the one users run
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        stream = workdir / "stream.ndjson"
        lines = write_stream(stream, args.hours, args.rate, args.embedding_fraction)
        size_mb = stream.stat().st_size / 1e6
        base: list[float] = []
        runs: dict[str, list[tuple[float, float]]] = {"compiled": [], "python": []}
        for i in range(args.repeat):
            base.append(bare_parse(stream))
            for name, fn in (("compiled", replay), ("python", replay_python)):
                wall, cpu, records = fn(stream, workdir, f"{name}-{i}")
                if records != lines:
                    raise SystemExit(f"replay ({name}) counted {records} of {lines} records")
                runs[name].append((wall, cpu))
        b = min(base)
        print(
            f"input: {lines} lines, {size_mb:.1f} MB, embeddings on {args.embedding_fraction:.0%}"
        )
        print(f"bare orjson.loads loop : {lines / b:10,.0f} lines/s  (best of {args.repeat})")
        for name, label in (("compiled", "compiled decoder"), ("python", "LOOKOUT_DECODER=python")):
            wall, cpu = min(runs[name])
            print(
                f"lookout replay         : {lines / wall:10,.0f} lines/s  ratio {b / wall:.2f}x  "
                f"CPU {1000 * cpu / lines:.3f} s per 1k records  ({label})"
            )
        print("target: ratio replay / bare parse >= 1.0x")


if __name__ == "__main__":
    main()
