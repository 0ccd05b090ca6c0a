"""The failure policy for Pub/Sub calls, written down once (Lookout's exceptions: `worker.errors`).

Retryable: the service or the network may recover on its own, so retry with backoff (or leave
the message unacked so Pub/Sub redelivers it). Terminal: retrying cannot help (a topic or
subscription is missing, permissions, a malformed request), so report it once, clearly, and do
not spin. The split follows the one google-cloud-pubsub's streaming pull manager makes.
"""

from __future__ import annotations

from google.api_core import exceptions as gexc
from google.api_core import retry as gretry

# re-exported (`X as X`): the policy's callers import Lookout's exceptions from here too
from worker.errors import InvalidSetting as InvalidSetting
from worker.errors import LookoutError as LookoutError
from worker.errors import PubSubConfigMismatch as PubSubConfigMismatch
from worker.errors import PubSubError as PubSubError
from worker.errors import SetupError as SetupError
from worker.errors import describe as describe

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
