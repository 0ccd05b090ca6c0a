"""Alert quality on realistic traffic: each detector catches its incident and stays quiet otherwise.

Traffic per window: latency lognormal (median 800 ms), output tokens lognormal (median 250),
input tokens lognormal (median 600), 2% of calls blocked. Each window is evaluated against the
windows before it, exactly as the evaluator does at window close.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import orjson
import pytest

from detectors.base import Baseline, WindowRef
from detectors.registry import build_detectors
from schemas.batch import LogBatch
from schemas.detection import Detection
from schemas.detector_config import LatencyConfig, SafetyConfig, SloConfig, TokensConfig

T0 = datetime(2026, 1, 1, tzinfo=UTC)
STEP = timedelta(minutes=5)
REASONS = np.array(["SAFETY", "PROHIBITED_CONTENT", "BLOCKLIST"], dtype=object)
HISTORY = 24
QUIET_WINDOWS = 300
SLO = SloConfig(threshold_ms=4000.0, objective=0.99)
DETECTORS = build_detectors(
    {"safety": SafetyConfig(), "latency": LatencyConfig(slo=SLO), "tokens": TokensConfig()}
)


def window_batches(
    rng: np.random.Generator,
    n: int,
    windows: int,
    block_rate: float = 0.02,
    latency_scale: float = 1.0,
    token_scale: float = 1.0,
) -> list[LogBatch]:
    """`windows` batches of n calls each, drawn in one vectorised pass and sliced."""
    total = n * windows
    blocked = rng.random(total) < block_rate
    k = int(blocked.sum())
    stage = np.full(total, None, dtype=object)
    stage[blocked] = np.where(rng.random(k) < 0.5, "prompt", "response")
    reason = np.full(total, None, dtype=object)
    reason[blocked] = REASONS[rng.integers(0, 3, k)]
    none = np.full(total, None, dtype=object)
    nan = np.full(total, np.nan)
    columns: dict[str, Any] = {
        "request_id": none,
        "timestamp": np.zeros(total),
        "model": none,
        "model_version": none,
        "latency_ms": rng.lognormal(np.log(800.0), 0.5, total) * latency_scale,
        "time_to_first_token_ms": nan,
        "input_tokens": np.round(rng.lognormal(np.log(600.0), 0.8, total)),
        "output_tokens": np.round(rng.lognormal(np.log(250.0), 0.7, total) * token_scale),
        "blocked": blocked,
        "block_stage": stage,
        "block_reason": reason,
        "finish_reason": none,
        "citation_count": nan,
        "response_length": nan,
        "error": none,
    }
    scores = rng.random(total) ** 12
    return [
        LogBatch(
            **{k: v[i * n : (i + 1) * n] for k, v in columns.items()},
            safety_scores={"harassment": scores[i * n : (i + 1) * n]},
        )
        for i in range(windows)
    ]


def evaluate_stream(name: str, batches: Sequence[LogBatch], start: int) -> list[Detection]:
    """Every window from `start` on, judged against the windows before it."""
    det: Any = DETECTORS[name]
    states = [det.add(det.empty(), b) for b in batches]
    out = []
    for i in range(start, len(states)):
        history = tuple(states[max(0, i - det.history_windows) : i])
        window = WindowRef("chat-model", T0 + i * STEP, T0 + (i + 1) * STEP)
        out.append(det.evaluate(states[i], Baseline(history=history), window))
    return out


@pytest.mark.slow
@pytest.mark.parametrize("calls", [50, 500, 5000, 20_000])
def test_no_false_alerts_on_quiet_traffic(calls: int) -> None:
    rng = np.random.default_rng(calls)
    batches = window_batches(rng, calls, QUIET_WINDOWS + HISTORY)
    for name in ("safety", "latency", "tokens"):
        detections = evaluate_stream(name, batches, start=HISTORY)
        alerts = [d for d in detections if d.firing]
        judged = sum(d.verdict != "insufficient_data" for d in detections)
        print(
            f"{name} @ {calls} calls/window: {len(alerts)} alerts in {len(detections)} quiet "
            f"windows ({judged} judged)"
        )
        assert judged == len(detections), f"{name} refused to judge quiet windows at {calls}"
        assert not alerts, alerts[0].reason


def incident_trials(
    name: str, calls: int, trials: int, seed: int = 7, **incident: float
) -> tuple[float, float, Detection]:
    """Share of incidents caught in their first window, and within their first two."""
    rng = np.random.default_rng(seed)
    first = within_two = 0
    last: Detection | None = None
    for _ in range(trials):
        batches = window_batches(rng, calls, HISTORY) + window_batches(rng, calls, 2, **incident)
        d1, d2 = evaluate_stream(name, batches, start=HISTORY)
        first += d1.firing
        within_two += d1.firing or d2.firing
        last = d1
    assert last is not None
    print(
        f"{name} {incident} @ {calls}: caught {first / trials:.0%} in window 1, "
        f"{within_two / trials:.0%} within 2 windows"
    )
    return first / trials, within_two / trials, last


def test_block_rate_tripling_at_2000_calls_is_caught_at_once() -> None:
    first, _, detection = incident_trials("safety", 2000, 20, block_rate=0.06)
    assert first == 1.0
    assert detection.condition == "block_rate_above_baseline"
    assert "of 2000 calls blocked" in detection.reason and "SAFETY" in detection.reason


@pytest.mark.slow
def test_block_rate_doubling_at_500_calls_within_two_windows() -> None:
    """10 expected blocks per window: the best a 1-in-1,000 false-alert budget allows.

    Two windows give 20 vs 40 expected blocks; an exact test at the configured alpha catches
    about two thirds of these incidents by the second window (measured: 66% in 300 trials),
    and every one at 2,000 calls per window (see above).
    """
    _, within_two, _ = incident_trials("safety", 500, 100, block_rate=0.04)
    assert within_two >= 0.5


def test_p95_latency_doubling_is_caught_at_once() -> None:
    first, _, detection = incident_trials("latency", 500, 10, latency_scale=2.0)
    assert first == 1.0
    assert detection.condition == "p95_above_baseline"
    assert detection.value is not None and detection.baseline is not None
    assert detection.value > 1.8 * detection.baseline


def test_p95_latency_doubling_is_caught_at_50_calls() -> None:
    first, _, _ = incident_trials("latency", 50, 10, latency_scale=2.0)
    assert first == 1.0


def test_output_tokens_up_half_is_caught_at_once() -> None:
    first, _, detection = incident_trials("tokens", 2000, 10, token_scale=1.5)
    assert first == 1.0
    assert detection.condition == "output_tokens_above_baseline"


def test_output_tokens_doubling_at_500_calls_within_two_windows() -> None:
    _, within_two, _ = incident_trials("tokens", 500, 20, token_scale=2.0)
    assert within_two == 1.0


def test_slow_calls_burning_the_slo_page() -> None:
    """A third of calls slower than the 1% SLO threshold for an hour: 33× burn, a page."""
    rng = np.random.default_rng(3)
    batches = window_batches(rng, 500, HISTORY) + window_batches(rng, 500, 12, latency_scale=4.0)
    detections = evaluate_stream("latency", batches, start=HISTORY)
    assert detections[-1].condition == "slo_burn_rate_page"
    assert detections[-1].severity == "critical"
    assert "14.4" in detections[-1].reason


def test_no_judgement_without_a_baseline() -> None:
    rng = np.random.default_rng(5)
    batches = window_batches(rng, 5000, 1, block_rate=0.05, latency_scale=3, token_scale=3)
    for name in ("safety", "latency", "tokens"):
        (detection,) = evaluate_stream(name, batches, start=0)
        assert detection.verdict == "insufficient_data", name
        assert "baseline" in detection.reason


def test_a_window_of_too_few_calls_is_never_judged_alone() -> None:
    """10 calls say nothing alone: the window is either not judged or judged pooled with the
    windows before it (and the detection says over how many), and a 10-call blip never pages."""
    rng = np.random.default_rng(6)
    batches = window_batches(rng, 500, HISTORY) + window_batches(
        rng, 10, 1, block_rate=0.5, latency_scale=3, token_scale=3
    )
    for name in ("latency", "tokens"):
        (detection,) = evaluate_stream(name, batches, start=HISTORY)
        assert not detection.firing, name
        if detection.verdict == "insufficient_data":
            assert "10 calls" in detection.reason
        else:
            assert detection.details["span_windows"] > 1, name
            assert "last" in detection.reason


def test_every_detection_reaches_the_sink_and_notifiers_as_plain_json() -> None:
    """numpy scalars in a detection would make orjson (and so the sink) raise mid-stream."""
    rng = np.random.default_rng(8)
    batches = window_batches(rng, 500, HISTORY) + window_batches(
        rng, 500, 13, block_rate=0.3, latency_scale=4.0, token_scale=2.0
    )
    verdicts = set()
    for name in ("safety", "latency", "tokens"):
        for d in evaluate_stream(name, batches, start=0):
            restored = Detection.model_validate(orjson.loads(orjson.dumps(d.model_dump())))
            assert restored == d
            verdicts.add((name, d.verdict, d.condition))
    assert ("latency", "alert", "slo_burn_rate_page") in verdicts
    assert ("safety", "alert", "block_rate_above_ceiling") in verdicts
    assert ("tokens", "insufficient_data", "output_tokens_above_baseline") in verdicts
