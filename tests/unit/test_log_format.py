"""Log lines as Cloud Logging reads them (JSON) and as a person reads them (text)."""

from __future__ import annotations

import json
import logging
import sys

import pytest

from worker.cli.log_format import JsonFormatter, TextFormatter, configure


def record(
    message: str = "pulled %d messages", *args: object, **extra: object
) -> logging.LogRecord:
    rec = logging.LogRecord("lookout.serve", logging.INFO, __file__, 1, message, args or (3,), None)
    rec.__dict__.update(extra)
    rec.created = 1767592800.25  # 2026-01-05T06:00:00.250Z
    return rec


def test_a_json_line_has_the_keys_cloud_logging_reads_and_the_extra_fields() -> None:
    line = JsonFormatter().format(record(subscription="projects/p/subscriptions/lookout"))
    entry = json.loads(line)
    assert entry == {
        "time": "2026-01-05T06:00:00.250Z",
        "severity": "INFO",
        "logger": "lookout.serve",
        "message": "pulled 3 messages",
        "subscription": "projects/p/subscriptions/lookout",
    }
    assert "\n" not in line


def test_an_exception_stays_on_its_json_line() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        rec = record()
        rec.exc_info = sys.exc_info()
    entry = json.loads(JsonFormatter().format(rec))
    assert "ValueError: boom" in entry["exception"]


def test_a_text_line_ends_with_the_message() -> None:
    text = TextFormatter().format(record(port=9464))
    assert text.endswith(" INFO lookout.serve: pulled 3 messages")


def test_client_libraries_are_held_to_warning(capsys: pytest.CaptureFixture[str]) -> None:
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)  # pytest's own capture handlers
    configure("INFO", "json")
    try:
        logging.getLogger("httpx").info("HTTP Request: POST https://hooks.slack.com/secret")
        logging.getLogger("lookout.serve").info("ours")
        logging.getLogger("httpx").warning("theirs, but a warning")
        # urllib3 narrates each retry of a Kubeflow call; Lookout reports the failure itself
        pool = logging.getLogger("urllib3.connectionpool")
        pool.warning("Retrying (%r) after connection broken by '%s': /apis", "Retry(total=2)", "x")
        pool.warning("Connection pool is full, discarding connection: kfp")
    finally:
        for handler in list(root.handlers):
            root.removeHandler(handler)
        for handler in saved[0]:
            root.addHandler(handler)
        root.setLevel(saved[1])
    messages = [json.loads(line)["message"] for line in capsys.readouterr().err.splitlines()]
    assert messages == [
        "ours",
        "theirs, but a warning",
        "Connection pool is full, discarding connection: kfp",
    ]


@pytest.mark.parametrize(("level", "fmt"), [("LOUD", "text"), ("INFO", "xml")])
def test_unknown_choices_are_refused(level: str, fmt: str) -> None:
    with pytest.raises(ValueError, match="unknown log"):
        configure(level, fmt)


def test_configure_keeps_other_handlers_and_follows_a_swapped_stderr(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A CLI runner swaps stderr and closes its copy; logging afterwards must not fail, and a
    test runner's own log capture must survive the command."""
    import io

    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    mine = logging.NullHandler()
    root.addHandler(mine)
    swapped = io.StringIO()
    real = sys.stderr
    try:
        sys.stderr = swapped
        configure("INFO", "text")
        configure("INFO", "text")  # a second command in the same process
        sys.stderr = real
        swapped.close()
        logging.getLogger("lookout.serve").info("after the swap")
        assert mine in root.handlers
        assert sum(type(h).__name__ == "_StderrHandler" for h in root.handlers) == 1
    finally:
        sys.stderr = real
        for handler in list(root.handlers):
            root.removeHandler(handler)
        for handler in saved[0]:
            root.addHandler(handler)
        root.setLevel(saved[1])
    assert capsys.readouterr().err.rstrip().endswith("lookout.serve: after the swap")
