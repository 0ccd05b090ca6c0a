"""How detections become incidents and where their alerts go.

Frozen and validated once at the edge (a config file or `lookout run` flags), then passed to
`alerts.AlertTracker` and `alerts.Router`. Bounds are enforced, never silently clamped: a value
that would break a promise (an alert resolving more than 3 windows after its incident ends,
an incident caught later than 2 windows) is rejected with the reason.

Receivers (`receivers:`) are declared here by kind; every secret field is a `SecretRef`
naming an environment variable or a mounted file, never the value, so this config never holds
one and `lookout config check` can print it whole. Routes name receivers by `name`; names the
engine knows without config (`console`, `log`) need no declaration.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import timedelta
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from schemas.alert_types import Duration, ReceiverName, not_negative
from schemas.detection import Severity
from schemas.retune_config import RetuneConfig

#: severities in increasing order; routing thresholds and "max seen" compare by this rank
SEVERITY_RANK: Mapping[Severity, int] = {"info": 0, "warning": 1, "critical": 2}

#: the alert fields a route may group by (labels Alertmanager would see)
GroupLabel = Literal[
    "dedup_key", "model", "detector", "condition", "severity", "model_version", "tenant"
]


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
    model_version: str | None = None
    tenant: str | None = None
    #: a pattern on the severity name (`critical`, `warn*`); when set, `min_severity` defaults
    #: to `info` so `severity: info` can match
    severity: str | None = None
    min_severity: Severity | None = None
    continue_: bool = Field(default=False, alias="continue")
    #: None inherits the value from the `alerting:` section (Alertmanager's root route)
    group_by: tuple[GroupLabel, ...] | None = None
    group_wait: Duration | None = None
    group_interval: Duration | None = None
    repeat_interval: Duration | None = None
    #: a retune action (by name, from `alerting.retune.actions`) this route triggers
    retune: str | None = None

    @property
    def effective_min_severity(self) -> Severity:
        if self.min_severity is not None:
            return self.min_severity
        return "info" if self.severity is not None else "warning"

    @field_validator("group_wait", "group_interval", "repeat_interval")
    @classmethod
    def _durationsnot_negative(cls, value: timedelta | None) -> timedelta | None:
        return None if value is None else not_negative(value)


class SecretRef(BaseModel):
    """Where a secret lives: exactly one of `env` (a variable name) or `file` (a mounted path).

    A literal string in a secret field is rejected, so a routing key or a webhook URL never
    sits in a ConfigMap, a values file or `lookout config check` output. The value is read
    only when receivers are built (`alerts.receivers.secrets`), never stored in config.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    env: str | None = Field(default=None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    file: str | None = Field(default=None, min_length=1)

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
        return f"env {self.env}" if self.env is not None else f"file {self.file}"


class _ReceiverBase(BaseModel):
    """What every HTTP receiver shares: delivery policy and its bounds.

    Retries back off exponentially with full jitter from `backoff_initial` up to
    `backoff_max`, or wait what a 429/503 `Retry-After` asks (capped the same way); a
    notification still undelivered after `give_up_after` is dropped and counted as failed.
    `rate_limit_per_minute` spaces requests (a token bucket, burst `rate_limit_burst`);
    `outbox_max` bounds what waits for this receiver (oldest dropped first, counted).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: ReceiverName
    send_resolved: bool = True
    timeout: Duration = timedelta(seconds=10)
    backoff_initial: Duration = timedelta(seconds=1)
    backoff_max: Duration = timedelta(minutes=5)
    give_up_after: Duration = timedelta(hours=1)
    rate_limit_per_minute: float = Field(default=60.0, gt=0)
    rate_limit_burst: int = Field(default=10, ge=1)
    outbox_max: int = Field(default=1000, ge=1)

    @model_validator(mode="after")
    def _backoff_in_order(self) -> _ReceiverBase:
        if not timedelta(0) < self.backoff_initial <= self.backoff_max:
            msg = "backoff_initial must be positive and at most backoff_max"
            raise ValueError(msg)
        if self.timeout <= timedelta(0):
            msg = "timeout must be positive"
            raise ValueError(msg)
        return self


class SlackReceiver(_ReceiverBase):
    """A Slack incoming webhook (Block Kit message per group)."""

    kind: Literal["slack"]
    webhook_url: SecretRef


class PagerDutyReceiver(_ReceiverBase):
    """PagerDuty Events API v2: one trigger / resolve event per alert, keyed by dedup_key.

    `source` defaults to the model name; `group` to `lookout`; component is the detector,
    class the condition. `url` is the Events API endpoint (not a secret).
    """

    kind: Literal["pagerduty"]
    routing_key: SecretRef
    url: str = Field(default="https://events.pagerduty.com/v2/enqueue", pattern=r"^https?://")
    source: str | None = None
    group: str = "lookout"


#: a Prometheus / Alertmanager label name (and annotation name)
LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")


class AlertmanagerReceiver(_ReceiverBase):
    """Prometheus Alertmanager API v2 (`POST {url}/api/v2/alerts`).

    Firing alerts are re-posted every `resend_interval` with `endsAt` = now + `ends_after`
    (Alertmanager expects clients to keep posting what is still firing); a resolve posts
    `endsAt` in the past. Grouping and repeats are then Alertmanager's job.
    """

    kind: Literal["alertmanager"]
    url: str = Field(pattern=r"^https?://")
    resend_interval: Duration = timedelta(minutes=1)
    ends_after: Duration = timedelta(minutes=5)
    labels: dict[str, str] = Field(default_factory=dict)

    @field_validator("labels")
    @classmethod
    def _label_names_valid(cls, value: dict[str, str]) -> dict[str, str]:
        """Alertmanager answers 400 (not retried: every alert lost) to a label name outside
        `[a-zA-Z_][a-zA-Z0-9_]*`, and names starting `__` are reserved: refuse them here."""
        bad = sorted(n for n in value if not LABEL_NAME.fullmatch(n) or n.startswith("__"))
        if bad:
            msg = (
                f"label names {bad} are not valid Alertmanager label names "
                "(letters, digits and _, not starting with a digit or __)"
            )
            raise ValueError(msg)
        return value


class WebhookReceiver(_ReceiverBase):
    """A generic JSON webhook; with `hmac_secret`, `X-Lookout-Signature: sha256=<hex>` is the
    HMAC-SHA256 of the exact body bytes."""

    kind: Literal["webhook"]
    url: SecretRef
    hmac_secret: SecretRef | None = None


ReceiverConfig = Annotated[
    SlackReceiver | PagerDutyReceiver | AlertmanagerReceiver | WebhookReceiver,
    Field(discriminator="kind"),
]
#: names the engine provides without a `receivers:` entry
BUILTIN_RECEIVERS = frozenset({"console", "log"})
_LINK_FIELDS = frozenset(
    {"model", "detector", "condition", "dedup_key", "window_start", "window_end", "status"}
)
_PLACEHOLDER = re.compile(r"{([^{}]*)}")


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
    receivers: tuple[ReceiverConfig, ...] = ()
    #: the root route's grouping (routes may override each): one notification per incident
    group_by: tuple[GroupLabel, ...] = ("dedup_key",)
    group_wait: Duration = timedelta(0)
    group_interval: Duration = timedelta(0)
    repeat_interval: Duration = timedelta(hours=4)
    #: link name -> URL template with {model}, {detector}, {condition}, {dedup_key},
    #: {window_start}, {window_end}, {status} (e.g. a console or BigQuery query, the report)
    links: dict[str, str] = Field(default_factory=dict)
    #: where undelivered notifications and group state persist (SQLite); None: beside the sink
    outbox_path: str | None = None
    #: retune actions routes can name (`retune: <name>`), and the dataset export
    retune: RetuneConfig = RetuneConfig()

    @field_validator("sustained_after", "accept_after")
    @classmethod
    def _horizon_positive(cls, value: timedelta | None) -> timedelta | None:
        if value is not None and value <= timedelta(0):
            msg = f"must be a positive duration (or null to switch it off), got {value}"
            raise ValueError(msg)
        return value

    @field_validator("cooldown")
    @classmethod
    def _cooldownnot_negative(cls, value: timedelta) -> timedelta:
        if value < timedelta(0):
            msg = f"cooldown must be zero or positive, got {value}"
            raise ValueError(msg)
        return value

    @field_validator("group_wait", "group_interval", "repeat_interval")
    @classmethod
    def _durationsnot_negative(cls, value: timedelta) -> timedelta:
        return not_negative(value)

    @field_validator("links")
    @classmethod
    def _links_name_known_fields(cls, value: dict[str, str]) -> dict[str, str]:
        for name, template in value.items():
            unknown = set(_PLACEHOLDER.findall(template)) - _LINK_FIELDS
            if unknown:
                msg = (
                    f"link {name!r} uses unknown placeholders {sorted(unknown)}; "
                    f"expected some of {sorted(_LINK_FIELDS)}"
                )
                raise ValueError(msg)
        return value

    @model_validator(mode="after")
    def _receivers_unique_and_known(self) -> AlertingConfig:
        names = [r.name for r in self.receivers]
        doubled = sorted(
            {n for n in names if names.count(n) > 1} | (set(names) & BUILTIN_RECEIVERS)
        )
        if doubled:
            msg = f"alerting.receivers: names used twice or reserved: {doubled}"
            raise ValueError(msg)
        actions = {a.name for a in self.retune.actions}
        unknown = sorted({r.retune for r in self.routes if r.retune} - actions)
        if unknown:
            msg = f"alerting.routes name retune actions not in alerting.retune.actions: {unknown}"
            raise ValueError(msg)
        return self

    def receiver(self, name: str) -> ReceiverConfig | None:
        return next((r for r in self.receivers if r.name == name), None)
