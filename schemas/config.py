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

import logging
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ModelWrapValidatorHandler,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
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
    #: DuckDB's buffer cache limit (DuckDB's own default is 80% of RAM). The cache keeps the
    #: blocks the sink wrote until it reaches this limit, so a long-running worker's memory
    #: grows by up to this much over hours. 64MB holds what a checkpoint needs many times over
    #: (a 60-model replay ran at 8MB); a restart reads its history a few windows at a time.
    memory_limit: str = "64MB"
    #: delete windows older than this many days of stream time (behind the newest window
    #: in the file) from the window tables, so a long-running worker's file levels off
    #: instead of growing (with embeddings, each model adds about 200 MB a day at 1-minute
    #: windows: every window keeps a sample of them); empty keeps everything, as a replay for
    #: analysis wants. It must cover engine.max_past_seconds (records that old are still
    #: folded), and what a restarted evaluator re-reads (an open incident's baseline) is kept
    #: whatever its age.
    retention_days: float | None = Field(default=None, ge=1)

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
    #: Pub/Sub: once the subscription has had nothing to deliver for this long (and nothing
    #: is waiting for its ack), the event-time frontier moves on at the wall clock's pace, so
    #: the windows before a quiet spell are judged without waiting for traffic to come back.
    #: A record delayed by more than this plus the allowed lateness, behind the others, then
    #: counts late. None: the frontier moves only with records
    idle_close_seconds: float | None = Field(default=60.0, gt=0)

    def late_record_horizon_seconds(self) -> float:
        """How far behind the newest window a record is still folded into its own window (the
        newest window can run `max_future_skew_seconds` ahead): a store that deletes windows
        sooner deletes their request ids, and such a record is counted again."""
        return self.max_past_seconds + self.max_future_skew_seconds + self.window_seconds


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
    def _rules_across_sections(self) -> LookoutConfig:
        """Every rule that spans sections, checked together: one at a time, a file with two
        such mistakes took two runs of `lookout config check` (and two deploys) to fix."""
        rules = (
            self._lease_outlives_a_window,
            self._liveness_outlasts_a_checkpoint,
            self._routes_name_declared_receivers,
            self._retention_outlasts_late_records,
        )
        problems = [problem for rule in rules if (problem := rule())]
        if len(problems) == 1:
            raise ValueError(problems[0])
        if problems:
            raise PydanticCustomError(
                ACROSS_SECTIONS, "{summary}", {"summary": "; ".join(problems), "each": problems}
            )
        return self

    def _lease_outlives_a_window(self) -> str | None:
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
                return msg
        return None

    def _liveness_outlasts_a_checkpoint(self) -> str | None:
        """/healthz fails once the main loop has not come round for `metrics.stall_seconds`, and
        the liveness probe then restarts the pod: a limit below an honest checkpoint (on BigQuery
        a write retrying for `write_timeout_seconds`, table after table) kills pods mid-write,
        their messages are redelivered and the next replica is killed the same way."""
        metrics, engine, sink = self.metrics, self.engine, self.sink
        if not metrics.enabled:
            return None  # no /healthz
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
            return msg
        return None

    def _retention_outlasts_late_records(self) -> str | None:
        """A record up to `max_past_seconds` behind the stream is still folded: into a window
        whose request ids (and verdicts) retention had deleted, it was counted again and the
        window judged again, days late. The newest window can run `max_future_skew_seconds`
        ahead of the stream."""
        sink, engine = self.sink, self.engine
        if not isinstance(sink, DuckDBSinkConfig) or sink.retention_days is None:
            return None
        needed = engine.late_record_horizon_seconds()
        if sink.retention_days * 86_400 < needed:
            return (
                f"sink.retention_days ({sink.retention_days:g}) must cover "
                "engine.max_past_seconds + max_future_skew_seconds + window_seconds "
                f"({needed / 86_400:.2f} days): records that far behind the stream are still "
                "folded, into windows whose request ids it would have deleted (counted again); "
                "raise it, or lower engine.max_past_seconds to keep fewer days"
            )
        return None

    def _routes_name_declared_receivers(self) -> str | None:
        """A route to a receiver nobody declared would lose its alerts with one log line, at
        the first page: refuse the file instead. (`AlertingConfig` alone stays open to
        receivers given in code, as tests and embedders do.)"""
        declared = {r.name for r in self.alerting.receivers} | BUILTIN_RECEIVERS
        alerting = self.alerting
        if self.engine.role == "ingest":
            # never notifies; the chart gives ingest pods the routes but not the receivers
            return None
        named = [(f"alerting.routes[{i}].receivers", n) for i, route in enumerate(alerting.routes)
                 for n in route.receivers]  # fmt: skip
        named += [("alerting.default_receiver", alerting.default_receiver)]
        named += [("alerting.info_receiver", alerting.info_receiver)]
        unknown = [f"{where}: {name!r}" for where, name in named if name not in declared]
        if unknown:
            known = ", ".join(sorted(declared))
            return f"receivers not declared in alerting.receivers ({known}): " + "; ".join(unknown)
        return None

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
#: the error type of `LookoutConfig._rules_across_sections` when several fail: one each in ctx
ACROSS_SECTIONS = "rules_across_sections"


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
    variable = blamed_variable(loc, os.environ)
    if variable is not None:
        return f"environment {variable} ({where}): {message}"
    return f"{where}: {message}"


def blamed_variable(loc: tuple[Any, ...], environ: Mapping[str, str]) -> str | None:
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
