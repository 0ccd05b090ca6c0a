"""What a detector says about one (model, window), and the alert built from it."""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Verdict = Literal["ok", "alert", "insufficient_data"]
Severity = Literal["info", "warning", "critical"]


class Detection(BaseModel):
    """The verdict of one detector on one window, with the numbers behind it.

    `verdict == "insufficient_data"` means the detector refused to judge (no baseline yet, or
    fewer calls than its minimum sample); `reason` says which, in words an SRE can act on.
    `condition` names what was tested (e.g. "block_rate_above_baseline"); together with model
    and detector it is the alert's dedup key, so it must not contain numbers that change.
    """

    model_config = ConfigDict(frozen=True)

    detector: str
    model: str
    window_start: datetime
    window_end: datetime
    verdict: Verdict
    condition: str
    severity: Severity = "warning"
    value: float | None = None
    threshold: float | None = None
    baseline: float | None = None
    p_value: float | None = None
    sample_size: int = 0
    reason: str
    details: dict[str, Any] = Field(default_factory=dict)

    @property
    def firing(self) -> bool:
        return self.verdict == "alert"


AlertStatus = Literal["firing", "resolved"]
#: (dedup_key, status, window_end in Unix milliseconds)
AlertChangeKey = tuple[str, str, int]


class Alert(BaseModel):
    """A state change of one incident, as notifiers and `--alerts-out` receive it."""

    model_config = ConfigDict(frozen=True)

    dedup_key: str
    status: AlertStatus
    severity: Severity
    detector: str
    model: str
    condition: str
    window_start: datetime
    window_end: datetime
    value: float | None
    threshold: float | None
    baseline: float | None
    sample_size: int
    summary: str
    #: optional context (additive; receivers show what is set): what the model is, whose it is,
    #: the deciding window's one-line reason and its supporting numbers (top block reasons,
    #: finish reasons), links a receiver shows as buttons
    model_version: str | None = None
    tenant: str | None = None
    reason: str | None = None
    details: dict[str, Any] = Field(default_factory=dict)
    links: dict[str, str] = Field(default_factory=dict)

    @property
    def change_key(self) -> AlertChangeKey:
        """This state change, as the `alerts` table can tell it: the incident, its new status
        and the window that decided it (a later escalation or resolve has a later window)."""
        return (self.dedup_key, self.status, round(self.window_end.timestamp() * 1000))

    @property
    def fingerprint(self) -> str:
        """This exact alert: one window can make two changes of one incident with the same
        `change_key` (an escalation and the sustained-shift notice), each its own page."""
        return hashlib.blake2b(self.model_dump_json().encode(), digest_size=16).hexdigest()
