"""How detections become incidents and where their alerts go.

Frozen and validated once at the edge (a config file or `lookout run` flags), then passed to
`alerts.AlertTracker` and `alerts.Router`. Bounds are enforced, never silently clamped: a value
that would break a promise (an alert resolving more than 3 windows after its incident ends,
an incident caught later than 2 windows) is rejected with the reason.

Receivers (`receivers:`) are declared here by kind; every secret field is a `SecretRef`
naming an environment variable or a mounted file, never the value, so this config never holds
one and `lookout config check` can print it whole. A receiver URL that is written in the file
(Alertmanager's, PagerDuty's) may still carry `user:password@`: it is printed through
`redacted_url` (the models' serializers do it), as `http://user:***@host`. Routes name receivers
by `name`; names the engine knows without config (`console`, `log`) need no declaration.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterator, Mapping
from datetime import timedelta
from fnmatch import fnmatchcase
from typing import Annotated, Any, Literal, get_args
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    ValidationInfo,
    field_serializer,
    field_validator,
    model_validator,
)

from schemas.alert_types import (
    NonNegativeDuration,
    PositiveDuration,
    ReceiverName,
    SignedDuration,
    duration_text,
)

# re-exported: the receivers and their tests import it from here
from schemas.alert_types import SecretRef as SecretRef
from schemas.detection import Severity
from schemas.retune_config import RetuneConfig, check_detector_patterns

#: severities in increasing order; routing thresholds and "max seen" compare by this rank
SEVERITY_RANK: Mapping[Severity, int] = {"info": 0, "warning": 1, "critical": 2}

#: the alert fields a route may group by (labels Alertmanager would see); not model_version or
#: tenant: an alert is a model's, judged over all its versions and tenants (the version it
#: names is what its incident's first window's calls said, for the reader, not a slice judged)
GroupLabel = Literal["dedup_key", "model", "detector", "condition", "severity"]
#: why a route may not match on model_version or tenant (found in review: a route on
#: `tenant: acme` was accepted and never matched, and acme's alerts went to the default)
NOT_PER_SLICE = (
    "alerts are judged per model over all its versions and tenants (the version an alert "
    "names is what its calls said, not a slice judged on its own), so such a route would "
    "never match the slice it names; route on `model` (a glob such as gemini-*), and split "
    "cost or block rate by tenant or version in the tables (window_metrics_merged)"
)


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
    group_wait: NonNegativeDuration | None = None
    group_interval: NonNegativeDuration | None = None
    repeat_interval: NonNegativeDuration | None = None
    #: a retune action (by name, from `alerting.retune.actions`) this route triggers
    retune: str | None = None

    @field_validator("detector")
    @classmethod
    def _a_detector_lookout_has(cls, value: str | None) -> str | None:
        """`detector: saftey` was accepted and routed nothing: the pages went to the default
        receiver. A name or glob must match a detector, as a retune action's must."""
        if value is not None:
            check_detector_patterns((value,))
        return value

    @field_validator("severity")
    @classmethod
    def _a_severity_an_alert_has(cls, value: str | None) -> str | None:
        """`severity: critcal` (or `CRITICAL`: patterns are case-sensitive) passed `config
        check`, matched no alert, and the critical pages went to the console instead of
        PagerDuty (an SRE's trial). The pattern must match info, warning or critical."""
        if value is None:
            return value
        known = list(get_args(Severity))
        if not any(fnmatchcase(name, value) for name in known):
            close = difflib.get_close_matches(value.lower(), known, n=1, cutoff=0.6)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            msg = f"{value!r} matches no severity{hint}; an alert's is one of {', '.join(known)}"
            raise ValueError(msg)
        return value

    @field_validator("model_version", "tenant")
    @classmethod
    def _not_per_slice(cls, value: str | None) -> str | None:
        if value is not None:
            raise ValueError(NOT_PER_SLICE)
        return value

    @property
    def effective_min_severity(self) -> Severity:
        if self.min_severity is not None:
            return self.min_severity
        return "info" if self.severity is not None else "warning"


def url_problem(url: str) -> str | None:
    """Why `url` cannot be POSTed to (None when it can): httpx takes only http and https, and
    a URL without a scheme (`hooks.slack.com/...`) failed at the first page, not at start.
    The reason never quotes the URL."""
    try:
        parts = urlsplit(url.strip())
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError:
        return "not a valid URL"
    if parts.scheme.lower() not in ("http", "https"):
        return "not an http:// or https:// URL"
    if not parts.hostname:
        return "an http(s) URL without a host"
    return None


def redacted_url(url: str) -> str:
    """`url` safe to print: the password of its userinfo (`http://user:***@host`; a lone
    token as `***@host`) and its query values masked; scheme, host, port and path kept.

    For URLs written in the config file (Alertmanager, PagerDuty). Log and error lines go
    further (`alerts.notifiers.redact_secrets`: scheme and host only), since a URL read from
    a secret (a Slack webhook) keeps its secret in the path."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "(an unreadable URL, not shown)"
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, hostport = netloc.rpartition("@")
        user, colon, _ = userinfo.partition(":")
        netloc = f"{user}:***@{hostport}" if colon else f"***@{hostport}"
    query = re.sub(r"=[^&;]*", "=***", parts.query)
    return parts._replace(netloc=netloc, query=query).geturl()


def _url_or_secret(value: Any) -> Any:
    """A receiver URL written in the file, or a `SecretRef` to read it from (credentials in
    it, or a URL that differs per environment)."""
    if isinstance(value, Mapping):
        return SecretRef.model_validate(value)
    if isinstance(value, SecretRef):
        return value
    if not isinstance(value, str):
        msg = "expected an http(s) URL, {env: VAR} or {file: /path}"
        raise ValueError(msg)
    problem = url_problem(value)
    if problem is not None:
        msg = f"{problem} (the value is not shown)"
        raise ValueError(msg)
    return value


#: a URL written in the config file (printed redacted), or where to read it from
UrlOrSecret = Annotated[str | SecretRef, BeforeValidator(_url_or_secret)]


class BasicAuth(BaseModel):
    """HTTP basic authentication (RFC 7617): `username` in the file, `password` a secret."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    username: str = Field(min_length=1)
    password: SecretRef

    @field_validator("username")
    @classmethod
    def _no_colon(cls, value: str) -> str:
        if ":" in value:
            msg = "a basic-auth username cannot contain ':' (RFC 7617)"
            raise ValueError(msg)
        return value


class _ReceiverBase(BaseModel):
    """What every HTTP receiver shares: delivery policy and its bounds.

    Retries back off exponentially with full jitter from `backoff_initial` up to
    `backoff_max`, or wait what a 429/503 `Retry-After` asks (capped the same way); a
    notification still undelivered after `give_up_after` is dropped and counted as failed.
    `rate_limit_per_minute` spaces requests (a token bucket, burst `rate_limit_burst`);
    `outbox_max` bounds what waits for this receiver (oldest dropped first, counted).
    Every duration must be positive: a `give_up_after` of zero or less dropped every page that
    failed once.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: ReceiverName
    send_resolved: bool = True
    timeout: PositiveDuration = timedelta(seconds=10)
    backoff_initial: PositiveDuration = timedelta(seconds=1)
    backoff_max: PositiveDuration = timedelta(minutes=5)
    give_up_after: PositiveDuration = timedelta(hours=1)
    rate_limit_per_minute: float = Field(default=60.0, gt=0)
    rate_limit_burst: int = Field(default=10, ge=1)
    outbox_max: int = Field(default=1000, ge=1)

    @field_validator("backoff_max")
    @classmethod
    def _backoff_in_order(cls, value: timedelta, info: ValidationInfo) -> timedelta:
        initial = info.data.get("backoff_initial")
        if initial is not None and value < initial:
            msg = (
                f"must be at least backoff_initial ({duration_text(initial)}), "
                f"got {duration_text(value)}"
            )
            raise ValueError(msg)
        return value

    def secret_refs(self) -> Iterator[tuple[str, SecretRef]]:
        """Every secret this receiver reads, with its key as written (`basic_auth.password`)."""
        for field in type(self).model_fields:
            value = getattr(self, field)
            if isinstance(value, SecretRef):
                yield field, value
            elif isinstance(value, BasicAuth):
                yield f"{field}.password", value.password


def _one_credential(
    name: str, url: str | SecretRef, basic_auth: BasicAuth | None, bearer_token: SecretRef | None
) -> None:
    """`basic_auth` or `bearer_token` (either is the `Authorization` header), and none of them
    beside `user:password@` in a URL written in the file (which httpx would send instead)."""
    if basic_auth is not None and bearer_token is not None:
        msg = (
            f"receiver {name!r}: give basic_auth or bearer_token, not both (each is the "
            "Authorization header)"
        )
        raise ValueError(msg)
    has_credentials = basic_auth is not None or bearer_token is not None
    if isinstance(url, str) and has_credentials and "@" in urlsplit(url).netloc:
        msg = (
            f"receiver {name!r}: url has user:password@ and basic_auth or bearer_token is set "
            "too; keep the credentials in basic_auth or bearer_token only"
        )
        raise ValueError(msg)


class SlackReceiver(_ReceiverBase):
    """A Slack incoming webhook (Block Kit message per group)."""

    kind: Literal["slack"]
    webhook_url: SecretRef


class PagerDutyReceiver(_ReceiverBase):
    """PagerDuty Events API v2: one trigger / resolve event per alert, keyed by dedup_key.

    `source` defaults to the model name; `group` to `lookout`; component is the detector,
    class the condition. `url` is the Events API endpoint, written in the file or (behind a
    proxy that wants credentials in it) read from a `SecretRef`.
    """

    kind: Literal["pagerduty"]
    routing_key: SecretRef
    url: UrlOrSecret = "https://events.pagerduty.com/v2/enqueue"
    source: str | None = None
    group: str = "lookout"

    @field_serializer("url", mode="wrap")
    def _url_redacted(self, value: Any, handler: SerializerFunctionWrapHandler) -> Any:
        return redacted_url(value) if isinstance(value, str) else handler(value)


#: a Prometheus / Alertmanager label name (and annotation name)
LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")


#: `ends_after` must be at least this many `resend_interval`s: Alertmanager resolves an alert
#: whose `endsAt` passes, so one late or failed re-post must not resolve a firing alert
#: (Alertmanager's own clients set endsAt several resend intervals ahead)
ENDS_AFTER_RESENDS = 2


class AlertmanagerReceiver(_ReceiverBase):
    """Prometheus Alertmanager API v2 (`POST {url}/api/v2/alerts`).

    Firing alerts are re-posted every `resend_interval` with `endsAt` = now + `ends_after`
    (Alertmanager expects clients to keep posting what is still firing); a resolve posts
    `endsAt` in the past. Grouping and repeats are then Alertmanager's job. `ends_after` must
    be at least `ENDS_AFTER_RESENDS` x `resend_interval`, or the alert flaps resolved between
    re-posts. `url` may be a `SecretRef`; credentials go in `basic_auth` or `bearer_token`.
    """

    kind: Literal["alertmanager"]
    url: UrlOrSecret
    resend_interval: PositiveDuration = timedelta(minutes=1)
    #: validated when left out too: a `resend_interval` of 5m makes the default too short
    ends_after: PositiveDuration = Field(default=timedelta(minutes=5), validate_default=True)
    labels: dict[str, str] = Field(default_factory=dict)
    #: credentials for a proxy in front of Alertmanager, sent as the Authorization header
    basic_auth: BasicAuth | None = None
    bearer_token: SecretRef | None = None

    @model_validator(mode="after")
    def _credentials(self) -> AlertmanagerReceiver:
        _one_credential(self.name, self.url, self.basic_auth, self.bearer_token)
        return self

    @field_serializer("url", mode="wrap")
    def _url_redacted(self, value: Any, handler: SerializerFunctionWrapHandler) -> Any:
        return redacted_url(value) if isinstance(value, str) else handler(value)

    @field_validator("ends_after")
    @classmethod
    def _ends_after_outlasts_resends(cls, value: timedelta, info: ValidationInfo) -> timedelta:
        every = info.data.get("resend_interval")
        if every is not None and value < ENDS_AFTER_RESENDS * every:
            msg = (
                f"must be at least {ENDS_AFTER_RESENDS}x resend_interval "
                f"({duration_text(ENDS_AFTER_RESENDS * every)} for a resend_interval of "
                f"{duration_text(every)}), got {duration_text(value)}: Alertmanager resolves "
                "a firing alert whose endsAt passes before the next re-post"
            )
            raise ValueError(msg)
        return value

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
    HMAC-SHA256 of the exact body bytes; `basic_auth` / `bearer_token` as for Alertmanager."""

    kind: Literal["webhook"]
    url: SecretRef
    hmac_secret: SecretRef | None = None
    #: credentials the endpoint wants, sent as the Authorization header
    basic_auth: BasicAuth | None = None
    bearer_token: SecretRef | None = None

    @model_validator(mode="after")
    def _credentials(self) -> WebhookReceiver:
        _one_credential(self.name, self.url, self.basic_auth, self.bearer_token)
        return self


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
    cooldown: NonNegativeDuration = timedelta(0)
    notify_on_escalation: bool = True
    # -- incident lifecycle (frozen baselines, sustained shifts, acceptance) ----------------
    sustained_after: SignedDuration | None = timedelta(hours=6)
    accept_after: SignedDuration | None = None
    # ----------------------------------------------------------------------------------------
    routes: tuple[Route, ...] = ()
    default_receiver: ReceiverName = "console"
    info_receiver: ReceiverName = "log"
    receivers: tuple[ReceiverConfig, ...] = ()
    #: the root route's grouping (routes may override each): one notification per incident
    group_by: tuple[GroupLabel, ...] = ("dedup_key",)
    group_wait: NonNegativeDuration = timedelta(0)
    group_interval: NonNegativeDuration = timedelta(0)
    repeat_interval: NonNegativeDuration = timedelta(hours=4)
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
            msg = (
                "must be a positive duration (or null to switch it off), "
                f"got {duration_text(value)}"
            )
            raise ValueError(msg)
        return value

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
