"""Lookout's own exceptions and their one-line description, without any client library.

They live apart from `worker.failure_policy` because the CLI needs them on every start, while
the policy imports `google.api_core` (about 0.3 s): `lookout --help` and `lookout replay` should
not pay for Pub/Sub when they never call it.
"""

from __future__ import annotations


class LookoutError(Exception):
    """Root of every error Lookout raises on purpose; the CLI prints these as one line."""


class PubSubError(LookoutError):
    """A Pub/Sub call failed after the failure policy was applied (chained to the cause)."""


class PubSubConfigMismatch(PubSubError):
    """An existing topic or subscription differs from what `init` was asked to create."""


class InvalidSetting(LookoutError, ValueError):
    """A setting is out of the range Pub/Sub accepts; names the setting, value and range."""


class SetupError(LookoutError, ValueError):
    """The source cannot start (no credentials, say); says what to do. A ValueError so that
    `lookout run` reports it as one line with exit status 2, as it does a bad setting."""


def describe(error: BaseException) -> str:
    """One line naming the error class and its message, for logs and dead-letter attributes."""
    message = getattr(error, "message", None) or str(error)
    if not message:
        message = "no answer in time" if isinstance(error, TimeoutError) else "no detail"
    return f"{type(error).__name__}: {message}".splitlines()[0]


class SinkBroken(LookoutError):
    """The sink can never accept a write again in this process (DuckDB invalidates a database
    after a fatal error, e.g. its own checkpoint running out of `memory_limit`). Retrying would
    spin forever while nothing is acked; the worker stops instead, so Kubernetes restarts it and
    Pub/Sub redelivers everything not yet acknowledged — nothing is lost."""
