"""Reading a `SecretRef` at the edge, once, when receivers are built.

The value is returned to the caller and never logged, stored in config or put in an error: a
failure names where the secret should have been (`env LOOKOUT_SLACK_WEBHOOK_URL`), not what.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from schemas.alert_config import ReceiverConfig, SecretRef


class SecretError(Exception):
    """A secret could not be read; the message names its reference, never a value."""


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
    assert ref.file is not None  # the model guarantees exactly one
    try:
        value = Path(ref.file).read_text(encoding="utf-8")
    except OSError as error:
        msg = f"{where}: cannot read the file ({error.strerror})"
        raise SecretError(msg) from None
    if not value.strip():
        msg = f"{where}: the file is empty"
        raise SecretError(msg)
    return value.strip()


def unreadable_secrets(
    receivers: Sequence[ReceiverConfig], environ: Mapping[str, str] | None = None
) -> list[str]:
    """One line per receiver secret that cannot be read here and now (what `lookout run`
    would refuse to start on), for `lookout config check` to warn about before a deploy."""
    problems = []
    for receiver in receivers:
        for field in type(receiver).model_fields:
            ref = getattr(receiver, field)
            if not isinstance(ref, SecretRef):
                continue
            try:
                resolve_secret(ref, receiver=receiver.name, field=field, environ=environ)
            except SecretError as error:
                problems.append(str(error))
    return problems
