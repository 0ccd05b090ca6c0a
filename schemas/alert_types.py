"""Small value types shared by the alerting and retune configuration."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated, Any

from pydantic import BeforeValidator, Field

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


def not_negative(value: timedelta) -> timedelta:
    if value < timedelta(0):
        msg = f"must be zero or positive, got {value}"
        raise ValueError(msg)
    return value


Duration = Annotated[timedelta, BeforeValidator(_parse_duration)]
