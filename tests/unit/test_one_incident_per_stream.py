"""One incident per (model, detector): what hangs off an incident follows it whatever
condition its windows alert on (found reviewing e38a7c7)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from alerts.state import Incident
from alerts.tracking import EvidenceTracker
from detectors.base import Baseline, WindowRef
from detectors.descriptor_drift import DescriptorDriftDetector
from schemas.alert_config import AlertingConfig
from schemas.detection import Detection
from schemas.drift_config import DescriptorDriftConfig
from tests.unit.test_alert_state import det
from worker.evaluator import WindowEvaluator


def test_the_retune_trigger_hears_every_alert_window_of_the_incident() -> None:
    """An incident opened on the baseline condition and carried on above the ceiling told
    the retune trigger of its first window only: `consecutive_windows` was never reached."""
    heard: list[tuple[str, int]] = []
    tracker = EvidenceTracker(AlertingConfig())

    def on_alerting(detection: Detection, incident: Incident) -> None:
        heard.append((incident.condition, incident.alert_windows))

    tracker.on_alerting = on_alerting
    tracker.observe(det(0, "alert"))
    for i in range(1, 6):
        tracker.observe(det(i, "alert", condition="block_rate_above_ceiling", severity="critical"))
    assert heard == [("block_rate_above_baseline", n) for n in range(1, 7)]


class _Recording(DescriptorDriftDetector):
    """Descriptor drift that alerts every window and notes what it was told."""

    def __init__(self) -> None:
        super().__init__(DescriptorDriftConfig())
        self.told: list[bool] = []

    def evaluate(self, state: Any, baseline: Baseline[Any], window: WindowRef) -> Detection:
        self.told.append(baseline.incident_open)
        detection = super().evaluate(state, baseline, window)
        return detection.model_copy(update={"verdict": "alert", "severity": "warning"})


def test_only_a_firing_incident_lowers_the_bar_for_detectors_without_history() -> None:
    """With fire_after_alert_windows 2, the pending incident's second window was judged at
    the looser hold bar and confirmed pages the strict bar never saw twice."""
    detector = _Recording()
    tracker = EvidenceTracker(AlertingConfig(fire_after_alert_windows=2))
    evaluator = WindowEvaluator({"descriptor_drift": detector}, 60, tracker)
    start = int(datetime(2026, 1, 5, tzinfo=UTC).timestamp())
    for i in range(3):
        evaluator.evaluate("m", start + 60 * i, {"descriptor_drift": detector.empty()})
    assert detector.told == [False, False, True]  # none, pending, firing
