"""Receivers from config: resolve each secret once, give each receiver its own HTTP client.

Called by the CLI when it builds a pipeline. A missing secret is a `SecretError` naming the
receiver and where the secret should be (never its value), raised before anything runs.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Mapping
from pathlib import Path

from prometheus_client import CollectorRegistry

from alerts.receivers.dispatcher import Dispatcher
from alerts.receivers.outbox import Outbox
from alerts.receivers.secrets import resolve_secret
from alerts.receivers.senders import (
    AlertmanagerSender,
    PagerDutySender,
    Sender,
    SlackSender,
    WebhookSender,
)
from alerts.routing import Router
from schemas.alert_config import (
    AlertingConfig,
    AlertmanagerReceiver,
    PagerDutyReceiver,
    ReceiverConfig,
    SlackReceiver,
    WebhookReceiver,
)


def quiet_http_logs() -> None:
    """httpx logs every request URL at INFO; a Slack webhook's URL *is* its secret."""
    for name in ("httpx", "httpcore"):
        logging.getLogger(name).setLevel(logging.WARNING)


def build_sender(config: ReceiverConfig, environ: Mapping[str, str] | None = None) -> Sender:
    import httpx  # here: a pipeline without HTTP receivers never loads it

    client = httpx.Client(timeout=config.timeout.total_seconds(), follow_redirects=False)
    name = config.name
    if isinstance(config, SlackReceiver):
        url = resolve_secret(
            config.webhook_url, receiver=name, field="webhook_url", environ=environ
        )
        return SlackSender(name, client, url)
    if isinstance(config, PagerDutyReceiver):
        key = resolve_secret(
            config.routing_key, receiver=name, field="routing_key", environ=environ
        )
        return PagerDutySender(config, client, key)
    if isinstance(config, AlertmanagerReceiver):
        return AlertmanagerSender(config, client)
    assert isinstance(config, WebhookReceiver)
    url = resolve_secret(config.url, receiver=name, field="url", environ=environ)
    secret = (
        resolve_secret(config.hmac_secret, receiver=name, field="hmac_secret", environ=environ)
        if config.hmac_secret is not None
        else None
    )
    return WebhookSender(name, client, url, secret)


def build_dispatcher(
    config: AlertingConfig,
    *,
    outbox_path: Path | str,
    registry: CollectorRegistry,
    environ: Mapping[str, str] | None = None,
    rng: random.Random | None = None,
) -> Dispatcher:
    """A dispatcher for every configured receiver (not yet started: call `start()`)."""
    quiet_http_logs()
    senders = [(build_sender(r, environ), r) for r in config.receivers]
    return Dispatcher(
        Router(config),
        senders,
        Outbox(outbox_path),
        registry=registry,
        links=config.links,
        rng=rng,
    )
