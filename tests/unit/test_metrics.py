"""Prometheus metrics, read the way prometheus/client_python's own tests read them.

Each test builds a fresh `CollectorRegistry`, drives the engine, and compares
`registry.get_sample_value(...)` with what the engine and the sink counted. Model labels are
bounded (promise 6): beyond `max_models`, or outside the configured set, they read `other`.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from alerts.state import AlertTracker
from detectors.registry import build_detectors
from schemas.alert_config import AlertingConfig
from schemas.batch import LogBatch
from schemas.config import (
    DetectorsConfig,
    DuckDBSinkConfig,
    EngineConfig,
    LookoutConfig,
    MetricsConfig,
)
from schemas.decode.api import DecodeLimits
from schemas.detection import Verdict
from schemas.prediction_log import PredictionLog
from worker.cli.pipeline import build_pipeline
from worker.engine import Engine, EngineSettings
from worker.evaluator import WindowEvaluator
from worker.event_time import EventTimeLimits
from worker.metrics import OTHER, EngineMetrics, ModelLabels
from worker.runner import RunSettings, run
from worker.source import SourceMessage
from worker.sources.simulator import SimulationConfig, simulate_batches
from worker.testing import FakeClock, FakeSource, MemorySink, ndjson_messages

T0 = datetime(2026, 1, 5, 6, 0, tzinfo=UTC)
NAMES = ("safety", "latency", "tokens")


def logs(
    prefix: str, second: float, n: int, *, model: str = "a", blocked: bool = False
) -> LogBatch:
    return LogBatch.from_logs(
        PredictionLog(
            request_id=f"{prefix}-{i}",
            timestamp=T0 + timedelta(seconds=second),
            model=model,
            latency_ms=float(100 * (i + 1)),
            input_tokens=50,
            output_tokens=40 + 2 * i,
            blocked=blocked,
            block_stage="response" if blocked else None,
        )
        for i in range(n)
    )


def setup(labels: ModelLabels | None = None) -> tuple[EngineMetrics, Engine, MemorySink]:
    """An engine reporting into a fresh registry (`metrics.registry`) and its sink."""
    metrics = EngineMetrics(CollectorRegistry(), labels or ModelLabels())
    sink = MemorySink()
    detectors = build_detectors(dict.fromkeys(NAMES))
    evaluator = WindowEvaluator(detectors, 60, AlertTracker(AlertingConfig()))
    # the plain maximum moves the watermark: these tests feed a handful of records
    settings = EngineSettings(event_time=EventTimeLimits(quorum=1))
    engine = Engine(settings, detectors, sink, evaluator, metrics=metrics, now=FakeClock())
    return metrics, engine, sink


def value(registry: CollectorRegistry, name: str, **labels: str) -> float:
    sample = registry.get_sample_value(name, labels)
    return 0.0 if sample is None else sample


def label_values(registry: CollectorRegistry, name: str, label: str) -> set[str]:
    return {
        s.labels[label] for family in registry.collect() for s in family.samples if s.name == name
    }


def test_record_counters_match_the_engine_and_the_sink() -> None:
    metrics, engine, sink = setup()
    registry = metrics.registry
    a = logs("a", 10, 10)
    engine.feed(a)
    engine.feed(a.take(a.request_id != "a-3"))  # 9 duplicates
    engine.feed(logs("b", 20, 5, model="b"))
    engine.feed(logs("a2", 95, 2))  # a jump of 75 s: the next batch must agree
    engine.feed(logs("a3", 96, 1))  # watermark 65 s: minute 0 is judged
    engine.tick()
    assert engine.checkpoint()
    engine.feed(logs("late", 30, 3))  # after its window's verdict
    assert engine.checkpoint()

    assert value(registry, "lookout_records_total", model="a") == 16
    assert value(registry, "lookout_records_total", model="b") == 5
    assert value(registry, "lookout_records_duplicate_total", model="a") == 9
    assert value(registry, "lookout_records_late_total", model="a") == 3
    assert value(registry, "lookout_records_late_total", model="b") == 0
    assert (
        sum(value(registry, "lookout_records_total", model=m) for m in "ab")
        == engine.stats.records
        == sink.total_records()
    )
    assert value(registry, "lookout_checkpoint_duration_seconds_count") == 2
    assert value(registry, "lookout_windows_open") == engine.open_windows
    assert value(registry, "lookout_checkpoint_failures_total") == 0


def test_checkpoint_failures_are_counted_and_alerts_only_once_sent() -> None:
    metrics, engine, sink = setup()
    registry = metrics.registry
    engine.feed(logs("spike", 10, 150, blocked=True))  # every call blocked: above the ceiling
    engine.feed(logs("next", 95, 20))
    engine.feed(logs("next-too", 96, 20))  # the stream agrees it moved on: minute 0 closes
    engine.tick()
    sink.fail_writes(count=3)
    for _ in range(3):
        assert not engine.checkpoint()
    assert value(registry, "lookout_checkpoint_failures_total") == 3
    alert = {"model": "a", "detector": "safety", "status": "firing", "severity": "critical"}
    assert value(registry, "lookout_alerts_total", **alert) == 0  # not sent while not durable

    assert engine.checkpoint()
    assert value(registry, "lookout_alerts_total", **alert) == 1
    # every attempt is timed, the three refused and the one that landed
    assert value(registry, "lookout_checkpoint_duration_seconds_count") == 4
    judged = {"model": "a", "detector": "safety"}
    assert value(registry, "lookout_detections_total", **judged, verdict="alert") == 1
    assert value(registry, "lookout_block_rate_ratio", model="a") == 1.0
    tokens = next(d for d in sink.detections() if d.detector == "tokens")
    assert value(registry, "lookout_output_tokens_per_call", model="a") == tokens.value
    latency = next(d for d in sink.detections() if d.detector == "latency")
    assert value(registry, "lookout_latency_seconds", model="a", quantile="0.95") == (
        pytest.approx(latency.details["p95_ms"] / 1000)
    )


def test_verdicts_are_counted_once_per_window_and_detector() -> None:
    metrics, engine, sink = setup()
    registry = metrics.registry
    for minute in range(4):
        engine.feed(logs(f"m{minute}", minute * 60 + 5, 8))
        engine.tick()
    assert engine.finish(end_of_input=True)
    counted = sum(
        value(registry, "lookout_detections_total", model="a", detector=d, verdict=v)
        for d in NAMES
        for v in ("ok", "alert", "insufficient_data")
    )
    assert counted == len(sink.detections()) == 4 * 3


def test_model_labels_beyond_max_models_fold_into_other() -> None:
    metrics, engine, _ = setup(ModelLabels(max_models=2))
    registry = metrics.registry
    for i, model in enumerate(["m0", "m1", "m2", "m3", "m0", "m4"]):
        engine.feed(logs(f"{model}-{i}", 10, 3 + i, model=model))
    assert label_values(registry, "lookout_records_total", "model") == {"m0", "m1", OTHER}
    assert value(registry, "lookout_records_total", model="m0") == 3 + 7
    assert value(registry, "lookout_records_total", model="m1") == 4
    assert value(registry, "lookout_records_total", model=OTHER) == 5 + 6 + 8
    assert engine.stats.records == 3 + 4 + 5 + 6 + 7 + 8  # folding labels loses no count


def test_a_configured_model_set_folds_every_other_name_into_other() -> None:
    labels = ModelLabels(configured=("gemini-1.5-flash", "text-bison"), max_models=100)
    assert labels("gemini-1.5-flash") == "gemini-1.5-flash"
    assert labels("prompt-injected-model-name-1234") == OTHER
    assert labels("text-bison") == "text-bison"
    metrics, engine, _ = setup(labels)
    registry = metrics.registry
    engine.feed(logs("x", 10, 4, model="gpt-4o-mini"))
    engine.feed(logs("y", 10, 2, model="text-bison"))
    # the configured models from the start (at 0), and "other" for every other name
    assert label_values(registry, "lookout_records_total", "model") == {
        "gemini-1.5-flash",
        "text-bison",
        OTHER,
    }
    assert value(registry, "lookout_records_total", model=OTHER) == 4
    assert value(registry, "lookout_records_total", model="gemini-1.5-flash") == 0


def test_the_pipeline_wires_configured_models_into_its_registry(tmp_path: Path) -> None:
    registry = CollectorRegistry()
    config = LookoutConfig(
        sink=DuckDBSinkConfig(path=str(tmp_path / "lookout.duckdb")),
        engine=EngineConfig(writer_id="w1"),
        detectors=DetectorsConfig(enabled=NAMES),
        metrics=MetricsConfig(models=("gemini-1.5-flash",)),
    )
    pipeline = build_pipeline(config, alert_stream=None, registry=registry)
    sim = SimulationConfig(start=T0, hours=4 / 60, calls_per_minute=50, embedding_fraction=0.0)
    batches = list(simulate_batches(sim, seconds_per_batch=20))
    for b in batches:
        pipeline.engine.feed(b)
        pipeline.engine.tick()
    assert pipeline.engine.finish(end_of_input=True)
    pipeline.close()

    gemini = sum(int((b.model == "gemini-1.5-flash").sum()) for b in batches)
    total = sum(len(b) for b in batches)
    assert label_values(registry, "lookout_records_total", "model") == {"gemini-1.5-flash", OTHER}
    assert value(registry, "lookout_records_total", model="gemini-1.5-flash") == gemini
    assert value(registry, "lookout_records_total", model=OTHER) == total - gemini
    assert label_values(registry, "lookout_detections_total", "model") == {
        "gemini-1.5-flash",
        OTHER,
    }


def test_invalid_records_are_counted_by_reason() -> None:
    metrics, engine, _ = setup()
    registry = metrics.registry
    good = ndjson_messages(
        [
            PredictionLog(request_id=f"r{i}", timestamp=T0, model="a", latency_ms=10.0)
            for i in range(6)
        ],
        per_message=3,
    )
    bad = SourceMessage(
        message_id="bad",
        data=b'not json\n{"request_id": "z", "model": "a"}\n{"request_id": "q"',
        ack_id="bad",
    )
    source = FakeSource([good[0], bad, good[1]])
    engine.set_ack_handler(source.ack)
    result = run(
        source,
        engine,
        limits=DecodeLimits(),
        stop=threading.Event(),
        settings=RunSettings(poll_timeout_seconds=0.0),
        metrics=metrics,
    )
    reasons = label_values(registry, "lookout_records_invalid_total", "reason")
    assert reasons  # each error type is its own label value
    counted = sum(value(registry, "lookout_records_invalid_total", reason=r) for r in reasons)
    assert counted == result.invalid_records == 3
    assert value(registry, "lookout_records_total", model="a") == 6


def test_value_gauges_are_one_models_and_tokens_per_call_never_a_cost() -> None:
    """Found in review: `lookout_block_rate_ratio{model="other"}` was set by every model
    folded into "other" in turn, and a window the token budget decided put its dollars into
    `lookout_output_tokens_per_call`. A failed checkpoint was not timed at all."""
    from schemas.detection import Detection
    from worker.metrics import EngineMetrics, ModelLabels

    registry = CollectorRegistry()
    metrics = EngineMetrics(registry, ModelLabels(("a",)))
    at = datetime(2026, 1, 5, tzinfo=UTC)

    def detection(model: str, detector: str, value: float, **details: float) -> Detection:
        return Detection(
            detector=detector,
            model=model,
            window_start=at,
            window_end=at + timedelta(minutes=1),
            verdict="alert",
            condition="x",
            value=value,
            reason="r",
            details=details,
        )

    metrics.evaluated(
        [
            detection("a", "tokens", 0.21, mean_output_tokens=380.0),  # the budget decided
            detection("b", "safety", 0.30),
            detection("c", "safety", 0.01),
        ]
    )
    assert registry.get_sample_value("lookout_output_tokens_per_call", {"model": "a"}) == 380.0
    assert registry.get_sample_value("lookout_block_rate_ratio", {"model": "other"}) is None
    metrics.checkpoint_failed(42.0, 7)
    assert registry.get_sample_value("lookout_checkpoint_duration_seconds_count") == 1
    assert registry.get_sample_value("lookout_windows_open") == 7
    assert (
        registry.get_sample_value("lookout_checkpoint_duration_seconds_bucket", {"le": "60.0"}) == 1
    )


def test_a_model_that_stopped_sending_loses_its_value_gauges() -> None:
    """Found in review: a model's gauges kept its last window's values for ever after it
    stopped sending, and a rule on them kept firing for a model that was gone."""
    from schemas.detection import Detection
    from worker.metrics import STALE_WINDOWS, EngineMetrics, ModelLabels

    registry = CollectorRegistry()
    metrics = EngineMetrics(registry, ModelLabels())
    t0 = datetime(2026, 1, 5, tzinfo=UTC)

    def window(model: str, i: int) -> Detection:
        start = t0 + timedelta(minutes=i)
        return Detection(
            detector="safety",
            model=model,
            window_start=start,
            window_end=start + timedelta(minutes=1),
            verdict="ok",
            condition="block_rate_above_baseline",
            value=0.02,
            reason="r",
        )

    metrics.evaluated([window("gone", 0), window("busy", 0)])
    for i in range(1, STALE_WINDOWS + 1):
        metrics.evaluated([window("busy", i)])
    assert registry.get_sample_value("lookout_block_rate_ratio", {"model": "gone"}) == 0.02
    metrics.evaluated([window("busy", STALE_WINDOWS + 1)])
    assert registry.get_sample_value("lookout_block_rate_ratio", {"model": "gone"}) is None
    assert registry.get_sample_value("lookout_block_rate_ratio", {"model": "busy"}) == 0.02


def test_the_configured_models_counters_exist_from_the_start() -> None:
    """Found in review: late, duplicate and quarantined series appeared only at their first
    increment, so a `rate()` panel said "no data" instead of 0."""
    from worker.metrics import EngineMetrics, ModelLabels

    registry = CollectorRegistry()
    EngineMetrics(registry, ModelLabels(("gemini-1.5-flash",)))
    for name, labels in (
        ("lookout_records_total", {"model": "gemini-1.5-flash"}),
        ("lookout_records_late_total", {"model": "gemini-1.5-flash"}),
        ("lookout_records_duplicate_total", {"model": "gemini-1.5-flash"}),
        ("lookout_records_quarantined_total", {"model": "gemini-1.5-flash", "kind": "future"}),
    ):
        assert registry.get_sample_value(name, labels) == 0.0, name


def test_value_gauges_leave_out_windows_too_small_for_their_detector_to_judge() -> None:
    """A quiet model's window of 3 calls, 1 blocked, put 33% in `lookout_block_rate_ratio`,
    and a dashboard or a rule on it saw an incident no test had found (the report leaves such
    windows out for the same reason); its gauge goes instead of keeping an older value. A
    window with enough calls that has no baseline yet, or a small one judged together with
    the windows before it, still shows its value."""
    from schemas.detection import Detection
    from worker.metrics import EngineMetrics, ModelLabels

    registry = CollectorRegistry()
    metrics = EngineMetrics(registry, ModelLabels(), min_calls={"safety": 100})
    t0 = datetime(2026, 1, 5, tzinfo=UTC)

    def window(i: int, calls: int, blocked: int, verdict: Verdict) -> Detection:
        start = t0 + timedelta(minutes=i)
        return Detection(
            detector="safety",
            model="quiet",
            window_start=start,
            window_end=start + timedelta(minutes=1),
            verdict=verdict,
            condition="block_rate_above_baseline",
            value=blocked / calls,
            sample_size=calls,
            reason="r",
        )

    def gauge() -> float | None:
        return registry.get_sample_value("lookout_block_rate_ratio", {"model": "quiet"})

    metrics.evaluated([window(0, 250, 3, "insufficient_data")])  # no baseline yet
    assert gauge() == 3 / 250
    metrics.evaluated([window(1, 60, 1, "ok")])  # judged with the windows before it
    assert gauge() == 1 / 60
    metrics.evaluated([window(2, 3, 1, "insufficient_data")])
    assert gauge() is None
    judged = {"model": "quiet", "detector": "safety", "verdict": "insufficient_data"}
    assert registry.get_sample_value("lookout_detections_total", judged) == 2  # still counted
    metrics.evaluated([window(3, 200, 6, "alert")])
    assert gauge() == 6 / 200


def test_the_pipeline_gives_the_gauges_each_detector_s_minimum(tmp_path: Path) -> None:
    config = LookoutConfig.model_validate(
        {
            "sink": {"path": str(tmp_path / "m.duckdb")},
            "detectors": {"safety": {"min_calls": 40}},
        }
    )
    pipeline = build_pipeline(config, alert_stream=None)
    try:
        assert pipeline.metrics is not None
        assert pipeline.metrics._min_calls["safety"] == 40
        assert pipeline.metrics._min_calls["latency"] == 50
    finally:
        pipeline.close()
