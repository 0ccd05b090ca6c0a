"""The alert tracker the engine runs: `AlertTracker` plus the evidence receivers show.

Each alert it returns carries the deciding window's one-line `reason` and the detector's
supporting numbers (`details`: top block reasons, finish reasons, burn rates), so a page says
why without anyone opening a dashboard. `on_alerting` (the retune trigger) hears about every
alerting window of an incident, with the incident as it stands after that window.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from typing import Any

import orjson

from alerts.state import AlertTracker, Incident
from schemas.alert_config import AlertingConfig
from schemas.detection import Alert, Detection


def _json_safe(details: dict[str, Any]) -> dict[str, Any]:
    """Details as plain JSON values (numpy scalars and tuples become numbers and lists)."""
    try:
        loaded: dict[str, Any] = orjson.loads(
            orjson.dumps(details, option=orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS)
        )
    except TypeError:
        return {}
    return loaded


#: baseline exclusions kept per (model, detector); older ones are past every baseline
MAX_EXCLUSIONS = 64
_EXCLUSION = "baseline_exclusion"
_PROGRESS = "incident_progress"


def _progress(row: Mapping[str, Any]) -> dict[str, int | float | None]:
    """An incident-progress row's numbers (anything else in it is the row's own keys)."""
    progress: dict[str, int | float | None] = {}
    for key, value in row.items():
        if key in ("kind", "model", "detector"):
            continue
        if value is not None and not isinstance(value, int | float):
            msg = f"alert state: a malformed incident progress row {dict(row)!r}"
            raise ValueError(msg)
        progress[key] = value
    return progress


class EvidenceTracker(AlertTracker):
    """See the module docstring. Decisions are exactly `AlertTracker`'s.

    It also persists, with the alert state, the spans of windows kept out of each
    (model, detector)'s baseline because an incident was open (`exclude`): a restarted
    evaluator re-seeds its baselines from the sink's window rows, and these spans are how it
    knows which of them belonged to an incident that has since resolved.
    """

    on_alerting: Callable[[Detection, Incident], object] | None = None

    def __init__(self, config: AlertingConfig) -> None:
        super().__init__(config)
        self._exclusions: dict[tuple[str, str], list[tuple[datetime, datetime]]] = {}
        self._progress: dict[tuple[str, str], dict[str, int | float | None]] = {}

    def exclude(self, model: str, detector: str, since: datetime, until: datetime) -> None:
        """Windows starting in [since, until) stay out of the stream's baseline."""
        spans = self._exclusions.setdefault((model, detector), [])
        if spans and since <= spans[-1][1] and until >= spans[-1][0]:
            low, high = spans[-1]
            spans[-1] = (min(low, since), max(high, until))
        else:
            spans.append((since, until))
            spans.sort()
        del spans[:-MAX_EXCLUSIONS]

    def include(self, model: str, detector: str, since: datetime) -> None:
        """Drop the exclusions that reach `since` or later (an accepted level: its windows
        are the baseline now)."""
        spans = self._exclusions.get((model, detector), [])
        spans[:] = [(a, b) for a, b in spans if b <= since]

    def exclusions(self, model: str, detector: str) -> list[tuple[datetime, datetime]]:
        return list(self._exclusions.get((model, detector), ()))

    def note_progress(
        self, model: str, detector: str, progress: Mapping[str, int | float | None] | None
    ) -> None:
        """Persist where an open incident's frozen stream stands (the evaluator's numbers:
        its first window, its first alerting window, the evidence of a return so far), or
        forget it once the incident is over. A restarted evaluator picks it up so that it
        judges the incident's next windows exactly as the one that stopped would have."""
        if progress is None:
            self._progress.pop((model, detector), None)
        else:
            self._progress[(model, detector)] = dict(progress)

    def progress(self, model: str, detector: str) -> dict[str, int | float | None] | None:
        found = self._progress.get((model, detector))
        return None if found is None else dict(found)

    def to_rows(self) -> list[dict[str, Any]]:
        rows = super().to_rows()
        for (model, detector), spans in sorted(self._exclusions.items()):
            rows += [
                {
                    "kind": _EXCLUSION,
                    "model": model,
                    "detector": detector,
                    "since": since.isoformat(),
                    "until": until.isoformat(),
                }
                for since, until in spans
            ]
        for (model, detector), progress in sorted(self._progress.items()):
            rows.append({"kind": _PROGRESS, "model": model, "detector": detector, **progress})
        return rows

    @classmethod
    def from_rows(cls, rows: Iterable[Mapping[str, Any]], config: AlertingConfig) -> AlertTracker:
        rows = list(rows)
        ours = (_EXCLUSION, _PROGRESS)
        tracker = super().from_rows([r for r in rows if r.get("kind") not in ours], config)
        assert isinstance(tracker, EvidenceTracker)
        for r in rows:
            if r.get("kind") == _EXCLUSION:
                try:
                    since = datetime.fromisoformat(str(r["since"]))
                    until = datetime.fromisoformat(str(r["until"]))
                    tracker.exclude(str(r["model"]), str(r["detector"]), since, until)
                except (KeyError, ValueError) as e:
                    msg = f"alert state: a malformed baseline exclusion row {dict(r)!r}"
                    raise ValueError(msg) from e
            elif r.get("kind") == _PROGRESS:
                tracker.note_progress(str(r.get("model")), str(r.get("detector")), _progress(r))
        return tracker

    def observe(self, detection: Detection, model_version: str | None = None) -> list[Alert]:
        alerts = super().observe(detection, model_version)
        if self.on_alerting is not None and detection.verdict == "alert":
            # the stream's open incident, whichever condition it opened on: a window alerting
            # on another condition counts for it (one incident per stream), retunes included
            incident = self.open_incident(detection.model, detection.detector)
            if incident is not None:
                self.on_alerting(detection, incident)
        if not alerts:
            return alerts
        details = _json_safe(detection.details)
        evidence = {"reason": detection.reason, "details": details}
        return [a.model_copy(update=evidence) for a in alerts]

    @classmethod
    def load(cls, rows: Iterable[Mapping[str, Any]], config: AlertingConfig) -> EvidenceTracker:
        """`from_rows`, typed: the tracker continuing from persisted alert state."""
        tracker = cls.from_rows(rows, config)
        assert isinstance(tracker, EvidenceTracker)
        return tracker
