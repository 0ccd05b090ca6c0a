"""The `RetuneRequest`: what every action receives and what the `pubsub` action publishes."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from hashlib import sha256
from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field


class TimeRange(BaseModel):
    model_config = ConfigDict(frozen=True)

    start: datetime
    end: datetime


class RetuneRequest(BaseModel):
    """One sustained incident asking for a tuning run. `evidence` is the alert's evidence
    (value, threshold, baseline, sample size, window, reason, links); the dataset is either
    exported already (`dataset_uri`, `evaluation_data_uri`) or described by `dataset_query`."""

    model_config = ConfigDict(frozen=True)

    version: Literal["1"] = "1"
    action: str
    model: str
    model_version: str | None = None
    detector: str
    condition: str
    dedup_key: str
    reason: str
    evidence: dict[str, Any] = Field(default_factory=dict)
    time_range: TimeRange
    consecutive_windows: int
    dataset_uri: str | None = None
    evaluation_data_uri: str | None = None
    dataset_query: str | None = None
    dry_run: bool = False

    def to_json(self) -> bytes:
        return orjson.dumps(self.model_dump(mode="json"))

    def render(self, template: Any, **extra: str) -> Any:
        """A config value with `{model}`-style fields filled in (non-strings unchanged)."""
        if not isinstance(template, str):
            return template
        values = {
            "model": self.model,
            "model_version": self.model_version or "",
            "detector": self.detector,
            "condition": self.condition,
            "dataset_uri": self.dataset_uri or "",
            "evaluation_data_uri": self.evaluation_data_uri or "",
            "window_start": self.time_range.start.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ"),
            "window_end": self.time_range.end.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ"),
            "reason": self.reason,
            "dedup_key": self.dedup_key,
            "request_id": request_id(self.action, self),
            **extra,
        }
        return template.format_map(values)


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def request_id(action: str, request: RetuneRequest) -> str:
    """One id per action and incident, the same at every attempt: what a retry finds the
    first attempt's job or run by when that attempt was given up (a timeout) but the remote
    side created it anyway. Lowercase letters, digits and hyphens, starting with a letter, at
    most 128 characters, as Vertex AI wants of a job id."""
    utc = request.time_range.start.astimezone(UTC)
    start = utc.strftime("%Y%m%dt%H%M%Sz")
    key = f"{action}\n{request.dedup_key}\n{utc.isoformat()}"
    digest = sha256(key.encode()).hexdigest()[:10]
    readable = _slug(request.dedup_key)
    if not readable[:1].isalpha():
        readable = f"lookout-{readable}".rstrip("-")
    return f"{readable[:96].rstrip('-')}-{start}-{digest}"
