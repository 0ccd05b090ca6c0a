"""`lookout bq init`: create the dataset, tables and views, idempotently.

A table that exists keeps its rows: missing columns are added (NULLABLE, the only change
BigQuery allows in place), a column of another type is an error naming both. A view is
replaced only when its SQL differs, so a second run changes nothing and says so.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from worker.sinks.bigquery_schema import TABLES, VIEWS, Table, view_ddl
from worker.sinks.bigquery_sink import BigQuerySinkError

DAY_MS = 86_400_000
_SIMPLE_TYPES = {"INT64": "INTEGER", "FLOAT64": "FLOAT", "BOOL": "BOOLEAN"}


@dataclass
class InitReport:
    """What one `bq init` run changed (empty lists: nothing)."""

    created_dataset: bool = False
    created_tables: list[str] = field(default_factory=list)
    added_columns: list[str] = field(default_factory=list)
    replaced_views: list[str] = field(default_factory=list)
    #: "window_metrics: 30 days (was none)", one per table whose partition expiration changed
    expirations: list[str] = field(default_factory=list)
    statements: list[str] = field(default_factory=list)
    #: what `bq init` cannot change in place and an operator should (one line each)
    advice: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(
            self.created_dataset
            or self.created_tables
            or self.added_columns
            or self.replaced_views
            or self.expirations
        )


def _type_matches(declared: str, field_type: str, mode: str) -> bool:
    """Whether a declared DDL type matches what the API reports (INTEGER, RECORD, REPEATED)."""
    if declared.startswith("ARRAY<"):
        return mode == "REPEATED"
    return field_type in {declared, _SIMPLE_TYPES.get(declared, declared)}


def _run(client: Any, sql: str, report: InitReport) -> None:
    report.statements.append(sql)
    client.query_and_wait(sql)


def _days(expiration_ms: Any) -> str:
    return "none" if not expiration_ms else f"{int(expiration_ms) / DAY_MS:g} days"


def _sync_expiration(client: Any, found: Any, table: Table, days: int, report: InitReport) -> None:
    """Set a partition expiration through the API: the same as the DDL option, and what the
    local emulator keeps (it accepts `partition_expiration_days` in DDL and ignores it)."""
    wanted = days * DAY_MS
    partitioning = found.time_partitioning
    if partitioning is None or partitioning.expiration_ms == wanted:
        return
    before = partitioning.expiration_ms
    partitioning.expiration_ms = wanted  # the same object: its other settings stay
    found.time_partitioning = partitioning
    client.update_table(found, ["time_partitioning"])
    report.expirations.append(f"{table.name}: {_days(wanted)} (was {_days(before)})")


def _sync_table(
    client: Any,
    project: str,
    dataset: str,
    table: Table,
    report: InitReport,
    expiration_days: int | None = None,
) -> None:
    from google.api_core import exceptions

    ref = f"{project}.{dataset}.{table.name}"
    expiring = table.expires and expiration_days is not None
    try:
        found = client.get_table(ref)
    except exceptions.NotFound:
        _run(client, table.ddl(dataset, expiration_days), report)
        report.created_tables.append(table.name)
        if expiring and expiration_days is not None:
            before = len(report.expirations)
            _sync_expiration(client, client.get_table(ref), table, expiration_days, report)
            del report.expirations[before:]  # a new table: "created" says it
        return
    if expiring and expiration_days is not None:
        _sync_expiration(client, found, table, expiration_days, report)
    if table.partition_by and getattr(found, "time_partitioning", None) is None:
        unexpired = " and no partition expiration applies to it" if expiring else ""
        report.advice.append(
            f"table {dataset}.{table.name} is not partitioned by DATE({table.partition_by}) "
            f"(made by an earlier release), so every read of it reads it whole{unexpired}; "
            "partitioning cannot be added in place: recreate it as the README's \"For "
            'analysts" says'
        )
    have = {f.name: f for f in found.schema}
    for column in table.columns:
        existing = have.get(column.name)
        if existing is None:
            _run(client, table.add_column_ddl(dataset, column), report)
            report.added_columns.append(f"{table.name}.{column.name}")
        elif not _type_matches(column.type, existing.field_type, existing.mode):
            msg = (
                f"BigQuery table {ref} column {column.name} is {existing.field_type} "
                f"({existing.mode}), the sink writes {column.type}: migrate or drop it by hand"
            )
            raise BigQuerySinkError(msg)


def _normalise(sql: str) -> str:
    """SQL without whitespace: BigQuery (and the emulator) may re-indent a stored view."""
    return "".join(sql.split())


def init_dataset(
    client: Any,
    project: str,
    dataset: str,
    location: str | None,
    *,
    partition_expiration_days: int | None = None,
) -> InitReport:
    """Bring the dataset to the current schema; see the module docstring.
    `partition_expiration_days`: set on the window tables (None leaves what they have)."""
    from google.api_core import exceptions
    from google.cloud import bigquery

    report = InitReport()
    try:
        client.get_dataset(f"{project}.{dataset}")
    except exceptions.NotFound:
        spec = bigquery.Dataset(f"{project}.{dataset}")
        spec.location = location
        spec.description = "Lookout: LLM monitoring window aggregates, detections and alerts"
        client.create_dataset(spec, exists_ok=True)
        report.created_dataset = True
    for table in TABLES:
        _sync_table(client, project, dataset, table, report, partition_expiration_days)
    for name, sql in zip(VIEWS, view_ddl(dataset), strict=True):
        body = sql.split(" AS\n", 1)[1]
        try:
            current = client.get_table(f"{project}.{dataset}.{name}").view_query or ""
        except exceptions.NotFound:
            current = ""
        if _normalise(current) != _normalise(body):
            _run(client, sql, report)
            report.replaced_views.append(name)
    return report
