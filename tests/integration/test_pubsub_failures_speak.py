"""Issue 14, Pub/Sub: the exit code, the one line printed, the time it took, and /readyz.

Measured before: with PUBSUB_EMULATOR_HOST at a dead port `lookout run` logged nothing and
/readyz said 200 "ready", SIGTERM took 35.8 s against a 25 s grace, `pubsub init` printed
nothing for 400 s+ and `publish` ended after 240 s with `TimeoutError: no detail`; a missing
subscription logged the same warning every 0.5 s forever; a changed `pubsub init` ended in
"mismatch" with no way forward. Figures are printed (`pytest -s`).
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from google.cloud import pubsub_v1
from typer.testing import CliRunner

from tests.integration.lookout_worker import LOOKOUT, Worker, write_config
from tests.integration.pubsub_emulator import PubSubEmulator, free_port
from worker.cli import app
from worker.sources.grpc_channel import ChannelFactory, subscriber_client
from worker.sources.pubsub_source import PubSubSource, PubSubSourceSettings

PROJECT = "lookout-speak"
#: the one-shot commands' --timeout in these tests, and what they may take beyond it
#: (interpreter start and imports: 1-3 s, more on a loaded machine; the bound stays < 15 s)
TIMEOUT = 3.0
SLACK = 9.0


def dead_env() -> dict[str, str]:
    """PUBSUB_EMULATOR_HOST at a loopback port nobody listens on."""
    return {**os.environ, "PUBSUB_EMULATOR_HOST": f"127.0.0.1:{free_port()}"}


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A loopback port that accepts connections and never answers (a wedged proxy or a
    firewall that black-holes): the case where a client waits rather than fails."""
    server = socket.create_server(("127.0.0.1", 0))
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.1)
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                held.append(server.accept()[0])

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield int(server.getsockname()[1])
    finally:
        stop.set()
        thread.join(timeout=5)
        for conn in held:
            conn.close()
        server.close()


def test_init_at_a_port_that_never_answers_exits_1_in_seconds(silent_port: int) -> None:
    host = f"127.0.0.1:{silent_port}"
    started = time.monotonic()
    result = subprocess.run(
        [LOOKOUT, "pubsub", "init", "-p", PROJECT, "-t", "l", "-s", "s", "--timeout", str(TIMEOUT)],
        env={**os.environ, "PUBSUB_EMULATOR_HOST": host},
        capture_output=True,
        timeout=60,
    )
    took = time.monotonic() - started
    line = one_line(result.stderr.decode())
    print(f"pubsub init at a port that never answers: exit {result.returncode} in {took:.1f} s")
    assert result.returncode == 1 and took < TIMEOUT + SLACK, (took, line)
    assert f"cannot reach Pub/Sub at {host} (PUBSUB_EMULATOR_HOST) within 3 s" in line, line


def one_line(text: str) -> str:
    assert "Traceback" not in text, text
    lines = text.strip().splitlines()
    assert len(lines) == 1, text
    return lines[0]


@pytest.mark.parametrize(
    "args",
    [
        ("pubsub", "init", "-p", PROJECT, "-t", "logs", "-s", "sub"),
        ("publish", "-", "-p", PROJECT, "-t", "logs"),
    ],
    ids=["pubsub-init", "publish"],
)
def test_one_shot_commands_at_a_dead_endpoint_exit_1_in_seconds_with_one_line(
    args: tuple[str, ...],
) -> None:
    env = dead_env()
    started = time.monotonic()
    result = subprocess.run(
        [LOOKOUT, *args, "--timeout", str(TIMEOUT)],
        input=b'{"request_id":"r1"}\n',
        env=env,
        capture_output=True,
        timeout=60,
    )
    took = time.monotonic() - started
    line = one_line(result.stderr.decode())
    print(f"lookout {args[0]} at a dead endpoint: exit {result.returncode} in {took:.1f} s: {line}")
    assert result.returncode == 1, line
    assert took < TIMEOUT + SLACK, f"took {took:.1f} s"
    assert f"cannot reach Pub/Sub at {env['PUBSUB_EMULATOR_HOST']} (PUBSUB_EMULATOR_HOST)" in line
    assert "is the emulator running" in line, line
    assert result.stdout == b""


def test_run_at_a_dead_endpoint_is_not_ready_says_why_once_and_stops_within_grace(
    tmp_path: Path,
) -> None:
    env = dead_env()
    grace = 8.0
    config = write_config(
        tmp_path / "w.yaml",
        {"project": PROJECT, "subscription": "sub", "max_backoff_seconds": 1},
        tmp_path / "sink.duckdb",
        grace=grace,
    )
    worker = Worker.start(config, env, tmp_path / "w.log")
    try:
        took = worker.wait_until(
            "4 failed pulls",
            lambda: (
                worker.sample("lookout_source_errors_total", step="pull", reason="unavailable") >= 4
            ),
            timeout=30,
        )
        status, body = worker.get("/readyz")
        code = worker.terminate()
    finally:
        worker.kill()
    log = worker.text()
    said = [line for line in log.splitlines() if "cannot reach Pub/Sub" in line]
    print(
        f"lookout run at a dead endpoint: /readyz {status} {body.strip()!r}; 4 failed pulls in "
        f"{took:.1f} s, {len(said)} error line(s); SIGTERM to exit {worker.stopped_after:.1f} s "
        f"(grace {grace:g} s), exit {code}"
    )
    assert status == 503 and "cannot reach Pub/Sub" in body, body
    assert len(said) == 1, log
    assert env["PUBSUB_EMULATOR_HOST"] in said[0] and "ERROR" in said[0], said[0]
    assert code == 0, log
    assert worker.stopped_after < grace, f"{worker.stopped_after:.1f} s"
    assert "Traceback" not in log, log


def test_a_missing_subscription_backs_off_says_how_to_create_it_and_recovers(
    pubsub_emulator: PubSubEmulator, unique_name: str, tmp_path: Path
) -> None:
    sub = f"{unique_name}-sub"
    config = write_config(
        tmp_path / "w.yaml",
        {"project": PROJECT, "subscription": sub, "max_backoff_seconds": 2},
        tmp_path / "sink.duckdb",
    )
    worker = Worker.start(config, pubsub_emulator.env(), tmp_path / "w.log")
    try:
        started = time.monotonic()

        def attempts() -> float:
            return worker.sample("lookout_source_errors_total", step="pull", reason="not_found")

        worker.wait_until("5 failed pulls", lambda: attempts() >= 5, timeout=30)
        elapsed = time.monotonic() - started
        status, body = worker.get("/readyz")
        failed = attempts()
        log = worker.text()
        init = CliRunner().invoke(
            app,
            ["pubsub", "init", "-p", PROJECT, "-t", f"{unique_name}-logs", "-s", sub],
            env={"PUBSUB_EMULATOR_HOST": pubsub_emulator.host},
        )
        assert init.exit_code == 0, init.output
        recovered = worker.wait_until(
            "/readyz 200 once the subscription exists",
            lambda: worker.get("/readyz")[0] == 200,
            timeout=15,
        )
        assert worker.terminate() == 0, worker.text()
    finally:
        worker.kill()
    said = [line for line in log.splitlines() if "does not exist" in line]
    print(
        f"missing subscription: {failed:.0f} failed pulls in {elapsed:.1f} s (0.5 s apart "
        f"before: {elapsed / 0.5:.0f}); {len(said)} error line(s); /readyz {status} "
        f"{body.strip()!r}; ready {recovered:.1f} s after `pubsub init`"
    )
    assert status == 503 and f"subscriptions/{sub} does not exist" in body, body
    assert len(said) == 1, log
    assert f"lookout pubsub init --project {PROJECT} --topic TOPIC --subscription {sub}" in said[0]
    # backoff 0.5, 1, 2, 2 s...: far fewer attempts than one per 0.5 s
    assert failed <= elapsed / 1.0 + 2, f"{failed} attempts in {elapsed:.1f} s"
    assert "works again" in worker.text()


def get_subscription(channels: ChannelFactory, name: str) -> pubsub_v1.types.Subscription:
    client = subscriber_client(channels)
    try:
        return client.get_subscription(subscription=client.subscription_path(PROJECT, name))
    finally:
        client.close()


def test_init_mismatch_points_to_update_which_changes_what_pubsub_allows(
    pubsub_emulator: PubSubEmulator, pubsub_channels: ChannelFactory, unique_name: str
) -> None:
    env = {"PUBSUB_EMULATOR_HOST": pubsub_emulator.host}
    base = ["pubsub", "init", "-p", PROJECT, "-t", f"{unique_name}-logs", "-s", f"{unique_name}-s"]
    runner = CliRunner()
    assert runner.invoke(app, [*base, "--immediate-redelivery"], env=env).exit_code == 0

    wanted = [*base, "--ack-deadline", "90", "-d", f"{unique_name}-dlq", "--message-retention",
              "3600"]  # fmt: skip
    changed = runner.invoke(app, wanted, env=env)
    assert changed.exit_code == 1, changed.output
    assert "ack_deadline_seconds is 60, asked 90" in changed.stdout, changed.stdout
    assert "--update changes it" in changed.stdout, changed.stdout
    assert "re-run with --update" in one_line(changed.stderr)

    updated = runner.invoke(app, [*wanted, "--update"], env=env)
    assert updated.exit_code == 0, updated.output
    assert ": updated (ack_deadline_seconds is 60 -> 90;" in updated.stdout, updated.stdout
    sub = get_subscription(pubsub_channels, f"{unique_name}-s")
    assert sub.ack_deadline_seconds == 90
    assert sub.dead_letter_policy.dead_letter_topic.endswith(f"/topics/{unique_name}-dlq")
    assert sub.retry_policy.minimum_backoff.seconds == 10
    assert sub.message_retention_duration.total_seconds() == 3600
    again = runner.invoke(app, wanted, env=env)
    assert again.exit_code == 0 and ": updated" not in again.stdout, again.stdout

    moved = [*base[:5], f"{unique_name}-other", *base[6:], "--update"]
    refused = runner.invoke(app, moved, env=env)
    print(f"init on another topic: {refused.stdout.strip().splitlines()[-1]}")
    assert refused.exit_code == 1, refused.output
    assert "topic cannot be changed on an existing subscription" in refused.stdout
    assert f"gcloud pubsub subscriptions delete projects/{PROJECT}/subscriptions/" in refused.stdout
    assert "cannot change" in one_line(refused.stderr)


def test_streaming_pull_on_a_missing_subscription_backs_off_and_is_not_ready(
    pubsub_channels: ChannelFactory, unique_name: str
) -> None:
    """Before: the stream was reopened every 0.5 s forever with the same warning."""
    source = PubSubSource(
        PubSubSourceSettings(
            project=PROJECT,
            subscription=f"{unique_name}-nope",
            mode="streaming",
            max_backoff_seconds=1.0,
        ),
        channel_factory=pubsub_channels,
    )
    started = time.monotonic()
    try:
        while source.health.errors["not_found"] < 4:
            assert time.monotonic() - started < 20, source.health.errors
            assert source.poll(10, 0.2) == []
        took = time.monotonic() - started
        ready, status = source.ready(), source.status()
    finally:
        source.close()
    print(f"streaming, missing subscription: 4 failed opens in {took:.1f} s; ready {ready}")
    assert not ready and "does not exist" in status, status
    assert took >= 0.5 + 1.0 + 1.0, f"4 attempts in {took:.1f} s: no backoff"


def test_run_without_emulator_or_credentials_is_one_line_and_exit_2(tmp_path: Path) -> None:
    config = write_config(
        tmp_path / "w.yaml",
        {"project": PROJECT, "subscription": "s", "dead_letter_topic": "d"},
        tmp_path / "sink.duckdb",
    )
    env = {
        **os.environ,
        "PUBSUB_EMULATOR_HOST": "",
        "GOOGLE_APPLICATION_CREDENTIALS": str(tmp_path / "missing.json"),
    }
    result = subprocess.run(
        [LOOKOUT, "run", "--config", str(config)], env=env, capture_output=True, timeout=60
    )
    line = one_line(result.stderr.decode())
    assert result.returncode == 2, line
    assert line.startswith("lookout run: no Google credentials for Pub/Sub"), line
    assert "Workload Identity" in line and "PUBSUB_EMULATOR_HOST" in line, line
