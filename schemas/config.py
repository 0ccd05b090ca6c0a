"""Lookout's configuration: one YAML file, every value overridable by `LOOKOUT_…` variables.

Read once at the edge (the CLI) and passed down; nothing reads the environment at import time.
Unknown keys are errors naming the key's path, so a typo never silently falls back to a default.
Nested values are overridden with a double underscore: `LOOKOUT_ENGINE__WINDOW_SECONDS=30`; a
`LOOKOUT_…` variable that sets nothing is refused with a did-you-mean, like an unknown key (one
that reads as no setting at all is only warned about), and one naming a list or a section must
hold JSON.
Secrets (webhook URLs, routing keys) never live here: receivers name the environment variable.
"""

from __future__ import annotations

import contextlib
import difflib
import functools
import json
import logging
import os
import re
import types
import typing
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ModelWrapValidatorHandler,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
)

from schemas.alert_config import BUILTIN_RECEIVERS, AlertingConfig
from schemas.detector_config import LatencyConfig, SafetyConfig, TokensConfig
from schemas.drift_config import DescriptorDriftConfig, EmbeddingDriftConfig

log = logging.getLogger("lookout.config")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FileSourceConfig(_Strict):
    kind: Literal["file"] = "file"
    #: an NDJSON file, or "-" for standard input
    path: str = "-"
    format: str | None = None
    lines_per_message: int = Field(default=2000, ge=1)


class PubSubSourceConfig(_Strict):
    kind: Literal["pubsub"] = "pubsub"
    project: str
    subscription: str
    dead_letter_topic: str | None = None
    #: "unary" pull measured faster for this workload (see worker/sources/pubsub_source.py)
    mode: Literal["unary", "streaming"] = "unary"
    #: flow control: messages and bytes held un-acked at once (bounds memory)
    max_messages: int = Field(default=10_000, ge=1)
    max_bytes: int = Field(default=256 * 1024 * 1024, ge=1024)
    #: messages asked for per pull and folded together (Pub/Sub returns at most 1,000); small
    #: pulls of single-record messages pay the per-fold cost for a handful of records
    pull_max_messages: int = Field(default=1000, ge=1, le=1000)
    #: unary pulls in flight at once, ahead of the engine (within `max_messages`/`max_bytes`)
    concurrent_pulls: int = Field(default=2, ge=1, le=16)
    #: above window + lateness + checkpoint, so a held message is never redelivered early
    max_lease_duration_seconds: int = Field(default=900, ge=60)
    ack_deadline_seconds: int = Field(default=60, ge=10, le=600)
    #: a gzip body that inflates past this is one bad message (DecodeError), never an OOM
    max_inflated_bytes: int = Field(default=64 * 1024 * 1024, ge=1024, le=1 << 34)
    #: a local directory (e.g. a mounted volume) for whole bodies too large for the
    #: dead-letter topic (Pub/Sub's 10 MB limit) — the topic then gets a finder record.
    #: gs:// is not built: mount the bucket (Cloud Storage FUSE) and give the mount path
    dead_letter_overflow_path: str | None = None
    #: a message whose bad records cannot be dead-lettered this many times (or that Pub/Sub
    #: delivered this many times) is given up on — logged, kept in the overflow path — and
    #: acked, instead of being redelivered forever
    max_dead_letter_failures: int = Field(default=5, ge=1, le=1000)
    #: longest wait between pulls while the subscription is missing or unreachable
    max_backoff_seconds: float = Field(default=30.0, ge=0.5, le=3600)


class SimulatorSourceConfig(_Strict):
    kind: Literal["simulator"] = "simulator"
    hours: float = Field(default=3.0, gt=0)
    calls_per_minute: float = Field(default=700.0, gt=0)
    incidents: tuple[str, ...] = ()
    seed: int = 7


SourceConfig = Annotated[
    FileSourceConfig | PubSubSourceConfig | SimulatorSourceConfig, Field(discriminator="kind")
]


class DuckDBSinkConfig(_Strict):
    kind: Literal["duckdb"] = "duckdb"
    path: str = "./lookout.duckdb"
    #: DuckDB's buffer cache limit (it defaults to 80% of RAM)
    memory_limit: str = "256MB"

    @field_validator("memory_limit")
    @classmethod
    def _memory_size(cls, value: str) -> str:
        """DuckDB would refuse it only when the sink opens, without naming this key."""
        if not re.fullmatch(r"\s*\d+(\.\d+)?\s*([KMGT]i?)?B\s*", value, flags=re.IGNORECASE):
            msg = f"expected a size such as 256MB, 1GB or 512MiB, got {value!r}"
            raise ValueError(msg)
        return value


class BigQuerySinkConfig(_Strict):
    """Window aggregates, detections and alerts in BigQuery, for analysts. Credentials are
    Application Default Credentials (Workload Identity on GKE); create the tables with
    `lookout bq init`. BIGQUERY_EMULATOR_HOST (host:port) points the client at an emulator."""

    kind: Literal["bigquery"] = "bigquery"
    project: str = Field(min_length=1)
    dataset: str = Field(default="llm_monitoring", pattern=r"^[A-Za-z0-9_]{1,1024}$")
    location: str | None = None
    #: how long one write retries transient errors before the checkpoint fails (and the engine
    #: keeps its messages un-acked and tries again at the next checkpoint)
    write_timeout_seconds: float = Field(default=30.0, gt=0)


def _duckdb_unless_named(value: Any) -> Any:
    """`sink:` without `kind` is the DuckDB sink, as before BigQuery existed."""
    if isinstance(value, Mapping) and "kind" not in value:
        return {"kind": "duckdb", **value}
    return value


SinkConfig = Annotated[
    DuckDBSinkConfig | BigQuerySinkConfig,
    Field(discriminator="kind"),
    BeforeValidator(_duckdb_unless_named),
]


#: after the ack deadline, how long Pub/Sub may take to hand an expired message out again
REDELIVERY_MARGIN_SECONDS = 15.0
#: how long a checkpoint's write may take beyond its interval (a BigQuery insert: seconds)
CHECKPOINT_WRITE_SLACK_SECONDS = 5.0
#: evaluate role, when its file does not say how the replicas read Pub/Sub
DEFAULT_WRITER_ACTIVE_SECONDS = 60.0
#: the BigQuery tables one checkpoint writes in turn, by role, each insert retrying for up to
#: `write_timeout_seconds` (`BigQuerySink.stage`): an ingest replica writes request ids, window
#: metrics, quarantined records and its progress; the evaluator detections, alerts, alert state
#: and detector references (a baseline acceptance, a person's rare action, adds one more); one
#: process doing both writes all eight. A large checkpoint splits a table into several requests.
BIGQUERY_CHECKPOINT_TABLES: dict[str, int] = {"ingest": 4, "evaluate": 4, "all": 8}


class EngineConfig(_Strict):
    window_seconds: int = Field(default=60, ge=1, le=86_400)
    allowed_lateness_seconds: float = Field(default=30.0, ge=0)
    checkpoint_seconds: float = Field(default=5.0, gt=0)
    #: also checkpoint when this many messages are waiting for their ack
    checkpoint_max_messages: int = Field(default=5000, ge=1)
    #: also checkpoint when this many records are folded and not yet written (many-record
    #: messages reach the message count late, and one large write at the end is a long wait)
    checkpoint_max_records: int = Field(default=50_000, ge=1)
    max_open_windows: int = Field(default=512, ge=4)
    #: identifies this replica's partial rows; defaults to host name and process id
    writer_id: str | None = None
    #: Kubernetes terminationGracePeriodSeconds minus a margin
    grace_period_seconds: float = Field(default=25.0, gt=0)
    #: all: one process does everything; ingest: decode, fold, checkpoint, ack (N replicas,
    #: never alerting); evaluate: judge closed windows from the sink and alert (one replica)
    role: Literal["all", "ingest", "evaluate"] = "all"
    #: a record further ahead than this of the stream's event time (or of the wall clock) is
    #: quarantined, not folded: one broken producer clock must not move the watermark
    max_future_skew_seconds: float = Field(default=3600.0, gt=0)
    #: a record further behind the stream's event time than this is quarantined, not late
    max_past_seconds: float = Field(default=7 * 86_400.0, gt=0)
    #: admitted records that must agree before the watermark moves...
    watermark_quorum: int = Field(default=5, ge=1, le=1000)
    #: ...and the share of a batch's records that must: more than one fast producer sends
    #: (quorum 1 and a share of 1e-9: the plain maximum)
    watermark_share: float = Field(default=0.5, gt=0, le=1)
    #: evaluate role: a window closes at the slowest ingest replica's frontier, among the
    #: replicas that reported within this many seconds of the newest report (an idle, stopped
    #: or scaled-down replica stops holding windows open after it). None: long enough for a
    #: killed replica's unacked messages to come back and be durable at another replica
    #: (`LookoutConfig.evaluator_writer_active_seconds`)
    writer_active_seconds: float | None = Field(default=None, gt=0)


class DecodeConfig(_Strict):
    #: a longer record is one `DecodeError` (the file reader skips the rest of such a line)
    max_record_bytes: int = Field(default=1_048_576, ge=256)
    #: deeper nesting of objects and arrays is one `DecodeError`, checked before parsing; the
    #: ceiling keeps the parser well inside Python's recursion limit on any thread
    max_depth: int = Field(default=64, ge=2, le=256)
    #: reject embeddings of another dimension; None accepts any (one per model)
    embedding_dim: int | None = Field(default=None, ge=1)


class DetectorsConfig(_Strict):
    enabled: tuple[str, ...] = (
        "safety",
        "latency",
        "tokens",
        "embedding_drift",
        "descriptor_drift",
    )
    safety: SafetyConfig = SafetyConfig()
    latency: LatencyConfig = LatencyConfig()
    tokens: TokensConfig = TokensConfig()
    embedding_drift: EmbeddingDriftConfig = EmbeddingDriftConfig()
    descriptor_drift: DescriptorDriftConfig = DescriptorDriftConfig()

    @field_validator("enabled")
    @classmethod
    def _known_detectors(cls, enabled: tuple[str, ...]) -> tuple[str, ...]:
        """A misspelt name passed `config check` and failed later with an AttributeError."""
        problem = unknown_detectors(enabled)
        if problem is not None:
            raise ValueError(problem)
        return enabled


def unknown_detectors(names: Sequence[str]) -> str | None:
    """The one wording for detector names Lookout does not have (`detectors.enabled`,
    `lookout baseline accept --detector`), naming the known ones; None if all are known."""
    known = [n for n in DetectorsConfig.model_fields if n != "enabled"]
    unknown = [n for n in names if n not in known]
    if not unknown:
        return None
    return f"unknown detector(s) {', '.join(unknown)}; known: {', '.join(known)}"


class MetricsConfig(_Strict):
    enabled: bool = True
    host: str = "0.0.0.0"
    port: int = Field(default=9464, ge=0, le=65_535)
    #: label values for `model`; others are reported as "other". Empty: first `max_models` seen.
    models: tuple[str, ...] = ()
    max_models: int = Field(default=20, ge=1, le=1000)
    #: /healthz answers 503 once the main loop has not come round for this long (a hung sink
    #: write, a deadlock), so the liveness probe restarts the pod; above the longest honest
    #: pause (a checkpoint retrying a slow sink for its write timeout, table by table)
    stall_seconds: float = Field(default=600.0, ge=10)


class LookoutConfig(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="LOOKOUT_", env_nested_delimiter="__", extra="forbid", frozen=True
    )

    source: SourceConfig = FileSourceConfig()
    sink: SinkConfig = DuckDBSinkConfig()
    engine: EngineConfig = EngineConfig()
    decode: DecodeConfig = DecodeConfig()
    detectors: DetectorsConfig = DetectorsConfig()
    alerting: AlertingConfig = AlertingConfig()
    metrics: MetricsConfig = MetricsConfig()
    #: append every alert state change as a JSON line here
    alerts_out: str | None = None
    #: write an HTML report here at the end of a finite run
    report: str | None = None

    def detector_configs(self) -> dict[str, BaseModel]:
        """The enabled detectors' configurations, with what they take from the engine: the
        latency SLO's history is sized by the window length unless one is given."""
        configs: dict[str, BaseModel] = {
            name: getattr(self.detectors, name) for name in self.detectors.enabled
        }
        latency = self.detectors.latency
        if "latency" in configs and latency.expected_window_seconds is None:
            configs["latency"] = latency.model_copy(
                update={"expected_window_seconds": self.engine.window_seconds}
            )
        return configs

    def evaluator_writer_active_seconds(self) -> float:
        """How long a replica's last frontier holds windows open after its last report.

        A replica killed with messages pulled and not acked reported last up to a checkpoint
        interval before it died. Those messages come back to another replica once their leases
        expire (the ack deadline, plus the service's redelivery delay) and are durable there a
        checkpoint later. Dropping the dead replica's frontier sooner lets the others' close
        the windows those records belong to, and they are judged without them (with the former
        fixed 60 s and the default 60 s ack deadline, always). Without the replicas' Pub/Sub
        settings in this file, 60 s.
        """
        if self.engine.writer_active_seconds is not None:
            return self.engine.writer_active_seconds
        if not isinstance(self.source, PubSubSourceConfig):
            return DEFAULT_WRITER_ACTIVE_SECONDS
        checkpoint = self.engine.checkpoint_seconds + CHECKPOINT_WRITE_SLACK_SECONDS
        return self.source.ack_deadline_seconds + REDELIVERY_MARGIN_SECONDS + 2 * checkpoint

    @model_validator(mode="after")
    def _lease_outlives_a_window(self) -> LookoutConfig:
        """A Pub/Sub message must stay leased until the checkpoint that holds its records, or
        Pub/Sub hands it to another worker while this one still counts it."""
        source, engine = self.source, self.engine
        if isinstance(source, PubSubSourceConfig):
            needed = engine.window_seconds + engine.allowed_lateness_seconds
            needed += engine.checkpoint_seconds
            if source.max_lease_duration_seconds <= needed:
                msg = (
                    f"source.max_lease_duration_seconds ({source.max_lease_duration_seconds}) "
                    "must exceed engine.window_seconds + allowed_lateness_seconds + "
                    f"checkpoint_seconds ({needed:g})"
                )
                raise ValueError(msg)
        return self

    @model_validator(mode="after")
    def _liveness_outlasts_a_checkpoint(self) -> LookoutConfig:
        """/healthz fails once the main loop has not come round for `metrics.stall_seconds`, and
        the liveness probe then restarts the pod: a limit below an honest checkpoint (on BigQuery
        a write retrying for `write_timeout_seconds`, table after table) kills pods mid-write,
        their messages are redelivered and the next replica is killed the same way."""
        metrics, engine, sink = self.metrics, self.engine, self.sink
        if not metrics.enabled:
            return self  # no /healthz
        checkpoint = engine.checkpoint_seconds
        if isinstance(sink, BigQuerySinkConfig):
            tables = BIGQUERY_CHECKPOINT_TABLES[engine.role]
            timeout = sink.write_timeout_seconds
            needed = checkpoint + tables * timeout
            rule = (
                f"engine.checkpoint_seconds + {tables} x sink.write_timeout_seconds "
                f"({checkpoint:g} + {tables} x {timeout:g} = {needed:g})"
            )
            why = (
                f"a checkpoint of role {engine.role} writes up to {tables} BigQuery tables in "
                "turn, each retrying for up to write_timeout_seconds"
            )
        else:
            needed = checkpoint + CHECKPOINT_WRITE_SLACK_SECONDS
            rule = (
                f"engine.checkpoint_seconds + {CHECKPOINT_WRITE_SLACK_SECONDS:g} s "
                f"({checkpoint:g} + {CHECKPOINT_WRITE_SLACK_SECONDS:g} = {needed:g})"
            )
            why = (
                "an idle main loop comes round once per checkpoint interval (the evaluator "
                "waits that long between rounds), and a write takes seconds more"
            )
        if metrics.stall_seconds < needed:
            msg = (
                f"metrics.stall_seconds ({metrics.stall_seconds:g}) must be at least {rule}: "
                f"{why}, and /healthz fails (the liveness probe restarts the pod mid-checkpoint) "
                "once the main loop has not come round for stall_seconds"
            )
            raise ValueError(msg)
        return self

    @model_validator(mode="after")
    def _routes_name_declared_receivers(self) -> LookoutConfig:
        """A route to a receiver nobody declared would lose its alerts with one log line, at
        the first page: refuse the file instead. (`AlertingConfig` alone stays open to
        receivers given in code, as tests and embedders do.)"""
        declared = {r.name for r in self.alerting.receivers} | BUILTIN_RECEIVERS
        alerting = self.alerting
        if self.engine.role == "ingest":
            # never notifies; the chart gives ingest pods the routes but not the receivers
            return self
        named = [(f"alerting.routes[{i}].receivers", n) for i, route in enumerate(alerting.routes)
                 for n in route.receivers]  # fmt: skip
        named += [("alerting.default_receiver", alerting.default_receiver)]
        named += [("alerting.info_receiver", alerting.info_receiver)]
        unknown = [f"{where}: {name!r}" for where, name in named if name not in declared]
        if unknown:
            known = ", ".join(sorted(declared))
            msg = f"receivers not declared in alerting.receivers ({known}): " + "; ".join(unknown)
            raise ValueError(msg)
        return self

    @model_validator(mode="wrap")
    @classmethod
    def _no_booleans_for_numbers(
        cls, data: Any, handler: ModelWrapValidatorHandler[LookoutConfig]
    ) -> LookoutConfig:
        """`allowed_lateness_seconds: true` must not become 1.0: pydantic's lax mode takes a
        boolean as 1 or 0 for any number (or duration), and `lookout run` then silently runs
        with it. One check for every section, including those defined in other modules, instead
        of strict types field by field (strict mode would also refuse the strings environment
        variables carry, and lists for tuples): whatever was a boolean in the input and is no
        longer one after validation was coerced."""
        config = handler(data)
        coerced = [_bool_problem(loc, value) for loc, value in _coerced_booleans(data, config, ())]
        if coerced:
            raise PydanticCustomError(
                BOOL_NOT_NUMBER, "{summary}", {"summary": "; ".join(coerced), "each": coerced}
            )
        return config

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # environment beats the file, so a Deployment can override one value of a ConfigMap
        return (env_settings, init_settings)


#: the error type of `LookoutConfig._no_booleans_for_numbers`: one problem per field in ctx
BOOL_NOT_NUMBER = "bool_not_number"


def _coerced_booleans(
    data: Any, value: Any, loc: tuple[str | int, ...]
) -> Iterator[tuple[tuple[str | int, ...], bool]]:
    """Where `data` (the input) held a boolean that validation turned into something else
    (`value`, the validated model), walking both side by side by the keys as written."""
    if isinstance(data, bool):
        if not isinstance(value, bool):
            yield loc, data
        return
    if isinstance(data, Mapping):
        if isinstance(value, BaseModel):
            fields = type(value).model_fields
            for key, item in data.items():
                name = next((n for n, f in fields.items() if key in (n, f.alias)), None)
                if name is not None:
                    yield from _coerced_booleans(item, getattr(value, name), (*loc, str(key)))
        elif isinstance(value, Mapping):
            for key, item in data.items():
                if key in value:
                    yield from _coerced_booleans(item, value[key], (*loc, str(key)))
    elif (
        isinstance(data, list | tuple)
        and isinstance(value, list | tuple)
        and len(data) == len(value)
    ):
        for index, (item, validated) in enumerate(zip(data, value, strict=True)):
            yield from _coerced_booleans(item, validated, (*loc, index))


def _bool_problem(loc: tuple[str | int, ...], value: bool) -> str:
    """`engine.allowed_lateness_seconds: expected a number, not a boolean (got true)`, blamed on
    the `LOOKOUT_…` variable that set it if one did (a JSON section can hold a boolean)."""
    where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc).lstrip(".")
    message = f"expected a number, not a boolean (got {str(value).lower()})"
    variable = _blamed_variable(loc, os.environ)
    if variable is not None:
        return f"environment {variable} ({where}): {message}"
    return f"{where}: {message}"


def key_origin(loc: tuple[str, ...], source: str, environ: Mapping[str, str] | None = None) -> str:
    """Who set the key at `loc`, worded as config problems are: `lookout.yaml: sink.path`, or
    `environment LOOKOUT_SINK__PATH (sink.path)` when a variable overrode the file."""
    where = ".".join(loc)
    variable = _blamed_variable(loc, os.environ if environ is None else environ)
    if variable is not None:
        return f"environment {variable} ({where})"
    return f"{source}: {where}"


class ConfigError(Exception):
    """A configuration file that cannot be used; `problems` holds one readable line each."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = problems
        super().__init__(f"{source}: " + "; ".join(problems))


_SECRET_HINTS = ("url", "key", "token", "secret", "password")


def _describe(error: Any, environ: Mapping[str, str] | None = None) -> str:
    """`key.path: what is wrong (got value)`; strings are never echoed, since a misplaced
    secret (a webhook URL under the wrong key) would otherwise end up in a terminal or CI log.

    A value that came from a `LOOKOUT_…` variable is blamed on that variable, not on the file
    (`environment LOOKOUT_ENGINE__WINDOW_SECONDS (engine.window_seconds): …`), and its value is
    never shown: environment variables are where secrets live."""
    location = _location(error["loc"])
    message = str(error["msg"]).removeprefix("Value error, ")
    if error["type"] == "value_error" and not error["loc"]:
        # a rule across sections (our own message names every key it involves)
        return message
    environ = os.environ if environ is None else environ
    variable = _blamed_variable(error["loc"], environ)
    # a union member chosen by a variable's `kind`: its missing and unknown keys are its doing
    chosen = None if variable is not None else _kind_variable(error["loc"], environ)
    if error["type"] == "union_tag_invalid":
        context = error.get("ctx") or {}
        field = str(context.get("discriminator", "kind")).strip("'")
        tags = [t.strip(" '") for t in str(context.get("expected_tags", "")).split(",")]
        tag = str(context.get("tag", ""))
        variable = _blamed_variable((*error["loc"], field), environ)
        location = f"{location}.{field}"
        # a variable's value is not shown (it may be anything, a secret pasted in the wrong one)
        shown = "value" if variable is not None else repr(tag)
        message = f"unknown {shown}; expected one of {', '.join(tags)}"
        close = difflib.get_close_matches(tag, tags, n=1, cutoff=0.6)
        if close:
            message += f" (did you mean {close[0]!r}?)"
    elif error["type"] == "extra_forbidden":
        message = _unknown_key(tuple(error["loc"]))
    elif variable is None and not any(hint in location.lower() for hint in _SECRET_HINTS):
        value = error.get("input")
        if isinstance(value, int | float | bool) and "got " not in message:
            message += f" (got {value!r})"
    if variable is not None:
        return f"environment {variable} ({location}): {message}"
    if chosen is not None:
        name, kind_at, tag, tag_index = chosen
        loc = tuple(error["loc"])
        where = _location(loc[:tag_index] + loc[tag_index + 1 :])
        return f"environment {name} ({kind_at}: {tag}): {where}: {message}"
    return f"{location}: {message}"


def _unknown_key(loc: tuple[Any, ...]) -> str:
    """`unknown key`, with the closest key of the same section (never the key itself), and for
    a tagged union's member the other kinds that have it (`source.path` under kind pubsub)."""
    key = str(loc[-1])
    owner = _models(_annotation_at(loc[:-1]))
    candidates = set(_keys_of(owner[0])) if len(owner) == 1 else set(_known_keys())
    message = "unknown key"
    if len(loc) >= 3 and isinstance(loc[-2], str) and len(owner) == 1:
        members = _models(_annotation_at(loc[:-2]))
        kinds = [_tags_of(m) for m in members if m is not owner[0] and key in _keys_of(m)]
        if len(members) > 1 and loc[-2] in _tags_of(owner[0]):
            message += f" for kind {loc[-2]!r}"
            if kinds:
                message += f" (a key of kind {', '.join(repr(t) for k in kinds for t in k)})"
                return message
    close = difflib.get_close_matches(key, sorted(candidates - {key.lower()}), n=1, cutoff=0.75)
    if close:
        message += f" (did you mean {close[0]!r}?)"
    return message


def _tags_of(model: type[BaseModel]) -> tuple[str, ...]:
    """The `kind` values that choose this member of a tagged union."""
    field = model.model_fields.get("kind")
    if field is None:
        return ()
    return tuple(str(t) for t in typing.get_args(_unwrap(field.annotation)))


def _annotation_at(loc: Sequence[Any]) -> Any:
    """The type of the value at an error's `loc` (a tagged union's member tag included), or
    None where the path leaves the models."""
    annotation: Any = LookoutConfig
    for part in loc:
        if annotation is None:
            return None
        if isinstance(part, int):  # an item of a list or tuple
            items = [typing.get_args(m) for m in _members(annotation) if typing.get_args(m)]
            annotation = items[0][0] if items else None
            continue
        models = _models(annotation)
        member = next((m for m in models if len(models) > 1 and part in _tags_of(m)), None)
        if member is not None:
            annotation = member
            continue
        if _is_open(annotation):  # a mapping's value
            values = [typing.get_args(m)[-1] for m in _members(annotation) if typing.get_args(m)]
            annotation = values[0] if values else None
            continue
        field = _field_named(annotation, part)
        annotation = None if field is _MISSING else field
    return annotation


def _kind_variable(
    loc: Sequence[Any], environ: Mapping[str, str]
) -> tuple[str, str, str, int] | None:
    """The `LOOKOUT_…__KIND` variable that chose the tagged union's member `loc` runs through
    (`LOOKOUT_SOURCE__KIND=pubsub` for `source.pubsub.project`): (variable, the kind's key path,
    the tag, the tag's position in `loc`), or None if the member was the file's choice."""
    found = None
    for index in range(1, len(loc)):
        head, tag = loc[:index], loc[index]
        if not isinstance(tag, str) or not all(isinstance(p, str) for p in head):
            continue
        members = _models(_annotation_at(head))
        if len(members) < 2 or not any(tag in _tags_of(m) for m in members):
            continue
        wanted = _DELIMITER.join((*(str(p).lower() for p in head), "kind"))
        for name, value in environ.items():
            chose = name.upper().startswith(_PREFIX) and value.strip().lower() == tag.lower()
            if chose and name[len(_PREFIX) :].lower() == wanted:
                found = (name, ".".join((*head, "kind")), tag, index)
    return found


def _location(loc: Sequence[Any]) -> str:
    """`alerting.receivers[1].webhook_url`, written as the routes' checks write it: list
    positions in brackets, and without the tag pydantic adds for a tagged union's member
    (`receivers.1.slack.webhook_url`), which is no key of the file."""
    text = ""
    after_index = False
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
            after_index = True
            continue
        if after_index and str(part) not in _known_keys():
            after_index = False
            continue  # the union member's tag
        text += f".{part}" if text else str(part)
        after_index = False
    return text or "(top level)"


@functools.cache
def _known_keys() -> frozenset[str]:
    """Every key the configuration file can hold, at any depth (for a typo's suggestion)."""
    keys: set[str] = set()
    seen: set[type] = set()

    def walk(annotation: Any) -> None:
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            if annotation in seen:
                return
            seen.add(annotation)
            for name, field in annotation.model_fields.items():
                keys.add(field.alias or name)
                walk(field.annotation)
            return
        for argument in typing.get_args(annotation):
            walk(argument)

    walk(LookoutConfig)
    return frozenset(keys)


def _blamed_variable(loc: tuple[Any, ...], environ: Mapping[str, str]) -> str | None:
    """The `LOOKOUT_A__B` variable that set the value at `loc` (or a section holding it), if
    any. A tagged union puts its tag in `loc` (`source.pubsub.project`), which no variable
    names, so each path is also tried without one of its parts."""
    path = tuple(str(part).lower() for part in loc)
    paths = {path} | {path[:i] + path[i + 1 :] for i in range(1, len(path))}
    best: tuple[int, str] | None = None
    for name in environ:
        if not name.upper().startswith("LOOKOUT_") or "__" not in name:
            continue
        parts = tuple(name[len("LOOKOUT_") :].lower().split("__"))
        if any(p[: len(parts)] == parts for p in paths) and (best is None or len(parts) > best[0]):
            best = (len(parts), name)
    return best[1] if best else None


def _yaml_problem(error: yaml.YAMLError) -> str:
    """Where the YAML is broken, without quoting the line (it may hold a secret)."""
    mark = getattr(error, "problem_mark", None)
    problem = getattr(error, "problem", None) or "syntax error"
    if mark is None:
        return f"not valid YAML: {problem}"
    return f"not valid YAML at line {mark.line + 1}, column {mark.column + 1}: {problem}"


class _UniqueKeyLoader(yaml.SafeLoader):
    """`yaml.safe_load`, except that a key given twice in one mapping is an error.

    PyYAML keeps the last value silently, so a second `engine:` section (pasted from another
    file) replaced the first one whole and `config check` said ok. Explicit keys that override
    a `<<:` merge are YAML's intended use and stay allowed."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[tuple[type, Any], yaml.Node] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                first = seen.setdefault((type(key), key), key_node)
            except TypeError:
                continue  # unhashable: the base class says so
            if first is not key_node:
                raise yaml.constructor.ConstructorError(
                    None,
                    None,
                    f"duplicate key {key!r} (also at line {first.start_mark.line + 1}; "
                    "YAML would keep only the last one)",
                    key_node.start_mark,
                )
        return super().construct_mapping(node, deep=deep)


#: how a file a user might pass by mistake begins, and what it is
_BINARY_KINDS = {b"\x1f\x8b": "gzip-compressed", b"PK\x03\x04": "a zip archive"}


def _yaml_text(data: bytes) -> str:
    """The file as text; a binary file given by mistake (a gzip of logs, a DuckDB file) raises
    UnicodeDecodeError here, which becomes one line instead of a decoder's traceback."""
    return data.decode("utf-8-sig")


def _not_text(error: UnicodeDecodeError) -> str:
    head = bytes(error.object[:4])
    kind = next((k for magic, k in _BINARY_KINDS.items() if head.startswith(magic)), None)
    what = kind or f"not UTF-8 (byte 0x{error.object[error.start]:02x} at offset {error.start})"
    return f"not a text YAML file ({what}); give the YAML configuration file"


def load_config(path: Path | None, overrides: Mapping[str, object] | None = None) -> LookoutConfig:
    """The configuration from a YAML file (or defaults), with environment overrides.

    `overrides` (`{"engine__role": "ingest"}`, from command-line options) are part of what is
    validated: a file that is valid only for the role it is run as (an ingest replica's, with
    routes but no receivers) must not be refused as the default role first."""
    source = str(path) if path is not None else "defaults"
    data: Any = {}
    if path is not None:
        try:
            data = yaml.load(_yaml_text(path.read_bytes()), Loader=_UniqueKeyLoader) or {}
        except OSError as error:
            raise ConfigError(source, [f"cannot read: {error.strerror}"]) from error
        except UnicodeDecodeError as error:
            raise ConfigError(source, [_not_text(error)]) from None
        except yaml.YAMLError as error:
            raise ConfigError(source, [_yaml_problem(error)]) from None
        if not isinstance(data, dict):
            raise ConfigError(source, ["the top level must be a mapping of sections"])
    unknown, ignored = _unknown_env_variables(os.environ, _secret_env_names(data, os.environ))
    for problem in ignored:
        log.warning("%s", problem)
    if unknown:
        raise ConfigError(source, unknown)
    # a command-line value beats the file and a LOOKOUT_… variable for the same key
    shadowed: dict[str, str] = {}
    for dotted, value in (overrides or {}).items():
        if value is None:
            continue
        section, _, key = dotted.partition("__")
        if key and isinstance(data.get(section, {}), dict):
            data[section] = {**data.get(section, {}), key: value}
            keys = [key]
        elif not key:  # a whole section (`--db`: the DuckDB sink at that path)
            data[section] = value
            keys = list(value) if isinstance(value, Mapping) else []
        else:
            continue
        for name in keys:
            variable = f"LOOKOUT_{section}__{name}".upper()
            if variable in os.environ:
                shadowed[variable] = os.environ.pop(variable)
    try:
        return LookoutConfig(**data)
    except SettingsError as error:  # a LOOKOUT_… value that must be JSON and is not
        raise ConfigError(source, _not_json_problems(error, os.environ)) from None
    except ValidationError as error:
        problems: list[str] = []
        for e in error.errors():
            if e["type"] == BOOL_NOT_NUMBER:
                problems.extend((e.get("ctx") or {}).get("each", []))  # one line per field
            else:
                problems.append(_describe(e))
        raise ConfigError(source, problems) from error
    finally:
        os.environ.update(shadowed)


#: `LOOKOUT_…` variables that are no setting of this file: read by the CLI, the decoder and the
#: build (README), or by the test suite
_OTHER_VARIABLES = frozenset(
    {
        "LOOKOUT_BLAS_THREADS",
        "LOOKOUT_DEBUG",
        "LOOKOUT_DECODER",
        "LOOKOUT_FUZZ_EXAMPLES",
        "LOOKOUT_KEYHASH",
        "LOOKOUT_LOG_FORMAT",
        "LOOKOUT_LOG_LEVEL",
        "LOOKOUT_PURE_PYTHON",
    }
)
#: the Helm chart passes each receiver secret as LOOKOUT_SECRET_<RECEIVER>_<FIELD>; an ingest
#: pod's file names none of them
_CHART_SECRET_PREFIX = "LOOKOUT_SECRET_"
_PREFIX = "LOOKOUT_"
_DELIMITER = "__"


def _secret_env_names(data: Any, environ: Mapping[str, str]) -> frozenset[str]:
    """The variables the configuration's `{env: NAME}` secret references name, in the file or
    in a `LOOKOUT_…` variable holding a JSON section: read as secrets, never as settings."""
    names: set[str] = set()

    def walk(value: Any) -> None:
        if isinstance(value, Mapping):
            ref = value.get("env")
            if isinstance(ref, str):
                names.add(ref.upper())
            for item in value.values():
                walk(item)
        elif isinstance(value, list | tuple):
            for item in value:
                walk(item)

    walk(data)
    for name, text in environ.items():
        if name.upper().startswith(_PREFIX) and text.lstrip()[:1] in ("{", "["):
            with contextlib.suppress(ValueError):
                walk(json.loads(text))
    return frozenset(names)


def _unwrap(annotation: Any) -> Any:
    while typing.get_origin(annotation) is Annotated:
        annotation = typing.get_args(annotation)[0]
    return annotation


def _members(annotation: Any) -> list[Any]:
    """A union's members (without None), or the type itself."""
    annotation = _unwrap(annotation)
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return [_unwrap(a) for a in typing.get_args(annotation) if a is not type(None)]
    return [annotation]


def _models(annotation: Any) -> list[type[BaseModel]]:
    return [m for m in _members(annotation) if isinstance(m, type) and issubclass(m, BaseModel)]


def _keys_of(model: type[BaseModel]) -> dict[str, str]:
    """Key as written (alias or name, lowercase) -> field name."""
    keys: dict[str, str] = {}
    for name, field in model.model_fields.items():
        keys[name.lower()] = name
        if field.alias:
            keys[field.alias.lower()] = name
    return keys


def _field_named(annotation: Any, key: str) -> Any:
    """The annotation of `key` (as written, lowercase) in the model, or any member of the union
    of models, `annotation` is; `_MISSING` if none has it."""
    for model in _models(annotation):
        keys = _keys_of(model)
        if key in keys:
            return model.model_fields[keys[key]].annotation
    return _MISSING


_MISSING = object()


def _is_open(annotation: Any) -> bool:
    """A mapping: a nested variable may name any key below it."""
    for member in _members(annotation):
        origin = typing.get_origin(member) or member
        if isinstance(origin, type) and issubclass(origin, Mapping):
            return True
    return False


def _setting_exists(parts: Sequence[str]) -> bool:
    """Whether `LOOKOUT_A__B__C` (parts a, b, c) names a key pydantic-settings would place:
    each part a key of the model above it (of any member of a tagged union), or any key below
    a mapping."""
    return _target(parts) is not _MISSING


@functools.cache
def _setting_variables() -> tuple[str, ...]:
    """Every variable name that sets a key (lowercase, without the prefix): `engine`,
    `engine__window_seconds`, `detectors__latency__slo__threshold_ms`, ..."""
    found: list[str] = []

    def walk(annotation: Any, prefix: str, depth: int) -> None:
        if depth > 6:
            return
        for model in _models(annotation):
            for name, field in model.model_fields.items():
                key = f"{prefix}{(field.alias or name).lower()}"
                if key not in found:
                    found.append(key)
                walk(field.annotation, key + _DELIMITER, depth + 1)

    walk(LookoutConfig, "", 0)
    return tuple(found)


def _suggested_variables(rest: str) -> list[str]:
    """What `LOOKOUT_<rest>` probably meant: the same words with the double underscore in
    place (`ENGINE_WINDOW_SECONDS`), a near spelling (`ALERT_OUT`, `ENGIN__WINDOW_SECONDS`),
    or a key without its section (`WINDOW_SECONDS`)."""
    known = _setting_variables()
    squashed = rest.replace("_", "")
    same = [k for k in known if k.replace("_", "") == squashed and k != rest]
    if same:
        return same[:1]
    close = [k for k in difflib.get_close_matches(rest, known, n=1, cutoff=0.8) if k != rest]
    if close:
        return close
    return [k for k in known if _DELIMITER in k and k.rsplit(_DELIMITER, 1)[1] == rest][:3]


def _variable(rest: str) -> str:
    return f"{_PREFIX}{rest}".upper()


def _unknown_env_variables(
    environ: Mapping[str, str], secrets: frozenset[str] = frozenset()
) -> tuple[list[str], list[str]]:
    """`LOOKOUT_…` variables that set no key: (refused, ignored), one line each, naming the
    variable and never its value. pydantic-settings matches names case-insensitively and skips
    any it cannot place, so a typo (`LOOKOUT_ENGIN__WINDOW_SECONDS`, `LOOKOUT_ENGINE_WINDOW_SECONDS`
    with one underscore, `LOOKOUT_ALERT_OUT`) silently left the file's value in force.

    A variable in the nested form, or one that reads as a misspelt setting (there is a
    did-you-mean), is refused, as a misspelt key of the file is. Any other is only warned
    about: it may be meant for something else (a receiver secret this file does not name).
    Variables read elsewhere (`LOOKOUT_DEBUG`, `LOOKOUT_DECODER`, ...), the chart's
    `LOOKOUT_SECRET_…` and the variables the file's `{env: NAME}` references name are not
    settings and are never reported."""
    sections = sorted(LookoutConfig.model_fields)
    refused: list[str] = []
    ignored: list[str] = []
    for name in sorted(environ):
        upper = name.upper()
        if not upper.startswith(_PREFIX) or upper in _OTHER_VARIABLES or upper in secrets:
            continue
        if upper.startswith(_CHART_SECRET_PREFIX):
            continue
        rest = name[len(_PREFIX) :].lower()
        parts = rest.split(_DELIMITER)
        if _setting_exists(parts):
            continue
        suggested = _suggested_variables(rest)
        mean = " or ".join(_variable(k) for k in suggested)
        if _DELIMITER in rest and parts[0] not in LookoutConfig.model_fields:
            problem = f"environment {name}: unknown section {parts[0]!r}"
            if suggested:
                problem += f"; did you mean {mean}?"
            refused.append(f"{problem} (expected one of {', '.join(sections)})")
        elif _DELIMITER in rest:
            problem = f"environment {name} ({rest.replace(_DELIMITER, '.')}): no such key"
            refused.append(f"{problem}; did you mean {mean}?" if suggested else problem)
        elif suggested:
            hint = " (nested keys take a double underscore)" if _DELIMITER in mean else ""
            refused.append(f"environment {name}: no such setting{hint}; did you mean {mean}?")
        else:
            ignored.append(
                f"environment {name}: ignored, not a setting (LOOKOUT_<SECTION>__<KEY>) and "
                "named by no {env: ...} reference of this configuration"
            )
    return refused, ignored


def _is_complex(annotation: Any) -> bool:
    """A type pydantic-settings reads from a variable as JSON (a section, a list, a mapping)."""
    for member in _members(annotation):
        origin = typing.get_origin(member) or member
        if not isinstance(origin, type) or issubclass(origin, str | bytes):
            continue
        if issubclass(origin, BaseModel | Mapping | Sequence | set | frozenset):
            return True
    return False


def _target(parts: Sequence[str]) -> Any:
    """The annotation `LOOKOUT_<parts>` sets (None below a mapping), or `_MISSING`."""
    annotation: Any = LookoutConfig
    for part in parts:
        if _is_open(annotation):
            return None
        annotation = _field_named(annotation, part)
        if annotation is _MISSING:
            return _MISSING
    return annotation


def _json_example(annotation: Any) -> str:
    for member in _members(annotation):
        origin = typing.get_origin(member) or member
        if isinstance(origin, type) and issubclass(origin, BaseModel):
            return '{"key": value, ...}'
        if isinstance(origin, type) and issubclass(origin, Mapping):
            return '{"name": "value"}'
    return '["a", "b"]'


def _not_json_problems(error: SettingsError, environ: Mapping[str, str]) -> list[str]:
    """pydantic-settings gave up on a value it must read as JSON (`LOOKOUT_METRICS__MODELS=a,b`)
    naming only the section: name the variable and the form it needs, not the value."""
    named = re.search(r'for field "([^"]+)"', str(error))
    section = named.group(1).lower() if named else None
    problems = []
    for name in sorted(environ):
        rest = name[len(_PREFIX) :].lower() if name.upper().startswith(_PREFIX) else None
        if rest is None or not environ[name]:
            continue
        parts = rest.split(_DELIMITER)
        if section is not None and parts[0] != section:
            continue
        annotation = _target(parts)
        if annotation is None or annotation is _MISSING or not _is_complex(annotation):
            continue
        try:
            json.loads(environ[name])
        except ValueError:
            where = ".".join(parts)
            problems.append(
                f"environment {name} ({where}): not valid JSON; a value of this kind is given "
                f"as JSON, e.g. {name}='{_json_example(annotation)}' (the value is not shown)"
            )
    if problems:
        return problems
    where = f"LOOKOUT_{section.upper()}…" if section else "a LOOKOUT_… variable"
    return [f"environment {where}: a value cannot be read (lists and sections are given as JSON)"]
