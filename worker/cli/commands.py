"""`lookout demo | replay | simulate | decode | run`: thin wrappers over the worker modules."""

from __future__ import annotations

import logging
import sys
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from io import BufferedIOBase
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, cast

import orjson
import typer

from schemas.config import FileSourceConfig
from schemas.errors import DecodeError
from schemas.plural import counted
from worker.cli.app import (
    ConfigOption,
    app,
    configured,
    fail,
    output_folder_problems,
    progress_bar,
    quiet_broken_pipe,
    refuse_same_file,
    refuse_to_start,
    stop_on_signals,
)
from worker.cli.log_format import say

if TYPE_CHECKING:
    from schemas.config import LookoutConfig
    from schemas.decode.api import DecodeLimits
    from schemas.prediction_log import PredictionLog
    from worker.engine import Engine

FormatOption = Annotated[
    str | None,
    typer.Option(
        "--format",
        help="Wire format of every line: native, envelope, logentry, otlp, gemini, palm or "
        "openai (default: detected per line).",
    ),
]

_progress = progress_bar


@app.command(short_help="Replay a file of prediction logs through the pipeline into DuckDB.")
def replay(
    file: Annotated[str, typer.Argument(help="NDJSON file of prediction logs, or - for stdin.")],
    config_path: ConfigOption = None,
    alerts_out: Annotated[
        Path | None,
        typer.Option(
            "--alerts-out",
            help="Append alert changes here as JSON lines (a line the file's last MiB already "
            "holds is not written again).",
        ),
    ] = None,
    db: Annotated[Path | None, typer.Option(help="DuckDB file (default from config).")] = None,
    format_hint: FormatOption = None,
    dead_letter: Annotated[
        Path | None, typer.Option(help="Append bad records with their reason here (NDJSON).")
    ] = None,
    report: Annotated[Path | None, typer.Option(help="Write an HTML report here.")] = None,
) -> None:
    """Replay a file of prediction logs through the whole pipeline into DuckDB.

    Every wire format Lookout knows is detected per line. Bad records are reported on stderr
    (one line each: line number, field, reason) and skipped; everything good is counted, and the
    exit status is 1 if any record was bad (as for `lookout decode`; a script then sees it).
    Replaying the same file again does not double-count (records are keyed by request_id per
    window). A gzip-compressed file (or pipe) is read as the lines it holds. SIGTERM/Ctrl-C
    stops reading, writes a final checkpoint and exits 143/130, as a shell reports a stopped
    command; replaying the file again counts the rest.
    """
    from alerts.notifiers import unprinted_changes
    from worker.cli.pipeline import build_pipeline
    from worker.cli.serve import file_run_settings
    from worker.runner import run
    from worker.sources.file_source import FileSource

    config = configured(
        config_path,
        sink={"kind": "duckdb", "path": str(db)} if db else None,
        alerts_out=str(alerts_out) if alerts_out else None,
    )
    path = input_file("replay", file)
    _check_format("replay", format_hint)
    refuse_to_start("replay", config)
    output_file("replay", "--alerts-out", Path(config.alerts_out) if config.alerts_out else None)
    output_file("replay", "--dead-letter", dead_letter)
    output_file("replay", "--report", report or (Path(config.report) if config.report else None))
    if config.sink.kind == "duckdb" and config.sink.path != ":memory:":
        output_file("replay", "--db", Path(config.sink.path))
    refuse_same_file(
        "replay",
        {
            "the input": path,
            "--db": Path(config.sink.path) if config.sink.kind == "duckdb" else None,
            "--report": report or (Path(config.report) if config.report else None),
            "--dead-letter": dead_letter,
            "--alerts-out": Path(config.alerts_out) if config.alerts_out else None,
        },
    )

    wanted_report = report or (Path(config.report) if config.report else None)
    if wanted_report is not None and config.sink.kind != "duckdb":
        # found only after the replay had written every record (a TypeError's words, exit 1)
        option = "--report" if report else "report (in the configuration)"
        fail(
            f"replay: {option} is built from the DuckDB file the replay writes, and this "
            f"configuration writes to {config.sink.kind} (sink.kind); replay into DuckDB with "
            "--db FILE, or leave the report out"
        )

    def report_invalid(error: DecodeError) -> None:
        _say_bad_record("replay", file, error)

    file_config = config.source if isinstance(config.source, FileSourceConfig) else None
    source = FileSource(
        path,
        lines_per_message=file_config.lines_per_message if file_config else 2000,
        format_hint=format_hint or (file_config.format if file_config else None),
        on_invalid=report_invalid,
        dead_letter_path=dead_letter,
        max_record_bytes=config.decode.max_record_bytes,
    )
    pipeline = build_pipeline(config, alert_stream=sys.stdout)
    pipeline.engine.set_ack_handler(source.ack)
    with (
        stop_on_signals() as stop,
        _progress(sys.stderr.isatty()) as progress,
        _quarantine_named_once(),
    ):
        task = progress.add_task("replaying", total=None, detail="")

        def advance(records: int) -> None:
            progress.update(
                task, advance=records, detail=f"{pipeline.engine.stats.records:,} records"
            )

        result = run(
            source,
            pipeline.engine,
            limits=pipeline.limits,
            stop=stop,
            settings=file_run_settings(config),
            metrics=pipeline.metrics,
            progress=advance,
        )
    stats = pipeline.engine.stats
    report_failure = None
    if report is not None or config.report:
        from worker.cli.report import write_report
        from worker.cli.report_evidently import evidently_second_opinion

        report_path = report or Path(str(config.report))
        try:
            write_report(
                pipeline.report_sink(),
                report_path,
                title=f"Lookout replay of {file}",
                second_opinion=evidently_second_opinion,
            )
        except OSError as error:  # a full disk: the records are stored; say what is missing
            reason = error.strerror or str(error)
            report_failure = f"cannot write the report file {report_path}: {reason}"
    pipeline.close(input_ended=result.end_of_input)
    for q in stats.quarantine_examples:
        where = f"{file}: line {q.line}" if q.line is not None else file
        say(
            "lookout.replay",
            f"{where}: quarantined record {q.request_id} ({q.model}): {q.reason}",
            "WARNING",
            file=file,
            line=q.line,
            request_id=q.request_id,
            model=q.model,
            reason=q.reason,
        )
    if stats.quarantined > len(stats.quarantine_examples):
        more = stats.quarantined - len(stats.quarantine_examples)
        say(
            "lookout.replay",
            f"{file}: {more} more quarantined, in the table quarantined_records",
            "WARNING",
        )
    unprinted = unprinted_changes(stats.alerts, pipeline.console)
    say(
        "lookout.replay",
        f"replayed {file}: {stats.records} records counted, {stats.duplicates} duplicates skipped, "
        f"{result.invalid_records} invalid, {stats.quarantined} quarantined (event time), "
        f"{stats.late} late, {counted(stats.windows_evaluated, 'window')} "
        f"evaluated, {counted(len(stats.alerts), 'alert change')}"
        + (f" (not printed: {unprinted}; all in {_kept_in(config, report)})" if unprinted else "")
        + (" (stopped by signal)" if result.stopped_by_signal else ""),
        file=file,
        records=stats.records,
        duplicates=stats.duplicates,
        invalid=result.invalid_records,
        quarantined=stats.quarantined,
        late=stats.late,
        windows_evaluated=stats.windows_evaluated,
        alert_changes=len(stats.alerts),
        stopped_by_signal=result.stopped_by_signal,
    )
    read = stats.records or stats.duplicates or result.invalid_records or stats.quarantined
    if not read and not result.stopped_by_signal:  # empty, or the wrong file: 0 said nothing
        named = "standard input" if file == "-" else file
        say("lookout.replay", f"{named} holds no records (empty or blank lines only)", "WARNING")
    if stats.duplicates and stats.duplicates >= stats.records:
        say(
            "lookout.replay",
            f"{file}: {stats.duplicates} records were already counted in the sink (same "
            "request ids): this file replayed again, or simulated files made with the same "
            f"--seed; {_apart_hint(config)} to keep them apart",
            "WARNING",
        )
    if source.failure is not None:
        say("lookout.replay", source.failure, "ERROR", file=file)
    undelivered = _undelivered_alerts(pipeline.engine)
    unsent = pipeline.delivery_shortfall()
    if unsent:
        say("lookout.replay", unsent, "ERROR", file=file)
    # retune actions whose requests failed, one line each, as receivers are named
    not_retuned = pipeline.retune.shortfall() if pipeline.retune is not None else []
    for line in not_retuned:
        say("lookout.replay", line, "ERROR", file=file)
    if undelivered:
        say(
            "lookout.replay",
            f"{undelivered} alert change(s) did not reach "
            f"{config.alerts_out or 'their receivers'} (see the errors above); they are in "
            f"the alerts table{_of_sink(config)}",
            "ERROR",
            file=file,
            undelivered_alerts=undelivered,
        )
    if report_failure is not None:
        say("lookout.replay", report_failure, "ERROR", file=file)
    failed = (
        source.failure is not None
        or report_failure is not None
        or undelivered
        or unsent
        or not_retuned
    )
    if result.stopped_by_signal and stop.signum is not None:
        # 130 or 143, as a shell reports a command a signal stopped: `replay F && next` must
        # not go on with part of F (a rerun counts the rest; nothing is counted twice)
        raise typer.Exit(128 + stop.signum)
    if not result.clean_exit or result.invalid_records or failed:
        raise typer.Exit(1)


def _undelivered_alerts(engine: Engine) -> int:
    """How many alert changes a receiver failed to take (the `--alerts-out` file on a full
    disk): the engine retries them after its next checkpoint, and a replay has none after its
    last, so they never arrive. Exit 0 said they had."""
    return len(engine.undelivered_alerts)


def _of_sink(config: LookoutConfig) -> str:
    """` of FILE` for the DuckDB file a replay wrote, where the alerts can be read."""
    if config.sink.kind == "duckdb" and config.sink.path != ":memory:":
        return f" of {config.sink.path}"
    return ""


def simulation_start(text: str) -> datetime:
    """`--start` as an aware time; a time without an offset is UTC, as every time Lookout
    prints is. Raises ValueError with the reason."""
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        msg = f"--start {text!r} is not an ISO 8601 time such as 2026-01-05T07:00Z"
        raise ValueError(msg) from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


@app.command(short_help="Write simulated prediction logs as NDJSON, for replay or publish.")
def simulate(
    out: Annotated[Path, typer.Option("--out", "-o", help="NDJSON file to write (- for stdout).")],
    hours: Annotated[float, typer.Option(help="Simulated hours.", min=0.01)] = 1.0,
    start: Annotated[
        str | None,
        typer.Option(
            help="When the simulated stream starts, ISO 8601 (UTC unless it says otherwise), "
            "e.g. 2026-01-05T07:00Z for the hour after the default's: traffic that follows "
            "a file made earlier. Default: 2026-01-05T06:00Z.",
        ),
    ] = None,
    incident: Annotated[
        list[str] | None,
        typer.Option(
            help="KIND[:MODEL]@OFFSET[:DURATION], repeatable; kinds: safety_spike, "
            "latency_regression, token_explosion, topic_shift; without MODEL every model is "
            "hit. E.g. safety_spike@45m or latency_regression:text-bison@40m:15m"
        ),
    ] = None,
    rate: Annotated[float, typer.Option(help="Mean calls per minute per model.", min=1)] = 700.0,
    seed: Annotated[int, typer.Option(help="Random seed (same seed, same stream).")] = 7,
    fmt: Annotated[
        str,
        typer.Option(
            "--format", help="mixed, or one of: native, gemini, palm, openai, logentry, otlp."
        ),
    ] = "mixed",
    text: Annotated[
        bool,
        typer.Option(
            "--text/--no-text",
            help="Write prompt and response strings (--no-text leaves them out: a smaller, "
            "faster file; response-length drift then has nothing to measure).",
        ),
    ] = True,
    embedding_fraction: Annotated[
        float,
        typer.Option(
            help="Share of records that carry a 384-float embedding (most of a line's bytes); "
            "0 leaves embeddings out.",
            min=0.0,
            max=1.0,
        ),
    ] = 1.0,
    tenant: Annotated[
        list[str] | None,
        typer.Option(
            help="A tenant (customer or team) to spread the calls over, repeatable; the records "
            "carry it where the wire format has a tenant field. Default: no tenant.",
        ),
    ] = None,
) -> None:
    """Write simulated prediction logs as NDJSON in mixed wire formats, for replay or publish.

    Models: gemini-1.5-flash, text-bison, gpt-4o-mini. Stops quietly when the reader of
    `--out -` goes away (`| head`).
    """
    from worker.cli.demo import DEMO_START
    from worker.sources.simulator import SimulationConfig, parse_incident, simulate_logs
    from worker.sources.wire_encode import FORMATS, encode, encode_mixed

    try:
        incidents = tuple(parse_incident(text) for text in incident or ())
        sim = SimulationConfig(
            start=DEMO_START if start is None else simulation_start(start),
            hours=hours,
            calls_per_minute=rate,
            incidents=incidents,
            seed=seed,
            with_text=text,
            embedding_fraction=embedding_fraction,
            tenants=tuple(tenant or ()),
        )
    except ValueError as error:
        fail(f"simulate: {error}")
    if fmt != "mixed" and fmt not in FORMATS:
        known = ", ".join(FORMATS)
        fail(f"simulate: unknown --format {fmt!r}; expected mixed or one of {known}")
    logs = simulate_logs(sim)
    lines = encode_mixed(logs, seed=seed) if fmt == "mixed" else (encode(log, fmt) for log in logs)
    count = 0
    try:
        sink = sys.stdout.buffer if str(out) == "-" else out.open("wb")
        try:
            for line in lines:
                sink.write(line + b"\n")
                count += 1
            sink.flush()
        finally:
            if sink is not sys.stdout.buffer:
                sink.close()
    except BrokenPipeError:
        quiet_broken_pipe()
        raise typer.Exit(0) from None
    except OSError as error:
        fail(f"simulate: cannot write {out}: {error.strerror}", code=1)
    typer.echo(f"wrote {count} records to {out}", err=True)


def _kept_in(config: LookoutConfig, report: Path | None) -> str:
    """Where the info changes replay does not print can be read: never a file not asked for."""
    places = ["the alerts table"]
    if config.alerts_out:
        places.append(config.alerts_out)
    if report or config.report:
        places.append(str(report or config.report))
    return ", ".join(places)


def _apart_hint(config: LookoutConfig) -> str:
    """Where else a replay could count: `--db` switches the sink to a DuckDB file, which a
    user replaying into BigQuery did not mean (it silently stopped writing to BigQuery)."""
    if config.sink.kind == "duckdb":
        return "use another --db (or --seed)"
    return "use another dataset (sink.dataset; lookout bq init creates it) or --seed"


def _say_bad_record(command: str, file: str, error: DecodeError) -> None:
    """One line per bad record: `FILE: line N: field F: reason` (a JSON object with those as
    fields under --log-format json)."""
    say(
        f"lookout.{command}",
        f"{file}: {error.describe()}",
        "WARNING",
        file=file,
        line=error.line,
        field=error.field,
        reason=error.reason,
        error_type=error.error_type,
    )


@contextmanager
def _quarantine_named_once() -> Iterator[None]:
    """Silences the engine's per-record quarantine warnings for the run: replay names each
    quarantined record itself, with its file, after the run; both said every record twice."""
    engine_log = logging.getLogger("lookout.engine.quarantine")
    was = engine_log.disabled
    engine_log.disabled = True
    try:
        yield
    finally:
        engine_log.disabled = was


@app.command(short_help="Print records as canonical prediction logs, one JSON per line.")
def decode(
    file: Annotated[str, typer.Argument(help="NDJSON file (or - for stdin) in any wire format.")],
    format_hint: FormatOption = None,
    embedding_dim: Annotated[
        int | None, typer.Option(help="Reject embeddings of any other dimension.")
    ] = None,
) -> None:
    """Print each record as a canonical prediction log (one JSON per line).

    Bad records are reported on stderr with their line number, field and reason, and the exit
    status is 1 if there was any. A gzip-compressed file (or pipe) is read as the lines it holds.
    Output starts at once and stops quietly when the reader goes away (`| head`).
    """
    from schemas.decode.api import DecodeLimits

    _check_format("decode", format_hint)
    limits = DecodeLimits(expected_embedding_dim=embedding_dim)
    path = input_file("decode", file)
    # stdin's buffer is a BufferedReader at run time (typed as BinaryIO)
    stream = cast(BufferedIOBase, sys.stdin.buffer) if path is None else _open("decode", path)
    bad = 0
    out = sys.stdout.buffer
    try:
        for record in _decoded_records(_inflated(stream), format_hint, limits):
            if isinstance(record, DecodeError):
                bad += 1
                _say_bad_record("decode", file, record)
            else:
                out.write(orjson.dumps(record.model_dump(mode="json")) + b"\n")
        out.flush()
    except BrokenPipeError:
        quiet_broken_pipe()
        raise typer.Exit(1 if bad else 0) from None
    except (EOFError, OSError, zlib.error) as error:  # only a gzip stream raises these here
        fail(f"decode: {file}: the gzip data is corrupt or ends early ({error})", code=1)
    if bad:
        say("lookout.decode", f"{file}: {bad} bad record(s)", "WARNING", file=file, invalid=bad)
        raise typer.Exit(1)


def _inflated(stream: BufferedIOBase) -> BufferedIOBase:
    """`stream`, inflated as it is read if it is gzip-compressed (as `lookout replay` reads it):
    a `.gz` of logs decodes with its uncompressed line numbers instead of one bad record per
    line."""
    import gzip

    from worker.sources.file_source import GZIP_MAGIC

    peek = getattr(stream, "peek", None)
    if peek is None or not peek(len(GZIP_MAGIC)).startswith(GZIP_MAGIC):
        return stream
    return cast(BufferedIOBase, gzip.GzipFile(fileobj=stream, mode="rb"))


#: lines decoded at a time by `lookout decode`, so output starts before a large file is read
_DECODE_CHUNK_LINES = 1000


def _decoded_records(
    stream: BufferedIOBase, format_hint: str | None, limits: DecodeLimits
) -> Iterator[PredictionLog | DecodeError]:
    """Records in input order, a chunk of lines at a time.

    A file whose first line opens a JSON document that does not close on it (a pretty-printed
    record) is decoded whole, as one document may span many lines. A line longer than the
    record limit is cut just past it (the decoder reports it), so memory stays bounded.
    """
    from schemas.decode.api import decode_records
    from worker.sources.file_source import bounded_lines

    lines = bounded_lines(stream, limits.max_record_bytes + 1)
    first = next(lines, None)
    if first is None:
        return
    head = first.strip()
    if head in (b"{", b"["):
        data = first + b"".join(lines)
        yield from decode_records(data, format_hint=format_hint, limits=limits)
        return
    line_number = 1
    chunk = [first]
    for line in lines:
        chunk.append(line)
        if len(chunk) == _DECODE_CHUNK_LINES:
            yield from decode_records(
                b"".join(chunk), format_hint=format_hint, first_line=line_number, limits=limits
            )
            line_number += len(chunk)
            chunk = []
    if chunk:
        yield from decode_records(
            b"".join(chunk), format_hint=format_hint, first_line=line_number, limits=limits
        )


def _check_format(command: str, format_hint: str | None) -> None:
    """An unknown --format is one line at the start, not one error per record."""
    from schemas.decode.api import FORMATS

    if format_hint is not None and format_hint not in FORMATS:
        fail(f"{command}: unknown --format {format_hint!r}; expected one of {', '.join(FORMATS)}")


def input_file(command: str, file: str) -> Path | None:
    """The input file a command names (None for `-`, standard input), or exit 2 with one line
    that says what is wrong with it, worded the same for every command that reads one."""
    if file == "-":
        return None
    path = Path(file)
    if path.is_dir():
        fail(f"{command}: {file} is a directory; expected an NDJSON file (or - for stdin)")
    if not path.exists():
        where = "" if path.is_absolute() else f" (read from the current folder, {Path.cwd()})"
        fail(f"{command}: no such file: {file}{where}")
    try:
        path.open("rb").close()
    except OSError as error:
        fail(f"{command}: cannot read {file}: {error.strerror}")
    return path


def output_file(command: str, option: str, path: Path | None) -> None:
    """Exit 2 with one line if an output file cannot be written where it is asked for: found
    out at the end, the work was done for nothing (a report) or lost (alerts to a directory)."""
    if path is None:
        return
    if path.is_dir():
        fail(f"{command}: {option} {path} is a directory; expected a file path")
    if not path.parent.is_dir():
        fail(f"{command}: {option} {path}: no such directory {path.parent}")


def _open(command: str, path: Path) -> BufferedIOBase:
    try:
        return path.open("rb")
    except OSError as error:
        fail(f"{command}: cannot read {path}: {error.strerror}")


@app.command("report", short_help="Write the HTML report of a DuckDB file, without replaying.")
def report_command(
    out: Annotated[Path, typer.Option("--out", "-o", help="HTML file to write.")],
    db: Annotated[
        Path, typer.Option(help="DuckDB file written by lookout run, replay or demo.")
    ] = Path("lookout.duckdb"),
    title: Annotated[str | None, typer.Option(help="Heading (default: the file's name).")] = None,
    since: Annotated[
        str | None,
        typer.Option(
            help="Only windows that start at or after this UTC date or time (2026-01-06, "
            "2026-01-06T12:00); an incident open then is shown from here.",
        ),
    ] = None,
    until: Annotated[
        str | None,
        typer.Option(
            help="Only windows that start before this UTC date or time (a date is its "
            "midnight: --until 2026-01-07 ends with the 6th).",
        ),
    ] = None,
    model: Annotated[
        list[str] | None,
        typer.Option("--model", help="Only this model (repeat the option for several)."),
    ] = None,
) -> None:
    """Write the report `replay --report` writes, from what a DuckDB file holds now: a
    summary, each model's detectors window by window with their incidents shaded, and every
    alert. The file is only read, never changed (one from an older release too). A file a
    running worker holds cannot be opened: report on a copy (with its .wal). A long file
    reads faster, and its report opens faster, limited with --since, --until and --model."""
    import duckdb

    from worker.cli.report_scope import ScopeError, empty_scope, scope_of

    output_file("report", "--out", out)
    refuse_same_file("report", {"--db": db, "--out": out})
    try:
        scope = scope_of(since, until, model)
    except ScopeError as error:
        fail(f"report: {error}")
    if not db.exists():
        fail(f"report: no such DuckDB file: {db} (lookout replay or lookout demo writes one)")
    from worker.cli.sql import duckdb_open_problem, first_line, refuse_non_duckdb

    refuse_non_duckdb("report", db)  # a directory, or not a DuckDB file (`notes.txt` renamed)
    from worker.cli.report import write_report
    from worker.cli.report_evidently import evidently_second_opinion
    from worker.sinks.duckdb_read_only import (
        NotALookoutFile,
        UnreadableLookoutFile,
        open_read_only,
    )

    try:
        sink = open_read_only(db)
    except NotALookoutFile as error:
        fail(f"report: {error}")
    except UnreadableLookoutFile as error:
        fail(f"report: cannot read {db}: {first_line(error.cause)}", code=1)
    except duckdb.Error as error:  # attaching it: a running worker holds it, say
        fail(f"report: {duckdb_open_problem(db, error)}", code=1)
    try:
        write_report(
            sink,
            out,
            title=title or f"Lookout report of {db.name}",
            second_opinion=evidently_second_opinion,
            scope=scope,
        )
        empty = empty_scope(sink, scope) if scope is not None else None
    except ScopeError as error:  # a --model the file does not hold: nothing was written
        fail(f"report: {error}")
    except duckdb.Error as error:  # a table of Lookout's name holding something else
        out.unlink(missing_ok=True)
        fail(f"report: cannot read {db}: {first_line(error)}", code=1)
    finally:
        sink.close()
    if empty:
        typer.echo(f"lookout: report: {empty}", err=True)
    typer.echo(f"wrote {out}")


@app.command(short_help="Run the long-running worker as the configuration sets it up.")
def run(
    config_path: Annotated[
        Path, typer.Option("--config", "-c", help="YAML configuration file.", dir_okay=False)
    ],
    role: Annotated[
        str | None,
        typer.Option(
            help="all (default: one process does everything), ingest (decode, fold, "
            "checkpoint, ack; N replicas, never alerts) or evaluate (judge closed windows "
            "from the sink and alert; exactly one replica). Overrides engine.role."
        ),
    ] = None,
) -> None:
    """The long-running worker: source, sink and receivers come from the configuration.

    Serves /metrics, /healthz and /readyz on metrics.port. SIGTERM stops pulling, writes a final
    checkpoint, acks what it holds and exits 0 within engine.grace_period_seconds (or once a
    write already under way ends: on BigQuery each table retries up to
    sink.write_timeout_seconds). A file
    source ends at the end of its file (stdin: when the pipe closes), with exit status 1 if any
    record was bad, as for `lookout replay`. Split mode:
    any number of `--role ingest` replicas on one subscription plus one `--role evaluate`,
    sharing one sink, count every record once; their verdicts equal one `--role all` process's
    except after an ingest replica stalls and dies before its first checkpoint, and drift
    samples can be partial (README: where split mode does not equal one process).
    """
    from worker.cli.serve import serve

    if role is not None and role not in ("all", "ingest", "evaluate"):
        fail(f"run: unknown --role {role!r}; expected all, ingest or evaluate")
    config = configured(config_path, engine__role=role)
    source = config.source
    if config.engine.role != "evaluate" and isinstance(source, FileSourceConfig):
        # before the sink is opened: a missing file must not leave an empty database behind
        input_file(f"run: source.path in {config_path}", source.path)
    refuse_to_start("run", config)
    # as `config check` words them: `run` created a missing alerts_out folder behind the
    # operator's back (a typo'd mount path), and the sink's failed in DuckDB's words
    # (`report` is replay's: run writes none)
    folders = output_folder_problems(
        config, str(config_path) if config_path else "defaults", keys=("sink", "alerts_out")
    )
    for problem in folders:
        typer.echo(f"lookout run: {problem}", err=True)
    if folders:
        raise typer.Exit(2)
    raise typer.Exit(serve(config))
