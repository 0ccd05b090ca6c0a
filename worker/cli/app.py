"""The `lookout` command line. Each command's --help explains it; errors are one readable line.

Exit codes: 0 success; 1 bad input reported (decode) or the run could not finish cleanly;
2 usage or configuration error.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn, Protocol, cast

import typer

from schemas.config import DuckDBSinkConfig, FileSourceConfig, LookoutConfig
from schemas.config_loading import ConfigError, key_origin, load_config
from worker.cli.writable import cannot_write, foreign_sink_file
from worker.memory_tuning import tune_malloc, use_system_arrow_pool

if TYPE_CHECKING:  # rich is imported where it prints: a replay or a worker never needs it
    from rich.console import Console

app = typer.Typer(
    name="lookout",
    help=(
        "Lookout: production monitoring and drift detection for LLMs.\n\n"
        "Reads prediction logs (one JSON record per model call), folds them into time windows "
        "per model, checks safety-block rates, latency, token usage and embedding drift, lands "
        "window aggregates in DuckDB (the embedded default) or BigQuery, exports Prometheus "
        "metrics and fires alerts.\n\n"
        "Start with `lookout demo`."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    # docstrings are wrapped at 100 columns in the source; markdown rewraps each paragraph to
    # the terminal instead of keeping those line breaks
    rich_markup_mode="markdown",
)
#: narrower than this, rich's option table cuts long option names ("--dead-letter-…") and
#: squeezes their help into a column a few words wide
RICH_HELP_MIN_COLUMNS = 100


def fit_help_to_terminal() -> None:
    """Plain click help (option names whole, help wrapped beside them) below
    RICH_HELP_MIN_COLUMNS; the markdown panels where they fit. Decided when the CLI starts, as
    the terminal (or COLUMNS) is then known."""
    import shutil

    if shutil.get_terminal_size().columns < RICH_HELP_MIN_COLUMNS:
        app.rich_markup_mode = None


config_app = typer.Typer(help="Check configuration files.", no_args_is_help=True)
app.add_typer(config_app, name="config")

ConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--config",
        "-c",
        help="YAML configuration file (see README: Configuration).",
        exists=False,
        dir_okay=False,
    ),
]


def fail(message: str, code: int = 2) -> NoReturn:
    """One readable line on stderr and a non-zero exit; never a traceback."""
    from worker.cli.log_format import fatal

    fatal(message)
    raise typer.Exit(code)


def output_console() -> Console:
    """Rich output on stdout. Not on a terminal (a pipe, a file, CI), nothing is cut to fit a
    width nobody asked for: model names and alert summaries are printed whole."""
    from rich.console import Console

    class PipedConsole(Console):
        """Rich exits 1 when the reader goes away (`| head`); here that is the caller's to
        decide (`quiet_broken_pipe`: not an error), as it is for csv, json, `decode` and
        `simulate`."""

        def on_broken_pipe(self) -> None:
            self.quiet = True
            raise BrokenPipeError

    if sys.stdout.isatty():
        return PipedConsole()
    return PipedConsole(width=10_000, no_color=True, highlight=False)


class ProgressLine(Protocol):
    """What the commands use of rich's `Progress`."""

    def __enter__(self) -> Any: ...
    def __exit__(self, exc_type: Any, exc: Any, traceback: Any, /) -> Any: ...
    def add_task(self, description: str, **fields: Any) -> Any: ...
    def update(
        self,
        task: Any,
        /,
        *,
        advance: float | None = None,
        completed: float | None = None,
        **fields: Any,
    ) -> None: ...


class _NoProgress:
    """No progress line (stderr is not a terminal), and no rich imported to draw none."""

    def __enter__(self) -> _NoProgress:
        return self

    def __exit__(self, exc_type: Any, exc: Any, traceback: Any, /) -> None:
        return None

    def add_task(self, description: str, **fields: Any) -> int:
        return 0

    def update(
        self,
        task: Any,
        /,
        *,
        advance: float | None = None,
        completed: float | None = None,
        **fields: Any,
    ) -> None:
        return None


def progress_bar(enabled: bool) -> ProgressLine:
    """A progress line on stderr, shown only on a terminal (a log file gets the summary)."""
    if not enabled:
        return _NoProgress()
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    progress = Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        TextColumn("{task.fields[detail]}"),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        transient=False,
    )
    # rich's `update` names more keywords than the protocol, which mypy reads as a mismatch
    return cast(ProgressLine, progress)


def quiet_broken_pipe() -> None:
    """The reader stopped (`| head -1`): not an error. Point stdout at /dev/null so Python does
    not report the pipe again when it flushes stdout at exit."""
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def configured(path: Path | None, **overrides: object) -> LookoutConfig:
    """Load the config with command-line overrides (`engine__role`, or a whole section), or
    exit 2 with one line per problem. Overrides beat the file and LOOKOUT_… variables, and are
    part of what is validated."""
    try:
        return load_config(path, overrides)
    except ConfigError as error:
        for problem in error.problems:
            # a problem with a LOOKOUT_… variable is not the file's
            where = "" if problem.startswith("environment ") else f"{error.source}: "
            typer.echo(f"{where}{problem}", err=True)
        raise typer.Exit(2) from None


def start_problems(config: LookoutConfig) -> list[str]:
    """What would stop a run that alerts after it started: receiver secrets that cannot be
    read here (all of them, not the first), retune actions whose client is not installed, whose
    local compiled pipeline is missing or does not take their parameters, or whose token
    cannot be read.
    An ingest replica never alerts: it needs neither."""
    if config.engine.role == "ingest":
        return []
    from alerts.receivers.secrets import unreadable_secrets
    from alerts.retune.actions import start_problems as retune_problems

    # only actions a route names ever run: an action staged without a route needs nothing
    routed = {route.retune for route in config.alerting.routes if route.retune}
    actions = [a for a in config.alerting.retune.actions if a.name in routed]
    return unreadable_secrets(config.alerting.receivers) + retune_problems(actions)


def refuse_to_start(command: str, config: LookoutConfig) -> None:
    """Exit 2 with one line per `start_problems` (a missing secret stopped `run` with one
    line in the words of a crash, naming only the first)."""
    problems = start_problems(config)
    for problem in problems:
        typer.echo(f"lookout {command}: {problem}", err=True)
    if problems:
        raise typer.Exit(2)


def refuse_same_file(command: str, paths: Mapping[str, Path | None]) -> None:
    """Exit 2 with one line if two options name one file: `report --out` on its own `--db`
    replaced the database with the HTML report, and `replay --dead-letter` on its input
    appended to the file it was reading."""
    seen: dict[Path, str] = {}
    for option, path in paths.items():
        if path is None or str(path) in ("-", ":memory:"):
            continue
        key = path.resolve()
        for earlier, other in seen.items():
            if key == earlier or (key.exists() and earlier.exists() and key.samefile(earlier)):
                fail(
                    f"{command}: {option} {path} is the same file as {other}; writing one would "
                    "spoil the other"
                )
        seen[key] = option


class SignalStop(threading.Event):
    """Set by SIGTERM/SIGINT; `signum` says which, for the exit status (128 + it)."""

    signum: int | None = None


@contextmanager
def stop_on_signals() -> Iterator[SignalStop]:
    """SIGTERM/SIGINT set an event the loop checks: stop reading, flush, ack, then exit."""
    stop = SignalStop()

    def handler(signum: int, frame: object) -> None:
        stop.signum = signum
        stop.set()

    previous = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield stop
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def setup_logging(
    level: str | None = None, fmt: str | None = None, command: str | None = None
) -> None:
    """Logs on stderr: INFO for the long-running `lookout run` (an operator wants to see it
    start, connect and stop), WARNING for one-shot commands, whose output is their result.
    `--log-level`/`LOOKOUT_LOG_LEVEL` and `--log-format`/`LOOKOUT_LOG_FORMAT` override."""
    from worker.cli.log_format import configure

    default = "INFO" if command == "run" else "WARNING"
    chosen = level or os.environ.get("LOOKOUT_LOG_LEVEL") or default
    try:
        configure(chosen, fmt or os.environ.get("LOOKOUT_LOG_FORMAT") or "text")
    except ValueError as error:
        fail(str(error))


@app.callback()
def global_options(
    ctx: typer.Context,
    log_format: Annotated[
        str | None,
        typer.Option(
            "--log-format",
            envvar="LOOKOUT_LOG_FORMAT",
            help="text (default) or json: one JSON object per line with time, severity, "
            "logger, message and extra fields, as Cloud Logging reads them.",
        ),
    ] = None,
    log_level: Annotated[
        str | None,
        typer.Option(
            "--log-level",
            envvar="LOOKOUT_LOG_LEVEL",
            help="DEBUG, INFO, WARNING, ERROR or CRITICAL (default: INFO for `run`, WARNING "
            "for the other commands).",
        ),
    ] = None,
) -> None:
    """Options for every command; they go before the command's name."""
    tune_malloc(os.environ)  # before any thread starts: see worker/memory_tuning.py
    use_system_arrow_pool(os.environ)
    setup_logging(log_level, log_format, ctx.invoked_subcommand)


def output_folder_problems(
    config: LookoutConfig, source: str, *, keys: tuple[str, ...] = ("sink", "alerts_out", "report")
) -> list[str]:
    """One line per file the configuration writes (the DuckDB sink, `alerts_out`, `report`)
    whose folder is missing here, that names a directory, that cannot be written there, or
    (the sink) that is not a DuckDB file: `lookout run` would fail to open the sink, and the
    alert file's folder would be created behind the user's back. Worded as `replay --db` words
    it, naming the key (or the `LOOKOUT_…` variable that set it)."""
    paths: list[tuple[tuple[str, ...], str]] = []
    sink = config.sink
    if "sink" in keys and isinstance(sink, DuckDBSinkConfig) and sink.path != ":memory:":
        paths.append((("sink", "path"), sink.path))
    paths += [
        ((key,), value)
        for key in ("alerts_out", "report")
        if key in keys and (value := getattr(config, key))
    ]
    problems = []
    for loc, text in paths:
        path = Path(text)
        if path.is_dir():
            problems.append(
                f"{key_origin(loc, source)} {text} is a directory; expected a file path"
            )
        elif not path.parent.is_dir():
            where = "" if path.is_absolute() else f" (relative to the current folder, {Path.cwd()})"
            problems.append(
                f"{key_origin(loc, source)} {text}: no such directory {path.parent}{where}"
            )
        elif loc == ("sink", "path") and path.exists() and not path.is_file():
            problems.append(f"{key_origin(loc, source)} {text} is not a regular file")
        elif (reason := cannot_write(path)) is not None:
            problems.append(f"{key_origin(loc, source)} {text}: cannot be written here: {reason}")
        elif loc == ("sink", "path") and (refusal := foreign_sink_file(path)) is not None:
            problems.append(f"{key_origin(loc, source)} {refusal}")
    return problems


def missing_source_file(config: LookoutConfig, source: str) -> str | None:
    """The file source's input when it is not there (relative paths from the current folder,
    as `lookout run` reads them): `config check` said ok, and `run` then stopped on it."""
    if not isinstance(config.source, FileSourceConfig) or config.engine.role == "evaluate":
        return None
    path = Path(config.source.path)
    if path.exists() or str(path) == "-":  # as `lookout run` takes it: a pipe, /dev/stdin
        return None
    where = "" if path.is_absolute() else f" (read from the current folder, {Path.cwd()})"
    return f"{key_origin(('source', 'path'), source)} {path}: no such file{where}"


@config_app.command(
    "check", short_help="Validate a configuration file, LOOKOUT_… overrides applied."
)
def config_check(
    path: Annotated[Path, typer.Argument(help="The YAML file to validate.", dir_okay=False)],
    elsewhere: Annotated[
        bool,
        typer.Option(
            "--elsewhere",
            help="The file is for another machine (a pod's ConfigMap): a folder missing here "
            "for the DuckDB sink, alerts_out or report is a warning, not an error.",
        ),
    ] = False,
    strict: Annotated[
        bool,
        typer.Option(
            "--strict",
            help="Run where `lookout run` will (a pod, a deploy gate): what would only be a "
            "warning (a receiver secret not set, the file source missing) is a problem too, "
            "and the check exits 2 without printing the configuration.",
        ),
    ] = False,
) -> None:
    """Validate a configuration file (with LOOKOUT_… environment overrides applied).

    Prints the effective configuration with secrets left out, or one line per problem
    (the key's path and what is wrong) and exit status 2. A key given twice in one section, or
    a boolean where a number belongs, is a problem, not a silent choice. The DuckDB sink,
    `alerts_out` and `report` must name files in folders that exist here (relative paths from
    the current folder), as `lookout run` would open them; with --elsewhere a missing folder
    is a warning. A receiver secret that cannot be read here (a variable not set, a file not
    mounted) is a warning: this may not be the machine it runs on, but `lookout run` there
    refuses to start without it; with --strict each of these is a problem (exit 2), for a gate
    where `lookout run` will run.
    """
    import yaml

    if strict and elsewhere:
        fail("config check: --strict checks the machine it runs on, --elsewhere another: not both")
    config = configured(path)
    folders = output_folder_problems(config, str(path))
    if folders and not elsewhere:
        for problem in folders:
            typer.echo(problem, err=True)
        raise typer.Exit(2)
    missing = missing_source_file(config, str(path))
    warnings = [
        *(f"{problem} (`lookout run` needs it where it runs)" for problem in folders),
        *(f"{p} (`lookout run` will not start without it)" for p in start_problems(config)),
        *([f"{missing} (`lookout run` needs it where it runs)"] if missing is not None else []),
    ]
    if strict and warnings:
        for problem in warnings:
            typer.echo(f"{path}: {problem}", err=True)
        raise typer.Exit(2)
    typer.echo(f"{path}: ok")
    effective = config.model_dump(mode="json", by_alias=True)  # `continue`, as it is written
    typer.echo(yaml.safe_dump(effective, sort_keys=False).rstrip())
    for problem in warnings:
        typer.echo(f"warning: {problem}", err=True)
