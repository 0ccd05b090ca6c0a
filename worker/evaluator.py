"""Window close: run every detector against its baseline, update references and alert state.

Baselines are per (model, detector) *streams* of the windows that entered them, kept here in
bounded deques (each detector's `history_windows`) and re-seeded from the sink after a restart.
A window with no traffic between two judged windows stands in as an empty state, so the history
stays a time series.

**Frozen baselines.** While an incident is open for (model, detector) — from its first alerting
window until it resolves — no window enters that detector's baseline, whatever its own verdict:
the baseline stays the one from before the incident, and the detector receives the incident's
windows separately (`Baseline.recent`) to judge whether the condition has *cleared* against the
pre-incident level. When a detector fired on a pooled span of k windows (a small shift seen
over several windows), the k − 1 windows before the firing one are taken back out of the
baseline as well: they were part of the incident. When the incident resolves, the baseline
continues from where it was frozen.

**After a restart.** Baselines are re-seeded from the sink's window rows (`remember`). Which of
those windows an incident kept out of the baseline is recorded with the alert state
(`EvidenceTracker.exclude`, persisted in the sink with every checkpoint), so the windows of an
incident that has since resolved stay out of the baseline after a restart as they did before.

**Sustained shifts and acceptance.** An incident that lasts keeps firing (the tracker announces
it as a sustained level shift after `alerting.sustained_after`). It ends when the condition
clears, or when its new level is accepted: by a person (`lookout baseline accept`, recorded in
the sink as a `BaselineAccept` naming the incident, read through the `baseline_accepts`
callable), or automatically after `alerting.accept_after`. Accepting resolves the incident with
a notification saying so, and the baseline restarts from the incident's own windows (the
detector's reference, for those that keep one, is rebuilt from them). References are
persisted through the checkpoint.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from alerts.state import AlertTracker
from alerts.tracking import EvidenceTracker
from detectors.base import Baseline, Detector, WindowRef
from schemas.detection import Alert, Detection
from worker.sink import BaselineAccept

#: incident windows kept for the "has it cleared?" judgement and for an acceptance (at least)
MIN_INCIDENT_WINDOWS = 24


@dataclass
class Evaluation:
    detections: list[Detection] = field(default_factory=list)
    alerts: list[Alert] = field(default_factory=list)
    #: (model, detector) → new reference state
    references: dict[tuple[str, str], Any] = field(default_factory=dict)


@dataclass
class _Stream:
    """One (model, detector): the windows in its baseline, and those of its open incident."""

    depth: int
    empty: Any
    clean: deque[tuple[int, Any]]
    incident: deque[tuple[int, Any]] | None = None
    #: the newest window start this stream has seen (baseline or incident)
    last_start: int | None = None

    def history(self, start: int, window: int) -> tuple[Any, ...]:
        """Baseline states for the window at `start`, oldest first (empties for quiet gaps)."""
        if not self.clean:
            return ()
        states = [s for _, s in self.clean]
        if self.incident is None and self.last_start is not None:
            gap = (start - self.last_start) // window - 1
            states += [self.empty] * max(0, min(gap, self.depth))
        return tuple(states[-self.depth :])

    def add_clean(self, start: int, state: Any, window: int) -> None:
        if self.last_start is not None and start <= self.last_start:
            # a late window re-closed: replace or insert it, keep the order
            items = [item for item in self.clean if item[0] != start] + [(start, state)]
            items.sort(key=lambda item: item[0])
            self.clean.clear()
            self.clean.extend(items[-self.depth :])
            return
        if self.clean and self.last_start is not None:
            gap = (start - self.last_start) // window - 1
            for k in range(max(0, min(gap, self.depth))):
                self.clean.append((self.last_start + (k + 1) * window, self.empty))
        self.clean.append((start, state))
        self.last_start = start

    def skip(self, start: int) -> None:
        """A window kept out of the baseline (an incident's, re-seeded after a restart)."""
        self.last_start = max(start, self.last_start or start)

    def add_incident(self, start: int, state: Any, pulled_back: int, window: int) -> None:
        if self.incident is None:
            keep = max(self.depth, MIN_INCIDENT_WINDOWS)
            self.incident = deque(maxlen=keep)
            # the windows pooled with the firing one belong to the incident, not the baseline
            first = start - pulled_back * window
            moved = [item for item in self.clean if first <= item[0] < start]
            for item in moved:
                self.clean.remove(item)
            self.incident.extend(moved)
        self.incident.append((start, state))
        self.last_start = max(start, self.last_start or start)

    def accept(self) -> list[Any]:
        """The incident's windows become the baseline; returns them, oldest first."""
        windows = list(self.incident or ())
        self.clean.clear()
        self.clean.extend(windows[-self.depth :])
        self.incident = None
        return [s for _, s in windows]


class WindowEvaluator:
    def __init__(
        self,
        detectors: Mapping[str, Detector[Any]],
        window_seconds: int,
        tracker: AlertTracker,
        references: Mapping[tuple[str, str], Any] | None = None,
        *,
        baseline_accepts: Callable[[], Sequence[BaselineAccept]] | None = None,
    ) -> None:
        self._detectors = detectors
        self._window = window_seconds
        self._tracker = tracker
        self._references: dict[tuple[str, str], Any] = dict(references or {})
        self._depth = max((d.history_windows for d in detectors.values()), default=0)
        self._streams: dict[tuple[str, str], _Stream] = {}
        self._accepts = baseline_accepts

    @property
    def history_depth(self) -> int:
        return self._depth

    @property
    def tracker(self) -> AlertTracker:
        return self._tracker

    def _stream(self, model: str, name: str) -> _Stream:
        key = (model, name)
        stream = self._streams.get(key)
        if stream is None:
            detector = self._detectors[name]
            depth = detector.history_windows
            stream = _Stream(depth, detector.empty(), deque(maxlen=max(depth, 1)))
            self._streams[key] = stream
        return stream

    def seed_ranges(self, model: str, until: int) -> list[tuple[int, int]]:
        """[since, until) ranges of window starts a restarted evaluator needs for `model`:
        the last `history_depth` windows, and, for an incident still open, the windows before
        it began (its frozen baseline) and its latest windows."""
        depth = self._depth * self._window
        since = until - depth
        # windows kept out of a baseline do not count towards its depth: look further back
        spans = sorted(
            (int(a.timestamp()), int(b.timestamp()))
            for name in self._detectors
            for a, b in self._exclusions(model, name)
        )
        for a, b in reversed(spans):
            if a < until and b > since:
                since -= min(b, until) - max(a, since)
        ranges = [(since, until)]
        for name in self._detectors:
            incident = self._tracker.open_incident(model, name)
            if incident is None or incident.started_at is None:
                continue
            began = int(incident.started_at.timestamp())
            if began - depth < ranges[0][0]:
                ranges.append((began - depth, min(began, ranges[0][0])))
        return sorted(set(ranges))

    def remember(self, model: str, start: int, states: Mapping[str, Any]) -> None:
        """Record a closed window's merged states as history (used to re-seed after a restart):
        a window of an incident still open goes to that incident, not to the baseline."""
        for name, detector in self._detectors.items():
            if detector.history_windows == 0 or name not in states:
                continue
            stream = self._stream(model, name)
            incident = self._tracker.open_incident(model, name)
            started = incident.started_at if incident is not None else None
            if started is not None and start >= started.timestamp():
                stream.add_incident(start, states[name], 0, self._window)
            elif any(
                a.timestamp() <= start < b.timestamp() for a, b in self._exclusions(model, name)
            ):
                stream.skip(start)
            else:
                stream.add_clean(start, states[name], self._window)

    def _exclusions(self, model: str, name: str) -> list[tuple[datetime, datetime]]:
        if isinstance(self._tracker, EvidenceTracker):
            return self._tracker.exclusions(model, name)
        return []

    def _baseline(self, model: str, name: str, start: int) -> Baseline[Any]:
        reference = self._references.get((model, name))
        if self._detectors[name].history_windows == 0:
            return Baseline(history=(), reference=reference)
        stream = self._stream(model, name)
        recent = tuple(s for _, s in stream.incident) if stream.incident is not None else ()
        return Baseline(
            history=stream.history(start, self._window), reference=reference, recent=recent
        )

    def evaluate(self, model: str, start: int, states: Mapping[str, Any]) -> Evaluation:
        end = start + self._window
        window = WindowRef(
            model=model,
            start=datetime.fromtimestamp(start, tz=UTC),
            end=datetime.fromtimestamp(end, tz=UTC),
        )
        result = Evaluation()
        for name, detector in self._detectors.items():
            key = (model, name)
            state = states[name]
            detection = detector.evaluate(state, self._baseline(model, name, start), window)
            result.detections.append(detection)
            result.alerts.extend(self._tracker.observe(detection))
            incident = self._tracker.open_incident(model, name)
            if incident is not None:
                span = int(detection.details.get("span_windows", 1)) if detection.firing else 1
                if detector.history_windows:
                    frozen = self._stream(model, name)
                    frozen.add_incident(start, state, span - 1, self._window)
                    if isinstance(self._tracker, EvidenceTracker) and frozen.incident:
                        first = datetime.fromtimestamp(frozen.incident[0][0], tz=UTC)
                        self._tracker.exclude(model, name, first, window.end)
                why = self._acceptance(incident.started_at, model, name, window.end)
                if why is not None:
                    result.alerts.extend(self._tracker.accept(detection, why))
                    self._accept(model, name, detector, result)
                continue
            stream = self._streams.get(key)
            if stream is not None and stream.incident is not None:
                stream.incident = None  # resolved: the baseline continues from before it
            if detector.history_windows:
                self._stream(model, name).add_clean(start, state, self._window)
            reference = detector.update_reference(self._references.get(key), state)
            if reference is not None and reference is not self._references.get(key):
                self._references[key] = reference
                result.references[key] = reference
        return result

    def _acceptance(
        self, started: datetime | None, model: str, name: str, now: datetime
    ) -> str | None:
        """Why the open incident's new level is accepted now, or None."""
        if started is None:
            return None
        if self._accepts is not None:
            for accept in self._accepts():
                if (accept.model, accept.detector, accept.incident_started_at) == (
                    model,
                    name,
                    started,
                ):
                    by = f" by {accept.accepted_by}" if accept.accepted_by else ""
                    return (
                        f"new level accepted as the baseline{by} at "
                        f"{accept.accepted_at:%Y-%m-%d %H:%M}Z (lookout baseline accept)"
                    )
        after = self._tracker.config.accept_after
        if after is not None and now - started >= after:
            return f"new level accepted as the baseline automatically after {after} (accept_after)"
        return None

    def _accept(self, model: str, name: str, detector: Detector[Any], result: Evaluation) -> None:
        key = (model, name)
        stream = self._streams.get(key)
        if isinstance(self._tracker, EvidenceTracker) and stream and stream.incident:
            # the accepted windows are the baseline now, after a restart too
            first = datetime.fromtimestamp(stream.incident[0][0], tz=UTC)
            self._tracker.include(model, name, first)
        windows = self._stream(model, name).accept() if detector.history_windows else []
        if key in self._references:
            reference = None
            for state in windows:
                reference = detector.update_reference(reference, state)
            if reference is not None:
                self._references[key] = reference
                result.references[key] = reference
