"""Safety detector: what it counts from real records, and what it tells the SRE."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np

from detectors.base import Baseline, WindowRef
from detectors.safety import SafetyDetector, SafetyState
from schemas.batch import LogBatch
from schemas.detector_config import SafetyConfig
from schemas.prediction_log import PredictionLog

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
WINDOW = WindowRef("gemini-pro", T0, T0 + timedelta(minutes=5))
DET = SafetyDetector(SafetyConfig())


def log(i: int, **kw: object) -> PredictionLog:
    return PredictionLog(request_id=f"r{i}", timestamp=T0, model="gemini-pro", **kw)


def test_counts_blocks_by_stage_reason_and_high_scores() -> None:
    logs = [
        log(0),
        log(1, blocked=True, block_stage="prompt", block_reason="SAFETY"),
        log(2, blocked=True, block_stage="response", block_reason="SAFETY"),
        log(3, blocked=True, block_stage="response", block_reason=None),
        log(4, safety_scores={"harassment": 0.9, "hate": 0.1}),
        log(5, safety_scores={"harassment": 0.75}),
    ]
    row = DET.to_row(DET.add(DET.empty(), LogBatch.from_logs(logs)))
    assert row == {
        "calls": 6,
        "blocked": 3,
        "prompt_blocks": 1,
        "response_blocks": 2,
        "block_reasons": {"SAFETY": 2, "unspecified": 1},
        "high_scores": {"harassment": 2},
    }


def test_free_text_reasons_stay_bounded_and_merge_in_any_order() -> None:
    """A provider putting request-specific text in the reason must not blow up the row."""
    det = SafetyDetector(SafetyConfig(max_reasons=5))
    logs = [log(i, blocked=True, block_reason=f"blocked: term #{i}") for i in range(60)]
    batch = LogBatch.from_logs(logs)
    one_pass = det.add(det.empty(), batch)
    assert len(one_pass.reasons) == 6 and dict(one_pass.reasons)["other"] == 55
    shards = [det.add(det.empty(), batch.take(np.arange(k, 60, 7))) for k in range(7)]
    merged = det.empty()
    for shard in reversed(shards):
        merged = det.merge(merged, shard)
    assert merged == one_pass


def _history(windows: int, calls: int, blocked: int) -> Baseline[SafetyState]:
    return Baseline(
        history=tuple(SafetyState(calls=calls, blocked=blocked) for _ in range(windows))
    )


def test_no_baseline_means_no_judgement_and_says_why() -> None:
    d = DET.evaluate(SafetyState(calls=5000, blocked=400), Baseline(), WINDOW)
    assert d.verdict == "insufficient_data" and not d.firing
    assert "baseline" in d.reason and "5000 calls" in d.reason


def test_ceiling_fires_without_a_baseline() -> None:
    d = DET.evaluate(
        SafetyState(calls=400, blocked=200, reasons=(("SAFETY", 200),)), Baseline(), WINDOW
    )
    assert d.firing and d.condition == "block_rate_above_ceiling" and d.severity == "critical"
    assert "200 of 400" in d.reason and "SAFETY (200)" in d.reason


def test_a_handful_of_blocks_on_a_clean_model_does_not_page() -> None:
    """A model that never blocked: 2 blocks in 300 calls is not an incident."""
    d = DET.evaluate(SafetyState(calls=300, blocked=2), _history(24, 300, 0), WINDOW)
    assert d.verdict == "ok"


def test_tripled_block_rate_alerts_with_numbers_and_stable_condition() -> None:
    d = DET.evaluate(SafetyState(calls=2000, blocked=120), _history(24, 2000, 40), WINDOW)
    assert d.firing and d.condition == "block_rate_above_baseline" and d.severity == "critical"
    assert d.baseline == 0.02 and d.value == 0.06 and d.p_value is not None and d.p_value < 1e-10
    assert "120 of 2000" in d.reason and "2.00%" in d.reason


def test_a_small_sustained_rise_is_caught_over_pooled_windows() -> None:
    """4% instead of 2% at 500 calls is not significant in one window; four together are, and
    the detection says over how many windows it fired."""
    quiet = _history(24, 500, 10).history
    rise = SafetyState(calls=500, blocked=20)
    alone = DET.evaluate(rise, Baseline(history=quiet), WINDOW)
    pooled = DET.evaluate(rise, Baseline(history=(*quiet[:-3], rise, rise, rise)), WINDOW)
    assert alone.verdict == "ok"
    assert pooled.firing and pooled.details["span_windows"] in (4, 8)
    assert f"last {pooled.details['span_windows']} windows" in pooled.reason


def test_an_open_incident_stays_alerting_until_its_rate_is_back() -> None:
    """During an incident a window that merely misses the threshold is not a recovery."""
    quiet = _history(24, 500, 10).history
    incident = tuple(SafetyState(calls=500, blocked=20) for _ in range(6))
    middling = DET.evaluate(
        SafetyState(calls=500, blocked=14), Baseline(history=quiet, recent=incident), WINDOW
    )
    assert middling.firing and middling.details["cleared"] is False
    assert "not yet back" in middling.reason
    back = Baseline(history=quiet, recent=(*incident, SafetyState(calls=500, blocked=7)))
    recovered = DET.evaluate(SafetyState(calls=500, blocked=9), back, WINDOW)
    assert recovered.verdict == "ok" and recovered.details["cleared"] is True
