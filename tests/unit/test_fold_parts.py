"""The lean fold: a poll spanning many windows is sorted once and folded as slices, request ids
are hashed once, and a window's single (version, tenant) slice shares the window's states.
None of that may change what lands in the sink: a whole poll folded at once must store exactly
what folding each window's rows on its own stores, duplicates and tenants included."""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from detectors.registry import DETECTORS, build_detectors
from detectors.reservoir import hash_ids
from schemas.batch import LogBatch
from schemas.config import DuckDBSinkConfig, EngineConfig, LookoutConfig
from worker.cli.pipeline import build_pipeline
from worker.engine import Engine
from worker.sinks.duckdb_sink import DuckDBSink
from worker.sources.simulator import SimulationConfig, simulate_batches
from worker.testing import FakeClock
from worker.window_state import ID_SEED, SeenIds, SortedKeyRuns
from worker.windows import group_by_window, window_starts

T0 = datetime(2026, 1, 5, 6, 0, tzinfo=UTC)


def polls() -> Iterator[LogBatch]:
    """Polls of 2.5 minutes (three windows, two models, two tenants, half with embeddings),
    each also carrying records repeated within it and from the poll before."""
    config = SimulationConfig(
        start=T0,
        hours=0.2,
        models=("gemini-1.5-flash", "gpt-4o-mini"),
        calls_per_minute=120,
        embedding_fraction=0.5,
        tenants=("acme", "globex"),
    )
    previous: LogBatch | None = None
    for batch in simulate_batches(config, seconds_per_batch=150):
        repeats = [batch, batch.take(np.arange(0, len(batch), 7))]
        if previous is not None:
            repeats.append(previous.take(np.arange(len(previous) - 20, len(previous))))
        previous = batch
        yield LogBatch.concat(repeats)


def by_window(batch: LogBatch) -> list[LogBatch]:
    """The batch's rows window by window, each window's in their own order."""
    groups = group_by_window(batch.model, window_starts(batch.timestamp, 60))
    return [batch if rows is None else batch.take(rows) for _, rows in groups]


def feed_window_by_window(engine: Engine, batch: LogBatch) -> None:
    for part in by_window(batch):
        engine.feed(part)


def run(path: Path, feed: Callable[[Engine, LogBatch], None]) -> tuple[DuckDBSink, Engine]:
    clock = FakeClock()
    config = LookoutConfig(
        sink=DuckDBSinkConfig(path=str(path)),
        engine=EngineConfig(writer_id="w", checkpoint_seconds=5.0),
    )
    pipeline = build_pipeline(config, alert_stream=None, now=clock)
    for batch in polls():
        feed(pipeline.engine, batch)
        clock.advance(10.0)
        pipeline.engine.tick()
    assert pipeline.engine.finish(end_of_input=True)
    assert isinstance(pipeline.sink, DuckDBSink)
    return pipeline.sink, pipeline.engine


#: the analysts' rows per (model, version, tenant, window); partial_rows follows checkpoints
MERGED = "SELECT * EXCLUDE (partial_rows) FROM window_metrics_merged ORDER BY ALL"
DETECTIONS = (
    "SELECT model, detector, window_start, verdict, condition, value, p_value, sample_size, "
    "reason, details FROM detections ORDER BY ALL"
)


def stored_states(sink: DuckDBSink) -> dict[tuple[str, int], Any]:
    detectors = build_detectors(dict.fromkeys(DETECTORS))
    out = {}
    windows = sink.query("SELECT DISTINCT model, epoch(window_start)::BIGINT FROM window_metrics")
    for model, start in windows:
        stored = sink.load_window(model, start)
        merged = {name: d.empty() for name, d in detectors.items()}
        for row in stored.partial_states:
            for name, d in detectors.items():
                merged[name] = d.merge(merged[name], d.from_row(row[name]))
        out[(model, start)] = (
            {name: d.to_row(merged[name]) for name, d in detectors.items()},
            sorted(stored.request_ids),
            stored.records,
        )
    return out


def test_a_poll_folded_at_once_stores_what_folding_each_window_alone_stores(
    tmp_path: Path,
) -> None:
    whole, whole_engine = run(tmp_path / "whole.duckdb", lambda engine, batch: engine.feed(batch))
    alone, alone_engine = run(tmp_path / "alone.duckdb", feed_window_by_window)

    merged = whole.query(MERGED)
    assert len(merged) > 40  # many windows of two models, each in two tenants' rows
    assert whole_engine.stats.duplicates > 0
    assert whole_engine.stats.records == alone_engine.stats.records
    assert whole_engine.stats.duplicates == alone_engine.stats.duplicates
    # each tenant's row counts its own calls only (a slice sharing the window's states must
    # stop sharing once a second tenant appears)
    counts = whole.query("SELECT calls, records FROM window_metrics_merged WHERE records > 0")
    assert all(calls == records for calls, records in counts)
    assert merged == alone.query(MERGED)
    assert whole.query(DETECTIONS) == alone.query(DETECTIONS)
    assert stored_states(whole) == stored_states(alone)


def test_each_record_counts_once_whatever_batch_repeats_it(tmp_path: Path) -> None:
    sink, engine = run(tmp_path / "x.duckdb", lambda engine, batch: engine.feed(batch))
    unique = {rid for batch in polls() for rid in batch.request_id.tolist()}
    assert engine.stats.records == len(unique)
    assert sink.query("SELECT count(*), count(DISTINCT request_id) FROM window_request_ids") == [
        (len(unique), len(unique))
    ]


def test_seen_ids_know_the_ids_given_as_text_and_as_keys() -> None:
    seen = SeenIds()
    assert not seen and not seen.contains(np.array([1, 2], dtype=np.uint64)).any()
    seen.update(["a", "b"])
    keys = hash_ids(np.array(["b", "c"], dtype=object), ID_SEED)
    assert seen.contains(keys).tolist() == [True, False]
    seen.add_keys(keys)
    assert len(seen) == 3


@settings(max_examples=200, deadline=None)
@given(st.lists(st.lists(st.integers(0, 40), max_size=30), max_size=8))
def test_seen_ids_admit_each_key_once_across_batches(batches: list[list[int]]) -> None:
    """What `fold` relies on: a row is new exactly when its key was in no earlier batch and
    not earlier in its own; the window then knows every key it was shown, and only those.
    Checked with the window's own store (the compiled hash set where built), and with sorted
    runs as one array (small windows) and merged from 2 keys (many runs)."""
    import worker.window_state as window_state

    _admit_each_key_once(batches, SeenIds)
    default = window_state.MERGE_BELOW
    try:
        for merge_below in (default, 2):
            window_state.MERGE_BELOW = merge_below
            _admit_each_key_once(batches, SortedKeyRuns)
    finally:
        window_state.MERGE_BELOW = default


def _admit_each_key_once(batches: list[list[int]], store: Callable[[], Any]) -> None:
    seen = store()
    shown: set[int] = set()
    for values in batches:
        keys = np.array(values, dtype=np.uint64)
        fresh = seen.remember_new(keys)
        expected = []
        for value in values:
            expected.append(value not in shown)
            shown.add(value)
        got = [True] * len(values) if fresh is None else fresh.tolist()
        assert got == expected
        assert len(seen) == len(shown)
    probe = np.arange(42, dtype=np.uint64)
    assert seen.contains(probe).tolist() == [v in shown for v in range(42)]


def test_the_compiled_key_set_answers_as_the_sorted_runs_do() -> None:
    """Random batches with repeats, known keys, the keys at both ends of the range and a
    window grown well past the hash table's first size: both stores say the same per row."""
    from detectors import _keyhash

    if os.environ.get("CI") == "true":  # `make test`: the install must have built it
        assert hasattr(_keyhash, "KeySet")
    if not hasattr(_keyhash, "KeySet"):
        pytest.skip("built without a compiler (LOOKOUT_PURE_PYTHON=1)")
    rng = np.random.default_rng(5)
    edges = np.array([0, 1, 2**63, 2**64 - 1], dtype=np.uint64)
    for _ in range(20):
        compiled, runs = _keyhash.KeySet(), SortedKeyRuns()
        shown: list[npt.NDArray[np.uint64]] = []
        for _ in range(int(rng.integers(1, 60))):
            size = int(rng.choice([0, 1, 3, 100, 2_000]))
            keys = rng.integers(0, 2**64 - 1, size, dtype=np.uint64, endpoint=True)
            if shown and rng.random() < 0.5:  # known keys, and repeats within the batch
                old = np.concatenate(shown)
                keys = np.concatenate([keys, rng.choice(old, min(len(old), 50)), keys[:5]])
            if rng.random() < 0.2:
                keys = np.concatenate([keys, edges[rng.integers(0, 4, 3)]])
            rng.shuffle(keys)
            got, want = compiled.remember_new(keys), runs.remember_new(keys)
            assert (got is None) == (want is None)
            if got is not None and want is not None:
                assert got.tolist() == want.tolist()
            assert len(compiled) == len(runs)
            shown.append(keys)
        probe = np.concatenate([*shown, edges, rng.integers(0, 2**63, 500, dtype=np.uint64)])
        assert compiled.contains(probe).tolist() == runs.contains(probe).tolist()


def test_a_large_window_takes_a_large_poll() -> None:
    """A window of 3M ids taking another 100k-id poll keeps every id, once."""
    rng = np.random.default_rng(7)
    seen = SeenIds()
    seen.remember_new(rng.integers(0, 2**63, 3_000_000, dtype=np.uint64))
    poll = rng.integers(0, 2**63, 100_000, dtype=np.uint64)
    assert seen.remember_new(poll) is None
    assert len(seen) == 3_100_000 and seen.contains(poll).all()
    assert not seen.remember_new(poll[:10]).any()  # type: ignore[union-attr]


def test_a_window_of_many_small_polls_keeps_its_ids_in_few_runs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Thousands of tiny batches into one window (single-record Pub/Sub messages), with runs
    merged from 16 keys instead of 64k so that the layered runs are what is tested: each key
    is found and counted once, and the ids stay in at most log4(n / 16) + 2 sorted runs."""
    import worker.window_state as window_state

    monkeypatch.setattr(window_state, "MERGE_BELOW", 16)
    rng = np.random.default_rng(11)
    seen = SortedKeyRuns()
    shown = []
    for size in rng.integers(1, 4, 3_000):
        keys = rng.integers(0, 2**63, int(size), dtype=np.uint64)
        assert seen.remember_new(keys) is None
        shown.append(keys)
    every = np.concatenate(shown)
    assert len(seen) == len(every) and seen.contains(every).all()
    assert not seen.contains(rng.integers(0, 2**63, 1_000, dtype=np.uint64)).any()
    again = seen.remember_new(every[:5])
    assert again is not None and not again.any()
    runs = seen._runs
    assert 2 < len(runs) <= math.log(len(every) / 16, 4) + 2
    assert all((run[1:] > run[:-1]).all() for run in runs)
