"""Reading a `SecretRef` at the edge, once, when receivers are built.

The value is returned to the caller and never logged, stored in config or put in an error: a
failure names where the secret should have been (`env LOOKOUT_SLACK_WEBHOOK_URL`), not what.
A secret that is a URL (a Slack webhook, a webhook's or Alertmanager's URL) must be one httpx
can POST to — http or https, with a host — or the receiver is refused at start, not at its
first page (`ReceiverURLError`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from schemas.alert_config import ReceiverConfig, SecretRef, url_problem

#: secret keys whose value is the URL requests go to
URL_FIELDS = frozenset({"webhook_url", "url"})


class SecretError(Exception):
    """A secret could not be read; the message names its reference, never a value."""


class ReceiverURLError(SecretError):
    """A receiver's URL (from config or a secret) cannot be POSTed to; the message names the
    receiver and key, never the URL (it may be the secret)."""


def resolve_secret(
    ref: SecretRef, *, receiver: str, field: str, environ: Mapping[str, str] | None = None
) -> str:
    """The secret's value, stripped of surrounding whitespace (files often end in a newline)."""
    where = f"receiver {receiver!r} {field} ({ref.describe()})"
    if ref.env is not None:
        value = (os.environ if environ is None else environ).get(ref.env)
        if value is None or not value.strip():
            msg = f"{where}: the variable is not set or empty"
            raise SecretError(msg)
        return value.strip()
    if ref.file is None or "://" in ref.file:  # never read a "path" that is a URL
        msg = f"{where}: not a file path"
        raise SecretError(msg)
    try:
        value = Path(ref.file).read_text(encoding="utf-8")
    except OSError as error:
        msg = f"{where}: cannot read the file ({error.strerror})"
        raise SecretError(msg) from None
    if not value.strip():
        msg = f"{where}: the file is empty"
        raise SecretError(msg)
    return value.strip()


def resolve_url(
    value: str | SecretRef,
    *,
    receiver: str,
    field: str,
    environ: Mapping[str, str] | None = None,
) -> str:
    """A receiver's URL, read from its secret if it is one, checked to be an http(s) URL with
    a host: `hooks.slack.com/services/...` (no scheme) started fine and failed at the first
    page with `UnsupportedProtocol`. Raises `ReceiverURLError` naming the receiver and key."""
    if isinstance(value, SecretRef):
        url = resolve_secret(value, receiver=receiver, field=field, environ=environ)
        where = f"receiver {receiver!r} {field} ({value.describe()})"
    else:
        url, where = value, f"receiver {receiver!r} {field}"
    problem = url_problem(url)
    if problem is not None:
        msg = f"{where}: {problem} (the value is not shown)"
        raise ReceiverURLError(msg)
    return url


def unreadable_secrets(
    receivers: Sequence[ReceiverConfig], environ: Mapping[str, str] | None = None
) -> list[str]:
    """One line per receiver secret that cannot be read here and now, or holds a URL that
    cannot be POSTed to (what `lookout run` would refuse to start on), for
    `lookout config check` to warn about before a deploy."""
    problems = []
    for receiver in receivers:
        for field, ref in receiver.secret_refs():
            try:
                if field in URL_FIELDS:
                    resolve_url(ref, receiver=receiver.name, field=field, environ=environ)
                else:
                    resolve_secret(ref, receiver=receiver.name, field=field, environ=environ)
            except SecretError as error:
                problems.append(str(error))
    return problems
