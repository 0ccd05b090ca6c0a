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
baseline as well: they were part of the incident (or as many as the detector names in
`incident_windows_before`: the safety detector's older reference takes out every window after
it). They tell the incident's level, but the evidence that it ended counts only from its first
alerting window on (`Baseline.recent_onset`). When the incident resolves, the baseline
continues from where it was frozen.

**After a restart.** Baselines are re-seeded from the sink's window rows (`remember`). Which of
those windows an incident kept out of the baseline is recorded with the alert state
(`EvidenceTracker.exclude`, persisted in the sink with every checkpoint), so the windows of an
incident that has since resolved stay out of the baseline after a restart as they did before.
Where an open incident's frozen stream stands — its first window (the pooled ones before the
first alert included), its first alerting window, the evidence of a return so far — is
persisted the same way (`EvidenceTracker.note_progress`), so a restarted evaluator judges the
incident's next windows exactly as the one that stopped would have.

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

import math
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from alerts.state import AlertTracker
from alerts.tracking import EvidenceTracker
from detectors.base import Baseline, Detector, WindowRef
from schemas.detection import Alert, Detection
from worker.sink import BaselineAccept

#: incident windows kept for the "has it cleared?" judgement and for an acceptance (at least;
#: a detector may ask for more with an `incident_windows` attribute)
MIN_INCIDENT_WINDOWS = 24
#: evidence (nats) that an open incident had returned to its baseline, after which a fresh
#: rise is a new incident (see `WindowEvaluator._fresh_onset`)
LEAN_NATS = math.log(1000)
#: windows after the return pooled with the current one for the fresh onset test (at most)
ONSET_SPAN = 8


def incident_keep(detector: Detector[Any]) -> int:
    """How many of an open incident's windows its stream keeps (and a restart re-reads)."""
    return max(
        detector.history_windows, getattr(detector, "incident_windows", 0), MIN_INCIDENT_WINDOWS
    )


@dataclass
class Evaluation:
    detections: list[Detection] = field(default_factory=list)
    alerts: list[Alert] = field(default_factory=list)
    #: (model, detector) → new reference state
    references: dict[tuple[str, str], Any] = field(default_factory=dict)
    #: new levels `accept_after` accepted: stored beside those a person accepted, so the
    #: analysts' table says every time a baseline moved to an incident's level, and why
    accepts: list[BaselineAccept] = field(default_factory=list)


#: `accepted_by` of an acceptance `alerting.accept_after` made
ACCEPT_AFTER = "accept_after"


@dataclass
class _Stream:
    """One (model, detector): the windows in its baseline, and those of its open incident."""

    depth: int
    empty: Any
    clean: deque[tuple[int, Any]]
    #: the newest incident windows kept (its level and the evidence of a return come from them)
    keep: int = MIN_INCIDENT_WINDOWS
    incident: deque[tuple[int, Any]] | None = None
    #: the newest window start this stream has seen (baseline or incident)
    last_start: int | None = None
    #: the most evidence of a return the open incident has shown, and the window that showed it
    #: (see `WindowEvaluator._fresh_onset`)
    lean: float = 0.0
    lean_at: int | None = None
    #: the first window of the return that evidence came from (the CUSUM's excursion)
    lean_from: int | None = None
    excursion_from: int | None = None
    #: the start of the open incident's first alerting window (the windows before it in
    #: `incident` were pooled into that alert)
    onset: int | None = None
    #: the open incident's first window (pooled ones included). `incident` keeps only the
    #: newest windows: its oldest was persisted as the start, so a restart after the incident
    #: outlasted them took incident windows for its frozen baseline and resolved it
    first: int | None = None
    #: every window judged or re-seeded, incidents' included (`Baseline.timeline`)
    timeline: deque[tuple[int, Any]] = field(default_factory=deque)

    def note(self, start: int, state: Any, window: int) -> None:
        """Put a window on the timeline, in order (a late window re-closed replaces its own)."""
        line = self.timeline
        if line and start <= line[-1][0]:
            items = sorted([item for item in line if item[0] != start] + [(start, state)])
            line.clear()
            line.extend(items[-(line.maxlen or len(items)) :])
            return
        if line:
            gap = (start - line[-1][0]) // window - 1
            for _ in range(max(0, min(gap, self.depth))):
                line.append((line[-1][0] + window, self.empty))
        line.append((start, state))

    def timeline_before(self, start: int, window: int) -> tuple[Any, ...]:
        """The timeline's states before the window at `start`, empties for the gap to it."""
        states = [s for t, s in self.timeline if t < start]
        if self.timeline and self.timeline[-1][0] < start:
            gap = (start - self.timeline[-1][0]) // window - 1
            states += [self.empty] * max(0, min(gap, self.depth))
        return tuple(states[-self.depth :])

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
            self.clean.extend(items)
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
            self.incident = deque(maxlen=self.keep)
            self.lean, self.lean_at, self.lean_from, self.excursion_from = 0.0, None, None, None
            self.onset = start
            # the windows pooled with the firing one belong to the incident, not the baseline
            first = start - pulled_back * window
            moved = [item for item in self.clean if first <= item[0] < start]
            for item in moved:
                self.clean.remove(item)
            self.incident.extend(moved)
            self.first = min([start, *(t for t, _ in moved)])
        self.incident.append((start, state))
        self.last_start = max(start, self.last_start or start)

    def restart_incident(self, since: int, onset: int) -> None:
        """A new incident begins with the windows from `since` on, and first alerts at `onset`
        (a fresh rise after the stale one had returned); the older windows stay out of the
        baseline, as they were."""
        windows = [item for item in self.incident or () if item[0] >= since]
        self.incident = deque(windows, maxlen=self.keep)
        self.first = windows[0][0] if windows else onset
        self.lean, self.lean_at, self.lean_from, self.excursion_from = 0.0, None, None, None
        self.onset = onset

    def oldest(self) -> int | None:
        """The oldest incident window still kept."""
        return self.incident[0][0] if self.incident else None

    def recent_onset(self) -> int:
        """Index in `incident` of its first alerting window (0 when unknown)."""
        if self.incident is None or self.onset is None:
            return 0
        return sum(1 for t, _ in self.incident if t < self.onset)

    def note_evidence(self, start: int, evidence: float | None) -> None:
        """Track the largest evidence of a return and the stretch of windows it came from
        (None: the window fired on its own, which resets the CUSUM's excursion)."""
        if evidence is None or evidence <= 0:
            self.excursion_from = None
            return
        if self.excursion_from is None:
            self.excursion_from = start
        if evidence > self.lean:
            self.lean, self.lean_at, self.lean_from = evidence, start, self.excursion_from

    def progress(self) -> dict[str, int | float | None]:
        """Where the open incident stands, in numbers a restart can carry (see `restore`)."""
        return {
            "first": self.first if self.first is not None else self.oldest(),
            "onset": self.onset,
            "lean": self.lean,
            "lean_at": self.lean_at,
            "lean_from": self.lean_from,
            "excursion_from": self.excursion_from,
        }

    def restore(self, progress: Mapping[str, int | float | None]) -> None:
        """Continue an incident re-seeded after a restart from its persisted `progress`."""

        def start(key: str) -> int | None:
            value = progress.get(key)
            return None if value is None else int(value)

        self.onset = start("onset")
        self.first = start("first") if progress.get("first") is not None else self.first
        self.lean = float(progress.get("lean") or 0.0)
        self.lean_at, self.lean_from = start("lean_at"), start("lean_from")
        self.excursion_from = start("excursion_from")

    def accept(self) -> list[Any]:
        """The incident's windows become the baseline; returns them, oldest first."""
        windows = list(self.incident or ())
        self.clean.clear()
        self.clean.extend(windows[-self.depth :])
        self.incident = None
        self.first = None
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
            keep = incident_keep(detector)
            # twice the depth: the windows an incident pulls out of the baseline (those pooled
            # into its first alert) are back-filled by the older ones, as a restarted evaluator
            # re-seeding `depth` baseline windows from the sink would have them
            clean: deque[tuple[int, Any]] = deque(maxlen=max(2 * depth, 1))
            stream = _Stream(depth, detector.empty(), clean, keep)
            stream.timeline = deque(maxlen=max(depth, 1))
            self._streams[key] = stream
        return stream

    def seed_ranges(self, model: str, until: int) -> list[tuple[int, int]]:
        """[since, until) ranges of window starts a restarted evaluator needs for `model`: what
        a continuous one holds. That is twice `history_depth` clean windows (the baseline and
        what back-fills it when an incident pulls windows out), and, for an incident still
        open, the windows before its first window (its frozen baseline) and the incident's
        latest windows, as many as its stream keeps (96 for embedding drift)."""
        depth = 2 * self._depth * self._window
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
        for name, detector in self._detectors.items():
            first = self._incident_first(model, name)
            if first is None:
                continue
            if first - depth < since:
                ranges.append((first - depth, min(first, since)))
            keep = incident_keep(detector) * self._window
            if max(first, until - keep) < since:
                ranges.append((max(first, until - keep), since))
        return sorted(set(ranges))

    def earliest_needed(self, open_windows: Mapping[str, int]) -> int | None:
        """The earliest window start a restart would re-read (`seed_ranges`) for any model
        judged here, given each model's first window still open (a model with none: its next
        window after the last judged): what the sink's retention must keep, so a restart in
        a long incident still finds its frozen baseline. None before any window was judged."""
        until = dict(open_windows)
        for (model, _), stream in self._streams.items():
            if model not in until and stream.timeline:
                newest = stream.timeline[-1][0] + self._window
                until[model] = newest
        starts = [
            ranges[0][0]
            for model, before in until.items()
            if any(m == model for m, _ in self._streams)
            and (ranges := self.seed_ranges(model, before))
        ]
        return min(starts) if starts else None

    def remember(self, model: str, start: int, states: Mapping[str, Any]) -> None:
        """Record a closed window's merged states as history (used to re-seed after a restart):
        a window of an incident still open goes to that incident, not to the baseline."""
        for name, detector in self._detectors.items():
            if detector.history_windows == 0 or name not in states:
                continue
            stream = self._stream(model, name)
            stream.note(start, states[name], self._window)
            first = self._incident_first(model, name)
            if first is not None and start >= first:
                stream.add_incident(start, states[name], 0, self._window)
                progress = self._progress(model, name)
                if progress is not None:
                    stream.restore(progress)
                else:  # alert state from before progress was kept
                    stream.onset = first
            elif any(
                a.timestamp() <= start < b.timestamp() for a, b in self._exclusions(model, name)
            ):
                stream.skip(start)
            else:
                stream.add_clean(start, states[name], self._window)

    def _incident_first(self, model: str, name: str) -> int | None:
        """The first window of the open incident's frozen stream (its first alerting window,
        or the earliest pooled into that alert when its progress was persisted), or None."""
        incident = self._tracker.open_incident(model, name)
        if incident is None or incident.started_at is None:
            return None
        progress = self._progress(model, name)
        first = progress.get("first") if progress is not None else None
        onset = int(incident.started_at.timestamp())
        # progress written before `first` was the incident's own start could name a window
        # after the first alert: the alert's window is in the incident whatever it says
        return onset if first is None else min(int(first), onset)

    def _progress(self, model: str, name: str) -> dict[str, int | float | None] | None:
        """The open incident's persisted progress, if it is this incident's (its onset is the
        incident's first alerting window)."""
        incident = self._tracker.open_incident(model, name)
        if not isinstance(self._tracker, EvidenceTracker) or incident is None:
            return None
        progress = self._tracker.progress(model, name)
        started = incident.started_at
        if progress is None or started is None or progress.get("onset") != started.timestamp():
            return None
        return progress

    def _note_progress(self, model: str, name: str, stream: _Stream | None) -> None:
        if isinstance(self._tracker, EvidenceTracker):
            progress = stream.progress() if stream is not None and stream.incident else None
            self._tracker.note_progress(model, name, progress)

    def _exclusions(self, model: str, name: str) -> list[tuple[datetime, datetime]]:
        if isinstance(self._tracker, EvidenceTracker):
            return self._tracker.exclusions(model, name)
        return []

    def _baseline(self, model: str, name: str, start: int) -> Baseline[Any]:
        reference = self._references.get((model, name))
        if self._detectors[name].history_windows == 0:
            # paged and open: a pending or suppressed one must still meet the strict bar
            opened = self._tracker.open_incident(model, name)
            firing = opened is not None and opened.phase == "firing"
            return Baseline(history=(), reference=reference, incident_open=firing)
        stream = self._stream(model, name)
        recent = tuple(s for _, s in stream.incident) if stream.incident is not None else ()
        return Baseline(
            history=stream.history(start, self._window),
            reference=reference,
            recent=recent,
            recent_onset=stream.recent_onset(),
            timeline=stream.timeline_before(start, self._window),
        )

    def evaluate(
        self,
        model: str,
        start: int,
        states: Mapping[str, Any],
        model_version: str | None = None,
    ) -> Evaluation:
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
            if detector.history_windows:
                self._stream(model, name).note(start, state, self._window)
            onset = self._fresh_onset(model, name, detector, state, detection, window)
            if onset is not None:
                detection, since, lean = onset
                note = (
                    f"the evidence had returned to the pre-incident level ({lean:.1f} nats) "
                    "before a new rise, paged as a new incident"
                )
                result.alerts.extend(self._tracker.restart(detection, note))
                self._stream(model, name).restart_incident(since, start)
            result.detections.append(detection)
            result.alerts.extend(self._tracker.observe(detection, model_version))
            incident = self._tracker.open_incident(model, name)
            if incident is not None:
                if detector.history_windows:
                    frozen = self._stream(model, name)
                    frozen.add_incident(start, state, _windows_before(detection), self._window)
                    # the evidence of a return with the incident's level taken from before the
                    # return began (`detectors._sequential.return_evidence`), where given
                    evidence = detection.details.get(
                        "return_evidence", detection.details.get("clear_evidence")
                    )
                    frozen.note_evidence(start, None if evidence is None else float(evidence))
                    if isinstance(self._tracker, EvidenceTracker) and frozen.first is not None:
                        first = datetime.fromtimestamp(frozen.first, tz=UTC)
                        self._tracker.exclude(model, name, first, window.end)
                    self._note_progress(model, name, frozen)
                why = self._acceptance(incident.started_at, model, name, window.end)
                if why is not None:
                    if incident.started_at is not None and why.endswith(f"({ACCEPT_AFTER})"):
                        result.accepts.append(
                            BaselineAccept(
                                model, name, incident.started_at, window.end, ACCEPT_AFTER
                            )
                        )
                    result.alerts.extend(self._tracker.accept(detection, why))
                    self._accept(model, name, detector, result)
                continue
            stream = self._streams.get(key)
            if stream is not None and stream.incident is not None:
                stream.incident = None  # resolved: the baseline continues from before it
                self._note_progress(model, name, None)
            if detector.history_windows:
                self._stream(model, name).add_clean(start, state, self._window)
            reference = detector.update_reference(self._references.get(key), state)
            if reference is not None and reference is not self._references.get(key):
                self._references[key] = reference
                result.references[key] = reference
        return result

    def _fresh_onset(
        self,
        model: str,
        name: str,
        detector: Detector[Any],
        state: Any,
        detection: Detection,
        window: WindowRef,
    ) -> tuple[Detection, int, float] | None:
        """A new incident rising after the open one had returned, or None.

        While an incident is open the detector judges each window against the frozen
        pre-incident baseline and keeps it `alert` until the CUSUM says the level is back, so a
        real incident starting soon after a false alarm would just keep the stale one open: no
        page. Once the incident's evidence of a return has reached `LEAN_NATS` (the windows
        since it began look like the baseline, by a likelihood ratio of e^LEAN_NATS), the
        windows after that point are judged as a fresh start: the detector's ordinary onset
        test (pooled spans at their corrected level) on them against the same frozen baseline.
        If it fires, the stale incident resolves and a new one pages. Inside one real incident
        this needs the incident to look like the baseline for a stretch first, which is as
        rare as the CUSUM reaching LEAN_NATS there (about once in e^LEAN_NATS windows).

        Returns the onset detection, the first window start of the new incident, and the
        evidence of the return before it.
        """
        if detection.verdict != "alert" or not detector.history_windows:
            return None
        if (model, name) in self._references:
            return None  # judged against a pinned reference, not the windows before
        stream = self._streams.get((model, name))
        if stream is None or stream.incident is None or stream.lean_at is None:
            return None
        if stream.lean < LEAN_NATS or stream.lean_from is None:
            return None
        start = int(window.start.timestamp())
        since = stream.lean_at + self._window
        after = tuple(s for t, s in stream.incident if t >= since)[-(ONSET_SPAN - 1) :]
        returned = tuple(s for t, s in stream.incident if stream.lean_from <= t < since)
        frozen = stream.history(start, self._window)
        # above the pre-incident baseline, and above the windows of the return itself
        onset = detector.evaluate(state, Baseline(history=frozen + after), window)
        if onset.verdict != "alert" or onset.condition != detection.condition:
            return None
        rise = detector.evaluate(state, Baseline(history=returned + after), window)
        if rise.verdict != "alert" or rise.condition != detection.condition:
            return None
        first = max(since, start - _windows_before(onset) * self._window)
        details = {**onset.details, "new_onset": True, "returned_evidence": stream.lean}
        reason = f"{onset.reason} A new rise after the previous incident had returned."
        return onset.model_copy(update={"details": details, "reason": reason}), first, stream.lean

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
                    if accept.accepted_by == ACCEPT_AFTER:  # recorded by this evaluator
                        return _accepted_after(self._tracker.config.accept_after)
                    by = f" by {accept.accepted_by}" if accept.accepted_by else ""
                    return (
                        f"new level accepted as the baseline{by} at "
                        f"{accept.accepted_at:%Y-%m-%d %H:%M}Z (lookout baseline accept)"
                    )
        after = self._tracker.config.accept_after
        if after is not None and now - started >= after:
            return _accepted_after(after)
        return None

    def _accept(self, model: str, name: str, detector: Detector[Any], result: Evaluation) -> None:
        key = (model, name)
        stream = self._streams.get(key)
        if isinstance(self._tracker, EvidenceTracker) and stream and stream.incident:
            # the accepted windows are the baseline now, after a restart too
            first = datetime.fromtimestamp(stream.incident[0][0], tz=UTC)
            self._tracker.include(model, name, first)
        windows = self._stream(model, name).accept() if detector.history_windows else []
        self._note_progress(model, name, None)
        if key in self._references:
            reference = None
            for state in windows:
                reference = detector.update_reference(reference, state)
            if reference is not None:
                self._references[key] = reference
                result.references[key] = reference


def _windows_before(detection: Detection) -> int:
    """How many windows before a firing one belong to its incident and leave the baseline: the
    k − 1 pooled with it on a span of k, or the number the detector names
    (`incident_windows_before`: all those after the older reference it fired against)."""
    if not detection.firing:
        return 0
    details = detection.details
    return int(details.get("incident_windows_before", int(details.get("span_windows", 1)) - 1))


def _accepted_after(after: timedelta | None) -> str:
    return f"new level accepted as the baseline automatically after {after} ({ACCEPT_AFTER})"
