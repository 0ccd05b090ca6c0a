"""Pub/Sub pieces that need no emulator: gzip inflation limits and settings validation.

Every check here runs before any network call, so a bad value is rejected with its name, the
value and the accepted range instead of surfacing as a Pub/Sub error later.
"""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import pytest

from schemas.config import ConfigError, load_config
from worker.failure_policy import InvalidSetting, LookoutError, is_retryable
from worker.sources.pubsub_admin import init_pubsub
from worker.sources.pubsub_publish import publish_lines
from worker.sources.pubsub_source import InflateError, PubSubSourceSettings, inflate


def settings(**overrides: object) -> PubSubSourceSettings:
    return PubSubSourceSettings(project="p", subscription="s", **overrides)  # type: ignore[arg-type]


# -- inflate ---------------------------------------------------------------------------------


def test_inflate_returns_the_original_bytes() -> None:
    body = b'{"request_id":"r1"}\n' * 100
    assert inflate(gzip.compress(body), limit=len(body)) == body


def test_inflate_joins_every_member_and_ignores_zero_padding() -> None:
    data = gzip.compress(b"first\n") + gzip.compress(b"second\n") + b"\0\0\0"
    assert inflate(data, limit=1024) == b"first\nsecond\n"


def test_inflate_accepts_a_body_of_exactly_the_limit() -> None:
    body = b"x" * 4096
    assert inflate(gzip.compress(body), limit=4096) == body


def test_inflate_refuses_a_gzip_bomb_past_the_limit() -> None:
    bomb = gzip.compress(b"\0" * 10_000_000)  # ~10 KB that inflate to 10 MB
    with pytest.raises(InflateError, match="inflates past 65536 bytes"):
        inflate(bomb, limit=65_536)


def test_inflate_refuses_a_limit_crossed_by_a_later_member() -> None:
    data = gzip.compress(b"a" * 600) + gzip.compress(b"b" * 600)
    with pytest.raises(InflateError, match="inflates past 1000 bytes"):
        inflate(data, limit=1000)


def test_inflate_reports_a_truncated_body() -> None:
    with pytest.raises(InflateError, match="truncated"):
        inflate(gzip.compress(b'{"request_id": "x"}' * 10)[:-6], limit=1024)


def test_inflate_reports_bytes_that_are_not_gzip_as_corrupt_and_chains_the_cause() -> None:
    with pytest.raises(InflateError, match="corrupt") as raised:
        inflate(b'{"request_id": "plain json"}', limit=1024)
    assert isinstance(raised.value.__cause__, zlib.error)


def test_inflate_reports_a_corrupt_deflate_stream() -> None:
    data = bytearray(gzip.compress(b"hello world " * 50))
    data[12:20] = b"\xff" * 8  # inside the deflate stream, past the 10-byte header
    with pytest.raises(InflateError):
        inflate(bytes(data), limit=4096)


def test_inflate_of_an_empty_body_is_empty() -> None:
    assert inflate(b"", limit=1024) == b""


# -- PubSubSourceSettings --------------------------------------------------------------------


def test_default_source_settings_are_valid_and_lease_longer_than_a_window() -> None:
    s = settings()
    assert s.mode == "unary"
    assert s.max_lease_duration_seconds > 60 + 30 + 5  # window + lateness + checkpoint


@pytest.mark.parametrize(
    ("name", "value", "bounds"),
    [
        ("max_messages", 0, "between 1 and 1000000"),
        ("max_bytes", 1023, "between 1024 and"),
        ("ack_deadline_seconds", 9, "between 10 and 600"),
        ("ack_deadline_seconds", 601, "between 10 and 600"),
        ("max_lease_duration_seconds", 5, "between 10 and 86400"),
        ("max_inflated_bytes", 10, "between 1024 and"),
        ("recent_ids", -1, "between 0 and 10000000"),
    ],
)
def test_out_of_range_source_settings_name_the_setting_value_and_range(
    name: str, value: int, bounds: str
) -> None:
    with pytest.raises(InvalidSetting, match=f"{name} must be {bounds}.*got {value}"):
        settings(**{name: value})


def test_an_unknown_pull_mode_is_rejected() -> None:
    with pytest.raises(InvalidSetting, match=r"mode must be 'unary' or 'streaming'.*'push'"):
        settings(mode="push")


def test_invalid_setting_is_a_lookout_error_so_the_cli_prints_one_line() -> None:
    assert issubclass(InvalidSetting, LookoutError)
    assert not is_retryable(InvalidSetting("x"))


# -- init_pubsub and publish_lines: validated before any connection ---------------------------


def _no_channel() -> object:
    raise AssertionError("a channel was opened before the settings were validated")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"ack_deadline_seconds": 5}, "ack_deadline_seconds must be between 10 and 600"),
        ({"max_delivery_attempts": 101}, "max_delivery_attempts must be between 5 and 100"),
        ({"retry_min_backoff_seconds": -1}, "retry_min_backoff_seconds must be between 0"),
        ({"retry_max_backoff_seconds": 601}, "retry_max_backoff_seconds must be between 0"),
        (
            {"retry_min_backoff_seconds": 60, "retry_max_backoff_seconds": 30},
            r"retry_min_backoff_seconds \(60\) must not exceed retry_max_backoff_seconds \(30\)",
        ),
    ],
)
def test_init_rejects_bad_settings_before_connecting(kwargs: dict[str, int], message: str) -> None:
    with pytest.raises(InvalidSetting, match=message):
        init_pubsub("p", "t", "s", "d", channels=_no_channel, **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"batch": 0}, "batch must be at least 1"), ({"max_in_flight": 0}, "max_in_flight")],
)
def test_publish_rejects_bad_settings_before_connecting(
    kwargs: dict[str, int], message: str
) -> None:
    with pytest.raises(InvalidSetting, match=message):
        publish_lines([b"{}"], "p", "t", channels=_no_channel, **kwargs)  # type: ignore[arg-type]


def test_a_lease_shorter_than_window_lateness_and_checkpoint_is_a_config_error(
    tmp_path: Path,
) -> None:
    path = tmp_path / "lookout.yaml"
    path.write_text(
        "source: {kind: pubsub, project: p, subscription: s, max_lease_duration_seconds: 90}\n"
        "engine: {window_seconds: 60, allowed_lateness_seconds: 30, checkpoint_seconds: 5}\n"
    )
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    (problem,) = caught.value.problems
    assert problem.startswith("source.max_lease_duration_seconds (90) must exceed"), problem
    assert "(95)" in problem
    path.write_text(path.read_text().replace("90}", "96}"))
    assert load_config(path).source.kind == "pubsub"
