"""One sender per receiver kind: render a notification and POST it with httpx.

A sender holds its resolved secrets in memory only; its errors are `NotifierError`s whose
messages name the receiver, the HTTP status or the transport's reason (`Connection refused`,
a DNS or TLS failure), never a URL path, a key or a body: a URL in a reason is cut to
`scheme://host/…` (a Slack webhook's path is its secret). A 429 or 503 with `Retry-After`
raises `RateLimited`, which the dispatcher honours.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import unquote, urlsplit

import orjson

from alerts.notifiers import RetryableNotifierError, notifier_error, redact_secrets, status_error
from alerts.receivers.payloads import (
    alertmanager_alerts,
    pagerduty_event,
    slack_message,
    webhook_body,
)
from alerts.receivers.policy import parse_retry_after
from schemas.alert_config import AlertmanagerReceiver, PagerDutyReceiver, SecretRef
from schemas.detection import Alert

if TYPE_CHECKING:  # the senders' client: loaded by `build_sender`, not by importing this
    import httpx


class RateLimited(RetryableNotifierError):
    """The receiver asked us to wait (`Retry-After`)."""

    def __init__(self, receiver: str, message: str, retry_after: float) -> None:
        super().__init__(receiver, message)
        self.retry_after = retry_after


@dataclass(frozen=True)
class Notification:
    """What the outbox holds: a group's alerts for one receiver (rendered only when sent, so
    no secret is ever written to disk)."""

    receiver: str
    group_key: str
    alerts: tuple[Alert, ...]
    repeat: bool = False

    def to_json(self) -> bytes:
        return orjson.dumps(
            {
                "receiver": self.receiver,
                "group_key": self.group_key,
                "repeat": self.repeat,
                "alerts": [a.model_dump(mode="json") for a in self.alerts],
            }
        )

    @classmethod
    def from_json(cls, data: bytes | str) -> Notification:
        raw = orjson.loads(data)
        return cls(
            receiver=raw["receiver"],
            group_key=raw["group_key"],
            alerts=tuple(Alert.model_validate(a) for a in raw["alerts"]),
            repeat=bool(raw["repeat"]),
        )


class Sender(Protocol):
    name: str
    kind: str
    #: one notification per alert (PagerDuty events), rather than one per group
    per_alert: bool

    def send(self, notification: Notification) -> None: ...

    def close(self) -> None: ...


class _HttpSender:
    """Owns its httpx client (connection pool), closed with the dispatcher."""

    _client: httpx.Client

    def close(self) -> None:
        self._client.close()


def post_json(
    client: httpx.Client,
    receiver: str,
    url: str,
    body: Any,
    *,
    headers: Mapping[str, str] | None = None,
    content: bytes | None = None,
) -> httpx.Response:
    """POST JSON; raise the typed error for anything but a 2xx (429/503 → `RateLimited`)."""
    import httpx  # loaded already: the client came from `build_sender`

    data = content if content is not None else orjson.dumps(body)
    try:
        response = client.post(
            url, content=data, headers={"Content-Type": "application/json", **(headers or {})}
        )
    except httpx.HTTPError as exc:
        # httpx messages can carry the URL; keep the exception type and its reason, URL cut
        raise notifier_error(receiver, "POST", _without_url(exc, url, headers)) from None
    if response.is_success:
        return response
    wait = parse_retry_after(response.headers.get("Retry-After"), now=datetime.now(UTC))
    if response.status_code in (429, 503) and wait is not None:
        msg = f"POST failed: HTTP {response.status_code}, retry after {wait:.0f}s"
        raise RateLimited(receiver, msg, wait)
    reply = _reply_reason(response.text, data, url, headers)
    raise status_error(receiver, "POST", response.status_code, reply)


#: how much of a receiver's refusal a log line shows
_REPLY_CHARS = 200


def _reply_reason(
    text: str, request: bytes, url: str, headers: Mapping[str, str] | None = None
) -> str:
    """What a receiver said when it refused (`Invalid routing key`, Slack's `no_service`):
    without it the on-call could not tell a wrong key from a broken receiver. Its first
    line, masked whole and only then clipped (a cut secret would no longer match), with every
    part of the URL (a Slack webhook's path is its secret), of the headers (the token after
    `Bearer` too) and every string of the request's body (a PagerDuty routing key is one)
    masked, plain and percent-decoded, should the receiver echo the request; control
    characters (a terminal's escape codes) shown as `?`."""
    line = next((part.strip() for part in text[:_REPLY_SCAN].splitlines() if part.strip()), "")
    if not line:
        return ""
    try:
        sent = orjson.loads(request)
    except orjson.JSONDecodeError:
        sent = None
    values = {*_url_parts(url), *_strings(sent)}
    for value in (headers or {}).values():
        values.update((value, value.partition(" ")[2]))
    values |= {unquote(v) for v in values}
    for value in sorted((v for v in values if len(v) >= _MASKED_FROM), key=len, reverse=True):
        line = line.replace(value, "***")
    line = _CONTROL.sub("?", safe_reason(line, url))
    return line if len(line) <= _REPLY_CHARS else line[: _REPLY_CHARS - 1] + "…"


#: how far into a reply its first line is looked for
_REPLY_SCAN = 65_536
#: shorter strings of a request are not masked in a reply (a status word, `firing`)
_MASKED_FROM = 8
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _url_parts(url: str) -> list[str]:
    """The pieces of a receiver URL that may be secret: its path, each path segment, its
    query and each query value, its user info."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return [url]
    pieces = [parts.path, parts.query, parts.netloc.rpartition("@")[0]]
    pieces += [segment for segment in parts.path.split("/") if segment]
    pieces += [value for pair in parts.query.split("&") for value in pair.split("=")[1:]]
    return [piece for piece in pieces if piece]


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for v in value.values() for s in _strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return []


def _without_url(
    exc: httpx.HTTPError, url: str, headers: Mapping[str, str] | None = None
) -> httpx.HTTPError:
    """The same exception class (its retry policy depends on it) with its reason kept,
    every form of the request URL in it cut to `scheme://host/…` and the values of the
    request's own headers (`Authorization`) masked."""
    import httpx

    text = str(exc)
    for value in (headers or {}).values():
        # the credential after the scheme word first ("Bearer ***"), then any whole value;
        # in a fixed order (a set's order changes with the interpreter's hash seed)
        for part in (value.partition(" ")[2], value):
            if len(part) > 3:
                text = text.replace(part, "***")
    reason = safe_reason(text, url) or type(exc).__name__
    host = _host_of(url)
    if host and host not in reason:  # "Name or service not known": of which host?
        reason = f"{reason} ({host})"
    try:
        return type(exc)(reason)
    except TypeError:
        return httpx.TransportError(reason)


def _host_of(url: str) -> str:
    try:
        return urlsplit(url).hostname or ""
    except ValueError:
        return ""


def safe_reason(text: str, url: str) -> str:
    """`text` (an exception's message) without `url` in any form: whole, without its scheme
    (httpx quotes a URL it could not parse), or its path, query or userinfo alone."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
    except ValueError:  # not even splittable: keep only what cannot hold it
        return redact_secrets(text.replace(url, "(the URL)")).strip()
    shown = f"{parts.scheme}://{host}/…" if parts.scheme and host else "(the URL)"
    whole = url.strip()
    tail = whole.split("://", 1)[-1]
    path = parts.path + (f"?{parts.query}" if parts.query else "")
    userinfo = parts.netloc.rpartition("@")[0]
    for form in (whole, tail):
        if form:
            text = text.replace(form, shown)
    for form in (path, parts.query, userinfo):
        if len(form) > 1:
            text = text.replace(form, "…")
    return redact_secrets(text).strip()


class SlackSender(_HttpSender):
    kind = "slack"
    per_alert = False

    def __init__(self, name: str, client: httpx.Client, webhook_url: str) -> None:
        self.name = name
        self._client = client
        self._url = webhook_url

    def send(self, notification: Notification) -> None:
        body = slack_message(notification.alerts, repeat=notification.repeat)
        post_json(self._client, self.name, self._url, body)


class PagerDutySender(_HttpSender):
    kind = "pagerduty"
    per_alert = True

    def __init__(
        self,
        config: PagerDutyReceiver,
        client: httpx.Client,
        routing_key: str,
        *,
        url: str | None = None,
    ) -> None:
        """`url`: the Events API endpoint as read (`config.url` when it is written there)."""
        self.name = config.name
        self._config = config
        self._client = client
        self._key = routing_key
        self._url = url if url is not None else _written_url(config.url, config.name)

    def send(self, notification: Notification) -> None:
        for alert in notification.alerts:
            event = pagerduty_event(
                alert, routing_key=self._key, source=self._config.source, group=self._config.group
            )
            post_json(self._client, self.name, self._url, event)


class AlertmanagerSender(_HttpSender):
    kind = "alertmanager"
    per_alert = False

    def __init__(
        self,
        config: AlertmanagerReceiver,
        client: httpx.Client,
        wall_clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        *,
        url: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        """`url`: Alertmanager's base URL as read (`config.url` when it is written there);
        `headers`: sent with every request (`Authorization` from basic_auth/bearer_token)."""
        self.name = config.name
        self._config = config
        self._client = client
        self._wall_clock = wall_clock
        base = url if url is not None else _written_url(config.url, config.name)
        self._url = base.rstrip("/") + "/api/v2/alerts"
        self._headers = dict(headers or {})

    def send(self, notification: Notification) -> None:
        body = alertmanager_alerts(
            notification.alerts,
            now=self._wall_clock(),
            ends_after=self._config.ends_after,
            labels=self._config.labels,
        )
        post_json(self._client, self.name, self._url, body, headers=self._headers)


class WebhookSender(_HttpSender):
    kind = "webhook"
    per_alert = False

    def __init__(
        self,
        name: str,
        client: httpx.Client,
        url: str,
        hmac_secret: str | None,
        *,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.name = name
        self._client = client
        self._url = url
        self._secret = hmac_secret.encode() if hmac_secret is not None else None
        self._headers = dict(headers or {})

    def send(self, notification: Notification) -> None:
        body = orjson.dumps(
            webhook_body(
                notification.alerts,
                receiver=self.name,
                group_key=notification.group_key,
                repeat=notification.repeat,
            )
        )
        headers = dict(self._headers)
        if self._secret is not None:
            headers["X-Lookout-Signature"] = "sha256=" + sign(self._secret, body)
        post_json(self._client, self.name, self._url, None, headers=headers, content=body)


def _written_url(url: str | SecretRef, receiver: str) -> str:
    if isinstance(url, SecretRef):
        msg = f"receiver {receiver!r}: url is a secret reference; pass the URL read from it"
        raise TypeError(msg)
    return url


def sign(secret: bytes, body: bytes) -> str:
    """HMAC-SHA256 of the exact body bytes, hex: what a receiver recomputes to verify."""
    return hmac.new(secret, body, hashlib.sha256).hexdigest()


def only_firing_or_all(alerts: Sequence[Alert], send_resolved: bool) -> tuple[Alert, ...]:
    return tuple(alerts) if send_resolved else tuple(a for a in alerts if a.status == "firing")
