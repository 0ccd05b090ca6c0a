"""`lookout demo`: a few hours of simulated traffic with one incident of each kind, end to end.

The simulator hands the engine columns directly (no JSON), so the demo exercises windows,
detectors, checkpoints into DuckDB, alert state and the report in well under a minute. The
summary checks the outcome a user cares about: each incident fired within two windows of its
start and resolved after its end, and nothing else fired.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from schemas.plural import counted
from worker.cli.app import (
    app,
    configured,
    fail,
    output_console,
    progress_bar,
    refuse_same_file,
)
from worker.cli.records import fits, print_records

if TYPE_CHECKING:  # imported when the demo runs: `lookout --help` starts without them
    from rich.console import Console

    from alerts.notifiers import ConsoleNotifier
    from schemas.detection import Alert
    from worker.engine import Engine, EngineStats
    from worker.sources.simulator import Incident, SimulationConfig

#: which detector should catch each kind of incident
EXPECTED_DETECTOR = {
    "safety_spike": "safety",
    "latency_regression": "latency",
    "token_explosion": "tokens",
    "topic_shift": "embedding_drift",
}

DEMO_START = datetime(2026, 1, 5, 6, 0, tzinfo=UTC)

#: the query the summary suggests: the columns that say what fired, readable at 80 columns
#: (`SELECT *` has fourteen, which no terminal shows as a table)
SUGGESTED_QUERY = "SELECT window_start, model, detector, status FROM alerts"


@dataclass(frozen=True)
class IncidentOutcome:
    incident: Incident
    model: str
    start: datetime
    end: datetime
    fired_at: datetime | None
    resolved_at: datetime | None
    window_seconds: int

    @property
    def windows_to_fire(self) -> int | None:
        if self.fired_at is None:
            return None
        return int((self.fired_at - self.start).total_seconds() // self.window_seconds) + 1

    @property
    def caught(self) -> bool:
        return self.windows_to_fire is not None and self.windows_to_fire <= 2

    @property
    def resolved(self) -> bool:
        return self.resolved_at is not None and self.resolved_at >= self.end


@dataclass(frozen=True)
class DemoOutcome:
    incidents: tuple[IncidentOutcome, ...]
    unexpected: tuple[Alert, ...]

    @property
    def ok(self) -> bool:
        return all(o.caught and o.resolved for o in self.incidents) and not self.unexpected


def run_simulation(
    engine: Engine,
    config: SimulationConfig,
    *,
    progress: Callable[[float], None] | None = None,
) -> None:
    """Feed the simulated stream through the engine, then close every window."""
    from worker.sources.simulator import simulate_batches

    total = config.hours * 3600.0
    start = config.start.timestamp()
    # one batch per simulated minute: each (model, window) gets one vectorised add per batch
    for batch in simulate_batches(config, seconds_per_batch=60.0):
        engine.feed(batch)
        engine.tick()
        if progress is not None and len(batch):
            progress(min(float(batch.timestamp.max()) - start, total))
    engine.finish(end_of_input=True)


def match_incidents(
    incidents: Sequence[Incident],
    models: Sequence[str],
    alerts: Sequence[Alert],
    *,
    start: datetime,
    window_seconds: int,
) -> DemoOutcome:
    """Pair each incident with the alert that caught it; everything else is unexpected."""
    used: set[int] = set()
    outcomes = []
    for incident in incidents:
        detector = EXPECTED_DETECTOR[incident.kind]
        inc_start = start + incident.start_offset
        inc_end = start + incident.end_offset
        affected = [incident.model] if incident.model else list(models)
        for model in affected:
            fired = resolved = None
            slack = timedelta(seconds=window_seconds * 3)
            for i, a in enumerate(alerts):
                if a.model != model or a.detector != detector:
                    continue
                if (
                    fired is None
                    and a.status == "firing"
                    and inc_start - slack <= a.window_start <= inc_end
                ):
                    fired = a
                    used.add(i)
                elif (
                    fired is not None and a.status == "resolved" and a.dedup_key == fired.dedup_key
                ):
                    resolved = a
                    used.add(i)
                    break
            outcomes.append(
                IncidentOutcome(
                    incident=incident,
                    model=model,
                    start=inc_start,
                    end=inc_end,
                    fired_at=fired.window_start if fired else None,
                    resolved_at=resolved.window_end if resolved else None,
                    window_seconds=window_seconds,
                )
            )
    # info-severity changes (descriptor drift) explain incidents in the report; they never page
    unexpected = tuple(a for i, a in enumerate(alerts) if i not in used and a.severity != "info")
    return DemoOutcome(tuple(outcomes), unexpected)


def _offset(delta: timedelta) -> str:
    minutes = int(delta.total_seconds() // 60)
    return f"{minutes // 60}h{minutes % 60:02d}m"


def summary_row(o: IncidentOutcome, sim_start: datetime) -> tuple[str, ...]:
    """One incident in the summary: short cells, so that each is read whole at 80 columns."""
    return (
        o.incident.kind,
        o.model,
        f"+{_offset(o.start - sim_start)}",
        counted(o.windows_to_fire, "window") if o.windows_to_fire is not None else "never",
        f"+{_offset(o.resolved_at - sim_start)}" if o.resolved_at else "never",
        "ok" if o.caught and o.resolved else "MISSED",
    )


def print_summary(
    console: Console,
    outcome: DemoOutcome,
    stats: EngineStats,
    *,
    sim: SimulationConfig,
    db: Path,
    report: Path,
    alerts_out: Path | None,
    seconds: float,
    printed: ConsoleNotifier | None = None,
) -> None:
    """The table of incidents, what was printed (by `printed`) and what only went to the
    report, and where the files are. Info changes (descriptor drift) explain incidents and
    never page, so they are not printed as they happen; the count says where they are."""
    from rich import box
    from rich.table import Table
    from rich.text import Text

    title = (
        f"lookout demo: {sim.hours:g} simulated hours, {stats.records:,} records, "
        f"{counted(stats.windows_evaluated, 'window', grouped=True)}"
    )
    names = ("incident", "model", "start", "fired in", "resolved", "verdict")
    rows = [summary_row(o, sim.start) for o in outcome.incidents]
    # no outer edge and no edge padding: the widest rows (latency_regression, gemini-1.5-flash)
    # fit 80 columns whole; a narrower terminal gets one incident per block instead of "…"
    table = Table(title=title, box=box.SQUARE, show_edge=False, pad_edge=False)
    for name in names:
        table.add_column(name, no_wrap=True)
    for row in rows:
        table.add_row(*(Text(cell) for cell in row))
    if fits(console, table):
        console.print(table)
    else:
        print_records(console, names, rows, title=title)
        console.print()
    from alerts.notifiers import unprinted_changes

    where = "the report, the alerts table" + (f" and {alerts_out}" if alerts_out else "")
    shown = len(printed.printed) if printed is not None else 0
    unprinted = unprinted_changes(stats.alerts, printed).replace(" info", " info (never pages)")
    console.print(
        f"alert changes: {len(stats.alerts)}; {shown} printed above"
        + (f", {unprinted}; every change is in {where}" if unprinted else "")
    )
    console.print(f"unexpected alerts: {len(outcome.unexpected)}")
    for alert in outcome.unexpected:
        console.print(f"  {alert.summary}")
    console.print(
        f"DuckDB file:  {db.resolve()}  (query window_metrics_merged, detections, alerts)"
    )
    # one line however narrow the terminal, so that it is copied as one command
    console.print(f'  e.g. {_this_command()} sql --db {db} "{SUGGESTED_QUERY}"', soft_wrap=True)
    console.print(f"HTML report:  {report.resolve()}")
    console.print(f"took {seconds:.1f} s")


def _this_command() -> str:
    """How to run `lookout` again from here: `make demo` runs `.venv/bin/lookout`, which is not
    on PATH, so the hint names the path it was started by unless PATH finds the same one."""
    started = Path(sys.argv[0])
    found = shutil.which("lookout")
    if started.name != "lookout":  # `python -m ...`, a test runner: the plain name
        return "lookout"
    try:
        if found is not None and Path(found).samefile(started):
            return "lookout"
        if not started.exists():
            return "lookout"
        # `.venv/bin/lookout` from the clone; from elsewhere the absolute path, not ../../..
        relative = os.path.relpath(started)
        return str(started.resolve()) if relative.startswith("..") else relative
    except (OSError, ValueError):  # another drive, a vanished file: the plain name
        return "lookout"


#: the topic shift starts at 1 h 50 min; at 2 h it had not resolved when the demo ended
DEMO_MIN_HOURS = 2.5
#: a demo's windows lie within this of DEMO_START (its hours are not capped; a month is plenty)
DEMO_SPAN = timedelta(days=31)
#: the writer id the demo's windows are written under: what marks a file as the demo's own
DEMO_WRITER = "lookout-demo"
DEMO_DB = "lookout-demo.duckdb"


def refuse_to_replace(db: Path) -> None:
    """Exit 2 with one line unless `db` is absent or a file a demo wrote (its windows written
    under `DEMO_WRITER`): the demo deleted whatever `--db` named before checking anything (a
    log file, a worker's database). `lookout simulate` starts at the demo's time too, so the
    time of the windows cannot tell a replayed simulation from a demo; the writer can. A file
    at the default path from a release before the marker is told by its windows' days."""
    if not db.exists():
        return
    if db.is_dir():
        fail(f"demo: --db {db} is a directory; expected a file path")
    import duckdb

    from worker.cli.sql import duckdb_open_problem
    from worker.errors import LookoutError
    from worker.sinks.duckdb_read_only import open_read_only
    from worker.sinks.duckdb_sink import refuse_foreign_file

    keep = f"; give another --db (the demo replaces only a file a demo wrote) or remove {db}"
    try:
        refuse_foreign_file(db)
        sink = open_read_only(db)
    except duckdb.Error as error:  # a lock: another process has it open
        fail(f"demo: {duckdb_open_problem(db, error)}", code=1)
    except LookoutError as error:
        fail(f"demo: --db {db} exists and is not a demo's file ({str(error).split(';')[0]}){keep}")
    try:
        writers = {str(w) for (w,) in sink.query("SELECT DISTINCT writer_id FROM window_metrics")}
        ((first, last),) = sink.query(
            "SELECT min(window_start), max(window_start) FROM window_metrics"
        )
    finally:
        sink.close()
    if writers <= {DEMO_WRITER}:
        return
    legacy = db.name == DEMO_DB and first is not None and last is not None
    if legacy and first >= DEMO_START and last < DEMO_START + DEMO_SPAN:
        return
    named = ", ".join(sorted(writers)[:3]) + (", …" if len(writers) > 3 else "")
    fail(f"demo: --db {db} holds windows written by {named}, not by a demo{keep}")


@app.command(short_help="Simulate LLM traffic with one incident of each kind, end to end.")
def demo(
    hours: Annotated[
        float,
        typer.Option(
            help="Simulated hours of traffic (the last incident starts at 1 h 50 min and must "
            "be seen to resolve).",
            min=DEMO_MIN_HOURS,
        ),
    ] = 3.0,
    db: Annotated[
        Path,
        typer.Option(help="DuckDB file to create (a demo's file there is replaced, nothing else)."),
    ] = Path(DEMO_DB),
    report: Annotated[Path, typer.Option(help="HTML report to write.")] = Path(
        "lookout-demo-report.html"
    ),
    alerts_out: Annotated[
        Path | None, typer.Option("--alerts-out", help="Also append alerts here as JSON lines.")
    ] = None,
    seed: Annotated[int, typer.Option(help="Simulation seed.")] = 7,
) -> None:
    """Simulate a few hours of LLM traffic with one incident of each kind, end to end.

    Three models, diurnal load, safety blocks, latency, tokens and topic-clustered embeddings;
    a safety-block spike, a latency regression, a token explosion and a topic shift are injected.
    Everything runs in-process on the embedded default (DuckDB), no cloud account needed. Prints
    the alerts as they fire, then a summary table, the DuckDB file and the HTML report.
    """
    from worker.cli.pipeline import build_pipeline
    from worker.cli.report import write_report
    from worker.sources.simulator import SimulationConfig, default_demo_incidents

    refuse_same_file("demo", {"--db": db, "--report": report, "--alerts-out": alerts_out})
    refuse_to_replace(db)
    for path in (db, Path(f"{db}.wal")):
        path.unlink(missing_ok=True)
    config = configured(
        None,
        sink={"kind": "duckdb", "path": str(db)},
        alerts_out=str(alerts_out) if alerts_out else None,
        engine__writer_id=DEMO_WRITER,
    )
    sim = SimulationConfig(
        start=DEMO_START, hours=hours, incidents=default_demo_incidents(), seed=seed
    )
    started = time.monotonic()
    pipeline = build_pipeline(config, alert_stream=sys.stdout, keep_detections=True)
    total = hours * 3600.0
    with progress_bar(sys.stderr.isatty()) as progress:
        task = progress.add_task("simulating", total=total, detail="")

        def advance(simulated_seconds: float) -> None:
            engine = pipeline.engine
            progress.update(
                task,
                completed=simulated_seconds,
                detail=f"{engine.stats.records:,} records, "
                f"{len(engine.stats.alerts)} alert changes",
            )

        run_simulation(pipeline.engine, sim, progress=advance)
    stats = pipeline.engine.stats
    outcome = match_incidents(
        sim.incidents,
        sim.models,
        stats.alerts,
        start=sim.start,
        window_seconds=config.engine.window_seconds,
    )
    from worker.cli.report_evidently import evidently_second_opinion

    write_report(
        pipeline.report_sink(),
        report,
        title="Lookout demo",
        second_opinion=evidently_second_opinion,
    )
    pipeline.close(input_ended=True)
    from worker.sinks.duckdb_sink import compact_file

    compact_file(db)  # about half the file is free blocks after three hours of checkpoints

    print_summary(
        output_console(),
        outcome,
        stats,
        sim=sim,
        db=db,
        report=report,
        alerts_out=alerts_out,
        seconds=time.monotonic() - started,
        printed=pipeline.console,
    )
    if not outcome.ok:
        raise typer.Exit(1)
