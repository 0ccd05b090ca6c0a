"""Receiver credentials (basic auth, bearer tokens, a URL kept in a Secret) reach the pod the way
every receiver secret does: a secretKeyRef environment variable, named in the config as
`{env: NAME}`; values.yaml can only name a Secret and key, never hold the value; and no two
secrets can land in one variable (which would hand one receiver's secret to another)."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from alerts.receivers.secrets import URL_FIELDS, unreadable_secrets
from schemas.alert_config import SecretRef
from schemas.config import LookoutConfig
from tests.chart.conftest import container, render, render_error
from tests.chart.test_chart_config import config_maps, secret_env

CREDENTIALS = "lookout-receiver-credentials"
RECEIVERS: list[dict[str, Any]] = [
    {
        "name": "platform-am",
        "kind": "alertmanager",
        "url": "http://alertmanager.monitoring:9093",
        "basicAuth": {
            "username": "lookout",
            "passwordSecretRef": {"name": CREDENTIALS, "key": "am-password"},
        },
    },
    {
        "name": "proxied.am",
        "kind": "alertmanager",
        "urlSecretRef": {"name": CREDENTIALS, "key": "am-proxy-url"},
        "bearerTokenSecretRef": {"name": CREDENTIALS, "key": "am-proxy-token"},
        "egressPort": 8443,
    },
    {
        "name": "oncall",
        "kind": "pagerduty",
        "secretRef": {"name": "lookout-pagerduty", "key": "routing-key"},
        "urlSecretRef": {"name": CREDENTIALS, "key": "pagerduty-proxy-url"},
    },
    {
        "name": "audit-hook",
        "kind": "webhook",
        "secretRef": {"name": "lookout-webhook", "key": "url"},
        "hmacSecretRef": {"name": "lookout-webhook", "key": "hmac-secret"},
        "bearerTokenSecretRef": {"name": "lookout-webhook", "key": "token"},
    },
    {
        "name": "billing-hook",
        "kind": "webhook",
        "secretRef": {"name": "lookout-webhook", "key": "billing-url"},
        "basicAuth": {
            "username": "lookout-billing",
            "passwordSecretRef": {"name": "lookout-webhook", "key": "billing-password"},
        },
    },
]
VALUES: dict[str, Any] = {
    "receivers": RECEIVERS,
    "routes": [{"receivers": [r["name"] for r in RECEIVERS]}],
}
#: the pod's variable -> (Secret, key), for every secret those receivers read
EXPECTED_ENV = {
    "LOOKOUT_SECRET_PLATFORM_AM_BASIC_AUTH_PASSWORD": (CREDENTIALS, "am-password"),
    "LOOKOUT_SECRET_PROXIED_AM_URL": (CREDENTIALS, "am-proxy-url"),
    "LOOKOUT_SECRET_PROXIED_AM_BEARER_TOKEN": (CREDENTIALS, "am-proxy-token"),
    "LOOKOUT_SECRET_ONCALL_ROUTING_KEY": ("lookout-pagerduty", "routing-key"),
    "LOOKOUT_SECRET_ONCALL_URL": (CREDENTIALS, "pagerduty-proxy-url"),
    "LOOKOUT_SECRET_AUDIT_HOOK_URL": ("lookout-webhook", "url"),
    "LOOKOUT_SECRET_AUDIT_HOOK_HMAC_SECRET": ("lookout-webhook", "hmac-secret"),
    "LOOKOUT_SECRET_AUDIT_HOOK_BEARER_TOKEN": ("lookout-webhook", "token"),
    "LOOKOUT_SECRET_BILLING_HOOK_URL": ("lookout-webhook", "billing-url"),
    "LOOKOUT_SECRET_BILLING_HOOK_BASIC_AUTH_PASSWORD": ("lookout-webhook", "billing-password"),
}
#: the receivers as the rendered config must carry them: references, never values
EXPECTED_RECEIVERS = [
    {
        "name": "platform-am",
        "kind": "alertmanager",
        "url": "http://alertmanager.monitoring:9093",
        "basic_auth": {
            "username": "lookout",
            "password": {"env": "LOOKOUT_SECRET_PLATFORM_AM_BASIC_AUTH_PASSWORD"},
        },
    },
    {
        "name": "proxied.am",
        "kind": "alertmanager",
        "url": {"env": "LOOKOUT_SECRET_PROXIED_AM_URL"},
        "bearer_token": {"env": "LOOKOUT_SECRET_PROXIED_AM_BEARER_TOKEN"},
    },
    {
        "name": "oncall",
        "kind": "pagerduty",
        "routing_key": {"env": "LOOKOUT_SECRET_ONCALL_ROUTING_KEY"},
        "url": {"env": "LOOKOUT_SECRET_ONCALL_URL"},
    },
    {
        "name": "audit-hook",
        "kind": "webhook",
        "url": {"env": "LOOKOUT_SECRET_AUDIT_HOOK_URL"},
        "hmac_secret": {"env": "LOOKOUT_SECRET_AUDIT_HOOK_HMAC_SECRET"},
        "bearer_token": {"env": "LOOKOUT_SECRET_AUDIT_HOOK_BEARER_TOKEN"},
    },
    {
        "name": "billing-hook",
        "kind": "webhook",
        "url": {"env": "LOOKOUT_SECRET_BILLING_HOOK_URL"},
        "basic_auth": {
            "username": "lookout-billing",
            "password": {"env": "LOOKOUT_SECRET_BILLING_HOOK_BASIC_AUTH_PASSWORD"},
        },
    },
]
SPLIT = {
    "mode": "split",
    "source": {"kind": "pubsub", "pubsub": {"project": "p", "subscription": "s"}},
    "sink": {"kind": "bigquery", "bigquery": {"project": "p", "dataset": "d"}},
}


def _config(values: dict[str, Any], role: str) -> dict[str, Any]:
    loaded = yaml.safe_load(config_maps(render(values))[f"lookout-{role}"])
    assert isinstance(loaded, dict)
    return loaded


def test_credentials_reach_the_pod_as_secret_key_refs() -> None:
    deployment = render(VALUES).one("StatefulSet", "lookout-all")
    assert secret_env(deployment) == EXPECTED_ENV
    # by environment variable only: no Secret is mounted, nothing else changes on the pod
    volumes = deployment["spec"]["template"]["spec"]["volumes"]
    assert [v["name"] for v in volumes] == ["config", "data", "tmp"]
    assert not any("secret" in v for v in volumes)
    mounts = [m["mountPath"] for m in container(deployment)["volumeMounts"]]
    assert mounts == ["/etc/lookout", "/var/lib/lookout", "/tmp"]


def test_rendered_config_names_the_variables_and_lookout_accepts_it() -> None:
    config = _config(VALUES, "all")
    assert config["alerting"]["receivers"] == EXPECTED_RECEIVERS
    # the app's own model: every secret field a SecretRef to a variable the pod has, from
    # the Secret and key values.yaml gave for that receiver and field
    parsed = LookoutConfig.model_validate(config)
    read: dict[tuple[str, str], str] = {}
    for receiver in parsed.alerting.receivers:
        for field, ref in receiver.secret_refs():
            assert isinstance(ref, SecretRef)
            assert ref.file is None
            assert ref.env is not None
            read[(receiver.name, field)] = ref.env
    assert read == {
        ("platform-am", "basic_auth.password"): "LOOKOUT_SECRET_PLATFORM_AM_BASIC_AUTH_PASSWORD",
        ("proxied.am", "url"): "LOOKOUT_SECRET_PROXIED_AM_URL",
        ("proxied.am", "bearer_token"): "LOOKOUT_SECRET_PROXIED_AM_BEARER_TOKEN",
        ("oncall", "routing_key"): "LOOKOUT_SECRET_ONCALL_ROUTING_KEY",
        ("oncall", "url"): "LOOKOUT_SECRET_ONCALL_URL",
        ("audit-hook", "url"): "LOOKOUT_SECRET_AUDIT_HOOK_URL",
        ("audit-hook", "hmac_secret"): "LOOKOUT_SECRET_AUDIT_HOOK_HMAC_SECRET",
        ("audit-hook", "bearer_token"): "LOOKOUT_SECRET_AUDIT_HOOK_BEARER_TOKEN",
        ("billing-hook", "url"): "LOOKOUT_SECRET_BILLING_HOOK_URL",
        ("billing-hook", "basic_auth.password"): (
            "LOOKOUT_SECRET_BILLING_HOOK_BASIC_AUTH_PASSWORD"
        ),
    }
    # with the pod's variables set, Lookout reads every secret (URLs must be URLs)
    environ = {
        env: "https://proxy.example:8443/" if field in URL_FIELDS else f"stand-in-{env}"
        for (_, field), env in read.items()
    }
    assert set(environ) == set(EXPECTED_ENV)
    assert unreadable_secrets(parsed.alerting.receivers, environ) == []


def test_split_mode_gives_credentials_to_the_evaluator_only() -> None:
    rendered = render({**VALUES, **SPLIT})
    assert secret_env(rendered.one("StatefulSet", "lookout-evaluate")) == EXPECTED_ENV
    assert secret_env(rendered.one("Deployment", "lookout-ingest")) == {}
    assert _config({**VALUES, **SPLIT}, "evaluate")["alerting"]["receivers"] == (EXPECTED_RECEIVERS)
    assert "alerting" not in _config({**VALUES, **SPLIT}, "ingest")


def test_network_policy_opens_the_port_given_for_a_url_kept_secret() -> None:
    (policy,) = render(VALUES).of_kind("NetworkPolicy")
    ports = {p["port"] for rule in policy["spec"]["egress"] for p in rule.get("ports", [])}
    # 9093 from platform-am's URL; 8443 given for proxied.am, whose URL the chart cannot see
    assert {9093, 8443} <= ports


def test_notes_name_the_secret_and_key_of_each_credential() -> None:
    notes = render(VALUES).notes
    assert 'platform-am (alertmanager, basic auth as "lookout")' in notes
    assert "proxied.am (alertmanager, bearer token)" in notes
    for line in (
        f"basic_auth.password from Secret {CREDENTIALS}, key am-password",
        f"url from Secret {CREDENTIALS}, key am-proxy-url",
        "bearer_token from Secret lookout-webhook, key token",
        f"url from Secret {CREDENTIALS}, key pagerduty-proxy-url",
    ):
        assert line in notes
    assert "CreateContainerConfigError" in notes


def _ref(key: str) -> dict[str, str]:
    return {"name": "s", "key": key}


def _am(**extra: Any) -> dict[str, Any]:
    return {"name": "am", "kind": "alertmanager", "url": "http://am:9093", **extra}


def _hook(**extra: Any) -> dict[str, Any]:
    return {"name": "hook", "kind": "webhook", "secretRef": _ref("url"), **extra}


REFUSED: list[tuple[str, list[dict[str, Any]], list[str]]] = [
    (
        "bearer token written inline",
        [_am(bearerTokenSecretRef="eyJhbGciOi-literal-token")],
        ["/receivers/0/bearerTokenSecretRef", "want object"],
    ),
    (
        "basic-auth password written inline",
        [_hook(basicAuth={"username": "u", "password": "hunter2"})],
        ["/receivers/0/basicAuth", "'password' not allowed"],
    ),
    (
        "basic-auth password reference given as a string",
        [_am(basicAuth={"username": "u", "passwordSecretRef": "hunter2"})],
        ["/receivers/0/basicAuth/passwordSecretRef", "want object"],
    ),
    (
        "URL secret given as a string",
        [{"name": "am", "kind": "alertmanager", "urlSecretRef": "http://u:p@am:9093"}],
        ["/receivers/0/urlSecretRef", "want object"],
    ),
    (
        "basic-auth username with a colon",
        [_am(basicAuth={"username": "u:p", "passwordSecretRef": _ref("p")})],
        ["/receivers/0/basicAuth/username"],
    ),
    (
        "alertmanager with neither url nor urlSecretRef",
        [{"name": "am", "kind": "alertmanager"}],
        ["missing property 'urlSecretRef'"],
    ),
    (
        "bearer token through settings",
        [_hook(settings={"bearer_token": "eyJhbGciOi-literal-token"})],
        ["hook (webhook): settings.bearer_token", "bearerTokenSecretRef"],
    ),
    (
        "basic auth through settings",
        [_am(settings={"basic_auth": {"username": "u", "password": "hunter2"}})],
        ["am (alertmanager): settings.basic_auth", "basicAuth"],
    ),
    (
        "password in an alertmanager url",
        [_am(url="http://lookout:hunter2@am:9093")],
        ["am (alertmanager)", "user:password@", "basicAuth"],
    ),
    (
        "password in a pagerduty settings.url",
        [
            {
                "name": "pd",
                "kind": "pagerduty",
                "secretRef": _ref("routing-key"),
                "settings": {"url": "https://lookout:hunter2@proxy.example/v2/enqueue"},
            }
        ],
        ["pd (pagerduty)", "user:password@", "urlSecretRef"],
    ),
    (
        "basic auth on slack",
        [
            {
                "name": "team-slack",
                "kind": "slack",
                "secretRef": _ref("webhook-url"),
                "basicAuth": {"username": "u", "passwordSecretRef": _ref("p")},
            }
        ],
        ["team-slack (slack)", "alertmanager and webhook"],
    ),
    (
        "basic auth and a bearer token together",
        [
            _hook(
                basicAuth={"username": "u", "passwordSecretRef": _ref("p")},
                bearerTokenSecretRef=_ref("t"),
            )
        ],
        ["hook (webhook)", "basicAuth or bearerTokenSecretRef, not both"],
    ),
    (
        "urlSecretRef on a webhook",
        [_hook(urlSecretRef=_ref("url2"))],
        ["hook (webhook) has no urlSecretRef"],
    ),
    (
        "alertmanager url and urlSecretRef together",
        [_am(urlSecretRef=_ref("url"))],
        ["am (alertmanager): give url or urlSecretRef, not both"],
    ),
    (
        "alertmanager URL in a Secret without the port to open",
        [{"name": "am", "kind": "alertmanager", "urlSecretRef": _ref("url")}],
        ["am (alertmanager)", "set egressPort"],
    ),
]


@pytest.mark.parametrize(
    ("receivers", "expected"),
    [pytest.param(receivers, expected, id=name) for name, receivers, expected in REFUSED],
)
def test_credentials_only_by_secret_reference(
    receivers: list[dict[str, Any]], expected: list[str]
) -> None:
    message = render_error({"receivers": receivers})
    for part in expected:
        assert part in message, message
    # the refusal never repeats a secret
    assert "hunter2" not in message
    assert "literal-token" not in message


def test_url_kept_secret_needs_no_port_without_a_network_policy() -> None:
    receiver = {"name": "am", "kind": "alertmanager", "urlSecretRef": _ref("url")}
    values = {"receivers": [receiver], "networkPolicy": {"enabled": False}}
    config = _config(values, "all")
    assert config["alerting"]["receivers"] == [
        {"name": "am", "kind": "alertmanager", "url": {"env": "LOOKOUT_SECRET_AM_URL"}}
    ]


def _slack(name: str) -> dict[str, Any]:
    return {"name": name, "kind": "slack", "secretRef": {"name": "lookout-slack", "key": name}}


COLLISIONS: list[tuple[str, dict[str, Any], list[str]]] = [
    (
        "dash and underscore",
        {"receivers": [_slack("team-slack"), _slack("team_slack")]},
        ["team-slack webhook_url and team_slack webhook_url", "TEAM_SLACK_WEBHOOK_URL"],
    ),
    (
        "case",
        {"receivers": [_slack("Team.Slack"), _slack("team-slack")]},
        ["Team.Slack webhook_url and team-slack webhook_url", "rename one"],
    ),
    (
        "a receiver's name ending in another's field",
        {
            "receivers": [
                _slack("a"),
                {"name": "a-webhook", "kind": "webhook", "secretRef": _ref("url")},
            ]
        },
        ["a webhook_url and a-webhook url", "LOOKOUT_SECRET_A_WEBHOOK_URL"],
    ),
    (
        "a slack webhook and an alertmanager URL kept secret",
        {
            "receivers": [
                _slack("pager"),
                {
                    "name": "pager_webhook",
                    "kind": "alertmanager",
                    "urlSecretRef": _ref("url"),
                    "egressPort": 9093,
                },
            ]
        },
        ["pager webhook_url and pager_webhook url", "LOOKOUT_SECRET_PAGER_WEBHOOK_URL"],
    ),
    (
        "extraEnv replacing a receiver's secret",
        {
            "receivers": [_slack("team-slack")],
            "extraEnv": [{"name": "LOOKOUT_SECRET_TEAM_SLACK_WEBHOOK_URL", "value": "x"}],
        },
        ["extraEnv: LOOKOUT_SECRET_TEAM_SLACK_WEBHOOK_URL", "team-slack webhook_url"],
    ),
]


@pytest.mark.parametrize(
    ("values", "expected"),
    [pytest.param(values, expected, id=name) for name, values, expected in COLLISIONS],
)
def test_two_secrets_never_share_a_variable(values: dict[str, Any], expected: list[str]) -> None:
    """`team-slack` and `team_slack` both map to LOOKOUT_SECRET_TEAM_SLACK_WEBHOOK_URL: the
    pod would get the variable twice (Kubernetes keeps the last) and both receivers would
    post to one webhook. The chart refuses, naming both."""
    message = render_error(values)
    for part in expected:
        assert part in message, message
