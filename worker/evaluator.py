"""Window close: run every detector against its baseline, update references and alert state.

Baselines come from the merged states of the preceding windows of the same model, kept here in
bounded deques (the longest `history_windows` of any detector) and re-seeded from the sink after
a restart, so a restart does not forget them. A window a detector alerted on is kept out of that
detector's baseline (an empty state stands in for it), so a long incident does not become its
own baseline and resolve while it is still going on; after `max_withheld_windows` alerting
windows in a row the new level is accepted as normal. References (embedding drift) are
persisted through the checkpoint.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from alerts.state import AlertTracker
from detectors.base import Baseline, Detector, WindowRef
from schemas.detection import Alert, Detection


@dataclass
class Evaluation:
    detections: list[Detection] = field(default_factory=list)
    alerts: list[Alert] = field(default_factory=list)
    #: (model, detector) → new reference state
    references: dict[tuple[str, str], Any] = field(default_factory=dict)


class WindowEvaluator:
    def __init__(
        self,
        detectors: Mapping[str, Detector[Any]],
        window_seconds: int,
        tracker: AlertTracker,
        references: Mapping[tuple[str, str], Any] | None = None,
        *,
        max_withheld_windows: int = 30,
    ) -> None:
        self._detectors = detectors
        self._window = window_seconds
        self._tracker = tracker
        self._references: dict[tuple[str, str], Any] = dict(references or {})
        self._depth = max((d.history_windows for d in detectors.values()), default=0)
        self._history: dict[str, deque[tuple[int, Mapping[str, Any]]]] = {}
        self._max_withheld = max_withheld_windows
        self._withheld: dict[tuple[str, str], int] = {}

    @property
    def history_depth(self) -> int:
        return self._depth

    @property
    def tracker(self) -> AlertTracker:
        return self._tracker

    def remember(self, model: str, start: int, states: Mapping[str, Any]) -> None:
        """Record a closed window's merged states as history for the windows after it."""
        if self._depth == 0:
            return
        history = self._history.setdefault(model, deque(maxlen=self._depth))
        if history and history[-1][0] >= start:
            # out-of-order (a late window re-closed): keep the deque sorted by start
            items = [item for item in history if item[0] != start] + [(start, states)]
            items.sort(key=lambda item: item[0])
            history.clear()
            history.extend(items[-self._depth :])
        else:
            history.append((start, states))

    def _baseline(self, model: str, name: str, start: int) -> Baseline[Any]:
        detector = self._detectors[name]
        depth = detector.history_windows
        reference = self._references.get((model, name))
        if depth == 0:
            return Baseline(history=(), reference=reference)
        by_start = {s: states for s, states in self._history.get(model, ())}
        empty = detector.empty()
        first = start - depth * self._window
        # trim leading windows before this model had any traffic: "no baseline yet" stays visible
        known = [s for s in by_start if first <= s < start]
        if not known:
            return Baseline(history=(), reference=reference)
        first = min(known)
        history = tuple(
            by_start[s][name] if s in by_start else empty for s in range(first, start, self._window)
        )
        return Baseline(history=history, reference=reference)

    def evaluate(self, model: str, start: int, states: Mapping[str, Any]) -> Evaluation:
        end = start + self._window
        window = WindowRef(
            model=model,
            start=datetime.fromtimestamp(start, tz=UTC),
            end=datetime.fromtimestamp(end, tz=UTC),
        )
        result = Evaluation()
        remembered = dict(states)
        for name, detector in self._detectors.items():
            detection = detector.evaluate(states[name], self._baseline(model, name, start), window)
            result.detections.append(detection)
            streak = self._withheld.get((model, name), 0)
            if detection.firing and streak < self._max_withheld:
                remembered[name] = detector.empty()
                self._withheld[(model, name)] = streak + 1
            else:
                self._withheld[(model, name)] = 0
            result.alerts.extend(self._tracker.observe(detection))
            key = (model, name)
            reference = detector.update_reference(self._references.get(key), states[name])
            if reference is not None and reference is not self._references.get(key):
                self._references[key] = reference
                result.references[key] = reference
        self.remember(model, start, remembered)
        return result
