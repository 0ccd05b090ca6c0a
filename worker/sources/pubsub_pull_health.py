"""Whether pulling works, what to tell the operator when it does not, and when to try again.

Measured before this existed: with Pub/Sub unreachable the worker logged nothing and /readyz
said "ready"; with a subscription that does not exist it logged the same warning every 0.5 s
forever. `PullHealth` is shared by both receivers and makes three promises:
- readiness is earned: not ready until a pull (or a stream) has worked, and not ready again
  from the first failure until the next success;
- one clear line per kind of failure (naming the endpoint or the subscription, and the command
  or check that fixes it), repeated at most every `reminder_seconds`, plus one line when it
  works again; every failure is counted by reason for `lookout_source_errors_total`;
- retries back off exponentially (capped), so a broken setup costs neither CPU nor log volume.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from worker.failure_policy import describe, reason_of

log = logging.getLogger("lookout.pubsub")


@dataclass(frozen=True)
class PullTarget:
    """What a pull reads from, in the words an operator needs to fix it."""

    project: str
    subscription: str  # the short name
    path: str  # projects/P/subscriptions/S
    endpoint: str  # `127.0.0.1:8085 (PUBSUB_EMULATOR_HOST)` or pubsub.googleapis.com:443
    what_to_check: str
    #: the configured dead-letter topic: a subscription made without its policy gives no
    #: delivery attempts, so the command to create one must carry it
    dead_letter_topic: str | None = None


#: reasons that are one kind of failure for the operator: Pub/Sub cannot be reached. A dropped
#: connection alternates between them (a ping timeout, a pull timing out, a connect attempt
#: timing out): an SRE saw three ERROR lines in 35 s for one outage when each change of reason
#: was logged as a new failure
_UNREACHABLE = ("unavailable", "deadline_exceeded")


def _kind(reason: str | None) -> str | None:
    return "unreachable" if reason in _UNREACHABLE else reason


def explain(target: PullTarget, error: BaseException) -> str:
    """One line: what failed, where, and what fixes it."""
    reason = reason_of(error)
    if reason == "not_found":
        dead_letter = (
            f" --dead-letter-topic {target.dead_letter_topic}" if target.dead_letter_topic else ""
        )
        return (
            f"subscription {target.path} does not exist on {target.endpoint}: create it with "
            f"`lookout pubsub init --project {target.project} --topic TOPIC "
            f"--subscription {target.subscription}{dead_letter}`"
        )
    if reason == "permission_denied":
        return (
            f"not allowed to pull from {target.path} ({describe(error)}): grant "
            "roles/pubsub.subscriber on it to this workload's service account"
        )
    if reason in _UNREACHABLE:
        return (
            f"cannot reach Pub/Sub at {target.endpoint} to pull from {target.path} "
            f"({describe(error)}): {target.what_to_check}"
        )
    return f"pulling from {target.path} on {target.endpoint} failed: {describe(error)}"


class PullHealth:
    """Readiness, error counts and backoff of one subscription's pulls (thread-safe)."""

    def __init__(
        self,
        target: PullTarget,
        *,
        initial_backoff: float = 0.5,
        max_backoff: float = 30.0,
        reminder_seconds: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.target = target
        self._initial = initial_backoff
        self._max = max_backoff
        self._reminder = reminder_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._ready = False
        self._backoff = initial_backoff
        self._failing_reason: str | None = None
        self._failing_text = ""
        self._failures_in_row = 0
        self._last_logged = float("-inf")
        self.retry_at = float("-inf")
        #: when the last failure was counted (the clock's time), for an early retry
        self.failed_at = float("-inf")
        self.errors: Counter[str] = Counter()

    @property
    def ready(self) -> bool:
        return self._ready

    @property
    def unreachable(self) -> bool:
        """The last failure was Pub/Sub out of reach (not a missing subscription, say)."""
        return _kind(self._failing_reason) == "unreachable"

    def status(self) -> str:
        """Why not ready, for the /readyz body ("" when ready)."""
        with self._lock:
            if self._ready:
                return ""
            if self._failing_reason is None:
                return "no pull has succeeded yet"
            return f"{self._failing_text} ({self._failures_in_row} failed attempts)"

    def succeeded(self) -> None:
        with self._lock:
            if self._failing_reason is not None:
                # WARNING, not INFO: it closes an ERROR the operator saw, at the same level
                # of attention
                log.warning(
                    "pulling from %s works again after %d failed attempts",
                    self.target.path,
                    self._failures_in_row,
                )
            self._ready = True
            self._failing_reason = None
            self._failures_in_row = 0
            self._backoff = self._initial
            self.retry_at = float("-inf")

    def failed(self, error: BaseException) -> float:
        """Count and maybe log `error`; return the seconds to wait before the next try."""
        reason = reason_of(error)
        now = self._clock()
        with self._lock:
            self._ready = False
            self.errors[reason] += 1
            self._failures_in_row += 1
            delay = self._backoff
            self._backoff = min(self._backoff * 2, self._max)
            self.retry_at = now + delay
            self.failed_at = now
            changed = _kind(reason) != _kind(self._failing_reason)
            due = now - self._last_logged >= self._reminder
            self._failing_reason = reason
            self._failing_text = explain(self.target, error)
            if changed or due:
                self._last_logged = now
                log.error(
                    "%s (retrying with backoff up to %gs; /readyz answers 503 meanwhile%s)",
                    self._failing_text,
                    self._max,
                    "" if changed else f"; {self._failures_in_row} attempts so far",
                )
        return delay
