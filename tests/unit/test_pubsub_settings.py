"""Pub/Sub pieces that need no emulator: gzip inflation limits and settings validation.

Every check here runs before any network call, so a bad value is rejected with its name, the
value and the accepted range instead of surfacing as a Pub/Sub error later.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import logging
import time
import zlib
from concurrent.futures import Future
from pathlib import Path

import orjson
import pytest
from google.api_core import exceptions as gexc
from google.cloud.pubsub_v1.publisher.exceptions import MessageTooLargeError

from schemas.config import PubSubSourceConfig
from schemas.config_loading import ConfigError, load_config
from schemas.errors import DecodeError
from worker.failure_policy import (
    ERROR_REASONS,
    InvalidSetting,
    LookoutError,
    describe,
    is_retryable,
    reason_of,
)
from worker.source import SourceMessage
from worker.sources.pubsub_admin import init_pubsub
from worker.sources.pubsub_dead_letter import DeadLetterer, FailureMemory, check_overflow_path
from worker.sources.pubsub_publish import publish_lines
from worker.sources.pubsub_pull_health import PullHealth, PullTarget
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
        ("max_dead_letter_failures", 0, "between 1 and 1000"),
        ("close_timeout_seconds", 0.1, "between 0.5 and 600"),
        ("max_backoff_seconds", 0, "between 0.5 and 3600"),
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


def test_the_robustness_keys_are_read_from_the_config_file(tmp_path: Path) -> None:
    path = tmp_path / "lookout.yaml"
    path.write_text(
        "source: {kind: pubsub, project: p, subscription: s, max_dead_letter_failures: 3,\n"
        f"  dead_letter_overflow_path: {tmp_path / 'overflow'}, max_backoff_seconds: 10,\n"
        "  max_inflated_bytes: 2048}\n"
    )
    source = load_config(path).source
    assert isinstance(source, PubSubSourceConfig)
    assert (source.max_dead_letter_failures, source.max_backoff_seconds) == (3, 10)
    assert source.dead_letter_overflow_path == str(tmp_path / "overflow")
    assert source.max_inflated_bytes == 2048


# -- the dead-letter path: nothing raises, oversized bodies go as finders ---------------------


def api_error(kind: type[gexc.GoogleAPICallError], message: str) -> gexc.GoogleAPICallError:
    return kind(message)


class FakePublisher:
    """Records publishes; refuses bodies over Pub/Sub's 10 MB as the real client does, or
    fails every future with `error`."""

    def __init__(self, error: BaseException | None = None) -> None:
        self.published: list[tuple[bytes, dict[str, str]]] = []
        self._error = error

    def publish(self, topic: str, data: bytes, **attributes: str) -> Future[str]:
        if len(data) > 10_000_000:
            msg = "The message being published would produce too large a publish request"
            raise MessageTooLargeError(msg)
        self.published.append((data, attributes))
        future: Future[str] = Future()
        if self._error is not None:
            future.set_exception(self._error)
        else:
            future.set_result(str(len(self.published)))
        return future


def _dead_letterer(publisher: FakePublisher, overflow: Path | None = None) -> DeadLetterer:
    return DeadLetterer(
        publisher,
        "projects/p/topics/dlq",
        "projects/p/subscriptions/s",
        overflow=overflow,
    )


MESSAGE = SourceMessage("m-1", b"", "ack-1", {"Content-Encoding": "gzip", "format": "native"})


def test_a_record_too_large_for_pubsub_goes_as_a_finder_and_whole_to_the_overflow(
    tmp_path: Path,
) -> None:
    big = b'{"request_id":"big","response":"' + b"x" * 12_000_000 + b'"}'
    publisher = FakePublisher()
    error = DecodeError(1, "record is 12000034 bytes, over the limit", big, None, "too_large")

    outcome = _dead_letterer(publisher, tmp_path).send(MESSAGE, [error])

    assert outcome.ok and outcome.oversized == 1
    ((body, attributes),) = publisher.published
    finder = orjson.loads(body)
    digest = hashlib.sha256(big).hexdigest()
    assert (finder["sha256"], finder["size"]) == (digest, len(big))
    assert finder["first_bytes"] == big[:1024].decode()
    assert finder["source_message_id"] == "m-1" and finder["attributes"]["format"] == "native"
    assert attributes["body"] == "finder" and attributes["original_size"] == str(len(big))
    assert Path(attributes["overflow_file"]).read_bytes() == big
    assert orjson.loads((tmp_path / f"{digest}.json").read_bytes())["source_message_id"] == "m-1"


def test_a_small_record_goes_as_it_is_and_long_details_fit_an_attribute() -> None:
    publisher = FakePublisher()
    error = DecodeError(3, "é" * 2000, b"{bad", "latency_ms")

    assert _dead_letterer(publisher).send(MESSAGE, [error]).ok
    ((body, attributes),) = publisher.published
    assert body == b"{bad" and "body" not in attributes
    assert len(attributes["error_detail"].encode()) <= 1024


@pytest.mark.parametrize(
    ("error", "retryable", "reason"),
    [
        (api_error(gexc.NotFound, "Topic not found"), False, "not_found"),
        (api_error(gexc.ServiceUnavailable, "connection refused"), True, "unavailable"),
        (TimeoutError(), True, "deadline_exceeded"),
        (RuntimeError("anything else"), False, "other"),
    ],
)
def test_a_failed_publish_is_an_outcome_never_an_exception(
    error: BaseException, retryable: bool, reason: str
) -> None:
    outcome = _dead_letterer(FakePublisher(error)).send(MESSAGE, [DecodeError(1, "bad", b"{")])

    assert not outcome.ok
    assert (outcome.retryable, outcome.error_reason) == (retryable, reason)
    assert "1 of 1 records" in outcome.reason


def test_a_publish_refused_before_sending_is_an_outcome_too() -> None:
    class Refusing(FakePublisher):
        def publish(self, topic: str, data: bytes, **attributes: str) -> Future[str]:
            raise ValueError("the client is stopped")

    outcome = _dead_letterer(Refusing()).send(MESSAGE, [DecodeError(1, "bad", b"{")])
    assert not outcome.ok and "the client is stopped" in outcome.reason


def test_giving_up_logs_the_finder_facts_not_the_content(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    secret = b'{"prompt":"my card is 4111"'
    with caplog.at_level(logging.ERROR):
        _dead_letterer(FakePublisher(), tmp_path).give_up(
            MESSAGE, [DecodeError(1, "invalid JSON", secret)], "3 attempts failed"
        )
    (record,) = caplog.records
    text = record.getMessage()
    assert hashlib.sha256(secret).hexdigest() in text and "m-1" in text and "4111" not in text
    assert (tmp_path / f"{hashlib.sha256(secret).hexdigest()}.body").read_bytes() == secret


def test_the_failure_memory_is_bounded_and_forgets_the_oldest() -> None:
    memory = FailureMemory(capacity=2)
    assert [memory.add("a"), memory.add("a"), memory.add("b"), memory.add("c")] == [1, 2, 1, 1]
    assert len(memory) == 2
    assert memory.add("a") == 1  # forgotten: the oldest went first


@pytest.mark.parametrize("path", ["gs://bucket/dead", "s3://x"])
def test_an_overflow_url_is_refused_with_what_to_do_instead(path: str) -> None:
    with pytest.raises(InvalidSetting, match=r"only a local directory .*mount the bucket as a"):
        check_overflow_path(path)


def test_an_overflow_directory_is_created(tmp_path: Path) -> None:
    assert check_overflow_path(str(tmp_path / "a" / "b")) == tmp_path / "a" / "b"
    assert (tmp_path / "a" / "b").is_dir()


# -- pull health: earned readiness, one line per failure kind, capped backoff -----------------


TARGET = PullTarget("p", "s", "projects/p/subscriptions/s", "127.0.0.1:1 (X)", "is it running?")


def test_not_ready_until_a_pull_works_and_again_from_the_first_failure() -> None:
    health = PullHealth(TARGET)

    def ready() -> bool:
        return health.ready

    assert not ready() and health.status() == "no pull has succeeded yet"
    health.succeeded()
    assert ready() and health.status() == ""
    health.failed(api_error(gexc.NotFound, "Subscription does not exist"))
    assert not ready()
    assert "projects/p/subscriptions/s does not exist" in health.status()
    assert "lookout pubsub init --project p --topic TOPIC --subscription s`" in health.status()


def test_the_command_to_create_a_missing_subscription_carries_the_dead_letter_topic() -> None:
    """Made without the dead-letter policy, the subscription gives no delivery attempts: the
    README's "counted twice" case. The advice must make the subscription the config expects."""
    target = dataclasses.replace(TARGET, dead_letter_topic="lookout-dlq")
    health = PullHealth(target)
    health.failed(api_error(gexc.NotFound, "Subscription does not exist"))
    assert (
        "lookout pubsub init --project p --topic TOPIC --subscription s "
        "--dead-letter-topic lookout-dlq`" in health.status()
    )


def test_one_line_per_kind_of_failure_and_the_backoff_doubles_to_its_cap(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = [0.0]
    health = PullHealth(TARGET, max_backoff=4.0, reminder_seconds=300, clock=lambda: now[0])
    with caplog.at_level(logging.WARNING, logger="lookout.pubsub"):
        delays = []
        for _ in range(6):
            delays.append(health.failed(api_error(gexc.ServiceUnavailable, "refused")))
            now[0] += delays[-1]
        health.failed(api_error(gexc.NotFound, "gone"))
        now[0] += 400
        health.failed(api_error(gexc.NotFound, "gone"))  # a reminder after reminder_seconds
        health.succeeded()
    assert delays == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 4, messages
    assert (
        "cannot reach Pub/Sub at 127.0.0.1:1 (X)" in messages[0] and "is it running?" in messages[0]
    )
    assert "does not exist" in messages[1] and "attempts so far" in messages[2]
    assert "works again after 8 failed attempts" in messages[3]
    assert health.errors == {"unavailable": 6, "not_found": 2}


def test_reasons_and_descriptions_of_errors() -> None:
    assert reason_of(MessageTooLargeError("big")) == "too_large"
    assert reason_of(api_error(gexc.PermissionDenied, "no")) == "permission_denied"
    assert describe(TimeoutError()) == "TimeoutError: no answer in time"
    assert set(ERROR_REASONS) >= {reason_of(api_error(gexc.NotFound, "x")), reason_of(OSError())}


def test_a_topic_that_does_not_answer_is_waited_for_once_then_skipped_for_a_while() -> None:
    """All records of a message share one timeout, and the next message does not wait again:
    a poll of bad messages cannot hold the worker (or its SIGTERM) for minutes."""

    class Silent(FakePublisher):
        def publish(self, topic: str, data: bytes, **attributes: str) -> Future[str]:
            return Future()  # never resolves

    dlq = DeadLetterer(
        Silent(), "projects/p/topics/dlq", "projects/p/subscriptions/s", timeout_seconds=1.0
    )
    errors = [DecodeError(i, "bad", b"{") for i in range(1, 6)]
    started = time.monotonic()
    first = dlq.send(MESSAGE, errors)
    waited = time.monotonic() - started
    second = dlq.send(MESSAGE, errors)
    both = time.monotonic() - started

    assert not first.ok and first.attempted and first.error_reason == "deadline_exceeded"
    assert "5 of 5 records" in first.reason
    assert not second.ok and not second.attempted
    assert 1.0 <= waited < 2.0 and both - waited < 0.1, (waited, both)


def test_an_endpoint_out_of_reach_is_one_line_whichever_way_its_calls_fail(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A connection whose packets were dropped failed by a ping timeout, then pulls timing
    out, then connects timing out: three ERROR lines in 35 s for one outage (an SRE's trial)."""
    now = [0.0]
    health = PullHealth(TARGET, reminder_seconds=300, clock=lambda: now[0])
    with caplog.at_level(logging.WARNING, logger="lookout.pubsub"):
        for error in (gexc.ServiceUnavailable, gexc.DeadlineExceeded, gexc.ServiceUnavailable):
            now[0] += health.failed(api_error(error, "ping timeout"))
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 1, messages
    assert "cannot reach Pub/Sub" in messages[0]
    assert health.errors == {"unavailable": 2, "deadline_exceeded": 1}


def test_a_reconnect_cuts_short_only_the_backoff_of_an_endpoint_out_of_reach() -> None:
    """Pulls resume as soon as the channel is back after an outage; a missing subscription
    fails on a connected channel, and a reconnect (a proxy that drops the connection after each
    error, say) must not turn its backoff into a retry storm (found in review)."""
    import threading

    from worker.sources.pubsub_unary import UnaryReceiver

    def back_off_after(error: type[gexc.GoogleAPICallError]) -> float:
        health = PullHealth(TARGET, initial_backoff=0.4)
        receiver = UnaryReceiver.__new__(UnaryReceiver)  # the backoff alone: no pull threads
        receiver._health = health
        receiver._stopped = threading.Event()
        receiver._reconnected_since = lambda _moment: True  # the channel came back at once
        health.failed(api_error(error, "x"))
        started = time.monotonic()
        receiver._back_off(health.retry_at)
        return time.monotonic() - started

    assert back_off_after(gexc.ServiceUnavailable) < 0.2  # pulls again at once
    assert back_off_after(gexc.NotFound) >= 0.35  # waits its backoff out
