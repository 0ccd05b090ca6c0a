"""Small value types shared by the alerting and retune configuration."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator, Field, TypeAdapter, ValidationError

ReceiverName = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.-]+$")]

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def _parse_duration(value: Any) -> Any:
    """Alertmanager-style `30s`, `5m`, `4h` (also plain seconds, or ISO 8601 via pydantic)."""
    if isinstance(value, str):
        match = _DURATION.match(value)
        if match:
            return timedelta(seconds=float(match[1]) * _UNIT_SECONDS[match[2]])
    return value


Duration = Annotated[timedelta, BeforeValidator(_parse_duration)]


def duration_text(value: timedelta) -> str:
    """A duration as it is written in config: `-1h`, `90s`, `1h30m`, `500ms` (not Python's
    `-1 day, 23:59:55`, which is how a negative timedelta prints)."""
    milliseconds = round(value.total_seconds() * 1000)
    sign, rest = ("-" if milliseconds < 0 else ""), abs(milliseconds)
    if rest == 0:
        return "0s"
    if rest % 1000:
        return f"{sign}{rest}ms"
    parts, seconds = [], rest // 1000
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if seconds >= size:
            parts.append(f"{seconds // size}{unit}")
            seconds %= size
    return sign + "".join(parts)


_DURATION_ADAPTER: TypeAdapter[timedelta] = TypeAdapter(Duration)


def _signed_duration(value: Any) -> Any:
    """`-5s` / `-1h` read as negative durations, so they are refused as negative (with the
    value as written) instead of as an unreadable timedelta."""
    if isinstance(value, str) and value.strip().startswith("-"):
        try:
            return -_DURATION_ADAPTER.validate_python(value.strip()[1:])
        except ValidationError:
            return value  # refused as written, by the duration type itself
    return value


def positive_duration(value: timedelta) -> timedelta:
    if value <= timedelta(0):
        msg = f"must be a positive duration, got {duration_text(value)}"
        raise ValueError(msg)
    return value


def not_negative_duration(value: timedelta) -> timedelta:
    if value < timedelta(0):
        msg = f"must be zero or a positive duration, got {duration_text(value)}"
        raise ValueError(msg)
    return value


#: `Duration` that also reads `-5s` (to refuse it as negative, as written)
SignedDuration = Annotated[Duration, BeforeValidator(_signed_duration)]
#: `30s`, `5m`, `6h` (or seconds, or ISO 8601), more than zero
PositiveDuration = Annotated[SignedDuration, AfterValidator(positive_duration)]
#: the same, zero allowed (zero switches the wait off)
NonNegativeDuration = Annotated[SignedDuration, AfterValidator(not_negative_duration)]
