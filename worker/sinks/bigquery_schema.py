"""The BigQuery sink's tables and views: one definition, from which `lookout bq init` builds DDL
and the sink checks what it finds.

Every column carries a description (analysts read them in the console). Tables holding window
data are partitioned by `DATE(window_start)` and clustered by `model` (the per-window tables by
`model, window_start`), so "the last 24 h of one model" scans a day or two of one model, and one
window of one model a few blocks. Rows are only ever appended (streaming inserts cannot be
updated for about half an hour); where a row may be written twice (a retried checkpoint), the
readers and the views keep the newest row of each `row_id`. The fact tables (detections, alerts,
quarantined records, baseline acceptances) have no `row_id` because analysts read them as they
are: a retried checkpoint sends only those of its rows that have not landed yet.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from worker.analyst_columns import (
    ANALYST_COLUMNS,
    MODEL_WINDOW_KEYS,
    merged_view_sql,
    model_daily_sql,
)

_BQ_TYPES = {"BIGINT": "INT64", "DOUBLE": "FLOAT64"}

_ANALYST_DESCRIPTIONS = {
    "calls": "calls the safety detector counted in this partial row",
    "blocked": "calls blocked by a safety filter (prompt or response)",
    "prompt_blocks": "calls whose prompt was blocked",
    "response_blocks": "calls whose response was blocked",
    "latency_count": "calls with a latency",
    "latency_sum_ms": "sum of latencies in milliseconds (mean = sum / count)",
    "token_calls": "calls with an output token count",
    "input_tokens": "sum of input (prompt) tokens",
    "output_tokens": "sum of output (completion) tokens",
    "cost_usd": "token cost in US dollars from the configured price table",
}


@dataclass(frozen=True)
class Column:
    name: str
    type: str  # BigQuery standard SQL type, e.g. INT64, ARRAY<STRUCT<bucket INT64, count INT64>>
    description: str
    required: bool = False

    def ddl(self) -> str:
        not_null = " NOT NULL" if self.required else ""
        text = self.description.replace("\\", "\\\\").replace('"', '\\"')
        return f'{self.name} {self.type}{not_null} OPTIONS(description="{text}")'


@dataclass(frozen=True)
class Table:
    name: str
    description: str
    columns: tuple[Column, ...]
    #: partitioned by DATE(this column), or not partitioned
    partition_by: str | None = None
    cluster_by: tuple[str, ...] = ()
    #: `bq init --partition-expiration-days` applies to it: the per-window data that grows
    #: with traffic; alerts, alert state, references and accepts are kept
    expires: bool = False

    def ddl(self, dataset: str, expiration_days: int | None = None) -> str:
        columns = ",\n  ".join(c.ddl() for c in self.columns)
        parts = [f"CREATE TABLE IF NOT EXISTS `{dataset}.{self.name}` (\n  {columns}\n)"]
        if self.partition_by:
            parts.append(f"PARTITION BY DATE({self.partition_by})")
        if self.cluster_by:
            parts.append(f"CLUSTER BY {', '.join(self.cluster_by)}")
        expiry = ""
        if self.expires and expiration_days:
            expiry = f", partition_expiration_days={expiration_days}"
        parts.append(f'OPTIONS(description="{self.description}"{expiry})')
        return "\n".join(parts)

    def expiration_ddl(self, dataset: str, expiration_days: int) -> str:
        """The statement that sets the partition expiration of a table that is there: what
        `bq init` does through the API, printed by `--dry-run`."""
        return (
            f"ALTER TABLE `{dataset}.{self.name}` "
            f"SET OPTIONS(partition_expiration_days={expiration_days})"
        )

    def add_column_ddl(self, dataset: str, column: Column) -> str:
        # NOT NULL cannot be added to a table that has rows: added columns are NULLABLE
        loose = Column(column.name, column.type, column.description)
        return f"ALTER TABLE `{dataset}.{self.name}` ADD COLUMN IF NOT EXISTS {loose.ddl()}"


def _c(name: str, type_: str, description: str, *, required: bool = False) -> Column:
    return Column(name, type_, description, required)


_WINDOW = (
    _c("model", "STRING", "model name as the prediction logs give it", required=True),
    _c("window_start", "TIMESTAMP", "start of the event-time window (UTC)", required=True),
)

WINDOW_METRICS = Table(
    "window_metrics",
    "Partial window aggregates: one row per (writer, checkpoint, model, model_version, tenant, "
    "window). Merge them with the window_metrics_merged view; never sum a window from one row.",
    (
        _c(
            "row_id",
            "STRING",
            "deterministic id of this partial row; a retried write of "
            "the same row keeps the newest",
            required=True,
        ),
        *_WINDOW,
        _c("model_version", "STRING", "model version the calls named (NULL: none given)"),
        _c("tenant", "STRING", "tenant (customer or team) of the calls (NULL: none given)"),
        _c("window_end", "TIMESTAMP", "end of the window (exclusive)", required=True),
        _c("writer_id", "STRING", "the ingest replica that wrote the row", required=True),
        _c("checkpoint_seq", "INT64", "the writer's checkpoint sequence number", required=True),
        _c("written_at", "TIMESTAMP", "when the row was written", required=True),
        _c("records", "INT64", "records folded into this row", required=True),
        _c(
            "late_records",
            "INT64",
            "records folded after the window was judged (its verdict did not see them)",
        ),
        *(
            _c(name, _BQ_TYPES[sql_type], _ANALYST_DESCRIPTIONS[name])
            for name, sql_type in ANALYST_COLUMNS
        ),
        _c(
            "latency_histogram",
            "ARRAY<STRUCT<bucket INT64, count INT64>>",
            "latency histogram: non-empty log buckets and their counts; sum counts per bucket "
            "over rows to merge",
        ),
        _c("latency_bucket_gamma", "FLOAT64", "bucket k covers (min*gamma^(k-1), min*gamma^k]"),
        _c("latency_bucket_min_ms", "FLOAT64", "upper bound of bucket 0 in milliseconds"),
        _c(
            "states",
            "BYTES",
            "every detector's mergeable state (MessagePack compressed with Zstandard: a "
            "tag byte 0x01, the uncompressed length as 4 little-endian bytes, the frame), "
            "read back by the evaluator; on the first slice row of a partial only (the others "
            "hold an empty map)",
            required=True,
        ),
    ),
    partition_by="window_start",
    # window_start too: the evaluator and the writers read one (model, window) at a time, and
    # BigQuery bills the blocks a query scans; by model alone that is a day of the model
    cluster_by=("model", "window_start"),
    expires=True,
)

WINDOW_REQUEST_IDS = Table(
    "window_request_ids",
    "Request ids counted by each partial row (a replayed or redelivered record is not counted "
    "twice).",
    (
        _c("row_id", "STRING", "the window_metrics row these ids belong to", required=True),
        *_WINDOW,
        _c("written_at", "TIMESTAMP", "when the row was written", required=True),
        _c("request_ids", "ARRAY<STRING>", "request ids folded into the partial row"),
    ),
    partition_by="window_start",
    cluster_by=("model", "window_start"),
    expires=True,
)

DETECTIONS = Table(
    "detections",
    "One verdict per evaluated (model, window, detector). A window judged again after a "
    "restart has a second row; the newest evaluated_at is the verdict.",
    (
        *_WINDOW,
        _c("detector", "STRING", "safety, latency, tokens, embedding_drift, ...", required=True),
        _c("window_end", "TIMESTAMP", "end of the window", required=True),
        _c("verdict", "STRING", "ok, alert or insufficient_data", required=True),
        _c("condition", "STRING", "which condition the detector judged", required=True),
        _c("severity", "STRING", "info, warning or critical", required=True),
        _c("value", "FLOAT64", "the measured value (rate, p95 in ms, drift score, ...)"),
        _c("threshold", "FLOAT64", "the threshold the value was compared with"),
        _c("baseline", "FLOAT64", "the baseline value"),
        _c("p_value", "FLOAT64", "p-value of the statistical test, if any"),
        _c("sample_size", "INT64", "observations behind the verdict", required=True),
        _c("reason", "STRING", "why, in words", required=True),
        _c("details", "STRING", "detector-specific details as JSON"),
        _c("evaluated_at", "TIMESTAMP", "when the window was judged", required=True),
    ),
    partition_by="window_start",
    cluster_by=("model", "detector"),
    expires=True,
)

ALERTS = Table(
    "alerts",
    "Every alert transition (firing, resolved) as sent to receivers.",
    (
        _c(
            "dedup_key",
            "STRING",
            "stable key of the incident (model, detector, condition)",
            required=True,
        ),
        _c("status", "STRING", "firing or resolved", required=True),
        _c("severity", "STRING", "info, warning or critical", required=True),
        _c("detector", "STRING", "the detector that raised it", required=True),
        *_WINDOW,
        _c("condition", "STRING", "the condition", required=True),
        _c("window_end", "TIMESTAMP", "end of the window", required=True),
        _c("value", "FLOAT64", "the measured value"),
        _c("threshold", "FLOAT64", "the threshold"),
        _c("baseline", "FLOAT64", "the baseline"),
        _c("sample_size", "INT64", "observations behind the verdict", required=True),
        _c("summary", "STRING", "one line for humans", required=True),
        _c("emitted_at", "TIMESTAMP", "when the transition was written", required=True),
    ),
    partition_by="window_start",
    cluster_by=("model",),
)

ALERT_STATE = Table(
    "alert_state",
    "Snapshots of the evaluator's alert tracker; the newest is the state (a restart never "
    "pages twice).",
    (
        _c("written_at", "TIMESTAMP", "when the snapshot was written", required=True),
        _c("writer_id", "STRING", "the evaluator that wrote it", required=True),
        _c("checkpoint_seq", "INT64", "its checkpoint sequence", required=True),
        _c("state", "STRING", "the tracker's rows as JSON", required=True),
    ),
)

WRITER_PROGRESS = Table(
    "writer_progress",
    "Each writer's event-time frontier once its partial rows were durable.",
    (
        _c("writer_id", "STRING", "the writer", required=True),
        _c(
            "frontier_unix",
            "FLOAT64",
            "event-time frontier, seconds since the epoch",
            required=True,
        ),
        _c("updated_at", "TIMESTAMP", "when it was written", required=True),
    ),
    # the evaluator reads the last day's rows every few seconds; a row per writer per
    # checkpoint piles up, and an unpartitioned table is read (and billed) whole each time
    partition_by="updated_at",
    expires=True,
)

QUARANTINED = Table(
    "quarantined_records",
    "Records not folded because their event time was too far from the stream's.",
    (
        _c("model", "STRING", "model name", required=True),
        _c("request_id", "STRING", "the record's request id", required=True),
        _c("event_time_unix", "FLOAT64", "its event time, seconds since the epoch", required=True),
        _c("reason", "STRING", "why it was quarantined", required=True),
        _c("writer_id", "STRING", "the writer that saw it", required=True),
        _c("quarantined_at", "TIMESTAMP", "when", required=True),
    ),
)

REFERENCES = Table(
    "detector_references",
    "Reference states (e.g. the embedding reference set's statistic) per model and detector; "
    "the newest row per (model, detector) holds.",
    (
        _c("model", "STRING", "model name", required=True),
        _c("detector", "STRING", "detector name", required=True),
        _c("state", "STRING", "the reference state as JSON", required=True),
        _c("updated_at", "TIMESTAMP", "when it was written", required=True),
    ),
)

BASELINE_ACCEPTS = Table(
    "baseline_accepts",
    "New levels a person (or alerting.accept_after) accepted as the baseline: "
    "`lookout baseline accept`.",
    (
        _c("model", "STRING", "model name", required=True),
        _c("detector", "STRING", "detector name", required=True),
        _c(
            "incident_started_at",
            "TIMESTAMP",
            "start of the incident whose level was accepted",
            required=True,
        ),
        _c("accepted_at", "TIMESTAMP", "when it was accepted", required=True),
        _c("accepted_by", "STRING", "who accepted it", required=True),
    ),
)

TABLES: tuple[Table, ...] = (
    WINDOW_METRICS,
    WINDOW_REQUEST_IDS,
    DETECTIONS,
    ALERTS,
    ALERT_STATE,
    WRITER_PROGRESS,
    QUARANTINED,
    REFERENCES,
    BASELINE_ACCEPTS,
)
TABLE_BY_NAME = {t.name: t for t in TABLES}

VIEWS: tuple[str, ...] = ("window_metrics_merged", "model_windows", "model_daily")


def view_ddl(dataset: str) -> list[str]:
    """The views (`VIEWS`, in order): newest row per row_id merged per slice of a window, then
    per model window, then per model and day."""
    table = f"`{dataset}.window_metrics`"
    by_model = f"`{dataset}.model_windows`"
    return [
        merged_view_sql("bigquery", table, f"`{dataset}.window_metrics_merged`", dedup=True),
        merged_view_sql("bigquery", table, by_model, dedup=True, keys=MODEL_WINDOW_KEYS),
        model_daily_sql("bigquery", by_model, f"`{dataset}.model_daily`"),
    ]


def partition_expiration_days(keep_seconds: float) -> int:
    """Whole days of partition expiration that keep every row at least `keep_seconds`: a daily
    partition expires its expiration after the partition's time, the start of its day (UTC),
    so a row written just before midnight goes almost a day sooner than that."""
    return math.ceil(keep_seconds / 86_400) + 1


def all_ddl(dataset: str, expiration_days: int | None = None) -> list[str]:
    """Every statement `lookout bq init` runs, in order (idempotent); with `expiration_days`,
    also what sets it on tables that are already there."""
    expiring = [t for t in TABLES if t.expires] if expiration_days else []
    return (
        [t.ddl(dataset, expiration_days) for t in TABLES]
        + [t.expiration_ddl(dataset, expiration_days or 0) for t in expiring]
        + view_ddl(dataset)
    )
