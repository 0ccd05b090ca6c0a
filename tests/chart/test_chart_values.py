"""Bad values are refused at `helm install`, with a message that names the value, before
anything reaches the cluster (values.schema.json, and the chart's own checks across values)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.chart.conftest import render_error

PUBSUB = {"kind": "pubsub", "pubsub": {"project": "p", "subscription": "s"}}
BIGQUERY = {"kind": "bigquery", "bigquery": {"project": "p", "dataset": "d"}}
BAD_VALUES: list[tuple[str, dict[str, Any], list[str]]] = [
    ("negative replicas", {"ingest": {"replicas": -1}}, ["/ingest/replicas", "minimum"]),
    ("unknown key", {"replicaCount": 3}, ["replicaCount", "not allowed"]),
    (
        "unknown nested key",
        {"sink": {"kind": "duckdb", "duckdb": {"pth": "x"}}},
        ["/sink/duckdb", "pth"],
    ),
    (
        "receiver without its secret reference",
        {"receivers": [{"name": "team-slack", "kind": "slack"}]},
        ["/receivers/0", "secretRef"],
    ),
    (
        "secret written inline",
        {"receivers": [{"name": "s", "kind": "slack", "secretRef": "https://hooks.example/x"}]},
        ["/receivers/0/secretRef", "want object"],
    ),
    (
        "webhook URL inline",
        {
            "receivers": [
                {
                    "name": "hook",
                    "kind": "webhook",
                    "url": "https://hooks.example/x",
                    "secretRef": {"name": "s", "key": "k"},
                }
            ]
        },
        ["hook (webhook)", "never inline"],
    ),
    (
        "unknown receiver kind",
        {"receivers": [{"name": "x", "kind": "email", "secretRef": {"name": "s", "key": "k"}}]},
        ["/receivers/0/kind"],
    ),
    (
        "receiver name used twice",
        {
            "receivers": [
                {"name": "am", "kind": "alertmanager", "url": "http://a:9093"},
                {"name": "am", "kind": "alertmanager", "url": "http://b:9093"},
            ]
        },
        ['"am" is used twice'],
    ),
    ("pubsub without a subscription", {"source": {"kind": "pubsub"}}, ["/source/pubsub/project"]),
    (
        "split mode on a DuckDB file",
        {"mode": "split", "source": PUBSUB},
        ["mode=split needs sink.kind=bigquery"],
    ),
    ("KEDA without split mode", {"keda": {"enabled": True}}, ["keda.enabled", "mode=split"]),
    (
        "source set through config",
        {"config": {"source": {"kind": "file"}}},
        ["config.source", "source:"],
    ),
    (
        "grace period shorter than the flush",
        {"terminationGracePeriodSeconds": 10, "shutdownMarginSeconds": 10},
        ["terminationGracePeriodSeconds (10)"],
    ),
    (
        "grace period shorter than a final BigQuery checkpoint",
        {"sink": BIGQUERY, "terminationGracePeriodSeconds": 30},
        ["terminationGracePeriodSeconds (30)", "5 + 8 x 30, rounded up: 245", "at least 245"],
    ),
    (
        "stall_seconds the worker would refuse",
        {
            "sink": {
                **BIGQUERY,
                "bigquery": {"project": "p", "dataset": "d", "writeTimeoutSeconds": 120},
            }
        },
        ["config.metrics.stall_seconds (600)", "5 + 8 x 120 = 965"],
    ),
    (
        "receivers set through config (a ConfigMap)",
        {
            "config": {
                "alerting": {
                    "receivers": [
                        {"name": "s", "kind": "slack", "webhook_url": "https://hooks.example/x"}
                    ]
                }
            }
        },
        ["config.alerting.receivers", "receivers:"],
    ),
    (
        "Workload Identity on an account the chart does not create",
        {
            "serviceAccount": {
                "create": False,
                "name": "mine",
                "gcpServiceAccount": "l@p.iam.gserviceaccount.com",
            }
        },
        ["serviceAccount.create is false", '"mine"', "iam.gke.io/gcp-service-account"],
    ),
    (
        "a margin that leaves the worker no time (the default grace is 30 s on DuckDB)",
        {"shutdownMarginSeconds": 30},
        ["terminationGracePeriodSeconds (30) must exceed shutdownMarginSeconds (30)"],
    ),
    (
        "a fractional write timeout the liveness limit does not cover",
        {
            "sink": {
                **BIGQUERY,
                "bigquery": {"project": "p", "dataset": "d", "writeTimeoutSeconds": 74.9},
            }
        },
        ["5 + 8 x 74.9 = 604.2"],
    ),
    (
        "an extra volume named like the chart's own",
        {"extraVolumes": [{"name": "data", "emptyDir": {}}]},
        ['extraVolumes: the name "data" is the chart\'s own volume'],
    ),
    ("root user", {"podSecurityContext": {"runAsNonRoot": False}}, ["runAsNonRoot"]),
    (
        "malformed Workload Identity account",
        {"serviceAccount": {"gcpServiceAccount": "lookout"}},
        ["/serviceAccount/gcpServiceAccount"],
    ),
]


@pytest.mark.parametrize(
    ("values", "expected"),
    [pytest.param(values, expected, id=name) for name, values, expected in BAD_VALUES],
)
def test_bad_values_are_refused_naming_the_value(
    values: dict[str, Any], expected: list[str]
) -> None:
    message = render_error(values)
    for part in expected:
        assert part in message, message
