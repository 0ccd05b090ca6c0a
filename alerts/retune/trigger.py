"""Sustained incidents become retune requests, off the evaluator's thread.

The engine's tracker (`alerts.tracking.EvidenceTracker`) shows `consider` each alerting window
with its incident (its run of windows at the incident's level, its start). `consider` asks the
routes which actions apply (`retune:` on the first matching route, or several with
`continue`), the guard whether to go (`alerts.retune.guard`), records the request durably as
pending, then queues the work — the dataset export, then the action — for a worker thread, so
a slow Vertex AI or Pub/Sub call never holds up evaluation. The answer settles the row: sent,
or failed.

Windows can be judged faster than an action runs (a replay, a backlog caught up): a window of
a model whose request is still in flight is kept, not dropped, and offered again when the
answer comes — so after a failure the incident's next alerting window does try again, even if
it was judged while the failed request ran.
`lookout_retune_requests_total{action,model,outcome}` counts sent, dry_run, failed and cooldown
per action and the alert's model: without the model an SRE saw an action fail, not for which
model. A model's series are made (at 0) at its first alerting window routed to the action, so
its first failure is an increase Prometheus can see, not a series born at 1.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from prometheus_client import CollectorRegistry, Counter

from alerts.receivers.payloads import evidence
from alerts.retune.actions import AlreadyStarted, preview, run_action
from alerts.retune.export import ExportResult, export_dataset
from alerts.retune.guard import RetuneLog, log_name
from alerts.retune.request import RetuneRequest, TimeRange
from alerts.routing import Router
from alerts.state import Incident, page_evidence
from schemas.alert_config import AlertingConfig
from schemas.detection import Alert, Detection
from schemas.retune_config import RetuneAction, RetuneExport

log = logging.getLogger("lookout.retune")

#: the result of a request still queued or running at shutdown (`lookout retune list`)
GIVEN_UP = "given up at shutdown before it was answered; asked again at the next start"

Runner = Callable[[RetuneAction, RetuneRequest], str]
Exporter = Callable[[RetuneExport, str, datetime, datetime], ExportResult]


def _export(config: RetuneExport, model: str, start: datetime, end: datetime) -> ExportResult:
    return export_dataset(config, model=model, start=start, end=end)


@dataclass(frozen=True)
class _Candidate:
    """One alerting window's request for one action, before the guard has decided on it."""

    action: RetuneAction
    request: RetuneRequest
    alert_windows: int
    #: the window's end: event time, what the cooldown is measured in
    at: datetime

    @property
    def key(self) -> tuple[str, str, datetime]:
        """The request's row: action (as logged), dedup key, incident start."""
        return log_name(self.action), self.request.dedup_key, self.request.time_range.start

    @property
    def model_key(self) -> tuple[str, str]:
        return log_name(self.action), self.request.model


class RetuneTrigger:
    def __init__(
        self,
        config: AlertingConfig,
        retune_log: RetuneLog,
        *,
        registry: CollectorRegistry,
        runner: Runner = run_action,
        exporter: Exporter = _export,
        model_label: Callable[[str], str] = str,
    ) -> None:
        self._config = config
        #: the model's label value: the worker's bounded set (`metrics.models`, else the first
        #: `metrics.max_models` seen, the rest `other`), as on every other per-model series
        self._model_label = model_label
        self._router = Router(config)
        self._actions = {a.name: a for a in config.retune.actions}
        self._log = retune_log
        self._runner = runner
        self._exporter = exporter
        self._counted: set[tuple[str, str, datetime]] = set()
        self._queue: queue.Queue[_Candidate | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        #: guards the decision and record of a request against its settling on the worker
        self._lock = threading.RLock()
        #: windows that came while their model's request was in flight, offered again after
        self._waiting: dict[tuple[str, str], dict[tuple[str, datetime], _Candidate]] = {}
        #: requests queued or in flight; `_idle` tells when it reaches 0
        self._busy = 0
        self._idle = threading.Condition(self._lock)
        self._in_flight: _Candidate | None = None
        self._closing = False
        #: per action (as logged): requests whose last attempt failed, by row, with the model
        self._unsent: dict[str, dict[tuple[str, datetime], str]] = {}
        self.total = Counter(
            "lookout_retune_requests",
            "Retune requests by action, model and outcome: sent, dry_run, failed, cooldown.",
            ["action", "model", "outcome"],
            registry=registry,
        )
        #: (action, model) pairs whose series exist
        self._labelled: set[tuple[str, str]] = set()

    def consider(self, detection: Detection, incident: Incident) -> list[RetuneRequest]:
        """Requests this alerting window starts (usually none); recorded before queued."""
        if incident.phase != "firing" or incident.started_at is None:
            return []
        # the page's numbers: a span's when it decided over several windows (`page_evidence`),
        # and the evidence's window is the one they were measured over: it said the incident's
        # start to now beside one window's rate and calls (an ML engineer's trial); the whole
        # incident is the request's time_range
        value, calls, span = page_evidence(detection, "firing")
        measured_from = detection.window_end - span * (
            detection.window_end - detection.window_start
        )
        alert = Alert(
            dedup_key=incident.dedup_key,
            status="firing",
            severity=incident.severity,
            detector=incident.detector,
            model=incident.model,
            condition=incident.condition,
            window_start=max(measured_from, incident.started_at),
            window_end=detection.window_end,
            value=value,
            threshold=detection.threshold,
            baseline=detection.baseline,
            sample_size=calls,
            summary=detection.reason,
            reason=detection.reason,
        )
        made = []
        for name in self._router.retune_actions_for(alert):
            action = self._actions[name]
            request = RetuneRequest(
                action=name,
                model=alert.model,
                model_version=incident.model_version,
                detector=alert.detector,
                condition=alert.condition,
                dedup_key=alert.dedup_key,
                reason=detection.reason,
                evidence=evidence(alert),
                time_range=TimeRange(start=incident.started_at, end=detection.window_end),
                consecutive_windows=incident.breach_windows,
                dataset_query=self._config.retune.export.query
                if self._config.retune.export
                else None,
                dry_run=action.dry_run,
            )
            # windows in a row at the incident's level, not every window held open: a one-window
            # blip at low traffic can be held open for many windows at the baseline's rate
            # while its return is unproven (an ML engineer's trial: 18, and a tuning job
            # started on a blip)
            candidate = _Candidate(action, request, incident.breach_windows, detection.window_end)
            if self._offer(candidate):
                made.append(request)
        return made

    def _offer(self, candidate: _Candidate) -> bool:
        """Decide on `candidate`; on go, record it pending and queue it. A window of a model
        whose request is in flight waits for that request's answer."""
        action, request = candidate.action, candidate.request
        with self._lock:
            if self._closing:
                return False
            decision = self._log.decide(
                action,
                model=request.model,
                detector=request.detector,
                dedup_key=request.dedup_key,
                incident_start=request.time_range.start,
                alert_windows=candidate.alert_windows,
                at=candidate.at,
            )
            if decision != "other_detector":
                self._label(action.name, request.model)
            if decision == "in_flight":
                waiting = self._waiting.setdefault(candidate.model_key, {})
                waiting[candidate.key[1:]] = candidate  # the incident's latest window
                return False
            if decision == "cooldown":
                self._held_back(candidate)
            if decision != "go":
                return False
            self._log.record(
                log_name(action),
                model=request.model,
                dedup_key=request.dedup_key,
                incident_start=request.time_range.start,
                at=candidate.at,
                request=request.model_dump_json(),
            )
            self._busy += 1
            self._queue.put(candidate)
        return True

    def _label(self, action: str, model: str) -> None:
        """Make the model's series of `action`, at 0, before anything is counted in them:
        Prometheus's `increase()` sees no increase in a series that first appears at 1, so
        `LookoutRetuneFailing` missed a model's first failure (a lone one, for good). Made
        at the model's first alerting window routed to the action, `consecutive_windows`
        windows before its request; never for a model whose detector the action skips."""
        label = self._model_label(model)
        if (action, label) not in self._labelled:
            self._labelled.add((action, label))
            for outcome in ("sent", "dry_run", "failed", "cooldown"):
                self.total.labels(action, label, outcome)

    def _count(self, action: str, model: str, outcome: str) -> None:
        self._label(action, model)
        self.total.labels(action, self._model_label(model), outcome).inc()

    def _held_back(self, candidate: _Candidate) -> None:
        """Counted and said once per incident, not at each of its windows."""
        name = candidate.action.name
        key = (name, candidate.request.dedup_key, candidate.request.time_range.start)
        if key not in self._counted:
            self._counted.add(key)
            self._count(name, candidate.request.model, "cooldown")
            log.warning("retune %s for %s held back by its cooldown", name, candidate.request.model)

    def _work(self, candidate: _Candidate) -> None:
        """Export, then act (or, in a dry run, describe), then settle: said first, so a window
        that waited for this answer is said after it."""
        action, request = candidate.action, candidate.request
        exported = ""
        try:
            export = self._config.retune.export
            if export is not None:
                start, end = request.time_range.start, request.time_range.end
                result = self._exporter(export, request.model, start, end)
                request = request.model_copy(
                    update={"dataset_uri": result.train_uri, "evaluation_data_uri": result.eval_uri}
                )
                exported = f"; exported {result.train_rows} train, {result.eval_rows} eval lines"
            if action.dry_run:
                # everything but the call: a broken export query or template shows here
                said = f"(dry run): would {preview(action, request)}{exported}"
            else:
                said = f"started: {self._runner(action, request)}"
        except AlreadyStarted as started:
            said = (
                f"already started: {started.created} (created by an earlier attempt that got "
                "no answer in time)"
            )
        except Exception as error:
            self._count(action.name, request.model, "failed")
            dry = " (dry run)" if action.dry_run else ""
            log.error("retune %s for %s failed%s: %s", action.name, request.model, dry, error)
            self._settle(candidate, sent=False, result=f"failed: {error}")
            return
        self._count(action.name, request.model, "dry_run" if action.dry_run else "sent")
        log.warning("retune %s for %s %s", action.name, request.model, said)
        self._settle(candidate, sent=True, result=said)

    def _settle(self, candidate: _Candidate, *, sent: bool, result: str) -> None:
        """Write the answer, then offer again the windows that waited for it: after a failure
        the first of them goes; after a success they are the same incident (already
        requested) or held back by the cooldown it started."""
        with self._lock:
            if self._closing:
                return  # given up at shutdown: `close` has settled it
            self._write_outcome(candidate, sent=sent, result=result)
            waiting = self._waiting.pop(candidate.model_key, {})
            for later in waiting.values():
                self._offer(later)

    def _write_outcome(self, candidate: _Candidate, *, sent: bool, result: str) -> None:
        name, dedup_key, start = candidate.key
        self._log.settle(
            name,
            dedup_key=dedup_key,
            incident_start=start,
            outcome="sent" if sent else "failed",
            result=result,
        )
        unsent = self._unsent.setdefault(name, {})
        if sent:
            unsent.pop((dedup_key, start), None)
        else:
            unsent[(dedup_key, start)] = candidate.request.model

    def _loop(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            with self._lock:
                if self._closing:
                    return
                self._in_flight = item
            try:
                self._work(item)
            finally:
                with self._lock:
                    self._in_flight = None
                    self._busy -= 1
                    self._idle.notify_all()

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="lookout-retune", daemon=True)
            self._thread.start()
            self._ask_again()

    def _ask_again(self) -> None:
        """Offer again each request an earlier process could not send: its incident's next
        alerting window would have asked again, but an incident that ended has none, and its
        retune was lost for good. Guarded as any request (cooldown, one in flight per model);
        an action no longer configured, or now a dry run, leaves its rows alone."""
        by_log_name = {log_name(a): a for a in self._actions.values()}
        for logged, text in self._log.failed():
            action = by_log_name.get(logged)
            if action is None:
                continue
            try:
                request = RetuneRequest.model_validate_json(text)
            except ValueError:  # written by another release: nothing to send
                continue
            log.warning(
                "retune %s for %s: asking again for the request an earlier run could not send "
                "(incident since %s)",
                action.name,
                request.model,
                f"{request.time_range.start:%Y-%m-%d %H:%M}Z",
            )
            at = request.time_range.end
            self._offer(_Candidate(action, request, action.consecutive_windows, at))

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Block until every queued request has been carried out, or `timeout` passed
        (tests, shutdown); True if it was."""
        with self._idle:
            return self._idle.wait_for(lambda: self._busy == 0, timeout)

    def shortfall(self) -> list[str]:
        """After `close`: one line per action some incident's request failed for and was not
        sent after (retried or not), naming the models. A replay whose every retune failed
        exited 0, and its summary said nothing of it."""
        lines = []
        for name, failed in sorted(self._unsent.items()):
            if failed:
                models = ", ".join(sorted(set(failed.values())))
                lines.append(
                    f"retune {name.replace('#dry_run', ' (dry run)')}: no tuning run started for "
                    f"{models} ({len(failed)} request(s) failed; see the errors above)"
                )
        return lines

    def close(self, drain_seconds: float | None = None) -> None:
        """Wait up to `drain_seconds` (None: until done; each action is bounded by its
        `timeout_seconds`) for queued requests, then give up on the rest: each one is said
        (a WARNING naming action and model) and settled as failed, so the next start asks
        again. It waited 120 s for a hung endpoint, past any shutdown grace period, and left
        the request recorded as made."""
        if self._thread is not None:
            self.wait_idle(drain_seconds)
            with self._lock:
                given_up = self._give_up()
            self._queue.put(None)
            if not given_up:
                self._thread.join(timeout=5)
            self._thread = None
        self._log.close()

    def _give_up(self) -> list[_Candidate]:
        """Settle as failed what is still queued or in flight, and stop taking more."""
        self._closing = True
        self._waiting.clear()
        given_up = [] if self._in_flight is None else [self._in_flight]
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is not None:
                self._busy -= 1
                given_up.append(item)
        for candidate in given_up:
            self._write_outcome(candidate, sent=False, result=GIVEN_UP)
            self._count(candidate.action.name, candidate.request.model, "failed")
            log.warning(
                "retune %s for %s given up at shutdown before it was answered: not counted as "
                "made, asked again at the next start",
                candidate.action.name,
                candidate.request.model,
            )
        return given_up
