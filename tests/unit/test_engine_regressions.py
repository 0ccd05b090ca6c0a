"""Regressions found in review of the engine.

Token columns for analysts, early-closed windows, windows unjudged at shutdown, sink read
outages, gauges, ingest-only memory, alerts whose delivery failed.
"""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
from prometheus_client import CollectorRegistry

from alerts.state import AlertTracker
from detectors.registry import build_detectors
from schemas.alert_config import AlertingConfig
from schemas.batch import LogBatch
from schemas.prediction_log import PredictionLog
from worker.engine import Engine, EngineSettings
from worker.evaluator import WindowEvaluator
from worker.metrics import EngineMetrics, ModelLabels
from worker.sink import Checkpoint, PartialRow, Sink
from worker.sinks.duckdb_sink import DuckDBSink
from worker.testing import FakeClock, MemorySink

T0 = datetime(2026, 1, 5, 6, 0, tzinfo=UTC)
S0 = int(T0.timestamp())
NAMES = ("safety", "latency", "tokens")


def logs(prefix: str, second: float, n: int, *, model: str = "a") -> LogBatch:
    return LogBatch.from_logs(
        PredictionLog(
            request_id=f"{prefix}-{i}",
            timestamp=T0 + timedelta(seconds=second),
            model=model,
            latency_ms=150.0,
            input_tokens=200,
            output_tokens=100,
        )
        for i in range(n)
    )


def make_engine(sink: Sink, metrics: EngineMetrics | None = None, **settings: Any) -> Engine:
    detectors = build_detectors(dict.fromkeys(NAMES))
    evaluator = WindowEvaluator(detectors, 60, AlertTracker(AlertingConfig()))
    return Engine(
        EngineSettings(**settings),
        detectors,
        sink,
        evaluator,
        now=FakeClock(),
        metrics=metrics,
        keep_detections=True,
    )


# Bug A: worker/analyst_columns.py reads token sums from keys the tokens detector never writes


def test_merged_view_carries_token_sums_for_analysts(tmp_path: Path) -> None:
    detectors = build_detectors(dict.fromkeys(NAMES))
    batch = logs("r", 5, 10)  # 10 calls × 200 input, 100 output tokens
    states = {n: d.to_row(d.add(d.empty(), batch)) for n, d in detectors.items()}
    sink = DuckDBSink(tmp_path / "lookout.duckdb")
    tokens: Any = detectors["tokens"]
    extras = tokens.analyst_values(tokens.add(tokens.empty(), batch), "a")
    sink.write_checkpoint(
        Checkpoint("w1", 0, [PartialRow("a", S0, S0 + 60, 10, 0, states, extras)])
    )
    sink.close()
    with duckdb.connect(str(tmp_path / "lookout.duckdb"), read_only=True) as con:
        row = con.execute(
            "SELECT token_calls, input_tokens, output_tokens, output_tokens_per_call, cost_usd "
            "FROM window_metrics_merged"
        ).fetchone()
    assert row is not None
    token_calls, input_tokens, output_tokens, per_call, cost = row
    assert token_calls == 10
    assert (input_tokens, output_tokens, per_call) == (2000.0, 1000.0, 100.0)
    # default price: $0.50 / M input, $1.50 / M output
    assert cost is not None and abs(cost - (2000 * 0.5 + 1000 * 1.5) / 1e6) < 1e-12


# Bug B: worker/engine.py _shed_windows evaluates windows without counting them


def test_windows_closed_early_by_the_open_window_limit_are_counted_as_judged() -> None:
    sink = MemorySink()
    registry = CollectorRegistry()
    engine = make_engine(sink, EngineMetrics(registry, ModelLabels()), max_open_windows=4)
    for m in range(6):  # six models at once: two windows over the limit
        engine.feed(logs(f"m{m}", 5, 3, model=f"m{m}"))
    engine.tick()
    assert engine.finish(end_of_input=True)

    judged = Counter((d.model, d.window_start) for d in sink.detections())
    assert len(judged) == 6
    assert engine.stats.windows_evaluated == 6
    assert len(engine.stats.detections) == 18
    verdicts = sum(
        registry.get_sample_value(
            "lookout_detections_total", {"model": f"m{m}", "detector": d, "verdict": v}
        )
        or 0
        for m in range(6)
        for d in NAMES
        for v in ("ok", "alert", "insufficient_data")
    )
    assert verdicts == 18


# Bug C: windows durable but not yet judged when a worker stops are never judged after restart


def test_a_window_left_unjudged_by_a_stopping_worker_is_judged_after_the_restart() -> None:
    sink = MemorySink()
    first = make_engine(sink, writer_id="pod-1", allowed_lateness_seconds=30)
    for at in range(5, 75, 10):  # minute 0 and the first 15 s of minute 1
        first.feed(logs(f"r{at}", at, 20))
    assert first.finish(end_of_input=False)  # SIGTERM: watermark 35 s, minute 0 not over yet
    assert sink.detections() == []

    second = make_engine(sink, writer_id="pod-2", allowed_lateness_seconds=30)
    second.resume(sink.unevaluated_windows(limit=10))  # what build_pipeline does at start
    for at in range(75, 300, 10):  # the stream goes on from where pod-1 stopped
        second.feed(logs(f"r{at}", at, 20))
        second.tick()
    assert second.finish(end_of_input=True)
    judged = Counter(int(d.window_start.timestamp()) - S0 for d in sink.detections())
    assert judged == {0: 3, 60: 3, 120: 3, 180: 3, 240: 3}


# Bug D: worker/engine.py Engine.feed → _window_for reads the sink unguarded; when the whole sink
# is unreachable (reads fail too), the first record that needs a lookup (a new model, or a late
# record for a window already dropped from memory) crashes the runner instead of waiting.


def test_a_whole_sink_outage_is_ridden_out_when_a_record_needs_a_sink_lookup() -> None:
    import threading

    from schemas.decode.api import DecodeLimits
    from worker.runner import RunSettings, run
    from worker.sources.simulator import SimulationConfig, simulate_logs
    from worker.testing import FakeSource, ndjson_messages, request_ids_of

    clock = FakeClock()
    sink = MemorySink()
    sim = SimulationConfig(start=T0, hours=6 / 60, calls_per_minute=60, embedding_fraction=0.0)
    messages = ndjson_messages(simulate_logs(sim), per_message=12)
    newcomer = ndjson_messages(
        [
            PredictionLog(
                request_id=f"new-{i}", timestamp=T0 + timedelta(minutes=3), model="newcomer"
            )
            for i in range(5)
        ],
        prefix="new",
    )
    feed = [*messages[:40], *newcomer, *messages[40:]]

    def on_poll(source: FakeSource) -> None:
        now = clock.advance(1.0)
        if now == 30:  # the whole sink goes away for 60 s, just before the new model shows up
            sink.fail_writes(until=90, clock=clock, reads=True)

    source = FakeSource(feed, on_poll=on_poll)
    detectors = build_detectors(dict.fromkeys(NAMES))
    engine = Engine(
        EngineSettings(),
        detectors,
        sink,
        WindowEvaluator(detectors, 60, AlertTracker(AlertingConfig())),
        now=clock,
    )
    engine.set_ack_handler(source.ack)
    result = run(
        source,
        engine,
        limits=DecodeLimits(),
        stop=threading.Event(),
        settings=RunSettings(poll_max_messages=1, poll_timeout_seconds=0.0),
        now=clock,
        sleep=clock.sleep,
    )
    assert result.clean_exit
    assert sorted(source.acked) == sorted(m.ack_id for m in feed)
    assert sink.total_records() == sum(len(request_ids_of(m)) for m in feed)


# Bug E: worker/engine.py checkpoint() sets lookout_windows_open before dropping finished windows


def test_windows_open_gauge_matches_the_windows_held_after_a_checkpoint() -> None:
    from worker.sources.simulator import SimulationConfig, simulate_batches

    registry = CollectorRegistry()
    engine = make_engine(MemorySink(), EngineMetrics(registry, ModelLabels()))
    sim = SimulationConfig(start=T0, hours=0.3, calls_per_minute=20, embedding_fraction=0.0)
    for batch in simulate_batches(sim, seconds_per_batch=30):
        engine.feed(batch)
        engine.tick()
        assert engine.checkpoint()
        assert registry.get_sample_value("lookout_windows_open") == engine.open_windows


def test_windows_open_gauge_moves_while_checkpoints_fail() -> None:
    """Set only at a checkpoint, the gauge froze (0 before the first one) exactly while the
    sink refused writes and windows piled up in memory: when an SRE watches it."""
    from worker.sources.simulator import SimulationConfig, simulate_batches

    registry = CollectorRegistry()
    sink = MemorySink()
    sink.fail_writes()
    engine = make_engine(sink, EngineMetrics(registry, ModelLabels()))
    sim = SimulationConfig(start=T0, hours=0.2, calls_per_minute=20, embedding_fraction=0.0)
    for batch in simulate_batches(sim, seconds_per_batch=30):
        engine.feed(batch)
        engine.tick()
        assert not engine.checkpoint()
        assert registry.get_sample_value("lookout_windows_open") == engine.open_windows
    assert engine.open_windows > 3


# Bug F: worker/metrics.py EngineMetrics.evaluated labels the median quantile "0.50"


def test_latency_quantile_labels_follow_prometheus_convention() -> None:
    registry = CollectorRegistry()
    engine = make_engine(MemorySink(), EngineMetrics(registry, ModelLabels()))
    engine.feed(logs("r", 5, 60))
    assert engine.finish(end_of_input=True)
    quantiles = {
        s.labels["quantile"]
        for family in registry.collect()
        for s in family.samples
        if s.name == "lookout_latency_seconds"
    }
    assert quantiles == {"0.5", "0.95", "0.99"}


# Bug G: worker/engine.py _drop_finished_windows only drops evaluated windows, so an ingest-only
# replica (evaluate=False, role "ingest") keeps every window until max_open_windows, then
# "closes the oldest early" (a warning) on every tick from then on.


def test_an_ingest_only_replica_drops_durable_windows_behind_the_watermark() -> None:
    from worker.sources.simulator import SimulationConfig, simulate_batches

    sink = MemorySink()
    engine = make_engine(sink, evaluate=False)
    sim = SimulationConfig(start=T0, hours=1, calls_per_minute=20, embedding_fraction=0.0)
    most = 0
    for batch in simulate_batches(sim, seconds_per_batch=30):
        engine.feed(batch)
        engine.tick()
        assert engine.checkpoint()
        most = max(most, engine.open_windows)
    assert most <= 3 * 4  # as for an evaluating replica: a few windows per model


# Observation H: worker/engine.py _notify drops alerts whose delivery failed; nothing retries


def test_an_alert_whose_delivery_failed_is_delivered_later() -> None:
    sink = MemorySink()
    delivered: list[Any] = []
    calls = [0]

    def flaky(alerts: Any) -> None:
        calls[0] += 1
        if calls[0] == 1:
            raise ConnectionError("slack is down")
        delivered.extend(alerts)

    detectors = build_detectors(dict.fromkeys(NAMES))
    engine = Engine(
        EngineSettings(),
        detectors,
        sink,
        WindowEvaluator(detectors, 60, AlertTracker(AlertingConfig())),
        notify=flaky,
        now=FakeClock(),
    )
    blocked = LogBatch.from_logs(
        PredictionLog(request_id=f"b{i}", timestamp=T0, model="a", blocked=True) for i in range(150)
    )
    engine.feed(blocked)  # every call blocked: a critical page
    engine.feed(logs("next", 95, 5))
    engine.tick()
    assert engine.checkpoint()
    for minute in range(2, 6):
        engine.feed(logs(f"m{minute}", minute * 60 + 40, 5))
        engine.tick()
        assert engine.checkpoint()
    assert [a.status for a in delivered][:1] == ["firing"]
