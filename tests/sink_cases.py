"""Checkpoints built from real detector states, shared by the sink tests (contract and DuckDB)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from alerts.state import AlertTracker
from detectors.registry import build_detectors
from schemas.alert_config import AlertingConfig
from schemas.batch import LogBatch
from schemas.detection import Detection
from schemas.prediction_log import PredictionLog
from worker.sink import PartialRow, Sink

T0 = datetime(2026, 1, 5, 6, 0, tzinfo=UTC)
S0 = int(T0.timestamp())
DETECTORS = build_detectors({"safety": None, "latency": None, "tokens": None})


def batch(
    prefix: str, n: int, *, model: str = "a", second: float = 5, blocked: int = 0
) -> LogBatch:
    return LogBatch.from_logs(
        PredictionLog(
            request_id=f"{prefix}-{i}",
            timestamp=T0 + timedelta(seconds=second),
            model=model,
            latency_ms=100.0 + 10 * i,
            input_tokens=100 + i,
            output_tokens=50 + i,
            blocked=i < blocked,
            block_stage="response" if i < blocked else None,
            block_reason="SAFETY" if i < blocked else None,
        )
        for i in range(n)
    )


def states_of(logs: LogBatch) -> dict[str, Any]:
    return {name: d.add(d.empty(), logs) for name, d in DETECTORS.items()}


def rows_of(states: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {name: DETECTORS[name].to_row(state) for name, state in states.items()}


def partial(logs: LogBatch, model: str = "a", start: int = S0, late: int = 0) -> PartialRow:
    return PartialRow(
        model=model,
        window_start=start,
        window_end=start + 60,
        records=len(logs),
        late_records=late,
        states=rows_of(states_of(logs)),
    )


def ids(logs: LogBatch, model: str = "a", start: int = S0) -> list[tuple[str, int, str]]:
    return [(model, start, rid) for rid in logs.request_id.tolist()]


def detection(model: str = "a", start: int = S0, **details: Any) -> Detection:
    return Detection(
        detector="safety",
        model=model,
        window_start=datetime.fromtimestamp(start, tz=UTC),
        window_end=datetime.fromtimestamp(start + 60, tz=UTC),
        verdict="alert",
        condition="block_rate_above_ceiling",
        severity="critical",
        value=0.5,
        threshold=0.25,
        sample_size=10,
        reason="half the calls blocked",
        details={"block_rate": 0.5, **details},
    )


def tracker_rows(*detections: Detection) -> list[dict[str, Any]]:
    tracker = AlertTracker(AlertingConfig())
    for d in detections:
        tracker.observe(d)
    return tracker.to_rows()


def merged_state(sink: Sink, model: str, start: int) -> dict[str, Any]:
    stored = sink.load_window(model, start)
    out = {name: d.empty() for name, d in DETECTORS.items()}
    for row in stored.partial_states:
        for name, d in DETECTORS.items():
            out[name] = d.merge(out[name], d.from_row(row[name]))
    return out
