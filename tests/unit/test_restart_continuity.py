"""A worker restarted during an open incident says exactly what the one that kept running says.

The evaluator re-seeds its baselines from the stored windows and continues from the persisted
alert state. An incident paged on a pooled span (or on the safety detector's older reference)
holds windows from before its first alert, and counts the evidence that it ended from that
alert on; both are part of the persisted state, so the restarted evaluator resolves the
incident at the same window, with the same words, as the continuous one.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pytest

from alerts.tracking import EvidenceTracker
from bench.detection_quality import Makers
from detectors.registry import build_detectors
from detectors.synthetic_embeddings import embedding_batch
from schemas.alert_config import AlertingConfig
from worker.evaluator import WindowEvaluator

WINDOW = 300
T0 = int(datetime(2026, 6, 1, tzinfo=UTC).timestamp())
MODEL = "gpt-4o-mini"
QUIET, INCIDENT, AFTER = 72, 60, 24

#: (detector, how much the incident multiplies its quantity): a shift small enough to page on a
#: pooled span at these rates, so windows before the first alert belong to the incident
INCIDENTS = {"safety": 2.0, "latency": 1.4, "tokens": 1.3}
MakeState = Callable[[np.random.Generator, int, float, str], Any]


@pytest.fixture(scope="module")
def makers() -> Makers:
    return Makers(np.random.default_rng(2026))


def _maker(makers: Makers, name: str) -> MakeState:
    """The window states of `name` drawn as the detection-quality benchmark draws them."""
    chosen: MakeState = {
        "safety": makers.safety,
        "latency": makers.latency_state,
        "tokens": makers.tokens,
    }[name]
    return chosen


def _evaluator(name: str, tracker: EvidenceTracker) -> WindowEvaluator:
    return WindowEvaluator(build_detectors({name: None}), WINDOW, tracker)


def _stream(make: MakeState, seed: int, calls: int, factor: float) -> list[tuple[int, Any]]:
    """Quiet, then the quantity multiplied by `factor` for five hours, then quiet again."""
    rng = np.random.default_rng([seed, calls])
    factors = [1.0] * QUIET + [factor] * INCIDENT + [1.0] * AFTER
    return [(T0 + i * WINDOW, make(rng, calls, f, MODEL)) for i, f in enumerate(factors)]


def _said(evaluator: WindowEvaluator, name: str, start: int, state: Any) -> list[str]:
    result = evaluator.evaluate(MODEL, start, {name: state})
    (detection,) = result.detections
    return [f"{detection.verdict}: {detection.reason}"] + [
        f"{a.status}: {a.summary}" for a in result.alerts
    ]


def _paged(said: list[list[str]]) -> list[int]:
    """Indexes of the windows whose alerts include a page."""
    return [i for i, lines in enumerate(said) if any("firing" in x for x in lines[1:])]


def _restarted(name: str, stopped: WindowEvaluator, stored: dict[int, Any]) -> WindowEvaluator:
    """A new evaluator as `lookout run` builds one: the alert state from its persisted rows,
    the baselines from the stored windows in the ranges it asks for."""
    tracker = EvidenceTracker.load(stopped.tracker.to_rows(), AlertingConfig())
    evaluator = _evaluator(name, tracker)
    until = max(stored) + WINDOW
    wanted: set[int] = set()
    for since, before in evaluator.seed_ranges(MODEL, until):
        wanted |= {start for start in stored if since <= start < before}
    for start in sorted(wanted):
        evaluator.remember(MODEL, start, {name: stored[start]})
    return evaluator


@pytest.mark.parametrize("name", sorted(INCIDENTS))
@pytest.mark.parametrize("calls", [120, 500])
def test_a_restart_during_an_incident_changes_no_verdict_and_no_alert(
    makers: Makers, name: str, calls: int
) -> None:
    """Block rate ×2, p95 ×1.4, output tokens ×1.3 at 120 and 500 calls a window, 10 streams
    each, restarted 1, 4 and 12 windows after the first page: every later window's verdict,
    reason and alert are the continuous worker's. (Before the incident's progress was
    persisted, a restarted worker put the windows pooled into the first alert back into the
    baseline and counted the evidence of a return from the restart: it resolved at a different
    window in 15 of 15 block-rate streams.)"""
    make = _maker(makers, name)
    compared = 0
    for seed in range(10):
        windows = _stream(make, seed, calls, INCIDENTS[name])
        continuous = _evaluator(name, EvidenceTracker(AlertingConfig()))
        said = [_said(continuous, name, start, state) for start, state in windows]
        paged = _paged(said)
        if not paged:
            continue
        for after in (1, 4, 12):
            cut = paged[0] + after
            if cut >= len(windows):
                continue
            stopped = _evaluator(name, EvidenceTracker(AlertingConfig()))
            for start, state in windows[:cut]:
                _said(stopped, name, start, state)
            if stopped.tracker.open_incident(MODEL, name) is None:
                continue  # a short false page that had already resolved
            evaluator = _restarted(name, stopped, dict(windows[:cut]))
            resumed = [_said(evaluator, name, start, state) for start, state in windows[cut:]]
            assert resumed == said[cut:], f"seed {seed}, restarted {after} after the page"
            compared += 1
    print(f"{name} at {calls} calls: {compared} restarts during an incident, all alike")
    assert compared >= 12, f"only {compared} restarts during an incident compared"


@pytest.mark.parametrize("calls", [120, 500])
def test_a_restart_shortly_before_an_incident_changes_nothing(makers: Makers, calls: int) -> None:
    """Output tokens ×1.3, restarted 1, 3, 6 and 12 windows before the first page: the
    continuous evaluator holds twice the depth of clean windows (the older ones back-fill the
    baseline when the incident pulls its pooled windows out), so a restart re-reads as many.
    Re-reading only the depth, the reasons differed in 4 of 36 restarts at 120 calls."""
    compared = 0
    for seed in range(10):
        windows = _stream(makers.tokens, seed, calls, INCIDENTS["tokens"])
        continuous = _evaluator("tokens", EvidenceTracker(AlertingConfig()))
        said = [_said(continuous, "tokens", start, state) for start, state in windows]
        paged = _paged(said)
        if not paged:
            continue
        for before in (1, 3, 6, 12):
            cut = paged[0] - before
            stopped = _evaluator("tokens", EvidenceTracker(AlertingConfig()))
            for start, state in windows[:cut]:
                _said(stopped, "tokens", start, state)
            if stopped.tracker.open_incident(MODEL, "tokens") is not None:
                continue  # an earlier false page still open: not "before the incident"
            evaluator = _restarted("tokens", stopped, dict(windows[:cut]))
            resumed = [_said(evaluator, "tokens", start, state) for start, state in windows[cut:]]
            assert resumed == said[cut:], f"seed {seed}, restarted {before} before the page"
            compared += 1
    assert compared >= 20, f"only {compared} restarts before an incident compared"


def test_a_restart_during_a_topic_shift_keeps_the_incident_windows(makers: Makers) -> None:
    """Embedding drift keeps 96 of an open incident's windows to judge whether it ended, more
    than its history depth; with embedding drift alone (depth 7) a restart re-read only 14-15
    of them, and 17 of 24 restarted streams resolved at another window or not at all."""
    detector = makers.embedding
    rng = np.random.default_rng(2026)
    reference = None
    for i in range(3):
        batch = embedding_batch(makers.quiet_pool[rng.integers(0, 20_000, 1_000)], i * 10_000)
        reference = detector.update_reference(reference, detector.add(detector.empty(), batch))
    name = "embedding_drift"

    def evaluator(tracker: EvidenceTracker) -> WindowEvaluator:
        return WindowEvaluator({name: detector}, WINDOW, tracker, {(MODEL, name): reference})

    compared = 0
    for seed in range(4):
        stream_rng = np.random.default_rng([seed, 99])
        shares = [0.0] * 48 + [0.2] * 72 + [0.0] * 30
        windows = [
            (T0 + i * WINDOW, makers.embedding_state(makers.embedding_rows(stream_rng, 60, f)))
            for i, f in enumerate(shares)
        ]
        continuous = evaluator(EvidenceTracker(AlertingConfig()))
        said = [_said(continuous, name, start, state) for start, state in windows]
        paged = _paged(said)
        if not paged:
            continue
        for after in (20, 40, 60):
            cut = paged[0] + after
            stopped = evaluator(EvidenceTracker(AlertingConfig()))
            for start, state in windows[:cut]:
                _said(stopped, name, start, state)
            if stopped.tracker.open_incident(MODEL, name) is None:
                continue
            restarted = evaluator(EvidenceTracker.load(stopped.tracker.to_rows(), AlertingConfig()))
            until = windows[cut - 1][0] + WINDOW
            for start, state in windows[:cut]:
                if any(a <= start < b for a, b in restarted.seed_ranges(MODEL, until)):
                    restarted.remember(MODEL, start, {name: state})
            resumed = [_said(restarted, name, start, state) for start, state in windows[cut:]]
            assert resumed == said[cut:], f"seed {seed}, restarted {after} after the page"
            compared += 1
    assert compared >= 8, f"only {compared} restarts during a topic shift compared"


@pytest.mark.parametrize("name", sorted(INCIDENTS))
def test_a_restart_late_in_a_long_incident_keeps_its_frozen_baseline(
    makers: Makers, name: str
) -> None:
    """An incident that outlasts the windows its stream keeps (here 16 hours of 5-minute
    windows, a restart 15 hours in): the restarted worker still judges against the level from
    before it began, so it neither resolves the incident while it goes on nor takes its level
    as the new normal, and says exactly what the continuous worker says. (The oldest kept
    window used to be persisted as the incident's start: the restarted worker re-seeded its
    baseline from incident windows and resolved the incident mid-way.)"""
    make = _maker(makers, name)
    compared = 0
    for seed in range(3):
        rng = np.random.default_rng([seed, 77])
        factors = [1.0] * QUIET + [2.0] * 192 + [1.0] * AFTER
        windows = [(T0 + i * WINDOW, make(rng, 500, f, MODEL)) for i, f in enumerate(factors)]
        continuous = _evaluator(name, EvidenceTracker(AlertingConfig()))
        said = [_said(continuous, name, start, state) for start, state in windows]
        paged = _paged(said)
        if not paged or paged[0] > QUIET + 6:
            continue
        cut = QUIET + 180
        stopped = _evaluator(name, EvidenceTracker(AlertingConfig()))
        for start, state in windows[:cut]:
            _said(stopped, name, start, state)
        assert stopped.tracker.open_incident(MODEL, name) is not None, f"seed {seed}"
        evaluator = _restarted(name, stopped, dict(windows[:cut]))
        resumed = [_said(evaluator, name, start, state) for start, state in windows[cut:]]
        still_on = QUIET + 192 - cut
        assert not any("resolved" in x for lines in resumed[:still_on] for x in lines[1:]), (
            f"seed {seed}: resolved while the incident went on: {resumed[:still_on]}"
        )
        assert resumed == said[cut:], f"seed {seed}"
        compared += 1
    assert compared >= 2, f"only {compared} long incidents paged early enough to compare"
