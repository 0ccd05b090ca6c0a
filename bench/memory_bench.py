"""Resident memory while the engine folds 10k → 1M records: bounded by configuration, not input.

TARGETS.md: RSS flat within ±10% of its value at 10k records. Records come straight from the
simulator as columns (a 1M-line NDJSON file with embeddings would be ~4 GB), through the whole
engine: windows, all detectors, checkpoints into a DuckDB file, evaluation and alert state.

    .venv/bin/python -m bench.memory_bench [--records 1000000]
"""

from __future__ import annotations

import argparse
import gc
import tempfile
from pathlib import Path

from schemas.config import LookoutConfig
from worker.cli.demo import DEMO_START
from worker.cli.pipeline import build_pipeline
from worker.sources.simulator import SimulationConfig, simulate_batches


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--rate", type=float, default=2000.0, help="calls/min per model")
    args = parser.parse_args()
    hours = args.records / (args.rate * 3 * 60) * 1.05
    checkpoints = [10_000, 100_000, 250_000, 500_000, 750_000, args.records]
    with tempfile.TemporaryDirectory() as tmp:
        config = LookoutConfig.model_validate(
            {"sink": {"path": str(Path(tmp) / "m.duckdb")}, "metrics": {"enabled": False}}
        )
        pipeline = build_pipeline(config, alert_stream=None)
        sim = SimulationConfig(
            start=DEMO_START, hours=hours, calls_per_minute=args.rate, embedding_fraction=0.2
        )
        engine = pipeline.engine
        marks: list[tuple[int, float, int]] = []
        for batch in simulate_batches(sim):
            engine.feed(batch)
            engine.tick()
            while checkpoints and engine.stats.records >= checkpoints[0]:
                gc.collect()
                marks.append((engine.stats.records, rss_mb(), engine.open_windows))
                checkpoints.pop(0)
            if not checkpoints:
                break
        engine.finish(end_of_input=True)
        pipeline.close()
    base = marks[0][1]
    for records, rss, windows in marks:
        print(
            f"{records:>10,} records  RSS {rss:7.1f} MB  ({rss / base - 1:+.1%} vs 10k)  "
            f"open windows {windows}"
        )
    worst = max(abs(rss / base - 1) for _, rss, _ in marks)
    print(f"largest deviation from RSS at 10k: {worst:.1%} (target within ±10%)")


if __name__ == "__main__":
    main()
