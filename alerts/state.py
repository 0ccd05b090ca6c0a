"""Alert state: detections in, incident state changes out. One incident, one page.

Pure and clock-free: the only time is event time, taken from the detections' windows, so a
replay, a restart and a second evaluator all reach the same decisions.

The machine, per dedup key `lookout:{model}:{detector}:{condition}`::

    idle --alert--> pending --(fire_after_alert_windows alerts in a row)--> firing   [page]
    pending --ok--> idle                          (it never paged, so nothing to resolve)
    firing --(resolve_after_ok_windows ok in a row)--> idle                          [resolve]
    firing --alert--> firing    (restarts the ok count: a flicker stays one incident)

Rules that make it safe to call from anywhere:

- A detector yields one detection per (model, window), so (model, detector) is a *stream*
  with a watermark: a detection whose window does not end after the last one seen for its
  stream is a replay or arrived out of order, and changes nothing. Re-evaluating a window
  can therefore never page twice.
- One incident per stream: an `alert` on another condition of a detector whose stream has
  an incident open counts as an alert window of that incident (its severity may rise), not
  as a new incident; an `ok` detection counts as an ok window for every open incident of
  the stream.
- `insufficient_data` neither fires nor resolves: it holds every count. If it lasts
  `resolve_after_insufficient_windows` windows in a row, an open incident is resolved with a
  summary that says the data vanished (a page that can never close hides the next one); if
  the condition is still there when data returns, that is a new incident.
- The incident's severity is the highest seen while it was open. When it rises after the
  page, one more firing alert with the same dedup key goes out (`notify_on_escalation`),
  so receivers that dedup by key update the incident and severity-gated routes hear of it.
- Cooldown: a recurrence within `cooldown` of the stream's last resolve (whatever its
  condition) is tracked but *suppressed*: it pages only if still alerting when the cooldown
  ends, and if it clears first it closes silently. Every page still gets exactly one firing
  and one resolve.
- A firing incident still open `sustained_after` after it began is announced once more, with
  the same dedup key, as a *sustained level shift since T*: it keeps firing (the detectors
  judge against the frozen pre-incident baseline) until the condition clears or someone
  accepts the new level (`accept`, from `lookout baseline accept` or `accept_after`), which
  resolves it saying so. Never a silent resolve.
- `restart`: the evaluator closes an open incident whose evidence had returned to the
  baseline when a fresh rise follows; the rise is a new incident with its own page.
- `to_rows()` / `from_rows()` carry the whole state (open incidents, per-key last fire and
  resolve times, stream watermarks) through the sink as JSON-ready dicts, so a restarted or
  second evaluator continues the same incidents instead of paging again.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from numbers import Integral, Real
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from schemas.alert_config import SEVERITY_RANK, AlertingConfig
from schemas.detection import Alert, Detection, Severity
from schemas.plural import counted

Phase = Literal["pending", "firing", "suppressed"]


def at_incident_level(d: Detection) -> bool | None:
    """Whether an alerting window is still at the incident's level: True when it alerted on
    its own evidence, or when it was held open (the detectors keep an open incident's windows
    at "alert" until a CUSUM proves the return, `details["cleared"]` False) with its value
    still past the threshold; False when held with its value back under the threshold (a
    one-window blip at low traffic was held open for 18 windows at the baseline's rate and
    started a tuning job); None when held without a threshold to compare (too few calls to
    test the window alone)."""
    if d.verdict != "alert":
        return False
    if d.details.get("cleared") is not False:
        return True
    if d.value is None or d.threshold is None:
        return None
    return d.value > d.threshold


def dedup_key(model: str, detector: str, condition: str) -> str:
    """The incident identity: stable across windows, replicas and restarts (no numbers)."""
    return f"lookout:{model}:{detector}:{condition}"


class Incident(BaseModel):
    """What the tracker knows about one dedup key; also its persisted row.

    `phase` None means nothing is open; the row is kept only for `last_fired_at` /
    `last_resolved_at` (cooldowns). Counters count windows observed, not wall time.
    """

    model_config = ConfigDict(frozen=True, extra="ignore")

    kind: Literal["incident"] = "incident"
    dedup_key: str
    model: str
    detector: str
    condition: str
    phase: Phase | None = None
    severity: Severity = "info"
    notified_severity: Severity | None = None
    started_at: datetime | None = None
    windows: int = 0
    alert_windows: int = 0
    #: the current run of windows at the incident's level (`at_incident_level`), what a
    #: retune waits for (`alerts.retune`): a window held open only while the return is
    #: unproven, with its value back under the threshold, starts the run again
    breach_windows: int = 0
    ok_windows: int = 0
    insufficient_windows: int = 0
    last_fired_at: datetime | None = None
    last_resolved_at: datetime | None = None
    #: the "sustained level shift" notice went out for this incident
    sustained: bool = False
    #: the model version(s) the calls named in the window that opened it, kept for the
    #: incident's every alert (Alertmanager takes it as a label: it must not change)
    model_version: str | None = None

    @property
    def is_open(self) -> bool:
        return self.phase is not None


class _StreamRow(BaseModel):
    """The watermark of one (model, detector): the end of the last window it judged."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    kind: Literal["stream"] = "stream"
    model: str
    detector: str
    last_window_end: datetime


_Row = Annotated[Incident | _StreamRow, Field(discriminator="kind")]
_ROWS: TypeAdapter[list[_Row]] = TypeAdapter(list[_Row])


class AlertTracker:
    """Turns each stream's detections into firing / resolved alerts. See the module docstring."""

    def __init__(self, config: AlertingConfig) -> None:
        self._config = config
        self._incidents: dict[str, Incident] = {}
        self._watermarks: dict[tuple[str, str], datetime] = {}

    @property
    def config(self) -> AlertingConfig:
        return self._config

    def observe(self, detection: Detection, model_version: str | None = None) -> list[Alert]:
        """The state changes this detection causes (usually none); replays cause none.
        `model_version`: what the window's calls named, kept by an incident it opens."""
        stream = (detection.model, detection.detector)
        watermark = self._watermarks.get(stream)
        if watermark is not None and detection.window_end <= watermark:
            return []
        self._watermarks[stream] = detection.window_end

        alerts: list[Alert] = []
        alerting_key = None
        if detection.verdict == "alert":
            alerting_key = dedup_key(detection.model, detection.detector, detection.condition)
            held = self._incidents.get(alerting_key)
            if held is None or not held.is_open:
                # another condition of an incident already open on this stream (a block rate
                # over the ceiling, then over the baseline) is the same incident: taken as
                # its own, the two took turns resolving each other, ten pages for one
                opened = self.open_incident(detection.model, detection.detector)
                if opened is not None:
                    alerting_key = opened.dedup_key
            current = self._incidents.get(alerting_key) or Incident(
                dedup_key=alerting_key,
                model=detection.model,
                detector=detection.detector,
                condition=detection.condition,
            )
            if not current.is_open:
                current = current.model_copy(update={"model_version": model_version})
            self._store(self._on_alert(current, detection, alerts))
        for incident in list(self._incidents.values()):
            if (
                incident.is_open
                and incident.dedup_key != alerting_key
                and (incident.model, incident.detector) == stream
            ):
                if detection.verdict == "insufficient_data":
                    self._store(self._on_insufficient(incident, detection, alerts))
                else:
                    self._store(self._on_ok(incident, detection, alerts))
        return alerts

    def observe_many(self, detections: Iterable[Detection]) -> list[Alert]:
        """Observe a batch in window order, so a batch's own order cannot drop a window."""
        ordered = sorted(detections, key=lambda d: (d.window_end, d.model, d.detector))
        return [alert for d in ordered for alert in self.observe(d)]

    def open_incident(self, model: str, detector: str) -> Incident | None:
        """An open incident of one (model, detector) stream (the first by dedup key), if any."""
        found = [
            i
            for i in self._incidents.values()
            if i.is_open and i.model == model and i.detector == detector
        ]
        return min(found, key=lambda i: i.dedup_key, default=None)

    def accept(self, detection: Detection, note: str) -> list[Alert]:
        """Close every open incident of the detection's stream: its new level is accepted as
        the baseline (by a person or by `accept_after`). Paged ones get a resolve saying so."""
        alerts: list[Alert] = []
        for incident in list(self._incidents.values()):
            if incident.is_open and (incident.model, incident.detector) == (
                detection.model,
                detection.detector,
            ):
                self._store(
                    self._resolve(
                        incident, detection, alerts, numbers=True, note=note, verb="accepted"
                    )
                )
        return alerts

    def restart(self, detection: Detection, note: str) -> list[Alert]:
        """Close every open incident of the detection's stream as cleared, because a new
        incident begins with this detection (the evaluator saw the old one return before a
        fresh rise). Paged ones get a resolve saying so; the detection itself is then
        `observe`d as the new incident's first window. The watermark is left alone."""
        alerts: list[Alert] = []
        for incident in list(self._incidents.values()):
            if incident.is_open and (incident.model, incident.detector) == (
                detection.model,
                detection.detector,
            ):
                self._store(self._resolve(incident, detection, alerts, numbers=False, note=note))
        return alerts

    def open_incidents(self) -> list[Incident]:
        """Incidents pending, firing or suppressed, by dedup key."""
        return sorted((i for i in self._incidents.values() if i.is_open), key=lambda i: i.dedup_key)

    def to_rows(self) -> list[dict[str, Any]]:
        """The whole state as JSON-ready dicts (datetimes as ISO strings), in a stable order."""
        rows = [i.model_dump(mode="json") for _, i in sorted(self._incidents.items())]
        rows += [
            _StreamRow(model=m, detector=d, last_window_end=end).model_dump(mode="json")
            for (m, d), end in sorted(self._watermarks.items())
        ]
        return rows

    @classmethod
    def from_rows(cls, rows: Iterable[Mapping[str, Any]], config: AlertingConfig) -> AlertTracker:
        """A tracker continuing from `to_rows()` output; raises ValueError on a malformed row."""
        tracker = cls(config)
        for row in _ROWS.validate_python([dict(r) for r in rows]):
            if isinstance(row, Incident):
                tracker._incidents[row.dedup_key] = row
            else:
                stream = (row.model, row.detector)
                previous = tracker._watermarks.get(stream)
                if previous is None or row.last_window_end > previous:
                    tracker._watermarks[stream] = row.last_window_end
        return tracker

    # -- transitions ------------------------------------------------------------------------

    def _store(self, incident: Incident) -> None:
        if (
            incident.is_open
            or incident.last_fired_at is not None
            or incident.last_resolved_at is not None
        ):
            self._incidents[incident.dedup_key] = incident
        else:
            self._incidents.pop(incident.dedup_key, None)

    def _in_cooldown(self, incident: Incident, at: datetime) -> bool:
        """Since the stream's last resolve, whichever condition it was under (one incident
        per stream: a recurrence on the other condition of an incident is no new page)."""
        resolved = [
            i.last_resolved_at
            for i in self._incidents.values()
            if (i.model, i.detector) == (incident.model, incident.detector)
            and i.last_resolved_at is not None
        ]
        if incident.last_resolved_at is not None:
            resolved.append(incident.last_resolved_at)
        return bool(resolved) and at < max(resolved) + self._config.cooldown

    def _on_alert(self, incident: Incident, d: Detection, out: list[Alert]) -> Incident:
        if not incident.is_open:
            incident = incident.model_copy(
                update={"phase": "pending", "severity": d.severity, "started_at": d.window_start}
            )
        severity = max(incident.severity, d.severity, key=SEVERITY_RANK.__getitem__)
        incident = incident.model_copy(
            update={
                "severity": severity,
                "windows": incident.windows + 1,
                "alert_windows": incident.alert_windows + 1,
                "breach_windows": _run(incident.breach_windows, at_incident_level(d)),
                "ok_windows": 0,
                "insufficient_windows": 0,
            }
        )
        if incident.phase == "pending":
            if incident.alert_windows < self._config.fire_after_alert_windows:
                return incident
            if self._in_cooldown(incident, d.window_end):
                return incident.model_copy(update={"phase": "suppressed"})
            return self._fire(incident, d, out, note="")
        if incident.phase == "suppressed":
            if self._in_cooldown(incident, d.window_end):
                return incident
            return self._fire(incident, d, out, note="held back by cooldown until now")
        notified = incident.notified_severity or "info"
        if self._config.notify_on_escalation and SEVERITY_RANK[severity] > SEVERITY_RANK[notified]:
            incident = self._fire(incident, d, out, note=f"escalated from {notified}")
        started = incident.started_at
        horizon = self._config.sustained_after
        if (
            not incident.sustained
            and horizon is not None
            and started is not None
            and d.window_end - started >= horizon
        ):
            command = (
                f"lookout baseline accept --model {incident.model} --detector {incident.detector}"
            )
            note = (
                f"sustained level shift since {started:%Y-%m-%d %H:%M}Z "
                f"({_duration(d.window_end - started)}); still judged against the pre-incident "
                f"baseline; if the new level is expected, accept it with `{command}`"
            )
            incident = self._fire(incident, d, out, note=note).model_copy(
                update={"sustained": True}
            )
        return incident

    def _on_ok(self, incident: Incident, d: Detection, out: list[Alert]) -> Incident:
        counted = incident.model_copy(
            update={
                "windows": incident.windows + 1,
                "alert_windows": 0,
                "breach_windows": 0,
                "ok_windows": incident.ok_windows + 1,
                "insufficient_windows": 0,
            }
        )
        if incident.phase == "pending":
            return _closed(incident)
        if counted.ok_windows < self._config.resolve_after_ok_windows:
            return counted
        note = "" if d.verdict == "ok" else f"now alerting on {d.condition} instead"
        return self._resolve(counted, d, out, numbers=d.verdict == "ok", note=note)

    def _on_insufficient(self, incident: Incident, d: Detection, out: list[Alert]) -> Incident:
        counted = incident.model_copy(
            update={
                "windows": incident.windows + 1,
                "insufficient_windows": incident.insufficient_windows + 1,
            }
        )
        limit = self._config.resolve_after_insufficient_windows
        if limit is None or counted.insufficient_windows < limit:
            return counted
        if incident.phase == "pending":
            return _closed(incident)
        note = f"no judgeable data for {limit} windows ({d.reason}); condition unknown"
        # "cleared" would claim the condition was seen to end: nothing was seen at all
        verb = "closed for lack of data"
        return self._resolve(counted, d, out, numbers=False, note=note, verb=verb)

    def _fire(self, incident: Incident, d: Detection, out: list[Alert], note: str) -> Incident:
        fired = incident.model_copy(
            update={
                "phase": "firing",
                "notified_severity": incident.severity,
                "last_fired_at": d.window_end,
            }
        )
        summary = _summary("FIRING", fired, d, numbers=True, tail=_join(d.reason, note))
        out.append(_alert(fired, d, "firing", summary, numbers=True))
        return fired

    def _resolve(
        self,
        incident: Incident,
        d: Detection,
        out: list[Alert],
        *,
        numbers: bool,
        note: str,
        verb: str = "cleared",
    ) -> Incident:
        if incident.phase in ("suppressed", "pending"):
            return _closed(incident)  # never paged, so nothing to resolve
        windows = f"after {counted(incident.windows, 'window')}"
        if incident.started_at is not None:
            # windows counted across a gap of hours read as minutes: the span says how long
            lasted = _duration(d.window_end - incident.started_at)
            windows = f"after {lasted} ({counted(incident.windows, 'window')})"
        if (
            numbers
            and d.value is not None
            and d.threshold is not None
            and d.value > d.threshold
            and d.verdict == "ok"
        ):
            if "clear_evidence" in d.details:
                # cleared by the evidence of the windows since, not by this one window's value
                windows += (
                    "; this window alone is still above the threshold, but the windows since "
                    "the incident are back at the baseline's level"
                )
            else:
                # judged window by window (descriptor drift): a large effect on few calls
                p = f" (p={d.p_value:.2g})" if d.p_value is not None else ""
                windows += (
                    f"; this window's value is above the threshold but not significant{p}: "
                    f"{d.reason.rstrip('.')}"
                )
        summary = _summary(
            "RESOLVED", incident, d, numbers=numbers, tail=_join(windows, note), verb=verb
        )
        out.append(_alert(incident, d, "resolved", summary, numbers=numbers))
        return _closed(incident).model_copy(update={"last_resolved_at": d.window_end})


def _run(length: int, level: bool | None) -> int:
    """The run of windows at the incident's level after one more window (None: unchanged)."""
    if level is None:
        return length
    return length + 1 if level else 0


def _closed(incident: Incident) -> Incident:
    """The key with nothing open, keeping only its fire/resolve history."""
    return Incident(
        dedup_key=incident.dedup_key,
        model=incident.model,
        detector=incident.detector,
        condition=incident.condition,
        last_fired_at=incident.last_fired_at,
        last_resolved_at=incident.last_resolved_at,
    )


def _alert(
    incident: Incident,
    d: Detection,
    status: Literal["firing", "resolved"],
    summary: str,
    *,
    numbers: bool,
) -> Alert:
    """The incident's span so far: from its first alerting window to the deciding one."""
    value, calls, _ = page_evidence(d, status)
    return Alert(
        dedup_key=incident.dedup_key,
        status=status,
        severity=incident.severity,
        detector=incident.detector,
        model=incident.model,
        condition=incident.condition,
        window_start=incident.started_at or d.window_start,
        window_end=d.window_end,
        value=value if numbers else None,
        threshold=d.threshold if numbers else None,
        baseline=d.baseline if numbers else None,
        sample_size=calls if numbers else 0,
        summary=summary,
        model_version=incident.model_version,
    )


def page_evidence(d: Detection, status: str) -> tuple[float | None, int, int]:
    """(value, calls, windows) a page rests on. A detector that fired on the window pooled with
    the ones before it (`span_windows` > 1, with `span_value` and `span_calls` in its details)
    decided on those: the window's own value alone is often below the threshold shown beside
    it, which reads as a page that should not have fired. A resolve reports the window."""
    span = d.details.get("span_windows")
    value = d.details.get("span_value")
    calls = d.details.get("span_calls")
    if (
        status == "firing"
        and isinstance(span, Integral)
        and isinstance(value, Real)
        and isinstance(calls, Integral)
        and int(span) > 1
    ):
        return float(value), int(calls), int(span)
    return d.value, d.sample_size, 1


def _join(*parts: str) -> str:
    """A reason and its notes in one sentence ("... (55); escalated from warning"), not
    "... (55).; escalated": a reason's own closing period goes when a note follows."""
    kept = [p for p in parts if p]
    return "; ".join([*(p.rstrip(".") for p in kept[:-1]), *kept[-1:]])


def _duration(delta: timedelta) -> str:
    hours, rest = divmod(int(delta.total_seconds()), 3600)
    return f"{hours} h {rest // 60:02d} min" if hours else f"{rest // 60} min"


def _summary(
    status: str,
    incident: Incident,
    d: Detection,
    *,
    numbers: bool,
    tail: str,
    verb: str = "cleared",
) -> str:
    """`[FIRING] gemini-1.5-flash safety: block rate 6.1% (baseline 2.0%, ...) — reason`.

    Detectors may name their metric and its unit in `details["metric"]` / `details["unit"]`
    (`ratio` prints as a percentage); otherwise the condition name and a plain number show.
    A page decided over several windows shows their value and calls, and says so (`page_evidence`).
    """
    metric = d.details.get("metric")
    label = metric if isinstance(metric, str) and metric else incident.condition.replace("_", " ")
    head = f"[{status}] {incident.model} {incident.detector}: {label}"
    if status == "RESOLVED":
        # the label names the firing condition ("block rate above baseline"): say it is over
        head += f" {verb}" + (", now" if numbers and d.value is not None else "")
    value, calls, windows = page_evidence(d, status.lower())
    if numbers and value is not None:
        unit = d.details.get("unit")
        unit = unit if isinstance(unit, str) else None
        extras = [
            f"{name} {format_number(v, unit)}"
            for name, v in (("baseline", d.baseline), ("threshold", d.threshold))
            if v is not None
        ]
        extras.append(f"n={calls:,}")
        over = f" over the last {windows} windows" if windows > 1 else ""
        head += f" {format_number(value, unit)}{over} ({', '.join(extras)})"
    return f"{head} — {tail}" if tail else head


def format_number(value: float, unit: str | None) -> str:
    """A detector's value as pages print it: a `ratio` as a percentage, else with its unit."""
    if unit == "ratio":
        # a rate under 0.1% keeps two significant figures: a 0.02% baseline is not "0.0%"
        return f"{value * 100:.2g}%" if 0 < abs(value) < 0.001 else f"{value * 100:.1f}%"
    text = f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.3g}"
    return f"{text} {unit}" if unit else text
