"""`lookout run`: the long-running worker with its metrics/health server and signal handling."""

from __future__ import annotations

import logging
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path

from schemas.config import FileSourceConfig, LookoutConfig, PubSubSourceConfig
from schemas.errors import DecodeError
from schemas.plural import counted
from worker.cli.pipeline import Pipeline, build_pipeline
from worker.errors import SinkBroken
from worker.health import HealthServer, stall_check
from worker.runner import RunSettings, run
from worker.source import Source

log = logging.getLogger("lookout.serve")


def build_source(config: LookoutConfig, pipeline: Pipeline) -> Source:
    source = config.source
    if isinstance(source, FileSourceConfig):
        from worker.sources.file_source import FileSource

        def report(error: DecodeError) -> None:
            print(f"{source.path}: {error.describe()}", file=sys.stderr)

        path = None if source.path == "-" else Path(source.path)
        return FileSource(
            path,
            lines_per_message=source.lines_per_message,
            format_hint=source.format,
            on_invalid=report,
            max_record_bytes=config.decode.max_record_bytes,
        )
    if isinstance(source, PubSubSourceConfig):
        from worker.sources.pubsub_source import PubSubSource, PubSubSourceSettings

        return PubSubSource(
            PubSubSourceSettings(
                project=source.project,
                subscription=source.subscription,
                dead_letter_topic=source.dead_letter_topic,
                mode=source.mode,
                max_messages=source.max_messages,
                max_bytes=source.max_bytes,
                pull_max_messages=source.pull_max_messages,
                concurrent_pulls=source.concurrent_pulls,
                max_lease_duration_seconds=float(source.max_lease_duration_seconds),
                ack_deadline_seconds=source.ack_deadline_seconds,
                max_inflated_bytes=source.max_inflated_bytes,
                dead_letter_overflow_path=source.dead_letter_overflow_path,
                max_dead_letter_failures=source.max_dead_letter_failures,
                max_backoff_seconds=source.max_backoff_seconds,
                close_timeout_seconds=_close_timeout(config),
            )
        )
    msg = f"source kind {source.kind!r} cannot be used with `lookout run`; use `lookout demo`"
    raise ValueError(msg)


def _close_timeout(config: LookoutConfig) -> float:
    """Seconds each Pub/Sub call may take once stopping: a fifth of the grace period, <= 5 s."""
    return max(0.5, min(5.0, config.engine.grace_period_seconds / 5))


def run_settings(config: LookoutConfig) -> RunSettings:
    """Pub/Sub pulls up to `pull_max_messages` per poll; files poll a few large chunks."""
    if isinstance(config.source, PubSubSourceConfig):
        return RunSettings(
            poll_max_messages=config.source.pull_max_messages,
            grace_period_seconds=config.engine.grace_period_seconds,
            # the source's close: nacks bounded by close_timeout_seconds, and a thread join
            close_reserve_seconds=_close_timeout(config) + 2.0,
        )
    return file_run_settings(config)


def file_run_settings(config: LookoutConfig) -> RunSettings:
    """A file's (`lookout replay`, and `lookout run` on a file source).

    A file decodes in line: on the decode thread, its Python parts held the GIL while the engine
    judged windows, which then took 2.5 times as long (3.3 against 1.35 ms a window over two
    replayed hours at 350 calls a minute per model, 20% with embeddings). The whole replay took
    0.90x the CPU and 0.93x the time decoding in line (8 alternating pairs), the same with every
    line carrying an embedding (6 hours: 0.97x the CPU, 1.01x the time)."""
    return RunSettings(
        grace_period_seconds=config.engine.grace_period_seconds, decode_ahead_slices=0
    )


class MetricsPortUnavailable(Exception):
    """The metrics address is taken or not allowed: one line, and nothing left running."""


def _start_health(
    config: LookoutConfig,
    pipeline: Pipeline,
    checks: dict[str, Callable[[], bool]],
    details: dict[str, Callable[[], str]] | None = None,
) -> HealthServer | None:
    if not config.metrics.enabled:
        return None
    sink = pipeline.sink
    details = dict(details or {})
    details.setdefault("sink", lambda: str(getattr(sink, "unwritable_reason", "")))
    try:
        server = HealthServer(
            pipeline.registry,
            checks,
            host=config.metrics.host,
            port=config.metrics.port,
            details=details,
            liveness=stall_check(
                lambda: pipeline.engine.seconds_since_progress, config.metrics.stall_seconds
            ),
        )
    except OSError as error:
        msg = (
            f"cannot serve /metrics on {config.metrics.host}:{config.metrics.port}: "
            f"{error.strerror or error} (another lookout run?); set metrics.port to a free "
            "port (0: any) or metrics.enabled: false"
        )
        raise MetricsPortUnavailable(msg) from error
    health = server.start()
    log.info(
        "serving /metrics, /healthz and /readyz on %s:%d",
        config.metrics.host,
        health.port,
        extra={"host": config.metrics.host, "port": health.port},
    )
    return health


def _stop_event() -> threading.Event:
    stop = threading.Event()

    def handler(signum: int, frame: object) -> None:
        # later signals while flushing change nothing: the flush finishes, the exit status is 0
        stop.set()

    for s in (signal.SIGTERM, signal.SIGINT):
        signal.signal(s, handler)
    return stop


def _ignore_late_signals() -> None:
    # everything is durable and acked: a repeated SIGTERM during interpreter shutdown
    # (when Python restores default handlers) must not turn a clean exit into -15
    for s in (signal.SIGTERM, signal.SIGINT):
        signal.signal(s, signal.SIG_IGN)


def _say_what_the_evaluator_judges(config: LookoutConfig, sink_name: str) -> None:
    """An evaluator with nothing to judge is silent otherwise: say what it waits for."""
    log.info(
        "judging the windows ingest replicas close in %s, every %ss; a replica that stops "
        "reporting holds windows open for %.0f s after its last report (engine."
        "writer_active_seconds)",
        sink_name,
        config.engine.checkpoint_seconds,
        config.evaluator_writer_active_seconds(),
    )
    if config.sink.kind == "duckdb":
        log.warning(
            "a DuckDB file takes one writer at a time: this evaluator judges what "
            "`lookout run --role ingest` runs wrote to it before it started, and no ingest "
            "replica can write to it while this runs (replicas side by side need BigQuery)"
        )


def serve_evaluator(config: LookoutConfig) -> int:
    """`lookout run --role evaluate`: no source. Every checkpoint interval, read the frontier
    the ingest replicas reported, judge the windows it closed from their merged partial rows,
    write detections and alert state, then notify. Run exactly one (the chart's evaluate
    Deployment has one replica and the Recreate strategy)."""
    pipeline = build_pipeline(config, alert_stream=sys.stdout)
    engine, sink = pipeline.engine, pipeline.sink
    # ready once an ingest replica has reported to this sink (each does as it starts): an
    # evaluator pointed at the wrong dataset said ready while it judged nothing, for good
    reported = threading.Event()
    waiting_for = (
        f"no ingest replica has written its progress to {sink.name} yet "
        "(`lookout run --role ingest` on the same sink)"
    )
    try:
        health = _start_health(
            config,
            pipeline,
            {"sink": sink.writable, "ingest": reported.is_set},
            details={"ingest": lambda: waiting_for},
        )
    except MetricsPortUnavailable as error:
        pipeline.close()
        print(f"lookout run: {error}", file=sys.stderr)
        return 1
    stop = _stop_event()
    judged = 0
    _say_what_the_evaluator_judges(config, sink.name)
    waiting_said = False
    try:
        while not stop.is_set():
            try:
                frontier = sink.load_frontier(config.evaluator_writer_active_seconds())
                if frontier is not None or (not reported.is_set() and sink.any_writer_progress()):
                    # ever, not only lately: replicas with nothing to fold for a day (a
                    # quiet staging weekend) are quiet, not missing
                    reported.set()
                if frontier is None and not waiting_said and not reported.is_set():
                    log.warning(
                        "no ingest replica has written its progress to %s yet: nothing to "
                        "judge until one does (`lookout run --role ingest` on the same sink)",
                        sink.name,
                    )
                waiting_said = frontier is None
                now_judged = engine.judge_stored(frontier)
                if now_judged:
                    log.info("judged %d window(s) the ingest replicas closed", now_judged)
                judged += now_judged
            except SinkBroken:
                raise  # never writable again: stop, a restart reconnects
            except Exception as error:  # the sink is down: keep going, judge when it is back
                log.warning("cannot read %s to judge windows, will retry: %s", sink.name, error)
            engine.tick()
            if not engine.judging_behind:  # behind: judge the next slice straight away
                stop.wait(config.engine.checkpoint_seconds)
        clean = engine.finish(end_of_input=False)
    finally:
        if health is not None:
            health.stop()
        pipeline.close()
        _ignore_late_signals()
    print(f"lookout run --role evaluate: {counted(judged, 'window')} evaluated", file=sys.stderr)
    return 0 if clean else 1


def serve(config: LookoutConfig) -> int:
    if config.engine.role == "evaluate":
        return serve_evaluator(config)
    pipeline = build_pipeline(config, alert_stream=sys.stdout)
    if config.engine.role == "ingest" and isinstance(config.source, PubSubSourceConfig):
        # before the source is built, which starts pulling (leasing messages): a replica
        # killed before its first checkpoint still holds the windows its messages belong to
        # until they can be durable at another replica. Reported after it, a replica killed
        # half a second in had leased 50 messages and reported nothing, and a page was missed
        # (an SRE's trial on the emulators). Only Pub/Sub redelivers what a dead replica held
        pipeline.engine.report_start()
    try:
        source = build_source(config, pipeline)
    except ValueError as error:
        print(f"lookout run: {error}", file=sys.stderr)
        return 2
    pipeline.engine.set_ack_handler(source.ack)
    source_stats = getattr(source, "stats", None)
    if source_stats is not None:
        from worker.sources.source_metrics import PubSubSourceCollector

        pipeline.registry.register(PubSubSourceCollector(source_stats))
    engine_metrics = pipeline.metrics
    if hasattr(source, "on_invalid") and engine_metrics is not None:
        source.on_invalid = engine_metrics.invalid_records
    status = getattr(source, "status", None)  # why the source is not ready, for /readyz
    try:
        health = _start_health(
            config,
            pipeline,
            {"source": source.ready, "sink": pipeline.sink.writable},
            details={"source": status} if status is not None else None,
        )
    except MetricsPortUnavailable as error:
        source.close()
        pipeline.close()
        print(f"lookout run: {error}", file=sys.stderr)
        return 1
    stop = _stop_event()
    input_ended = False
    try:
        result = run(
            source,
            pipeline.engine,
            limits=pipeline.limits,
            stop=stop,
            settings=run_settings(config),
            metrics=pipeline.metrics,
        )
        input_ended = result.end_of_input
    finally:
        if health is not None:
            health.stop()
        pipeline.close(input_ended=input_ended)
        _ignore_late_signals()
    stats = pipeline.engine.stats
    # Pub/Sub bodies that could not even be inflated were dead-lettered by the source itself
    undecodable = source_stats().bad_encoding if source_stats is not None else 0
    print(
        f"lookout run: {stats.records} records, {stats.duplicates} duplicates, "
        f"{result.invalid_records + undecodable} invalid, {stats.quarantined} quarantined "
        f"(event time), {counted(stats.windows_evaluated, 'window')} evaluated, by this run "
        "(what runs before it stored is in the sink too)",
        file=sys.stderr,
    )
    failure = getattr(source, "failure", None)  # a file source's corrupt gzip data
    if failure is not None:
        print(f"lookout run: {failure}", file=sys.stderr)
    unsent = pipeline.delivery_shortfall()
    if unsent:
        print(f"lookout run: {unsent}", file=sys.stderr)
    # retune actions whose requests failed, named as replay names them
    not_retuned = pipeline.retune.shortfall() if pipeline.retune is not None else []
    for line in not_retuned:
        print(f"lookout run: {line}", file=sys.stderr)
    # a stopped worker's queued notifications go out at its next start, as they should (and a
    # failed retune is asked again at the next alerting window); a finite input's are owed now
    owed = bool(unsent or not_retuned) and input_ended
    # a finite input read to its end is a command's run, judged as replay judges one: bad
    # records (each reported above, and dead-lettered if configured) make it exit 1, or a
    # pipeline `lookout run … && next-step` went on as if every line had counted
    invalid = result.invalid_records + undecodable
    if input_ended and invalid:
        print(
            f"lookout run: {counted(invalid, 'bad record')} in the input (reported above); "
            "exit status 1",
            file=sys.stderr,
        )
    bad_input = input_ended and invalid > 0
    return 0 if result.clean_exit and failure is None and not owed and not bad_input else 1
