"""Where alerts leave the process: the `Notifier` protocol, its failure policy, two notifiers.

A notifier gets a batch of alerts and either delivers all of them or raises a
`NotifierError`. Whether a failure is worth retrying is decided here, once, for every
notifier (`notifier_error`, `status_error`): a timeout, a dropped connection, HTTP 429 or a
5xx is retryable; a rejected payload, a bad credential or a closed stream is terminal. Alerts
carry stable dedup keys, so re-sending after a retryable failure cannot open a second incident
at a receiver that dedups (PagerDuty, Alertmanager).

Nothing secret leaves through here: summaries and error messages pass through
`redact_secrets`, which keeps a URL's scheme and host and hides its path, query and userinfo
(a Slack webhook's secret is its path) and masks `token=...`-style pairs.
"""

from __future__ import annotations

import os
import re
import stat
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, TextIO, runtime_checkable

import orjson

from schemas.detection import Alert

if TYPE_CHECKING:
    from rich.console import Console

# -- failure policy ----------------------------------------------------------------------------


class NotifierError(Exception):
    """A batch of alerts was not delivered. `retryable` says whether sending again may work."""

    retryable: ClassVar[bool] = False

    def __init__(self, receiver: str, message: str) -> None:
        self.receiver = receiver
        super().__init__(f"receiver {receiver!r}: {redact_secrets(message)}")


class RetryableNotifierError(NotifierError):
    """Transient: the receiver was unreachable, slow, rate-limiting or briefly broken."""

    retryable = True


class TerminalNotifierError(NotifierError):
    """Permanent until someone changes something: bad payload, credential, path or config."""

    retryable = False


#: checked first: these never get better by retrying (BrokenPipeError is a ConnectionError)
TERMINAL_EXCEPTIONS: tuple[type[BaseException], ...] = (
    BrokenPipeError,
    PermissionError,
    IsADirectoryError,
    NotADirectoryError,
    FileNotFoundError,
)
#: transient transport trouble; any other OSError (disk full, I/O error) counts as well
RETRYABLE_EXCEPTIONS: tuple[type[BaseException], ...] = (TimeoutError, ConnectionError, OSError)


def _httpx_kinds() -> tuple[
    type[BaseException] | None, tuple[type[BaseException], ...], tuple[type[BaseException], ...]
]:
    """httpx's (status error, terminal errors, retryable errors), if httpx is loaded.

    Only a sender with an httpx client can raise them, and it imported httpx: a replay that
    writes alerts to a file or the log never imports it (a twentieth of its start-up)."""
    httpx = sys.modules.get("httpx")
    if httpx is None:
        return None, (), ()
    return (
        httpx.HTTPStatusError,
        (httpx.UnsupportedProtocol, httpx.InvalidURL),
        (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError),
    )


#: HTTP answers worth retrying: timeouts, too early, rate limits and server errors
RETRYABLE_STATUS: frozenset[int] = frozenset({408, 425, 429})


def is_retryable_status(status: int) -> bool:
    return status in RETRYABLE_STATUS or status >= 500


def notifier_error(receiver: str, step: str, exc: BaseException) -> NotifierError:
    """The typed error for `exc` raised while `step`; raise it `from exc` to keep the cause."""
    if isinstance(exc, NotifierError):
        return exc
    message = f"{step} failed: {type(exc).__name__}: {exc}"
    status_kind, http_terminal, http_retryable = _httpx_kinds()
    if status_kind is not None and isinstance(exc, status_kind):
        return status_error(receiver, step, exc.response.status_code)  # type: ignore[attr-defined]
    if isinstance(exc, TERMINAL_EXCEPTIONS + http_terminal):
        return TerminalNotifierError(receiver, message)
    if isinstance(exc, RETRYABLE_EXCEPTIONS + http_retryable):
        return RetryableNotifierError(receiver, message)
    return TerminalNotifierError(receiver, message)  # a bug does not fix itself on retry


def status_error(receiver: str, step: str, status: int, reply: str = "") -> NotifierError:
    """The typed error for an HTTP answer that was not a success (`reply`: what the receiver
    said, if anything)."""
    message = f"{step} failed: HTTP {status}, expected 2xx" + (f": {reply}" if reply else "")
    if is_retryable_status(status):
        return RetryableNotifierError(receiver, message)
    return TerminalNotifierError(receiver, message)


_URL = re.compile(r"\b([a-zA-Z][a-zA-Z0-9+.-]*://)(?:[^\s/@]+@)?([^\s/?#]+)([^\s]*)")
_SECRET_PAIR = re.compile(
    r"(?i)\b(token|secret|password|passwd|api[_-]?key|routing[_-]?key|authorization)"
    r"(\s*[=:]\s*)(\S+)"
)


def redact_secrets(text: str) -> str:
    """`https://hooks.slack.com/services/T0/B0/xyz` → `https://hooks.slack.com/…`."""
    text = _URL.sub(lambda m: m[1] + m[2] + ("/…" if m[3] else ""), text)
    return _SECRET_PAIR.sub(lambda m: m[1] + m[2] + "***", text)


# -- the protocol and the built-in notifiers ---------------------------------------------------


@runtime_checkable
class Notifier(Protocol):
    """Delivers alerts somewhere. Raises `NotifierError` (and nothing else) on failure."""

    def send(self, alerts: Sequence[Alert]) -> None: ...


#: optional evidence fields receivers show; `--alerts-out` keeps its documented record shape
EVIDENCE_FIELDS = frozenset({"model_version", "tenant", "reason", "details", "links"})


def alert_record(alert: Alert) -> dict[str, Any]:
    """An alert as one JSON object: the Alert's core fields, summary redacted."""
    record = alert.model_dump(mode="json", exclude=set(EVIDENCE_FIELDS))
    record["summary"] = redact_secrets(alert.summary)
    return record


_STYLES = {
    ("firing", "critical"): "bold red",
    ("firing", "warning"): "yellow",
    ("firing", "info"): "cyan",
}


class ConsoleNotifier:
    """One line per alert to a text stream: `<window end> <SEVERITY> <summary>`.

    Coloured only when `color` is True, or when it is None and the stream is a terminal, so
    logs and pipes get plain text.
    """

    def __init__(self, stream: TextIO, *, color: bool | None = None, name: str = "console") -> None:
        self._stream = stream
        self._name = name
        #: alerts written and flushed, and those of sends that failed (a retried send is one
        #: alert), by fingerprint, with their severity: a command's summary says how many it
        #: did not print and why, not a guess
        self.printed: dict[str, str] = {}
        self.failed: dict[str, str] = {}
        self._color = stream.isatty() if color is None else color
        self._console: Console | None = None
        if self._color:  # rich only for a terminal: a replay's log gets plain lines
            from rich.console import Console

            self._console = Console(
                file=stream, force_terminal=True, highlight=False, soft_wrap=True
            )

    def send(self, alerts: Sequence[Alert]) -> None:
        try:
            for alert in alerts:
                line = format_line(alert)
                if self._console is None:
                    self._stream.write(line + "\n")
                else:
                    from rich.text import Text

                    style = _STYLES.get((alert.status, alert.severity), "green")
                    self._console.print(Text(line, style=style))
            self._stream.flush()
        except (OSError, ValueError) as exc:  # ValueError: the stream was closed (terminal)
            self.failed.update((a.fingerprint, a.severity) for a in alerts)
            raise notifier_error(self._name, "writing to the console", exc) from exc
        for alert in alerts:
            self.printed[alert.fingerprint] = alert.severity
            self.failed.pop(alert.fingerprint, None)

    def unprinted(self, alerts: Sequence[Alert]) -> str:
        """Which of these alert changes (all of a run) were not printed, and why, e.g. "3
        routed to receivers, 2 info": info changes (descriptor drift) explain incidents and
        go to the log, routes may send the others only to Slack or a webhook, and a closed
        pipe takes none. "" when every one was printed."""
        return unprinted_changes(alerts, self)


def unprinted_changes(alerts: Sequence[Alert], console: ConsoleNotifier | None) -> str:
    """`ConsoleNotifier.unprinted`, also for a run that printed to no console at all."""
    printed = console.printed if console is not None else {}
    failed = console.failed if console is not None else {}
    why: Counter[str] = Counter()
    for alert in alerts:
        key = alert.fingerprint
        if key in printed:
            continue
        if key in failed:
            why["the console could not take"] += 1
        elif alert.severity == "info":
            why["info"] += 1
        else:
            why["routed to receivers"] += 1
    order = ("routed to receivers", "the console could not take", "info")
    return ", ".join(f"{why[reason]} {reason}" for reason in order if why[reason])


def format_line(alert: Alert) -> str:
    """`2024-05-01T12:05:00Z CRITICAL [FIRING] gemini-1.5-flash safety: ...`."""
    when = alert.window_end.strftime("%Y-%m-%dT%H:%M:%SZ")
    return f"{when} {alert.severity.upper():<8} {redact_secrets(alert.summary)}"


#: how much of the end of an `--alerts-out` file is read for lines it holds already
RECENT_BYTES = 1 << 20


class JsonLinesNotifier:
    """Appends one JSON object per alert to `path` (the `--alerts-out` file), flushing each.

    The file is opened per batch, so log rotation and a deleted file are picked up, and the
    parent directory is created on first use. A line the end of the file (its last MiB, about
    2,000 alerts) holds already is not written again: a process killed after writing its
    alerts and before striking them from the outbox's journal hands them over again at the
    next start, and the file would say the incident fired twice. Alerts are few, so reading
    that much per batch is cheap; an identical line is the same state change of the same
    window, never a new one (a second replay of the same logs into a fresh database adds no
    line its first one wrote).
    """

    def __init__(self, path: Path | str, *, name: str = "jsonl") -> None:
        self._path = Path(path)
        self._name = name

    @property
    def path(self) -> Path:
        return self._path

    def send(self, alerts: Sequence[Alert]) -> None:
        if not alerts:
            return
        try:
            self._path.parent.mkdir(parents=True, exist_ok=True)
            written = _recent_lines(self._path)
            with self._path.open("ab") as out:
                for alert in alerts:
                    line = orjson.dumps(alert_record(alert))
                    if line in written:
                        continue
                    out.write(line + b"\n")
                    out.flush()
                    written.add(line)
        except OSError as exc:
            raise notifier_error(self._name, f"appending to {self._path}", exc) from exc


def _recent_lines(path: Path) -> set[bytes]:
    """The whole lines among the last `RECENT_BYTES` of a regular file (the first may be cut);
    none for a pipe, a terminal, `/dev/stdout` or a file this process may append to and not
    read: those are appended to without the check, as before it existed."""
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):  # opening a FIFO to read would block
            return set()
        with path.open("rb") as existing:
            size = existing.seek(0, os.SEEK_END)
            start = max(size - RECENT_BYTES, 0)
            existing.seek(start)
            lines = existing.read().split(b"\n")
    except OSError:  # missing (the first alert), unreadable: nothing to compare with
        return set()
    return set(lines[1:] if start else lines)


class RecordingNotifier:
    """A fake for tests: remembers every batch; raises `fail_with` instead when it is set."""

    def __init__(self, fail_with: NotifierError | None = None) -> None:
        self.batches: list[list[Alert]] = []
        self.fail_with = fail_with

    @property
    def sent(self) -> list[Alert]:
        return [alert for batch in self.batches for alert in batch]

    def send(self, alerts: Sequence[Alert]) -> None:
        if self.fail_with is not None:
            raise self.fail_with
        self.batches.append(list(alerts))
