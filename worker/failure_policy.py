"""The failure policy for Pub/Sub calls, written down once, and Lookout's root exception.

Retryable: the service or the network may recover on its own, so retry with backoff (or leave
the message unacked so Pub/Sub redelivers it). Terminal: retrying cannot help (a topic or
subscription is missing, permissions, a malformed request), so report it once, clearly, and do
not spin. The split follows the one google-cloud-pubsub's streaming pull manager makes.
"""

from __future__ import annotations

from google.api_core import exceptions as gexc
from google.api_core import retry as gretry


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


#: the `reason` label values of `lookout_source_errors_total`: a closed set (promise 6)
ERROR_REASONS: tuple[str, ...] = (
    "not_found",
    "permission_denied",
    "unavailable",
    "deadline_exceeded",
    "invalid_argument",
    "too_large",
    "other",
)


def reason_of(error: BaseException) -> str:
    """The metric label for `error`, one of `ERROR_REASONS`."""
    checks: tuple[tuple[str, tuple[type[BaseException], ...]], ...] = (
        ("not_found", (gexc.NotFound,)),
        ("permission_denied", (gexc.PermissionDenied, gexc.Unauthenticated)),
        ("deadline_exceeded", (gexc.DeadlineExceeded, TimeoutError, gexc.RetryError)),
        ("unavailable", (gexc.ServiceUnavailable, ConnectionError)),
        ("invalid_argument", (gexc.InvalidArgument, gexc.FailedPrecondition)),
    )
    if type(error).__name__ == "MessageTooLargeError":  # pubsub's, a plain ValueError
        return "too_large"
    for reason, types in checks:
        if isinstance(error, types):
            return reason
    return "other"


def bounded_retry(seconds: float) -> gretry.Retry:
    """The client library's retry of retryable errors, but never past `seconds` in total.

    The library's defaults retry an unreachable endpoint silently for 60 s or more per call;
    every Lookout call passes this (or `retry=None`) so its callers stay within their deadline.
    """
    return gretry.Retry(
        predicate=gretry.if_exception_type(
            *(t for t in RETRYABLE_EXCEPTIONS if issubclass(t, gexc.GoogleAPICallError))
        ),
        initial=0.1,
        maximum=min(5.0, max(seconds / 4, 0.1)),
        multiplier=2.0,
        timeout=seconds,
    )


def describe(error: BaseException) -> str:
    """One line naming the error class and its message, for logs and dead-letter attributes."""
    message = getattr(error, "message", None) or str(error)
    if not message:
        message = "no answer in time" if isinstance(error, TimeoutError) else "no detail"
    return f"{type(error).__name__}: {message}".splitlines()[0]


class InvalidSetting(LookoutError, ValueError):
    """A setting is out of the range Pub/Sub accepts; names the setting, value and range."""


class SetupError(LookoutError, ValueError):
    """The source cannot start (no credentials, say); says what to do. A ValueError so that
    `lookout run` reports it as one line with exit status 2, as it does a bad setting."""
