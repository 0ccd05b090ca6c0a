"""Delivery policy in pure functions: backoff with full jitter, Retry-After, a token bucket.

Backoff is "full jitter" (AWS Architecture Blog, "Exponential Backoff And Jitter", 2015):
`uniform(0, min(cap, base * 2**attempt))`, so receivers recovering from an outage are not
hit by every client at the same instant. A `Retry-After` (RFC 9110 §10.2.3: seconds or an
HTTP-date) is a floor the server asked for, honoured as given.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime


def backoff_delay(attempt: int, *, initial: float, maximum: float, rng: random.Random) -> float:
    """Seconds to wait before retry number `attempt` (1 = the first retry)."""
    ceiling = min(maximum, initial * 2 ** max(attempt - 1, 0))
    return rng.uniform(0.0, ceiling)


def parse_retry_after(value: str | None, *, now: datetime) -> float | None:
    """Seconds from a `Retry-After` header, or None when absent or unreadable."""
    if value is None:
        return None
    text = value.strip()
    if text.isdigit():
        return float(text)
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - now).total_seconds())


@dataclass
class TokenBucket:
    """At most `rate_per_second` requests on average, `burst` at once. Time is passed in."""

    rate_per_second: float
    burst: int
    _tokens: float = field(init=False)
    _at: float | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        self._tokens = float(self.burst)

    def _refill(self, now: float) -> None:
        if self._at is not None:
            self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate_per_second)
        self._at = now

    def wait_time(self, now: float) -> float:
        """Seconds until a request may go (0 when one may go now)."""
        self._refill(now)
        return 0.0 if self._tokens >= 1 else (1 - self._tokens) / self.rate_per_second

    def take(self, now: float) -> None:
        self._refill(now)
        self._tokens -= 1
