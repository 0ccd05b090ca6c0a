"""The failure policy for Pub/Sub calls, written down once, and Lookout's root exception.

Retryable: the service or the network may recover on its own, so retry with backoff (or leave
the message unacked so Pub/Sub redelivers it). Terminal: retrying cannot help (a topic or
subscription is missing, permissions, a malformed request), so report it once, clearly, and do
not spin. The split follows the one google-cloud-pubsub's streaming pull manager makes.
"""

from __future__ import annotations

from google.api_core import exceptions as gexc


class LookoutError(Exception):
    """Root of every error Lookout raises on purpose; the CLI prints these as one line."""


class PubSubError(LookoutError):
    """A Pub/Sub call failed after the policy below was applied (chained to the cause)."""


class PubSubConfigMismatch(PubSubError):
    """An existing topic or subscription differs from what `init` was asked to create."""


RETRYABLE_EXCEPTIONS: tuple[type[BaseException], ...] = (
    gexc.Aborted,
    gexc.DeadlineExceeded,
    gexc.InternalServerError,
    gexc.ResourceExhausted,
    gexc.ServiceUnavailable,
    gexc.TooManyRequests,
    gexc.GatewayTimeout,
    gexc.Unknown,
    gexc.Cancelled,
    TimeoutError,
    ConnectionError,
)

TERMINAL_EXCEPTIONS: tuple[type[BaseException], ...] = (
    gexc.NotFound,
    gexc.PermissionDenied,
    gexc.Unauthenticated,
    gexc.InvalidArgument,
    gexc.FailedPrecondition,
    gexc.MethodNotImplemented,
)


def is_retryable(error: BaseException) -> bool:
    """True when waiting and trying again may succeed; unknown errors count as terminal."""
    return isinstance(error, RETRYABLE_EXCEPTIONS) and not isinstance(error, TERMINAL_EXCEPTIONS)


def describe(error: BaseException) -> str:
    """One line naming the error class and its message, for logs and dead-letter attributes."""
    message = getattr(error, "message", None) or str(error) or "no detail"
    return f"{type(error).__name__}: {message}".splitlines()[0]


class InvalidSetting(LookoutError, ValueError):
    """A setting is out of the range Pub/Sub accepts; names the setting, value and range."""
