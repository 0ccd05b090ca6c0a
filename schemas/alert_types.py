"""Small value types shared by the alerting and retune configuration (`SecretRef` lives here,
not in `schemas.alert_config`, so the retune actions can hold one: that module imports them)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import timedelta
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)

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


class SecretRef(BaseModel):
    """Where a secret lives: exactly one of `env` (a variable name) or `file` (a mounted path).

    A literal string in a secret field is rejected, so a routing key or a webhook URL never
    sits in a ConfigMap, a values file or `lookout config check` output. The value is read
    only when receivers are built (`alerts.receivers.secrets`), never stored in config.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    env: str | None = Field(default=None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    file: str | None = Field(default=None, min_length=1)

    @field_validator("file")
    @classmethod
    def _a_path_not_a_url(cls, value: str | None) -> str | None:
        """`{file: "https://hooks.slack.com/services/..."}` is the secret put where its path
        belongs: refused without echoing it (it was printed by `config check` and in the
        "cannot read the file" error)."""
        if value is not None and "://" in value:
            msg = (
                "a file path, not the secret itself: write the path of a mounted file that "
                "holds it, or {env: VAR} (the value is not shown)"
            )
            raise ValueError(msg)
        return value

    @model_validator(mode="before")
    @classmethod
    def _not_a_literal(cls, data: Any) -> Any:
        if not isinstance(data, Mapping):
            # never echo the value: it is most likely the secret itself
            msg = "secrets come from env or a mounted file: write {env: VAR} or {file: /path}"
            raise ValueError(msg)
        return data

    @model_validator(mode="after")
    def _exactly_one(self) -> SecretRef:
        if (self.env is None) == (self.file is None):
            msg = "a secret reference needs exactly one of env or file"
            raise ValueError(msg)
        return self

    def describe(self) -> str:
        """`env LOOKOUT_SLACK_WEBHOOK_URL` / `file /var/run/...`: where, never what."""
        if self.env is not None:
            return f"env {self.env}"
        if self.file is None or "://" in self.file:  # not a path: maybe the secret (built
            return "file (not a path; not shown)"  # with model_construct, unvalidated)
        return f"file {self.file}"
