"""Builds a running pipeline (detectors, sink, alert state, engine) from one configuration.

Everything that survives a restart is loaded here from the sink: alert state (so an open
incident does not page again), detector references, and recent windows as baselines.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from prometheus_client import CollectorRegistry

from alerts.notifiers import ConsoleNotifier, JsonLinesNotifier, Notifier
from alerts.receivers import Dispatcher, build_dispatcher
from alerts.routing import Router
from alerts.tracking import EvidenceTracker
from detectors.base import Detector
from detectors.registry import build_detectors
from schemas.config import REDELIVERY_MARGIN_SECONDS, LookoutConfig, PubSubSourceConfig
from schemas.decode.api import DecodeLimits
from schemas.detection import Alert
from worker.engine import Engine, EngineSettings
from worker.evaluator import WindowEvaluator, incident_keep
from worker.event_time import EventTimeLimits
from worker.metrics import EngineMetrics, ModelLabels
from worker.sink import Sink
from worker.sinks.duckdb_sink import DuckDBSink

if TYPE_CHECKING:  # built only when routes name retune actions
    from alerts.retune import RetuneTrigger

log = logging.getLogger("lookout.alerts")


class LogNotifier:
    """The receiver for info-severity changes: a log line, never a page."""

    def send(self, alerts: Sequence[Alert]) -> None:
        for alert in alerts:
            log.info("%s", alert.summary)


@dataclass
class Pipeline:
    config: LookoutConfig
    detectors: Mapping[str, Detector[Any]]
    sink: Sink
    evaluator: WindowEvaluator
    engine: Engine
    metrics: EngineMetrics
    registry: CollectorRegistry
    #: Slack / PagerDuty / Alertmanager / webhook receivers from `alerting.receivers`
    dispatcher: Dispatcher | None = None
    #: retune actions named by routes (`alerting.retune`)
    retune: RetuneTrigger | None = None
    #: the console receiver, when alerts are printed to a stream (it counts what it printed)
    console: ConsoleNotifier | None = None

    @property
    def limits(self) -> DecodeLimits:
        return DecodeLimits(
            max_record_bytes=self.config.decode.max_record_bytes,
            max_depth=self.config.decode.max_depth,
            expected_embedding_dim=self.config.decode.embedding_dim,
        )

    def close(self, *, input_ended: bool = False) -> None:
        """`input_ended`: the source ran out (a replay, a file read to its end), so no alert
        will join a group that still waits: grouped notifications are sent now, not left for
        a next start that may never come."""
        if self.dispatcher is not None:
            # a share of the shutdown grace period for in-flight pages; the rest stays in the
            # persisted outbox and goes out after the next start
            self.dispatcher.close(
                drain_seconds=self.config.engine.grace_period_seconds / 3,
                flush_groups=input_ended,
            )
        if self.retune is not None:
            # a finite input's requests are owed now (each bounded by its timeout_seconds); a
            # stopped worker gives the rest up within its share of the grace period
            self.retune.close(
                drain_seconds=None if input_ended else self.config.engine.grace_period_seconds / 3
            )
        self.sink.close()

    def delivery_shortfall(self) -> str:
        """After `close`: one line naming the receivers some notification of this run did not
        reach (given up on after `give_up_after`, dropped, or still in the outbox), or "". A
        replay whose every page failed exited 0 and its summary said nothing of it."""
        dispatcher = self.dispatcher
        if dispatcher is None:
            return ""
        parts = []
        for receiver in sorted(set(dispatcher.undelivered) | set(dispatcher.left_queued)):
            failed, queued = dispatcher.undelivered[receiver], dispatcher.left_queued[receiver]
            said = [
                f"{failed} given up" if failed else "",
                f"{queued} still queued" if queued else "",
            ]
            if failed or queued:
                parts.append(f"{receiver} ({', '.join(p for p in said if p)})")
        if not parts:
            return ""
        given_up = any(dispatcher.undelivered.values())
        return (
            f"notifications did not reach {'; '.join(parts)}"
            + (" (see the errors above)" if given_up else " (the receiver stopped taking them)")
            + "; the alerts are in the alerts table, and queued ones go out from the outbox "
            "at the next start"
        )

    def report_sink(self) -> DuckDBSink:
        """The sink an HTML report reads: reports are built from the DuckDB file."""
        if not isinstance(self.sink, DuckDBSink):
            msg = f"reports read a DuckDB sink; this pipeline writes to {self.sink.name}"
            raise TypeError(msg)
        return self.sink


def build_sink(config: LookoutConfig, reread_windows: int = 0, *, keeps: bool = True) -> Sink:
    """The configured sink. BigQuery's client library is imported only when it is chosen;
    BIGQUERY_EMULATOR_HOST (host:port, read here at the edge) points it at an emulator.
    `reread_windows`: how many windows a restarted evaluator reads back; `keeps`: this
    command folds records or judges windows, so window partitions must last for it."""
    if config.sink.kind == "bigquery":
        from worker.sinks.bigquery_sink import BigQuerySink, KeepWindows

        late = config.engine.late_record_horizon_seconds()
        keep: KeepWindows | None = KeepWindows(
            late,
            "a record up to engine.max_past_seconds + max_future_skew_seconds + window_seconds "
            f"({late / 86_400:.2f} days) late is still folded into its window (counted again "
            "once that window is gone)",
        )
        window = config.engine.window_seconds
        if reread_windows * window > late:
            keep = KeepWindows(
                reread_windows * window,
                f"a restarted evaluator re-reads its last {reread_windows} windows as baselines "
                f"and open incidents ({reread_windows * window / 86_400:.2f} days at "
                f"engine.window_seconds {window}; fewer, shorter windows need less)",
            )

        return BigQuerySink(
            config.sink.project,
            config.sink.dataset,
            location=config.sink.location,
            emulator_host=os.environ.get("BIGQUERY_EMULATOR_HOST") or None,
            write_timeout=config.sink.write_timeout_seconds,
            keep=keep if keeps else None,
        )
    return open_duckdb_sink(
        Path(config.sink.path),
        memory_limit=config.sink.memory_limit,
        retention_days=config.sink.retention_days,
    )


def open_duckdb_sink(
    path: Path, *, memory_limit: str, retention_days: float | None = None
) -> DuckDBSink:
    """The DuckDB sink, or one line and exit 1 if the file cannot be opened (another process
    holds its lock, a folder that does not exist or cannot be written, a file that is not
    Lookout's): the same words `lookout sql` uses, before anything has been read."""
    import duckdb

    from worker.cli.app import fail
    from worker.cli.sql import duckdb_open_problem
    from worker.errors import SetupError

    try:
        return DuckDBSink(path, memory_limit=memory_limit, retention_days=retention_days)
    except SetupError as error:
        fail(str(error), code=1)
    except (duckdb.Error, OSError) as error:
        problem = duckdb_open_problem(path, error)
        if isinstance(error, duckdb.OutOfMemoryException):  # within the sink's own limit
            problem += "; raise sink.memory_limit, the DuckDB sink's memory"
        fail(problem, code=1)


def outbox_path(config: LookoutConfig) -> str:
    """Receivers' persisted outbox: configured, else a SQLite file beside the DuckDB sink."""
    if config.alerting.outbox_path:
        return config.alerting.outbox_path
    if config.sink.kind != "duckdb":
        return "lookout.outbox.sqlite"  # in the working directory (a volume on Kubernetes)
    sink = config.sink.path
    return ":memory:" if sink == ":memory:" else f"{sink}.outbox.sqlite"


def _predecessor_frontier(sink: Sink, writer_id: str) -> float | None:
    """The frontier a predecessor under this writer id last reported (a container restarted
    with the same host name and PID 1, or a fixed `engine.writer_id`). Unreadable: none, as
    for a new replica; the evaluator then counts on `writer_active_seconds` alone."""
    try:
        return sink.writer_frontier(writer_id)
    except Exception as error:  # any sink failure: the start must not depend on it
        logging.getLogger("lookout.engine").warning(
            "could not read %s's last frontier from %s: %s", writer_id, sink.name, error
        )
        return None


def default_writer_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


def seed_history(
    sink: Sink,
    evaluator: WindowEvaluator,
    detectors: Mapping[str, Detector[Any]],
    window: int,
) -> None:
    """Give a restarted evaluator the baseline history it had: the judged windows before the
    first window still waiting for a verdict (a window not judged yet is not history; seeding
    it would also push the windows before it out of the bounded history)."""
    depth = evaluator.history_depth
    if depth == 0:
        return
    first_pending: dict[str, int] = {}
    for model, start in sink.unevaluated_windows(limit=1_000_000):
        first_pending[model] = min(start, first_pending.get(model, start))
    for model in sink.models():
        newest = sink.newest_window_start(model)
        if newest is None:
            continue
        until = first_pending.get(model, newest + window)
        rows: dict[int, Any] = {}
        for since, before in evaluator.seed_ranges(model, until):
            rows.update(sink.load_recent_windows(model, since, before))
        for start in sorted(rows):
            merged = {name: d.empty() for name, d in detectors.items()}
            for partial in rows[start]:
                for name, d in detectors.items():
                    if name in partial:
                        merged[name] = d.merge(merged[name], d.from_row(partial[name]))
            evaluator.remember(model, start, merged)


def reread_windows(config: LookoutConfig, detectors: Mapping[str, Detector[Any]]) -> int:
    """How many windows back a restarted evaluator reads (`WindowEvaluator.seed_ranges`):
    twice the longest history, and an open incident's latest windows. An ingest replica reads
    none. Not the frozen baseline of an incident older than that, which no bound covers."""
    if config.engine.role == "ingest" or not detectors:
        return 0
    depth = max(d.history_windows for d in detectors.values())
    return 2 * depth + max(incident_keep(d) for d in detectors.values())


def build_pipeline(
    config: LookoutConfig,
    *,
    alert_stream: TextIO | None,
    registry: CollectorRegistry | None = None,
    now: Callable[[], float] = time.monotonic,
    on_ack: Callable[[Sequence[str]], None] | None = None,
    keep_detections: bool = False,
    extra_notifiers: Mapping[str, Notifier] | None = None,
) -> Pipeline:
    detectors = build_detectors(config.detector_configs())
    sink = build_sink(config, reread_windows(config, detectors))
    registry = registry if registry is not None else CollectorRegistry()
    tracker = EvidenceTracker.load(sink.load_alert_state(), config.alerting)
    # one bounded set of model label values for every per-model series
    model_labels = ModelLabels(config.metrics.models, config.metrics.max_models)
    retune = None
    if config.alerting.retune.actions and config.engine.role != "ingest":
        from alerts.retune import RetuneTrigger
        from alerts.retune.guard import RetuneLog

        retune = RetuneTrigger(
            config.alerting,
            RetuneLog(outbox_path(config)),
            registry=registry,
            model_label=model_labels,
        )
        retune.start()
        tracker.on_alerting = retune.consider
    references = {
        key: detectors[key[1]].from_row(row)
        for key, row in sink.load_references().items()
        if key[1] in detectors
    }
    window = config.engine.window_seconds
    evaluator = WindowEvaluator(
        detectors, window, tracker, references, baseline_accepts=sink.load_baseline_accepts
    )
    if config.engine.role != "ingest":
        seed_history(sink, evaluator, detectors, window)

    metrics = EngineMetrics(
        registry,
        model_labels,
        min_calls={
            name: int(getattr(getattr(detector, "config", None), "min_calls", 0))
            for name, detector in detectors.items()
        },
    )

    notifiers: dict[str, Notifier] = {"log": LogNotifier()}
    console = ConsoleNotifier(alert_stream) if alert_stream is not None else None
    notifiers["console"] = console or LogNotifier()
    notifiers.update(extra_notifiers or {})
    dispatcher = None
    if config.alerting.receivers and config.engine.role != "ingest":
        dispatcher = build_dispatcher(
            config.alerting, outbox_path=outbox_path(config), registry=registry
        )
        notifiers.update(dispatcher.notifiers())
        dispatcher.start()
    router = Router(config.alerting)
    missing = router.receiver_names() - notifiers.keys()
    if missing and config.engine.role != "ingest":  # ingest never notifies
        log.warning("alert routes name receivers with no notifier: %s", sorted(missing))
    record = JsonLinesNotifier(Path(config.alerts_out)) if config.alerts_out else None

    def notify(alerts: Sequence[Alert]) -> list[Alert]:
        """Send to every routed receiver; return what should be retried later."""
        retry: list[Alert] = []
        if record is not None:
            try:
                record.send(alerts)
            except Exception as error:  # the file failing must not keep them from receivers
                log.error("%d alert(s) not written to %s: %s", len(alerts), record.path, error)
                retry.extend(alerts)
        result = router.dispatch(alerts, notifiers)
        for failure in result.failures:
            log.error(
                "receiver %s did not get %d alert(s)%s: %s",
                failure.receiver,
                len(failure.alerts),
                ", will retry" if failure.retryable else "",
                failure.error,
            )
            if failure.retryable:
                retry.extend(a for a in failure.alerts if a not in retry)
        return retry

    writer_id = config.engine.writer_id or default_writer_id()
    hold = (
        config.source.ack_deadline_seconds + REDELIVERY_MARGIN_SECONDS
        if isinstance(config.source, PubSubSourceConfig) and config.engine.role != "evaluate"
        else 0.0
    )
    settings = EngineSettings(
        window_seconds=window,
        allowed_lateness_seconds=config.engine.allowed_lateness_seconds,
        checkpoint_seconds=config.engine.checkpoint_seconds,
        checkpoint_max_messages=config.engine.checkpoint_max_messages,
        checkpoint_max_records=config.engine.checkpoint_max_records,
        max_open_windows=config.engine.max_open_windows,
        writer_id=writer_id,
        evaluate=config.engine.role != "ingest",
        # DuckDB's sink serialises reads and writes on its own lock
        background_checkpoints=config.sink.kind == "duckdb",
        # a killed predecessor's unacked messages come back within the ack deadline its
        # leases had (and the emulator's or service's redelivery delay): their windows wait
        closing_hold_seconds=hold,
        hold_frontier_cap=_predecessor_frontier(sink, writer_id) if hold else None,
        hold_frontier_seconds=config.evaluator_writer_active_seconds() if hold else 0.0,
        # an ingest replica ahead of the slowest reports at least three times within the
        # evaluator's liveness window, so a quiet stream does not keep a dead replica counted
        frontier_refresh_seconds=(
            config.evaluator_writer_active_seconds() / 3 if config.engine.role == "ingest" else None
        ),
        writer_active_seconds=config.evaluator_writer_active_seconds(),
        idle_close_seconds=config.engine.idle_close_seconds if hold else None,
        event_time=EventTimeLimits(
            max_future_skew_seconds=config.engine.max_future_skew_seconds,
            max_past_seconds=config.engine.max_past_seconds,
            quorum=config.engine.watermark_quorum,
            share=config.engine.watermark_share,
            confirm_after_seconds=config.engine.allowed_lateness_seconds,
            live=config.source.kind == "pubsub",
        ),
    )
    engine = Engine(
        settings,
        detectors,
        sink,
        evaluator,
        notify=notify,
        metrics=metrics,
        on_ack=on_ack,
        now=now,
        keep_detections=keep_detections,
        handoff=dispatcher.outbox if dispatcher is not None else None,
    )
    engine.send_unsent_alerts()
    if config.engine.role == "all":
        # windows a stopped worker left unjudged (an evaluator finds them by itself)
        engine.resume(sink.unevaluated_windows(limit=config.engine.max_open_windows // 2))
    return Pipeline(
        config, detectors, sink, evaluator, engine, metrics, registry, dispatcher, retune, console
    )
