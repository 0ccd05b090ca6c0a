"""Receivers from config: resolve each secret once, give each receiver its own HTTP client.

Called by the CLI when it builds a pipeline. A missing secret is a `SecretError` naming the
receiver and where the secret should be (never its value), and a URL httpx cannot POST to (no
http/https scheme, no host) a `ReceiverURLError` naming the receiver and key, both raised
before anything runs. `basic_auth` / `bearer_token` become the `Authorization` header.
"""

from __future__ import annotations

import base64
import logging
import random
import re
from collections.abc import Mapping
from pathlib import Path

from prometheus_client import CollectorRegistry

from alerts.receivers.dispatcher import Dispatcher
from alerts.receivers.outbox import Outbox
from alerts.receivers.secrets import SecretError, resolve_secret, resolve_url
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


#: what a bearer token may hold: visible ASCII (RFC 6750's b64token and then some)
_HEADER_SAFE = re.compile(r"[\x21-\x7e]+")


def authorization(
    config: AlertmanagerReceiver | WebhookReceiver, environ: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The `Authorization` header for `basic_auth` (RFC 7617) or `bearer_token` (RFC 6750),
    read from their secrets; empty when neither is set."""
    name = config.name
    if config.basic_auth is not None:
        password = resolve_secret(
            config.basic_auth.password,
            receiver=name,
            field="basic_auth.password",
            environ=environ,
        )
        pair = f"{config.basic_auth.username}:{password}".encode()
        return {"Authorization": "Basic " + base64.b64encode(pair).decode("ascii")}
    if config.bearer_token is not None:
        token = resolve_secret(
            config.bearer_token, receiver=name, field="bearer_token", environ=environ
        )
        if not _HEADER_SAFE.fullmatch(token):
            # httpx would refuse the header at the first page, quoting it in the error
            msg = (
                f"receiver {name!r} bearer_token ({config.bearer_token.describe()}): holds a "
                "space, line break or non-ASCII character, which an HTTP header cannot carry "
                "(the value is not shown)"
            )
            raise SecretError(msg)
        return {"Authorization": f"Bearer {token}"}
    return {}


def build_sender(config: ReceiverConfig, environ: Mapping[str, str] | None = None) -> Sender:
    """The sender for `config`, its secrets read and its URL checked (http or https, with a
    host) now: a `SecretError` (`ReceiverURLError`) names the receiver and key, never a value."""
    import httpx  # here: a pipeline without HTTP receivers never loads it

    name = config.name

    def client() -> httpx.Client:
        return httpx.Client(timeout=config.timeout.total_seconds(), follow_redirects=False)

    if isinstance(config, SlackReceiver):
        url = resolve_url(config.webhook_url, receiver=name, field="webhook_url", environ=environ)
        return SlackSender(name, client(), url)
    if isinstance(config, PagerDutyReceiver):
        key = resolve_secret(
            config.routing_key, receiver=name, field="routing_key", environ=environ
        )
        url = resolve_url(config.url, receiver=name, field="url", environ=environ)
        return PagerDutySender(config, client(), key, url=url)
    if isinstance(config, AlertmanagerReceiver):
        url = resolve_url(config.url, receiver=name, field="url", environ=environ)
        headers = authorization(config, environ)
        return AlertmanagerSender(config, client(), url=url, headers=headers)
    assert isinstance(config, WebhookReceiver)
    url = resolve_url(config.url, receiver=name, field="url", environ=environ)
    secret = (
        resolve_secret(config.hmac_secret, receiver=name, field="hmac_secret", environ=environ)
        if config.hmac_secret is not None
        else None
    )
    headers = authorization(config, environ)
    return WebhookSender(name, client(), url, secret, headers=headers)


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
    senders: list[tuple[Sender, ReceiverConfig]] = []
    try:
        for receiver in config.receivers:
            senders.append((build_sender(receiver, environ), receiver))
    except Exception:
        for sender, _ in senders:  # refused at start: close the clients already opened
            sender.close()
        raise
    return Dispatcher(
        Router(config),
        senders,
        Outbox(outbox_path),
        registry=registry,
        links=config.links,
        rng=rng,
    )
