"""After a restart, the windows of an incident that has resolved stay out of the baseline.

A restarted evaluator re-seeds its baselines from the sink's window rows; which of them an
incident kept out is only known from what the sink holds with the alert state. Windows go
through the real `WindowEvaluator` and `EvidenceTracker` (what `lookout run` builds); the
"sink" is the dict of window states and the tracker's persisted rows, round-tripped as JSON.
"""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import orjson

from alerts.tracking import EvidenceTracker
from detectors.registry import build_detectors
from detectors.safety import SafetyState
from schemas.alert_config import AlertingConfig
from schemas.detection import Detection
from schemas.detector_config import SafetyConfig
from worker.evaluator import WindowEvaluator

WINDOW = 300
T0 = int(datetime(2026, 6, 1, tzinfo=UTC).timestamp())
MODEL = "gpt-4o-mini"


def _evaluator(tracker: EvidenceTracker) -> WindowEvaluator:
    return WindowEvaluator(build_detectors({"safety": SafetyConfig()}), WINDOW, tracker)


def _judge(evaluator: WindowEvaluator, i: int, state: SafetyState) -> Detection:
    (detection,) = evaluator.evaluate(MODEL, T0 + i * WINDOW, {"safety": state}).detections
    return detection


def test_a_resolved_incident_stays_out_of_the_baseline_after_a_restart() -> None:
    rng = np.random.default_rng(21)
    rates = [0.02] * 30 + [0.06] * 6 + [0.02] * 8
    windows = {
        T0 + i * WINDOW: SafetyState(2000, int(rng.binomial(2000, rate)))
        for i, rate in enumerate(rates)
    }
    live = _evaluator(EvidenceTracker(AlertingConfig()))
    alerts = []
    for i, state in enumerate(windows.values()):
        alerts += live.evaluate(MODEL, T0 + i * WINDOW, {"safety": state}).alerts
    assert [a.status for a in alerts if "escalated" not in a.summary] == ["firing", "resolved"]
    assert live.tracker.open_incident(MODEL, "safety") is None

    # restart: the alert state as the sink stores it (JSON rows), the baselines from windows
    rows = orjson.loads(orjson.dumps(live.tracker.to_rows()))
    restarted = _evaluator(EvidenceTracker.load(rows, AlertingConfig()))
    until = T0 + len(rates) * WINDOW
    for since, before in restarted.seed_ranges(MODEL, until):
        for start in sorted(s for s in windows if since <= s < before):
            restarted.remember(MODEL, start, {"safety": windows[start]})

    nxt = SafetyState(2000, 44)
    before_restart = _judge(live, len(rates), nxt)
    after_restart = _judge(restarted, len(rates), nxt)
    assert before_restart.baseline is not None and before_restart.baseline < 0.022
    # the incident's 6% windows would lift a 24-window baseline to about 2.7%
    assert after_restart.baseline == before_restart.baseline, after_restart.reason


def test_an_accepted_level_is_the_baseline_after_a_restart_too() -> None:
    tracker = EvidenceTracker(AlertingConfig())
    at = datetime.fromtimestamp(T0, UTC)
    tracker.exclude(MODEL, "safety", at, datetime.fromtimestamp(T0 + 6 * WINDOW, UTC))
    tracker.include(MODEL, "safety", at)
    rows = orjson.loads(orjson.dumps(tracker.to_rows()))
    assert EvidenceTracker.load(rows, AlertingConfig()).exclusions(MODEL, "safety") == []
