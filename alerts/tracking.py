"""The alert tracker the engine runs: `AlertTracker` plus the evidence receivers show.

Each alert it returns carries the deciding window's one-line `reason` and the detector's
supporting numbers (`details`: top block reasons, finish reasons, burn rates), so a page says
why without anyone opening a dashboard. `on_alerting` (the retune trigger) hears about every
alerting window of an incident, with the incident as it stands after that window.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

import orjson

from alerts.state import AlertTracker, Incident, dedup_key
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


class EvidenceTracker(AlertTracker):
    """See the module docstring. Decisions are exactly `AlertTracker`'s."""

    on_alerting: Callable[[Detection, Incident], object] | None = None

    def observe(self, detection: Detection) -> list[Alert]:
        alerts = super().observe(detection)
        if self.on_alerting is not None and detection.verdict == "alert":
            key = dedup_key(detection.model, detection.detector, detection.condition)
            for incident in self.open_incidents():
                if incident.dedup_key == key:
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
