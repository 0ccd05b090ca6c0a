"""How the worker's log lines look: readable text on a terminal, JSON lines for Cloud Logging.

A JSON line carries `time` (RFC 3339, UTC), `severity` (the key Cloud Logging reads the level
from, with Python's level names, which are Cloud Logging's), `logger`, `message`, any fields a
caller passed with `extra=` and, for an exception, its traceback under `exception`. Cloud
Logging's agent turns such a line into a structured entry whose fields can be filtered on.

Only our own loggers speak below WARNING: client libraries (HTTP, gRPC, auth) log every request
at INFO or DEBUG, with URLs that may hold a webhook's secret path, so they are held to WARNING
unless DEBUG is asked for.
"""

from __future__ import annotations

import logging
import sys
from datetime import UTC, datetime
from typing import Any

import orjson

LOG_FORMATS = ("text", "json")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")

#: logger name prefixes that are Lookout's own
OWN_LOGGERS = ("lookout", "worker", "schemas", "detectors", "alerts", "bench", "__main__")

#: attributes every LogRecord has; anything else on a record came from `extra=`
_STANDARD = frozenset(
    vars(logging.LogRecord("x", logging.INFO, "x", 0, "x", None, None)).keys()
    | {"message", "asctime", "taskName"}
)


def extra_fields(record: logging.LogRecord) -> dict[str, Any]:
    """The fields a caller attached with `log.info(..., extra={...})`."""
    return {k: v for k, v in vars(record).items() if k not in _STANDARD and not k.startswith("_")}


def _utc(record: logging.LogRecord) -> str:
    moment = datetime.fromtimestamp(record.created, tz=UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


class JsonFormatter(logging.Formatter):
    """One JSON object per line, with the keys Cloud Logging understands."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": _utc(record),
            "severity": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in extra_fields(record).items():
            entry.setdefault(key, value)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str).decode()


class TextFormatter(logging.Formatter):
    """`time LEVEL logger: message`. The extra fields are left out: a message already says what
    a person needs, and scripts that read these lines expect them to end with the message."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")


class _OwnOrWarning(logging.Filter):
    """Lets our loggers through at the configured level, everyone else's from WARNING, bar
    urllib3's narration of each retry ("Retrying (Retry(total=2, ...)) after connection
    broken ..."): three raw lines before every failed Kubeflow request, whose failure Lookout
    reports itself in one line once the retries are spent (they show at DEBUG)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name == "urllib3.connectionpool" and record.levelno == logging.WARNING:
            return not record.getMessage().startswith("Retrying (")
        return record.levelno >= logging.WARNING or record.name.startswith(OWN_LOGGERS)


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever `sys.stderr` is at the time of the record, so a command run inside
    another program (a test's CLI runner swaps stderr, then closes its copy) never logs into a
    closed stream."""

    def emit(self, record: logging.LogRecord) -> None:
        # not `setStream`: it flushes the previous stream, which may be the closed one
        self.stream = sys.stderr
        super().emit(record)


#: the format `configure` installed: the lines a command prints for its user follow it
_active_format = "text"


def say(logger: str, message: str, severity: str = "INFO", **fields: Any) -> None:
    """A line a one-shot command prints for its user on stderr (a bad record, its summary): as
    it is in text, or with `--log-format json` as one object shaped like the log lines (with
    `fields` beside the message), so a job that collects JSON logs reads every line alike.
    Not through logging: the one-shot commands log only warnings, and a summary is not one."""
    if _active_format == "json":
        entry: dict[str, Any] = {
            "time": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "severity": severity,
            "logger": logger,
            "message": message,
        }
        for key, value in fields.items():
            entry.setdefault(key, value)
        message = orjson.dumps(entry, default=str).decode()
    print(message, file=sys.stderr, flush=True)


def fatal(message: str) -> None:
    """The one line a command that gives up prints on stderr: `lookout: message` in text, or,
    with `--log-format json`, an ERROR object like every other line, so the line a log
    pipeline most needs to parse is not the one line it cannot."""
    if _active_format == "json":
        say("lookout", message, "ERROR")
    else:
        print(f"lookout: {message}", file=sys.stderr, flush=True)


def configure(level: str, fmt: str) -> None:
    """Install one handler on stderr in the chosen format and level on the root logger, in
    place of the one an earlier call installed; handlers others installed (a test runner's log
    capture) are left alone."""
    if fmt not in LOG_FORMATS:
        msg = f"unknown log format {fmt!r}; expected {' or '.join(LOG_FORMATS)}"
        raise ValueError(msg)
    name = level.upper()
    if name not in LOG_LEVELS:
        msg = f"unknown log level {level!r}; expected one of {', '.join(LOG_LEVELS)}"
        raise ValueError(msg)
    handler = _StderrHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    if name != "DEBUG":
        handler.addFilter(_OwnOrWarning())
    root = logging.getLogger()
    for old in list(root.handlers):
        if isinstance(old, _StderrHandler) or type(old) is logging.StreamHandler:
            root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(name)
    global _active_format  # which format the process speaks, set once at start-up
    _active_format = fmt
