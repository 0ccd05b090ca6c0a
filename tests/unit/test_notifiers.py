"""Notifiers: what lands in the alerts file and on the console, and how failures are typed."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import orjson
import pytest

from alerts.notifiers import (
    EVIDENCE_FIELDS,
    ConsoleNotifier,
    JsonLinesNotifier,
    Notifier,
    NotifierError,
    RecordingNotifier,
    TerminalNotifierError,
    notifier_error,
    redact_secrets,
    status_error,
)
from schemas.detection import Alert

T0 = datetime(2024, 5, 1, tzinfo=UTC)
WEBHOOK = "https://hooks.slack.com/services/T000/B000/XXXXsecretXXXX"


def alert(status: str = "firing", summary: str = "[FIRING] m safety: block rate 6.1%") -> Alert:
    return Alert.model_validate(
        {
            "dedup_key": "lookout:m:safety:block_rate_above_baseline",
            "status": status,
            "severity": "critical",
            "detector": "safety",
            "model": "m",
            "condition": "block_rate_above_baseline",
            "window_start": T0,
            "window_end": T0 + timedelta(minutes=5),
            "value": 0.061,
            "threshold": 0.031,
            "baseline": 0.02,
            "sample_size": 2013,
            "summary": summary,
        }
    )


def test_json_lines_hold_exactly_the_core_alert_fields_one_object_per_line(
    tmp_path: Path,
) -> None:
    path = tmp_path / "out" / "alerts.jsonl"
    notifier = JsonLinesNotifier(path)
    notifier.send([alert()])
    notifier.send([alert("resolved", "[RESOLVED] m safety: block rate 2.0% — after 3 windows")])
    lines = path.read_bytes().splitlines()
    assert len(lines) == 2
    records = [orjson.loads(line) for line in lines]
    # the documented record: the evidence receivers show stays out of --alerts-out
    assert all(set(r) == set(Alert.model_fields) - EVIDENCE_FIELDS for r in records)
    assert [Alert.model_validate(r) for r in records] == [
        alert(),
        alert("resolved", "[RESOLVED] m safety: block rate 2.0% — after 3 windows"),
    ]
    assert records[0]["window_end"] == "2024-05-01T00:05:00Z"


def test_json_lines_failure_is_a_typed_terminal_error(tmp_path: Path) -> None:
    notifier = JsonLinesNotifier(tmp_path, name="alerts-out")  # a directory, not a file
    with pytest.raises(TerminalNotifierError, match="alerts-out") as info:
        notifier.send([alert()])
    assert isinstance(info.value.__cause__, IsADirectoryError)


def test_no_secret_reaches_the_file_or_the_console(tmp_path: Path) -> None:
    leaky = alert(summary=f"[FIRING] m safety: x — posted to {WEBHOOK}?token=abc")
    JsonLinesNotifier(tmp_path / "a.jsonl").send([leaky])
    stream = io.StringIO()
    ConsoleNotifier(stream).send([leaky])
    for text in ((tmp_path / "a.jsonl").read_text(), stream.getvalue()):
        assert "XXXXsecretXXXX" not in text
        assert "abc" not in text
        assert "hooks.slack.com" in text  # where it went stays readable


def test_console_prints_one_plain_line_per_alert_when_not_a_terminal() -> None:
    stream = io.StringIO()
    ConsoleNotifier(stream).send([alert(), alert("resolved", "[RESOLVED] m safety: ok")])
    assert stream.getvalue().splitlines() == [
        "2024-05-01T00:05:00Z CRITICAL [FIRING] m safety: block rate 6.1%",
        "2024-05-01T00:05:00Z CRITICAL [RESOLVED] m safety: ok",
    ]


def test_console_colours_only_when_asked_or_on_a_terminal() -> None:
    stream = io.StringIO()
    ConsoleNotifier(stream, color=True).send([alert()])
    assert "\x1b[" in stream.getvalue()
    assert "[FIRING] m safety" in stream.getvalue()  # brackets are text, not markup


def test_console_on_a_closed_stream_raises_a_terminal_error() -> None:
    stream = io.StringIO()
    notifier = ConsoleNotifier(stream)
    stream.close()
    with pytest.raises(TerminalNotifierError, match="console"):
        notifier.send([alert()])


@pytest.mark.parametrize(
    ("exc", "retryable"),
    [
        (TimeoutError("read"), True),
        (ConnectionResetError("reset"), True),
        (OSError(28, "No space left on device"), True),
        (BrokenPipeError("pipe"), False),
        (PermissionError("denied"), False),
        (httpx.ConnectError("refused"), True),
        (httpx.ReadTimeout("slow"), True),
        (ValueError("bad payload"), False),
    ],
)
def test_failure_policy_says_what_is_worth_retrying(exc: BaseException, retryable: bool) -> None:
    error = notifier_error("pagerduty", "posting an event", exc)
    assert error.retryable is retryable
    assert "pagerduty" in str(error)
    assert "posting an event" in str(error)


@pytest.mark.parametrize(
    ("status", "retryable"), [(429, True), (503, True), (500, True), (400, False), (401, False)]
)
def test_http_statuses_are_classified_in_one_place(status: int, retryable: bool) -> None:
    assert status_error("slack", "posting", status).retryable is retryable
    response = httpx.Response(status, request=httpx.Request("POST", WEBHOOK))
    exc = httpx.HTTPStatusError("x", request=response.request, response=response)
    assert notifier_error("slack", "posting", exc).retryable is retryable


def test_error_messages_never_carry_the_webhook_secret() -> None:
    error = notifier_error(
        "slack", f"POST {WEBHOOK}", httpx.ConnectError(f"cannot reach {WEBHOOK}")
    )
    assert "XXXXsecretXXXX" not in str(error)
    assert redact_secrets("routing_key=R0UT1NG key") == "routing_key=*** key"


def test_builtin_notifiers_satisfy_the_protocol(tmp_path: Path) -> None:
    notifiers: list[Notifier] = [
        ConsoleNotifier(io.StringIO()),
        JsonLinesNotifier(tmp_path / "a.jsonl"),
        RecordingNotifier(),
    ]
    assert all(isinstance(n, Notifier) for n in notifiers)
    assert issubclass(TerminalNotifierError, NotifierError)


def test_an_alert_handed_over_again_after_a_crash_is_written_once(tmp_path: Path) -> None:
    """A process killed after writing its alerts and before striking them from the journal
    sends them again at the next start: the file must still say each change once, while a
    new change (the resolve) and the same change of a later window are written."""
    path = tmp_path / "alerts.jsonl"
    firing = alert()
    resolved = alert("resolved", "[RESOLVED] m safety: block rate 2.0% — after 3 windows")
    later = firing.model_copy(
        update={"window_start": T0 + timedelta(hours=1), "window_end": T0 + timedelta(hours=2)}
    )
    JsonLinesNotifier(path).send([firing])
    JsonLinesNotifier(path).send([firing, resolved])  # the next process: recovered, then new
    JsonLinesNotifier(path).send([resolved, later])
    records = [Alert.model_validate(orjson.loads(line)) for line in path.read_bytes().splitlines()]
    assert records == [firing, resolved, later]


def test_only_the_end_of_a_long_alerts_file_is_read_for_what_it_holds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The check reads the last MiB, cut at a whole line: an older identical line (beyond it)
    does not stop a write, and a line cut in two by the boundary is not mistaken for one."""
    import alerts.notifiers as notifiers

    path = tmp_path / "alerts.jsonl"
    JsonLinesNotifier(path).send([alert()])
    first = path.read_bytes()
    monkeypatch.setattr(notifiers, "RECENT_BYTES", len(first) - 3)  # cuts the only line
    JsonLinesNotifier(path).send([alert()])
    assert path.read_bytes() == first * 2
    monkeypatch.setattr(notifiers, "RECENT_BYTES", len(first) + 1)  # holds the last one whole
    JsonLinesNotifier(path).send([alert()])
    assert path.read_bytes() == first * 2


def test_a_named_pipe_is_written_to_without_reading_it_back(tmp_path: Path) -> None:
    """`--alerts-out /dev/stdout`, or a named pipe another program reads: there is nothing to
    read back (opening a pipe to read would block), so the lines go out as they always did."""
    import os
    import threading

    fifo = tmp_path / "alerts.fifo"
    os.mkfifo(fifo)
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_bytes()))
    reader.start()
    resolved = alert("resolved", "[RESOLVED] m safety: block rate 2.0% — after 3 windows")
    JsonLinesNotifier(fifo).send([alert(), resolved])
    reader.join(timeout=10)
    assert not reader.is_alive()
    records = [Alert.model_validate(orjson.loads(line)) for line in got[0].splitlines()]
    assert records == [alert(), resolved]


def test_the_console_says_which_changes_it_did_not_print_and_why() -> None:
    """A replay's summary: the changes routed elsewhere, the info ones, and those a closed
    pipe (`lookout replay … | head -2`) did not take, which are not "routed to receivers"."""

    def later(a: Alert, minutes: int, **update: str) -> Alert:
        return a.model_copy(update={"window_end": T0 + timedelta(minutes=minutes), **update})

    console = ConsoleNotifier(io.StringIO())
    run = [
        later(alert(), 5),
        later(alert("resolved"), 10),
        later(alert(), 20),
        later(alert(), 5, severity="info", dedup_key="lookout:m:descriptor_drift:x"),
        later(alert(), 20, severity="info", dedup_key="lookout:m:descriptor_drift:x"),
    ]
    console.send(run[:1])  # one page printed; the resolve and the next page went to Slack
    assert console.unprinted(run) == "2 routed to receivers, 2 info"
    console.send(run[3:4])  # an info change routed to the console too
    assert console.unprinted(run) == "2 routed to receivers, 1 info"
    closed = io.StringIO()
    broken = ConsoleNotifier(closed)
    closed.close()
    for _ in range(2):  # sent and retried: one change, not two
        with pytest.raises(TerminalNotifierError):
            broken.send(run[:1])
    assert broken.unprinted(run[:3]) == "2 routed to receivers, 1 the console could not take"
    assert ConsoleNotifier(io.StringIO()).unprinted([]) == ""
