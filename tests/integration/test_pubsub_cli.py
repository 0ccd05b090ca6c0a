"""`lookout pubsub init` and `lookout publish` against the real emulator, as a user runs them.

The happy paths run the installed `lookout` script in a subprocess (what a deploy script does);
error paths run in-process through typer's runner with the same environment, because a
subprocess costs ~2 s of imports each and they only check the message and the exit status.
"""

from __future__ import annotations

import gzip
import subprocess
from pathlib import Path

import orjson
import pytest
from google.cloud import pubsub_v1
from typer.testing import CliRunner

from tests.integration.pubsub_emulator import PubSubEmulator
from worker.cli import app
from worker.sources.grpc_channel import ChannelFactory, subscriber_client

PROJECT = "lookout-cli"
LOOKOUT = str(Path(__file__).resolve().parents[2] / ".venv" / "bin" / "lookout")


def run_cli(
    emulator: PubSubEmulator, *args: str, stdin: bytes | None = None
) -> tuple[int, str, str]:
    result = subprocess.run(
        [LOOKOUT, *args], input=stdin, env=emulator.env(), capture_output=True, timeout=120
    )
    return result.returncode, result.stdout.decode(), result.stderr.decode()


def invoke(emulator: PubSubEmulator | None, *args: str, stdin: bytes | None = None):
    env = {"PUBSUB_EMULATOR_HOST": emulator.host} if emulator else {}
    return CliRunner().invoke(app, list(args), input=stdin, env=env)


def pull(
    channels: ChannelFactory, subscription: str, want: int
) -> list[tuple[bytes, dict[str, str]]]:
    """Pull and ack until `want` messages arrived (15 s at most)."""
    import time

    client = subscriber_client(channels)
    path = client.subscription_path(PROJECT, subscription)
    out: list[tuple[bytes, dict[str, str]]] = []
    deadline = time.monotonic() + 15
    try:
        while len(out) < want and time.monotonic() < deadline:
            response = client.pull(subscription=path, max_messages=100, timeout=5)
            received = list(response.received_messages)
            if received:
                client.acknowledge(subscription=path, ack_ids=[m.ack_id for m in received])
            out.extend((m.message.data, dict(m.message.attributes)) for m in received)
    finally:
        client.close()
    return out


def assert_one_line(text: str) -> None:
    assert "Traceback" not in text, text
    assert len(text.strip().splitlines()) == 1, text


def test_init_creates_then_reports_exists_and_a_mismatch_exits_1(
    pubsub_emulator: PubSubEmulator, unique_name: str
) -> None:
    args = (
        *("pubsub", "init", "--project", PROJECT, "--topic", f"{unique_name}-logs"),
        *("--subscription", f"{unique_name}-sub", "--dead-letter-topic", f"{unique_name}-dlq"),
    )

    code, out, err = run_cli(pubsub_emulator, *args, "--ack-deadline", "30")
    assert code == 0, err
    assert out.count(": created") == 4, out
    assert f"subscription projects/{PROJECT}/subscriptions/{unique_name}-sub: created" in out

    again = invoke(pubsub_emulator, *args, "--ack-deadline", "30")
    assert again.exit_code == 0, again.output
    assert again.stdout.count(": exists") == 4, again.stdout

    changed = invoke(pubsub_emulator, *args, "--ack-deadline", "90")
    assert changed.exit_code == 1
    assert "mismatch (ack_deadline_seconds is 30, asked 90; --update changes it)" in changed.stdout
    assert_one_line(changed.stderr)


def get_subscription(channels: ChannelFactory, name: str) -> pubsub_v1.types.Subscription:
    client = subscriber_client(channels)
    try:
        return client.get_subscription(subscription=client.subscription_path(PROJECT, name))
    finally:
        client.close()


def test_init_with_exactly_once_and_delivery_attempts_sets_the_subscription(
    pubsub_emulator: PubSubEmulator, pubsub_channels: ChannelFactory, unique_name: str
) -> None:
    result = invoke(
        pubsub_emulator,
        *("pubsub", "init", "-p", PROJECT, "-t", f"{unique_name}-logs", "-s", f"{unique_name}-s"),
        *("-d", f"{unique_name}-dlq", "--max-delivery-attempts", "5", "--exactly-once"),
    )
    assert result.exit_code == 0, result.output
    sub = get_subscription(pubsub_channels, f"{unique_name}-s")
    assert sub.enable_exactly_once_delivery
    assert sub.dead_letter_policy.max_delivery_attempts == 5
    assert sub.retry_policy.minimum_backoff.seconds == 10


def test_init_with_immediate_redelivery_sets_no_retry_policy_and_is_idempotent(
    pubsub_emulator: PubSubEmulator, pubsub_channels: ChannelFactory, unique_name: str
) -> None:
    args = (
        *("pubsub", "init", "-p", PROJECT, "-t", f"{unique_name}-logs", "-s", f"{unique_name}-s"),
        "--immediate-redelivery",
    )
    first = invoke(pubsub_emulator, *args)
    assert first.exit_code == 0, first.output
    sub = get_subscription(pubsub_channels, f"{unique_name}-s")
    assert "retry_policy" not in sub, sub
    again = invoke(pubsub_emulator, *args)
    assert again.exit_code == 0, again.output
    assert again.stdout.count(": exists") == 2, again.stdout
    with_backoff = invoke(pubsub_emulator, *args[:-1])
    assert with_backoff.exit_code == 1
    assert "retry_min_backoff_seconds is none (no retry policy), asked 10" in with_backoff.stdout
    assert "None" not in with_backoff.stdout, with_backoff.stdout
    both = invoke(pubsub_emulator, *args, "--retry-min-backoff", "5")
    assert both.exit_code == 2
    assert "drop --retry-min-backoff" in both.stderr
    assert_one_line(both.stderr)


def test_a_mismatch_asking_for_no_retry_policy_says_so_in_words(
    pubsub_emulator: PubSubEmulator, unique_name: str
) -> None:
    """It said "retry_min_backoff_seconds is 10, asked None": Python's None, not words."""
    args = ("pubsub", "init", "-p", PROJECT, "-t", f"{unique_name}-logs", "-s", f"{unique_name}-s")
    assert invoke(pubsub_emulator, *args).exit_code == 0
    without = invoke(pubsub_emulator, *args, "--immediate-redelivery")
    assert without.exit_code == 1, without.output
    assert (
        "mismatch (retry_min_backoff_seconds is 10, asked none (no retry policy); "
        "retry_max_backoff_seconds is 600, asked none (no retry policy); --update changes it)"
    ) in without.stdout, without.stdout
    assert "None" not in without.stdout, without.stdout
    updated = invoke(pubsub_emulator, *args, "--immediate-redelivery", "--update")
    assert updated.exit_code == 0, updated.output
    assert "retry_min_backoff_seconds is 10 -> none (no retry policy)" in updated.stdout
    assert "None" not in updated.stdout, updated.stdout


def test_the_emulator_gets_no_service_account_note(
    pubsub_emulator: PubSubEmulator, unique_name: str
) -> None:
    """The IAM note on the dead-letter policy was printed against the emulator, which has none."""
    result = invoke(
        pubsub_emulator,
        *("pubsub", "init", "-p", PROJECT, "-t", f"{unique_name}-logs", "-s", f"{unique_name}-s"),
        *("-d", f"{unique_name}-dlq"),
    )
    assert result.exit_code == 0, result.output
    assert result.stdout.count(": created") == 4, result.stdout
    assert "note:" not in result.stdout and "roles/" not in result.stdout, result.stdout


def test_init_twice_with_a_zero_minimum_backoff_reports_exists(
    pubsub_emulator: PubSubEmulator, unique_name: str
) -> None:
    args = (
        *("pubsub", "init", "-p", PROJECT, "-t", f"{unique_name}-logs", "-s", f"{unique_name}-s"),
        *("--retry-min-backoff", "0", "--retry-max-backoff", "10"),
    )
    assert invoke(pubsub_emulator, *args).exit_code == 0
    again = invoke(pubsub_emulator, *args)
    assert again.exit_code == 0, again.stdout
    assert again.stdout.count(": exists") == 2, again.stdout


@pytest.mark.parametrize(
    ("option", "message"),
    [
        (("--max-delivery-attempts", "3"), "max_delivery_attempts must be between 5 and 100"),
        (("--ack-deadline", "5"), "ack_deadline_seconds must be between 10 and 600"),
        (("--retry-min-backoff", "60", "--retry-max-backoff", "30"), "must not exceed"),
    ],
)
def test_init_out_of_range_is_one_line_and_exit_1(
    pubsub_emulator: PubSubEmulator, option: tuple[str, ...], message: str
) -> None:
    result = invoke(pubsub_emulator, "pubsub", "init", "-p", PROJECT, "-t", "t", "-s", "s", *option)
    assert result.exit_code == 1
    assert message in result.stderr
    assert_one_line(result.stderr)


def test_publish_file_in_ndjson_batches_with_gzip_and_format_then_stdin_singles(
    pubsub_emulator: PubSubEmulator,
    pubsub_channels: ChannelFactory,
    unique_name: str,
    tmp_path: Path,
) -> None:
    topic, sub = f"{unique_name}-logs", f"{unique_name}-sub"
    assert (
        invoke(pubsub_emulator, "pubsub", "init", "-p", PROJECT, "-t", topic, "-s", sub).exit_code
        == 0
    )
    lines = [orjson.dumps({"request_id": f"r{i}", "latency_ms": i}) for i in range(25)]
    path = tmp_path / "logs.ndjson"
    path.write_bytes(b"\n".join(lines[:12]) + b"\n\n" + b"\n".join(lines[12:]) + b"\n")

    code, out, err = run_cli(
        pubsub_emulator, "publish", str(path), "-p", PROJECT, "-t", topic,
        "--batch", "10", "--gzip", "--format", "native",
    )  # fmt: skip
    assert (code, out.strip()) == (0, "published 25 lines in 3 messages"), err
    assert "Traceback" not in err
    batches = pull(pubsub_channels, sub, 3)
    assert len(batches) == 3
    assert all(a == {"format": "native", "Content-Encoding": "gzip"} for _, a in batches)
    got = sorted(line for data, _ in batches for line in gzip.decompress(data).split(b"\n"))
    assert got == sorted(lines)

    singles = invoke(
        pubsub_emulator, "publish", "-", "-p", PROJECT, "-t", topic, stdin=b"\n".join(lines[:4])
    )
    assert singles.exit_code == 0, singles.output
    assert singles.stdout.strip() == "published 4 lines in 4 messages"
    assert sorted(d for d, _ in pull(pubsub_channels, sub, 4)) == sorted(lines[:4])


def test_publish_to_a_missing_topic_reports_every_failure_and_exits_1(
    pubsub_emulator: PubSubEmulator,
) -> None:
    result = invoke(
        pubsub_emulator, "publish", "-", "-p", PROJECT, "-t", "no-such-topic", stdin=b"{}\n{}\n{}\n"
    )
    assert result.exit_code == 1
    assert (
        "published 0 lines in 3 messages; FAILED 3 lines in 3 messages: NotFound" in result.stdout
    )
    assert "Traceback" not in result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("publish", "/no/such/file.ndjson"), "cannot read /no/such/file.ndjson"),
        (("publish", "-", "--format", "yaml"), "unknown --format 'yaml'"),
    ],
)
def test_publish_usage_errors_exit_2_with_one_line(
    pubsub_emulator: PubSubEmulator, args: tuple[str, ...], message: str
) -> None:
    result = invoke(pubsub_emulator, *args, "-p", PROJECT, "-t", "t", stdin=b"")
    assert result.exit_code == 2
    assert message in result.stderr
    assert_one_line(result.stderr)


def test_without_emulator_or_credentials_init_says_how_to_fix_it(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app,
        ["pubsub", "init", "-p", PROJECT, "-t", "t", "-s", "s"],
        env={
            "PUBSUB_EMULATOR_HOST": "",
            "GOOGLE_APPLICATION_CREDENTIALS": str(tmp_path / "missing.json"),
        },
    )
    assert result.exit_code == 1
    assert "no Google credentials" in result.stderr
    assert "PUBSUB_EMULATOR_HOST" in result.stderr
    assert_one_line(result.stderr)


def test_help_explains_every_option() -> None:
    init_help = CliRunner().invoke(app, ["pubsub", "init", "--help"], env={"COLUMNS": "200"})
    publish_help = CliRunner().invoke(app, ["publish", "--help"], env={"COLUMNS": "200"})
    for option in (
        "--project", "--topic", "--subscription", "--dead-letter-topic", "--ack-deadline",
        "--max-delivery-attempts", "--exactly-once", "--retry-min-backoff",
        "--immediate-redelivery",
    ):  # fmt: skip
        assert option in init_help.stdout, option
    for option in ("--project", "--topic", "--batch", "--gzip", "--format"):
        assert option in publish_help.stdout, option
    assert "PUBSUB_EMULATOR_HOST" in publish_help.stdout
