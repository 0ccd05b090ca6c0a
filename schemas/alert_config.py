"""How detections become incidents and where their alerts go.

Frozen and validated once at the edge (a config file or `lookout run` flags), then passed to
`alerts.AlertTracker` and `alerts.Router`. Bounds are enforced, never silently clamped: a value
that would break a promise (an alert resolving more than 3 windows after its incident ends,
an incident caught later than 2 windows) is rejected with the reason.

Receiver names are plain strings here; the engine maps each to a notifier whose secrets
(webhook URLs, routing keys) come from the environment, so this config never holds one.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, field_validator

from schemas.detection import Severity

#: severities in increasing order; routing thresholds and "max seen" compare by this rank
SEVERITY_RANK: Mapping[Severity, int] = {"info": 0, "warning": 1, "critical": 2}

ReceiverName = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.-]+$")]


class Route(BaseModel):
    """One routing rule, matched in order like an Alertmanager route.

    `detector` and `model` are shell-style patterns (`gemini-*`); None matches anything.
    A rule matches alerts whose severity is at least `min_severity`; its default, `warning`,
    keeps `info` alerts (descriptor drift) off paging receivers unless a rule opts in.
    The first matching rule wins unless it sets `continue: true`, in which case later rules
    are tried as well and every matching rule's receivers get the alert.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", validate_by_name=True)

    receivers: tuple[ReceiverName, ...] = Field(min_length=1)
    detector: str | None = None
    model: str | None = None
    min_severity: Severity = "warning"
    continue_: bool = Field(default=False, alias="continue")


class AlertingConfig(BaseModel):
    """Settings of the alert state machine (see `alerts.state`) and of routing.

    - `fire_after_alert_windows`: consecutive alerting windows before an incident pages.
      At most 2, so an incident is still caught within 2 windows.
    - `resolve_after_ok_windows`: consecutive ok windows before an incident resolves; an alert
      in between restarts the count (hysteresis, so a flickering condition is one incident).
      At most 3, so an alert resolves within 3 windows of its incident's end.
    - `resolve_after_insufficient_windows`: an open incident whose detector can no longer judge
      (traffic vanished, baseline lost) for this many consecutive windows is resolved, saying
      so in the summary; None keeps it open until a judged window clears it.
    - `cooldown`: after an incident resolves, the same dedup key does not page again until this
      much event time has passed; a recurrence inside it is tracked silently and pages only if
      it is still alerting when the cooldown ends.
    - `notify_on_escalation`: send one more firing alert (same dedup key) when an open
      incident's severity rises, so a `critical`-only route hears about an escalated warning.

    Incident lifecycle (one block; see `worker.evaluator` and `alerts.state`):

    - `sustained_after`: an incident still firing this long after it began is announced once
      more as a "sustained level shift since T" and keeps firing, judged against the frozen
      pre-incident baseline, until it clears or its new level is accepted. None: no notice.
    - `accept_after`: accept the new level automatically this long after the incident began
      (the incident resolves with a notification saying so, and the baseline restarts from the
      incident's windows). None (default): only a person accepts, with
      `lookout baseline accept --model M --detector D`.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    fire_after_alert_windows: int = Field(default=1, ge=1, le=2)
    resolve_after_ok_windows: int = Field(default=2, ge=1, le=3)
    resolve_after_insufficient_windows: int | None = Field(default=6, ge=1)
    cooldown: timedelta = timedelta(0)
    notify_on_escalation: bool = True
    # -- incident lifecycle (frozen baselines, sustained shifts, acceptance) ----------------
    sustained_after: timedelta | None = timedelta(hours=6)
    accept_after: timedelta | None = None
    # ----------------------------------------------------------------------------------------
    routes: tuple[Route, ...] = ()
    default_receiver: ReceiverName = "console"
    info_receiver: ReceiverName = "log"

    @field_validator("sustained_after", "accept_after")
    @classmethod
    def _horizon_positive(cls, value: timedelta | None) -> timedelta | None:
        if value is not None and value <= timedelta(0):
            msg = f"must be a positive duration (or null to switch it off), got {value}"
            raise ValueError(msg)
        return value

    @field_validator("cooldown")
    @classmethod
    def _cooldown_not_negative(cls, value: timedelta) -> timedelta:
        if value < timedelta(0):
            msg = f"cooldown must be zero or positive, got {value}"
            raise ValueError(msg)
        return value
