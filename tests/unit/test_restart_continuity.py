"""A worker restarted during an open incident says exactly what the one that kept running says.

The evaluator re-seeds its baselines from the stored windows and continues from the persisted
alert state. An incident paged on a pooled span (or on the safety detector's older reference)
holds windows from before its first alert, and counts the evidence that it ended from that
alert on; both are part of the persisted state, so the restarted evaluator resolves the
incident at the same window, with the same words, as the continuous one.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import numpy as np
import pytest

from alerts.tracking import EvidenceTracker
from detectors.registry import build_detectors
from detectors.safety import SafetyState
from schemas.alert_config import AlertingConfig
from worker.evaluator import WindowEvaluator

WINDOW = 300
T0 = int(datetime(2026, 6, 1, tzinfo=UTC).timestamp())
MODEL = "gpt-4o-mini"
QUIET, INCIDENT, AFTER = 72, 60, 24


def _evaluator(tracker: EvidenceTracker) -> WindowEvaluator:
    return WindowEvaluator(build_detectors({"safety": None}), WINDOW, tracker)


def _stream(seed: int, calls: int) -> Iterator[tuple[int, SafetyState]]:
    """Quiet at 2%, then doubled for five hours, then quiet again."""
    rng = np.random.default_rng([seed, calls])
    rates = [0.02] * QUIET + [0.04] * INCIDENT + [0.02] * AFTER
    for i, rate in enumerate(rates):
        yield T0 + i * WINDOW, SafetyState(calls=calls, blocked=int(rng.binomial(calls, rate)))


def _said(evaluator: WindowEvaluator, start: int, state: SafetyState) -> list[str]:
    result = evaluator.evaluate(MODEL, start, {"safety": state})
    (detection,) = result.detections
    return [f"{detection.verdict}: {detection.reason}"] + [
        f"{a.status}: {a.summary}" for a in result.alerts
    ]


def _restarted(stopped: WindowEvaluator, stored: dict[int, SafetyState]) -> WindowEvaluator:
    """A new evaluator as `lookout run` builds one: the alert state from its persisted rows,
    the baselines from the stored windows in the ranges it asks for."""
    tracker = EvidenceTracker.load(stopped.tracker.to_rows(), AlertingConfig())
    evaluator = _evaluator(tracker)
    until = max(stored) + WINDOW
    wanted: set[int] = set()
    for since, before in evaluator.seed_ranges(MODEL, until):
        wanted |= {start for start in stored if since <= start < before}
    for start in sorted(wanted):
        evaluator.remember(MODEL, start, {"safety": stored[start]})
    return evaluator


@pytest.mark.parametrize("calls", [120, 500])
def test_a_restart_during_an_incident_changes_no_verdict_and_no_alert(calls: int) -> None:
    """×2 block rate at 120 and 500 calls a window, 10 streams each, restarted 1, 4 and 12
    windows after the first page: every later window's verdict, reason and alert are the
    continuous worker's. (Before the incident's progress was persisted, the restarted worker
    put the windows pooled into the first alert back into the baseline and resolved at a
    different window in 15 of 15 such streams.)"""
    compared = 0
    for seed in range(10):
        windows = list(_stream(seed, calls))
        continuous = _evaluator(EvidenceTracker(AlertingConfig()))
        said = [_said(continuous, start, state) for start, state in windows]
        paged = [i for i, lines in enumerate(said) if any("firing" in x for x in lines[1:])]
        if not paged:
            continue
        for after in (1, 4, 12):
            cut = paged[0] + after
            if cut >= len(windows):
                continue
            stopped = _evaluator(EvidenceTracker(AlertingConfig()))
            for start, state in windows[:cut]:
                _said(stopped, start, state)
            assert stopped.tracker.open_incident(MODEL, "safety") is not None
            evaluator = _restarted(stopped, dict(windows[:cut]))
            resumed = [_said(evaluator, start, state) for start, state in windows[cut:]]
            assert resumed == said[cut:], f"seed {seed}, restarted {after} after the page"
            compared += 1
    assert compared >= 15, f"only {compared} restarts during an incident compared"
