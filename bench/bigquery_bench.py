"""What the BigQuery sink writes, and how fast, on the local emulator.

1. Rows and bytes per model per window at 1 and 10 ingest writers: the same simulated stream
   (every detector on, embeddings on every call) split round-robin over N engines, each with
   its own BigQuerySink, checkpointing every 5 s of stream time. Bytes are the JSON request
   bodies sent (what the streaming API bills as inserted bytes, roughly).
2. The detector-state column: zlib-compressed MessagePack against the JSON the DuckDB sink
   stores (the baseline), same partial rows.
3. Write paths for one checkpoint's window_metrics rows: streaming inserts (insertAll, with
   insertIds) against a load job (load_table_from_json), same rows, same run.

    .venv/bin/python -m bench.bigquery_bench [--minutes 6] [--models 3] [--reps 10] [--rate 300]

It starts its own emulator (scripts/install-bigquery-emulator installs it). Emulator latencies
are not BigQuery's; the ratio and the bytes are what carry over.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import orjson

from schemas.batch import LogBatch
from schemas.config import BigQuerySinkConfig, DetectorsConfig, EngineConfig, LookoutConfig
from tests.integration.bigquery_emulator import BigQueryEmulator
from worker.cli.pipeline import build_pipeline
from worker.engine import Engine
from worker.sink import Checkpoint, PartialRow
from worker.sinks.bigquery_init import init_dataset
from worker.sinks.bigquery_sink import BigQuerySink, decode_states, encode_states
from worker.sources.simulator import SimulationConfig, simulate_batches
from worker.testing import FakeClock

T0 = datetime(2026, 1, 5, 6, 0, tzinfo=UTC)


def stream(minutes: int, models: int, rate: float) -> list[LogBatch]:
    config = SimulationConfig(
        start=T0,
        hours=minutes / 60,
        models=tuple(f"model-{i}" for i in range(models)),
        calls_per_minute=rate,
        embedding_fraction=1.0,
    )
    return list(simulate_batches(config, seconds_per_batch=5))


def split(batch: LogBatch, writers: int) -> list[LogBatch]:
    import numpy as np

    index = np.arange(len(batch))
    return [batch.take(index[index % writers == w]) for w in range(writers)]


def run_writers(
    emulator: BigQueryEmulator, batches: list[LogBatch], writers: int
) -> tuple[str, dict[str, int], dict[str, int], int]:
    """Ingest writers (no evaluator): the partial rows, request ids and frontiers they write."""
    dataset = f"bench_{writers}_{int(time.time())}"
    client = emulator.client()
    init_dataset(client, emulator.project, dataset, None)
    client.close()
    clock = FakeClock()
    sink = BigQuerySinkConfig(project=emulator.project, dataset=dataset)
    pipelines = [
        build_pipeline(
            LookoutConfig(
                sink=sink,
                engine=EngineConfig(checkpoint_seconds=5.0, writer_id=f"w{w}", role="ingest"),
                detectors=DetectorsConfig(),
            ),
            alert_stream=None,
            now=clock,
        )
        for w in range(writers)
    ]
    for batch in batches:
        for pipeline, part in zip(pipelines, split(batch, writers), strict=True):
            pipeline.engine.feed(part)
        clock.advance(5.0)
        for pipeline in pipelines:
            pipeline.engine.tick()
    rows: dict[str, int] = {}
    size: dict[str, int] = {}
    for pipeline in pipelines:
        assert pipeline.engine.finish(end_of_input=True)
        assert isinstance(pipeline.sink, BigQuerySink)
        for table, n in pipeline.sink.rows_written.items():
            rows[table] = rows.get(table, 0) + n
            size[table] = size.get(table, 0) + pipeline.sink.bytes_written[table]
        pipeline.close()
    windows = len(batches) * 5 // 60 * len({str(m) for b in batches for m in set(b.model)})
    return dataset, rows, size, max(windows, 1)


@contextlib.contextmanager
def sample_cap(enabled: bool) -> Iterator[None]:
    """The baseline: every writer writes its whole sample (the engine before the cap)."""
    original = Engine._trim_held_samples
    if not enabled:
        Engine._trim_held_samples = lambda self, dirty: None  # type: ignore[method-assign]
    try:
        yield
    finally:
        Engine._trim_held_samples = original  # type: ignore[method-assign]


def stored_partials(emulator: BigQueryEmulator, dataset: str) -> list[PartialRow]:
    sink = BigQuerySink(emulator.project, dataset, client=emulator.client())
    rows = sink.query(
        "SELECT model, UNIX_SECONDS(window_start) AS s, UNIX_SECONDS(window_end) AS e, "
        "records, late_records, states FROM {ds}.window_metrics"
    )
    sink.close()
    return [
        PartialRow(r["model"], r["s"], r["e"], r["records"], r["late_records"], states)
        for r in rows
        if (states := decode_states(r["states"]))  # slice rows past the first carry none
    ]


def write_paths(emulator: BigQueryEmulator, checkpoint: Checkpoint, reps: int) -> None:
    from google.cloud import bigquery

    dataset = f"bench_paths_{int(time.time())}"
    client = emulator.client()
    init_dataset(client, emulator.project, dataset, None)
    sink = BigQuerySink(emulator.project, dataset, client=client)
    staged = {t: (rows, ids) for t, rows, ids in sink.stage(checkpoint)}
    rows, insert_ids = staged["window_metrics"]
    ref = f"{emulator.project}.{dataset}.window_metrics"
    table = client.get_table(ref)

    def streaming() -> None:
        fresh = [f"{i}-{time.monotonic_ns()}" for i in insert_ids]
        assert not client.insert_rows_json(ref, rows, row_ids=fresh)

    def load_job() -> None:
        job = client.load_table_from_json(
            rows,
            ref,
            job_config=bigquery.LoadJobConfig(
                schema=table.schema, write_disposition="WRITE_APPEND"
            ),
        )
        job.result(timeout=60)

    results = {}
    for name, write in (("streaming insert", streaming), ("load job", load_job)):
        write()  # warm-up
        times = []
        for _ in range(reps):
            started = time.perf_counter()
            write()
            times.append(time.perf_counter() - started)
        results[name] = statistics.median(times)
    base = results["streaming insert"]
    print(f"\nwrite path for one checkpoint ({len(rows)} window_metrics rows), median of {reps}:")
    for name, seconds in results.items():
        print(f"  {name:<17} {seconds * 1000:8.1f} ms   {seconds / base:5.2f}x streaming")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=int, default=6)
    parser.add_argument("--models", type=int, default=3)
    parser.add_argument("--reps", type=int, default=10)
    parser.add_argument(
        "--rate",
        type=float,
        default=300,
        help="calls per minute per model; above the 250-embedding sample per window, the "
        "cross-writer sample cap is what keeps 10 writers near 1 writer's bytes",
    )
    args = parser.parse_args()
    import os

    batches = stream(args.minutes, args.models, args.rate)
    print(f"stream: {sum(len(b) for b in batches):,} records, {args.models} models, "
          f"{args.minutes} one-minute windows, every call with a 384-d embedding")  # fmt: skip
    with tempfile.TemporaryDirectory() as work:
        emulator = BigQueryEmulator(Path(work))
        emulator.start()
        os.environ["BIGQUERY_EMULATOR_HOST"] = f"127.0.0.1:{emulator.port}"  # the edge: here
        try:
            dataset = ""
            for writers, capped in ((1, True), (10, True), (10, False)):
                with sample_cap(capped):
                    dataset, rows, size, windows = run_writers(emulator, batches, writers)
                label = "" if capped else ", baseline without the cross-writer sample cap"
                print(f"\n{writers} writer(s){label}: per model per window "
                      f"({windows} model-windows)")  # fmt: skip
                print(f"  {'table':<22}{'rows':>8}{'KB':>10}")
                for table in sorted(rows):
                    print(f"  {table:<22}{rows[table] / windows:8.1f}"
                          f"{size[table] / windows / 1024:10.1f}")  # fmt: skip
                total = sum(size.values()) / windows / 1024
                print(f"  {'all tables':<22}{'':>8}{total:10.1f}")
            partials = stored_partials(emulator, dataset)
            as_json = sum(len(orjson.dumps(p.states)) for p in partials)
            as_pack = sum(len(encode_states(p.states)) for p in partials)
            n = len(partials)
            print(
                f"\ndetector states, {n} partial rows: JSON (DuckDB) {as_json / n / 1024:.1f} "
                f"KB/row, msgpack+zlib (BigQuery) {as_pack / n / 1024:.1f} KB/row "
                f"= {as_pack / as_json:.2f}x"
            )
            one = {p.model: p for p in partials}  # one partial row per model: one checkpoint
            write_paths(emulator, Checkpoint("bench", 0, list(one.values())), args.reps)
        finally:
            emulator.stop()


if __name__ == "__main__":
    main()
