"""Receiver credentials and failures on the wire, against loopback HTTP servers:

- `basic_auth` / `bearer_token` (secret references) reach Alertmanager and a webhook as the
  `Authorization` header, and Alertmanager's URL may come from a secret: before, the only way
  was `http://user:PASSWORD@host` written in the config;
- a POST to a closed port says `Connection refused` (it said `ConnectError: ConnectError`,
  the same as a DNS or TLS failure), without the secret path of the URL;
- `lookout replay` with a Slack webhook URL without a scheme refuses to start in one line
  naming the receiver and key (it started, and failed at the first page).
"""

from __future__ import annotations

import base64
import socket
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from alerts.notifiers import RetryableNotifierError
from alerts.receivers.build import build_sender
from alerts.receivers.senders import Notification
from schemas.alert_config import AlertingConfig
from schemas.detection import Alert
from tests.e2e.conftest import assert_no_traceback, lookout
from tests.integration.receiver_stand_ins import StandIn, webhook_problems

PASSWORD = "am-proxy-PASSWORD"
TOKEN = "bearer-TOKEN-0123456789"
HMAC = "hmac-secret"
SLACK_PATH = "/services/T0/B0/SECRET3"


@pytest.fixture(scope="module")
def loopback() -> Iterator[StandIn]:
    """One server for the module (stopping one takes half a second)."""
    stand_in = StandIn(lambda got: [] if isinstance(got.body, list | dict) else ["not JSON"])
    yield stand_in.start()
    stand_in.stop()


@pytest.fixture
def server(loopback: StandIn) -> StandIn:
    with loopback._lock:
        loopback.requests.clear()
        loopback.problems.clear()
    return loopback


def alert() -> Alert:
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=3)
    return Alert(
        dedup_key="lookout:m:safety:c",
        status="firing",
        severity="critical",
        detector="safety",
        model="m",
        condition="c",
        window_start=start,
        window_end=start + timedelta(minutes=1),
        value=0.06,
        threshold=0.03,
        baseline=0.02,
        sample_size=500,
        summary="[FIRING] m safety: c",
    )


def send_one(receiver: Mapping[str, Any], environ: Mapping[str, str]) -> None:
    config = AlertingConfig.model_validate({"receivers": [receiver]}).receivers[0]
    sender = build_sender(config, environ)
    try:
        sender.send(Notification(config.name, "g", (alert(),)))
    finally:
        sender.close()


def test_alertmanager_gets_basic_auth_with_its_url_from_a_secret(server: StandIn) -> None:
    receiver = {
        "name": "am",
        "kind": "alertmanager",
        "url": {"env": "AM_URL"},
        "basic_auth": {"username": "lookout", "password": {"env": "AM_PASSWORD"}},
    }
    send_one(receiver, {"AM_URL": server.url, "AM_PASSWORD": PASSWORD})
    (got,) = server.accepted()
    assert got.path == "/api/v2/alerts"
    expected = base64.b64encode(f"lookout:{PASSWORD}".encode()).decode()
    assert got.headers["Authorization"] == f"Basic {expected}"
    assert got.body[0]["labels"]["dedup_key"] == "lookout:m:safety:c"


def test_alertmanager_gets_a_bearer_token_from_a_mounted_file(
    server: StandIn, tmp_path: Path
) -> None:
    (tmp_path / "token").write_text(TOKEN + "\n")
    receiver = {
        "name": "am",
        "kind": "alertmanager",
        "url": server.url,
        "bearer_token": {"file": str(tmp_path / "token")},
    }
    send_one(receiver, {})
    (got,) = server.accepted()
    assert got.headers["Authorization"] == f"Bearer {TOKEN}"


def test_a_webhook_gets_a_bearer_token_and_is_still_signed(server: StandIn) -> None:
    receiver = {
        "name": "hook",
        "kind": "webhook",
        "url": {"env": "HOOK_URL"},
        "hmac_secret": {"env": "HMAC"},
        "bearer_token": {"env": "HOOK_TOKEN"},
    }
    send_one(receiver, {"HOOK_URL": server.url + "/hook", "HMAC": HMAC, "HOOK_TOKEN": TOKEN})
    (got,) = server.accepted()
    assert got.headers["Authorization"] == f"Bearer {TOKEN}"
    assert webhook_problems(HMAC.encode())(got) == []  # the signature still matches the body


def test_a_refused_connection_says_so_without_the_secret_path() -> None:
    with socket.socket() as s:  # a loopback port nothing listens on
        s.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{s.getsockname()[1]}"
    receiver = {"name": "s", "kind": "slack", "webhook_url": {"env": "SLACK_URL"}}
    with pytest.raises(RetryableNotifierError) as caught:
        send_one(receiver, {"SLACK_URL": closed + SLACK_PATH})
    assert (
        str(caught.value)
        == "receiver 's': POST failed: ConnectError: [Errno 111] Connection refused (127.0.0.1)"
    )
    assert "SECRET3" not in str(caught.value)


def test_replay_refuses_a_webhook_url_without_a_scheme_in_one_line(tmp_path: Path) -> None:
    (tmp_path / "lookout.yaml").write_text(
        "alerting:\n"
        "  receivers: [{name: team-slack, kind: slack, webhook_url: {env: SLACK_URL}}]\n"
        "  routes: [{receivers: [team-slack]}]\n"
    )
    (tmp_path / "logs.ndjson").write_text("")
    result = lookout(
        *("replay", "logs.ndjson", "-c", "lookout.yaml", "--db", "r.duckdb"),
        cwd=tmp_path,
        env={"SLACK_URL": "hooks.slack.com" + SLACK_PATH},
    )
    assert result.returncode == 2, result.describe()
    assert result.stderr.splitlines() == [
        "lookout replay: receiver 'team-slack' webhook_url (env SLACK_URL): not an "
        "http:// or https:// URL (the value is not shown)"
    ]
    assert "SECRET3" not in result.stdout + result.stderr
    assert_no_traceback(result)
