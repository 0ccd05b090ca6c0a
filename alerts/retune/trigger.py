"""Sustained incidents become retune requests, off the evaluator's thread.

The engine's tracker (`alerts.tracking.EvidenceTracker`) shows `consider` each alerting window
with its incident (consecutive alerting windows, start). `consider` asks the routes which
actions apply (`retune:` on the first matching route, or several with `continue`), the guard
whether to go (`alerts.retune.guard`), records the decision durably, then queues the work —
the dataset export, then the action — for a worker thread, so a slow Vertex AI or Pub/Sub
call never holds up evaluation.
`lookout_retune_requests_total{action,outcome}` counts sent, dry_run, failed and cooldown.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from datetime import datetime

from prometheus_client import CollectorRegistry, Counter

from alerts.receivers.payloads import evidence
from alerts.retune.actions import run_action
from alerts.retune.export import ExportResult, export_dataset
from alerts.retune.guard import RetuneLog, log_name
from alerts.retune.request import RetuneRequest, TimeRange
from alerts.routing import Router
from alerts.state import Incident
from schemas.alert_config import AlertingConfig
from schemas.detection import Alert, Detection
from schemas.retune_config import RetuneAction, RetuneExport

log = logging.getLogger("lookout.retune")

Runner = Callable[[RetuneAction, RetuneRequest], str]
Exporter = Callable[[RetuneExport, str, datetime, datetime], ExportResult]


def _export(config: RetuneExport, model: str, start: datetime, end: datetime) -> ExportResult:
    return export_dataset(config, model=model, start=start, end=end)


class RetuneTrigger:
    def __init__(
        self,
        config: AlertingConfig,
        retune_log: RetuneLog,
        *,
        registry: CollectorRegistry,
        runner: Runner = run_action,
        exporter: Exporter = _export,
    ) -> None:
        self._config = config
        self._router = Router(config)
        self._actions = {a.name: a for a in config.retune.actions}
        self._log = retune_log
        self._runner = runner
        self._exporter = exporter
        self._counted: set[tuple[str, str, datetime]] = set()
        self._queue: queue.Queue[tuple[RetuneAction, RetuneRequest] | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        self.total = Counter(
            "lookout_retune_requests",
            "Retune requests by action and outcome: sent, dry_run, failed, cooldown.",
            ["action", "outcome"],
            registry=registry,
        )
        for name in self._actions:
            for outcome in ("sent", "dry_run", "failed", "cooldown"):
                self.total.labels(name, outcome)

    def consider(self, detection: Detection, incident: Incident) -> list[RetuneRequest]:
        """Requests this alerting window starts (usually none); recorded before queued."""
        if incident.phase != "firing" or incident.started_at is None:
            return []
        alert = Alert(
            dedup_key=incident.dedup_key,
            status="firing",
            severity=incident.severity,
            detector=incident.detector,
            model=incident.model,
            condition=incident.condition,
            window_start=incident.started_at,
            window_end=detection.window_end,
            value=detection.value,
            threshold=detection.threshold,
            baseline=detection.baseline,
            sample_size=detection.sample_size,
            summary=detection.reason,
            reason=detection.reason,
        )
        made = []
        for name in self._router.retune_actions_for(alert):
            action = self._actions[name]
            decision = self._log.decide(
                action,
                model=alert.model,
                detector=alert.detector,
                dedup_key=alert.dedup_key,
                incident_start=incident.started_at,
                alert_windows=incident.alert_windows,
                at=detection.window_end,
            )
            if decision == "cooldown":
                key = (name, alert.dedup_key, incident.started_at)
                if key not in self._counted:
                    self._counted.add(key)
                    self.total.labels(name, "cooldown").inc()
                    log.warning("retune %s for %s held back by its cooldown", name, alert.model)
            if decision != "go":
                continue
            self._log.record(
                log_name(action),
                model=alert.model,
                dedup_key=alert.dedup_key,
                incident_start=incident.started_at,
                at=detection.window_end,
            )
            request = RetuneRequest(
                action=name,
                model=alert.model,
                detector=alert.detector,
                condition=alert.condition,
                dedup_key=alert.dedup_key,
                reason=detection.reason,
                evidence=evidence(alert),
                time_range=TimeRange(start=incident.started_at, end=detection.window_end),
                consecutive_windows=incident.alert_windows,
                dataset_query=self._config.retune.export.query
                if self._config.retune.export
                else None,
                dry_run=action.dry_run,
            )
            made.append(request)
            self._queue.put((action, request))
        return made

    def _work(self, action: RetuneAction, request: RetuneRequest) -> None:
        if action.dry_run:
            log.warning("retune %s (dry run): would start for %s", action.name, request.model)
            self.total.labels(action.name, "dry_run").inc()
            return
        try:
            export = self._config.retune.export
            if export is not None:
                start, end = request.time_range.start, request.time_range.end
                result = self._exporter(export, request.model, start, end)
                request = request.model_copy(
                    update={"dataset_uri": result.train_uri, "evaluation_data_uri": result.eval_uri}
                )
            created = self._runner(action, request)
        except Exception as error:
            self.total.labels(action.name, "failed").inc()
            # nothing started: the incident's next alerting window tries again, and no
            # cooldown holds the model back for a run that never ran
            self._log.forget(
                log_name(action),
                dedup_key=request.dedup_key,
                incident_start=request.time_range.start,
            )
            log.error(
                "retune %s for %s failed (tried again at the incident's next alerting window): %s",
                action.name,
                request.model,
                error,
            )
            return
        self.total.labels(action.name, "sent").inc()
        log.warning("retune %s for %s started: %s", action.name, request.model, created)

    def _loop(self) -> None:
        while True:
            item = self._queue.get()
            try:
                if item is None:
                    return
                self._work(*item)
            finally:
                self._queue.task_done()

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="lookout-retune", daemon=True)
            self._thread.start()

    def wait_idle(self) -> None:
        """Block until every queued request has been carried out (tests, shutdown)."""
        self._queue.join()

    def close(self) -> None:
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join(timeout=120)
            self._thread = None
        self._log.close()
