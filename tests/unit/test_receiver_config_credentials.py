"""Receiver credentials and URLs as a user meets them in `lookout config check` and at start:

- Alertmanager could not take its URL from a secret (`url: {env: AM_URL}` was "not a valid
  string") and had no basic-auth or bearer-token key, so users wrote
  `http://user:PASSWORD@host`, which `config check` printed whole. The printed URL now reads
  `http://user:***@host`; `basic_auth` / `bearer_token` (secret references) exist, one at a
  time;
- a webhook URL without a scheme (`hooks.slack.com/...`) started fine and failed at the first
  page; it is now refused at start in one line naming the receiver and key, never the value;
- a failed POST said `ConnectError: ConnectError`: the reason (refused, DNS, TLS) is kept,
  with any URL in it cut to `scheme://host/…`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry
from typer.testing import CliRunner

from alerts.notifiers import NotifierError, RetryableNotifierError, TerminalNotifierError
from alerts.receivers import build_dispatcher
from alerts.receivers.secrets import ReceiverURLError, SecretError
from alerts.receivers.senders import post_json
from schemas.alert_config import AlertingConfig, redacted_url
from worker.cli.app import app

PASSWORD = "hunter2PASSWORD"
SLACK_PATH = "/services/T0/B0/SECRET3"


def config_check(tmp_path: Path, text: str, env: dict[str, str] | None = None) -> Any:
    path = tmp_path / "lookout.yaml"
    path.write_text(text)
    result = CliRunner().invoke(
        app, ["config", "check", str(path)], env={"COLUMNS": "200", **(env or {})}
    )
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result


def receivers(*lines: str) -> str:
    return "alerting:\n  receivers:\n" + "".join(f"    - {line}\n" for line in lines)


def test_config_check_prints_a_receiver_url_without_its_password(tmp_path: Path) -> None:
    text = receivers(
        f"{{name: am, kind: alertmanager, url: 'http://lookout:{PASSWORD}@am.example:9093'}}",
        "{name: pd, kind: pagerduty, routing_key: {env: K}, "
        f"url: 'https://proxy.example/v2/enqueue?token={PASSWORD}'}}",
    )
    result = config_check(tmp_path, text, env={"K": "key"})
    assert result.exit_code == 0, result.stderr
    assert "url: http://lookout:***@am.example:9093\n" in result.stdout
    assert "url: https://proxy.example/v2/enqueue?token=***\n" in result.stdout
    assert PASSWORD not in result.stdout + result.stderr


def test_redacted_url_keeps_what_says_where() -> None:
    assert redacted_url("http://u:p@h:1/a?x=1&y=2") == "http://u:***@h:1/a?x=***&y=***"
    assert redacted_url("https://tok@h/") == "https://***@h/"
    assert redacted_url("http://am:9093") == "http://am:9093"


def test_alertmanager_takes_its_url_and_credentials_from_secrets(tmp_path: Path) -> None:
    text = receivers(
        "{name: am, kind: alertmanager, url: {env: AM_URL}, "
        "basic_auth: {username: lookout, password: {env: AM_PASSWORD}}}",
        "{name: am2, kind: alertmanager, url: 'http://am:9093', "
        "bearer_token: {file: /var/run/secrets/am-token}}",
        "{name: hook, kind: webhook, url: {env: HOOK_URL}, bearer_token: {env: HOOK_TOKEN}}",
    )
    env = {"AM_URL": "http://am.example:9093", "AM_PASSWORD": PASSWORD, "HOOK_URL": "http://h/"}
    result = config_check(tmp_path, text, env=env)
    assert result.exit_code == 0, result.stderr
    assert "env: AM_URL" in result.stdout and "env: AM_PASSWORD" in result.stdout
    assert PASSWORD not in result.stdout + result.stderr
    assert [line for line in result.stderr.splitlines() if line.startswith("warning:")] == [
        "warning: receiver 'am2' bearer_token (file /var/run/secrets/am-token): cannot read "
        "the file (No such file or directory) (`lookout run` will not start without it)",
        "warning: receiver 'hook' bearer_token (env HOOK_TOKEN): the variable is not set or "
        "empty (`lookout run` will not start without it)",
    ]


def test_a_basic_auth_password_that_cannot_be_read_is_named_by_its_key(tmp_path: Path) -> None:
    text = receivers(
        "{name: am, kind: alertmanager, url: 'http://am:9093', "
        "basic_auth: {username: lookout, password: {env: AM_PASSWORD}}}"
    )
    result = config_check(tmp_path, text)
    assert result.exit_code == 0
    assert result.stderr.splitlines() == [
        "warning: receiver 'am' basic_auth.password (env AM_PASSWORD): the variable is not set "
        "or empty (`lookout run` will not start without it)"
    ]


@pytest.mark.parametrize(
    ("receiver", "message"),
    [
        (
            "{name: am, kind: alertmanager, url: 'http://am:9093', bearer_token: {env: T}, "
            "basic_auth: {username: u, password: {env: P}}}",
            "receiver 'am': give basic_auth or bearer_token, not both (each is the "
            "Authorization header)",
        ),
        (
            "{name: hook, kind: webhook, url: {env: U}, bearer_token: {env: T}, "
            "basic_auth: {username: u, password: {env: P}}}",
            "receiver 'hook': give basic_auth or bearer_token, not both (each is the "
            "Authorization header)",
        ),
        (
            f"{{name: am, kind: alertmanager, url: 'http://u:{PASSWORD}@am:9093', "
            "bearer_token: {env: T}}",
            "receiver 'am': url has user:password@ and basic_auth or bearer_token is set too; "
            "keep the credentials in basic_auth or bearer_token only",
        ),
    ],
)
def test_credentials_given_twice_are_one_line(tmp_path: Path, receiver: str, message: str) -> None:
    result = config_check(tmp_path, receivers(receiver))
    assert (result.exit_code, result.stdout) == (2, "")
    assert result.stderr.splitlines() == [
        f"{tmp_path / 'lookout.yaml'}: alerting.receivers[0]: {message}"
    ]
    assert PASSWORD not in result.stderr


def test_a_written_url_without_a_scheme_is_refused_without_echoing_it(tmp_path: Path) -> None:
    result = config_check(
        tmp_path, receivers(f"{{name: am, kind: alertmanager, url: 'am.example{SLACK_PATH}'}}")
    )
    assert (result.exit_code, result.stdout) == (2, "")
    assert result.stderr.splitlines() == [
        f"{tmp_path / 'lookout.yaml'}: alerting.receivers[0] (am).url: not an http:// or https:// "
        "URL (the value is not shown)"
    ]


def test_config_check_warns_about_a_secret_url_that_cannot_be_posted_to(tmp_path: Path) -> None:
    text = receivers("{name: s, kind: slack, webhook_url: {env: SLACK_URL}}")
    result = config_check(tmp_path, text, env={"SLACK_URL": "hooks.slack.com" + SLACK_PATH})
    assert result.exit_code == 0
    assert result.stderr.splitlines() == [
        "warning: receiver 's' webhook_url (env SLACK_URL): not an http:// or https:// URL "
        "(the value is not shown) (`lookout run` will not start without it)"
    ]
    assert "SECRET3" not in result.stdout + result.stderr


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("hooks.slack.com" + SLACK_PATH, "not an http:// or https:// URL"),
        ("ftp://hooks.slack.com" + SLACK_PATH, "not an http:// or https:// URL"),
        ("https://" + SLACK_PATH, "an http(s) URL without a host"),
        ("https://hooks.slack.com:port" + SLACK_PATH, "not a valid URL"),
    ],
)
def test_a_secret_url_that_cannot_be_posted_to_refuses_the_start(
    tmp_path: Path, value: str, reason: str
) -> None:
    config = AlertingConfig.model_validate(
        {"receivers": [{"name": "s", "kind": "slack", "webhook_url": {"env": "SLACK_URL"}}]}
    )
    with pytest.raises(ReceiverURLError) as caught:
        build_dispatcher(
            config,
            outbox_path=tmp_path / "outbox.sqlite",
            registry=CollectorRegistry(),
            environ={"SLACK_URL": value},
        )
    assert str(caught.value) == (
        f"receiver 's' webhook_url (env SLACK_URL): {reason} (the value is not shown)"
    )


class _Failing:
    """An httpx client whose every POST fails with `error`."""

    def __init__(self, error: Exception) -> None:
        self.error = error

    def post(self, *_: Any, **__: Any) -> httpx.Response:
        raise self.error


@pytest.mark.parametrize(
    ("error", "kind", "line"),
    [
        (
            httpx.ConnectError("[Errno -2] Name or service not known"),
            RetryableNotifierError,
            # the host it could not reach, which the message did not name
            "receiver 's': POST failed: ConnectError: [Errno -2] Name or service not known "
            "(hooks.slack.com)",
        ),
        (
            httpx.ConnectError(
                "[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed (_ssl.c:1006)"
            ),
            RetryableNotifierError,
            "receiver 's': POST failed: ConnectError: [SSL: CERTIFICATE_VERIFY_FAILED] "
            "certificate verify failed (_ssl.c:1006) (hooks.slack.com)",
        ),
        (
            httpx.UnsupportedProtocol(f"Request URL 'hooks.slack.com{SLACK_PATH}' has no scheme"),
            TerminalNotifierError,
            # the redaction cuts a URL at the next space, its closing quote too
            "receiver 's': POST failed: UnsupportedProtocol: Request URL "
            "'https://hooks.slack.com/… has no scheme",
        ),
        (
            httpx.ReadTimeout(f"timed out reading https://hooks.slack.com{SLACK_PATH}"),
            RetryableNotifierError,
            "receiver 's': POST failed: ReadTimeout: timed out reading https://hooks.slack.com/…",
        ),
    ],
)
def test_a_failed_post_keeps_its_reason_and_cuts_the_url(
    error: Exception, kind: type[NotifierError], line: str
) -> None:
    client: Any = _Failing(error)
    with pytest.raises(NotifierError) as caught:
        post_json(client, "s", "https://hooks.slack.com" + SLACK_PATH, {})
    assert type(caught.value) is kind
    assert str(caught.value) == line
    assert "SECRET3" not in str(caught.value)


def test_a_bearer_token_a_header_cannot_carry_refuses_the_start(tmp_path: Path) -> None:
    """httpx refused the header at the first page, quoting it in its error."""
    config = AlertingConfig.model_validate(
        {
            "receivers": [
                {
                    "name": "am",
                    "kind": "alertmanager",
                    "url": "http://am:9093",
                    "bearer_token": {"env": "AM_TOKEN"},
                }
            ]
        }
    )
    with pytest.raises(SecretError) as caught:
        build_dispatcher(
            config,
            outbox_path=tmp_path / "outbox.sqlite",
            registry=CollectorRegistry(),
            environ={"AM_TOKEN": "first-line\nSECOND-LINE"},
        )
    assert str(caught.value) == (
        "receiver 'am' bearer_token (env AM_TOKEN): holds a space, line break or non-ASCII "
        "character, which an HTTP header cannot carry (the value is not shown)"
    )


def test_a_failed_post_never_quotes_its_authorization_header() -> None:
    client: Any = _Failing(httpx.LocalProtocolError(f"Illegal header value b'Bearer {PASSWORD}'"))
    with pytest.raises(NotifierError) as caught:
        post_json(client, "am", "http://am:9093/api/v2/alerts", [], headers=_bearer())
    assert str(caught.value) == (
        "receiver 'am': POST failed: LocalProtocolError: Illegal header value b'Bearer ***' (am)"
    )


def _bearer() -> dict[str, str]:
    return {"Authorization": f"Bearer {PASSWORD}"}


class _Answering:
    """An httpx client whose every POST is answered with `status` and `text`."""

    def __init__(self, status: int, text: str) -> None:
        self.status, self.text = status, text

    def post(self, url: str, **_: Any) -> httpx.Response:
        return httpx.Response(self.status, text=self.text, request=httpx.Request("POST", url))


def test_a_refusal_says_what_the_receiver_said() -> None:
    """`HTTP 400, expected 2xx` alone did not tell a wrong routing key from a broken receiver
    (an SRE's trial): PagerDuty says which in its reply."""
    reply = (
        '{"status":"invalid event","message":"Event object is invalid",'
        '"errors":["Invalid routing key"]}'
    )
    client: Any = _Answering(400, reply + "\n")
    with pytest.raises(TerminalNotifierError) as caught:
        post_json(client, "pd", "https://events.pagerduty.com/v2/enqueue", {"routing_key": "k"})
    assert str(caught.value) == f"receiver 'pd': POST failed: HTTP 400, expected 2xx: {reply}"


def test_a_refusal_that_echoes_the_request_shows_none_of_its_secrets() -> None:
    key = "R0UTING-KEY-0123456789"
    client: Any = _Answering(400, f'bad request: {{"routing_key": "{key}"}} ' + "x" * 500)
    with pytest.raises(TerminalNotifierError) as caught:
        post_json(
            client,
            "pd",
            f"https://pd.example/v2/enqueue?token={PASSWORD}",
            {"routing_key": key},
            headers=_bearer(),
        )
    line = str(caught.value)
    assert key not in line and PASSWORD not in line
    assert '"routing_key": "***"' in line
    assert len(line) < 300 and line.endswith("…")


@pytest.mark.parametrize(
    ("reply", "body", "url", "headers"),
    [
        # a bearer token echoed without its scheme word
        (
            "invalid token abcdEFGH1234xyz",
            {},
            "https://am.example/api",
            {"Authorization": "Bearer abcdEFGH1234xyz"},
        ),
        # the path of a URL with a query (the path alone was never masked)
        (
            '{"path":"/hooks/S3CR3TTOKEN99"}',
            {},
            "https://ops.example/hooks/S3CR3TTOKEN99?source=x",
            {},
        ),
        # a body string inside the URL's path no longer hides the rest of the path
        (
            '{"path":"/hooks/lookout-prod/S3CR3TTOKEN99"}',
            {"receiver": "lookout-prod"},
            "https://ops.example/hooks/lookout-prod/S3CR3TTOKEN99",
            {},
        ),
        # a Slack webhook's last segment alone
        (
            "unknown webhook XXXXXXXXXXXXXXXXXXXX",
            {},
            "https://hooks.slack.com/services/T0001/B0001/XXXXXXXXXXXXXXXXXXXX",
            {},
        ),
        # percent-decoded
        ("no hook /hooks/S3CR+T/TOKEN", {}, "https://ops.example/hooks/S3CR%2BT%2FTOKEN", {}),
    ],
)
def test_a_reply_echoing_any_part_of_the_request_shows_no_secret(
    reply: str, body: Any, url: str, headers: dict[str, str]
) -> None:
    """Found by a reviewer: each of these reached the error line in full."""
    client: Any = _Answering(404, reply)
    with pytest.raises(TerminalNotifierError) as caught:
        post_json(client, "r", url, body, headers=headers)
    line = str(caught.value)
    for secret in ("abcdEFGH1234xyz", "S3CR3TTOKEN99", "XXXXXXXXXXXXXXXXXXXX", "S3CR+T/TOKEN"):
        assert secret not in line, line
    assert "***" in line


def test_a_reply_with_terminal_escapes_shows_them_as_question_marks() -> None:
    key = "R0UTING-KEY-0123456789"
    client: Any = _Answering(400, "x" * 190 + key + "\x1b[31m")
    with pytest.raises(TerminalNotifierError) as caught:
        post_json(client, "pd", "https://pd.example/v2/enqueue", {"routing_key": key})
    line = str(caught.value)
    assert "R0UTING" not in line and "\x1b" not in line
