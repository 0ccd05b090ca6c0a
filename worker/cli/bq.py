"""`lookout bq init`: create or update the BigQuery dataset, tables and views for analysts.

Idempotent: run it at every deploy. Existing tables keep their rows; missing columns are
added; views are replaced only when their SQL changed. `--dry-run` prints the DDL and touches
nothing. BIGQUERY_EMULATOR_HOST (host:port) points it at an emulator; otherwise Application
Default Credentials are used.
"""

from __future__ import annotations

import os
from typing import Annotated, NoReturn

import typer

from worker.cli.app import app

bq_app = typer.Typer(
    help="Set up the BigQuery dataset Lookout writes to (honours BIGQUERY_EMULATOR_HOST).",
    short_help="Set up the BigQuery dataset (honours BIGQUERY_EMULATOR_HOST).",
    no_args_is_help=True,
)
app.add_typer(bq_app, name="bq")


def _min_expiration_days() -> int:
    """The shortest partition expiration that keeps every window a late record may still be
    folded into, with the defaults (`partition_expiration_days`)."""
    from schemas.config import EngineConfig
    from worker.sinks.bigquery_schema import partition_expiration_days

    return partition_expiration_days(EngineConfig().late_record_horizon_seconds())


def _die(message: str) -> NoReturn:
    typer.echo(f"lookout bq init: {message}", err=True)
    raise typer.Exit(1)


@bq_app.command(
    "init", short_help="Create the dataset, tables and views (idempotent; additive only)."
)
def init(
    project: Annotated[str, typer.Option("--project", "-p", help="Google Cloud project id.")],
    dataset: Annotated[
        str, typer.Option("--dataset", "-d", help="Dataset to create or update.")
    ] = "llm_monitoring",
    location: Annotated[
        str | None, typer.Option("--location", "-l", help="Dataset location, e.g. US or EU.")
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print the DDL; create or change nothing.")
    ] = False,
    partition_expiration_days: Annotated[
        int | None,
        typer.Option(
            "--partition-expiration-days",
            min=1,
            help="Delete window_metrics, window_request_ids, detections and writer_progress "
            "partitions this many days old (by wall-clock date: a backfill of older logs is "
            "deleted at once). At least engine.max_past_seconds + max_future_skew_seconds + "
            f"window_seconds, plus a day ({_min_expiration_days()} with the defaults). Alerts, "
            "alert state, references and accepts are kept. Left out: left as it is.",
        ),
    ] = None,
) -> None:
    """Create the dataset, tables and views (idempotent; additive schema changes only)."""
    from worker.sinks.bigquery_schema import all_ddl

    shortest = _min_expiration_days()
    if partition_expiration_days is not None and partition_expiration_days < shortest:
        _die(
            f"--partition-expiration-days {partition_expiration_days} is shorter than "
            f"{shortest} days: a record can arrive engine.max_past_seconds + "
            "max_future_skew_seconds + window_seconds late and still be folded into its "
            "window, and a partition expires counting from the start of its day (a day "
            "more); its window's request ids would be gone and it would be counted again"
        )
    if dry_run:
        for statement in all_ddl(dataset, partition_expiration_days):
            typer.echo(f"{statement};\n")
        return
    from google.api_core import exceptions
    from google.auth import exceptions as auth_exceptions

    from worker.errors import LookoutError, describe
    from worker.sinks.bigquery_init import init_dataset
    from worker.sinks.bigquery_sink import make_client

    emulator = os.environ.get("BIGQUERY_EMULATOR_HOST") or None
    try:
        client = make_client(project, location, emulator)
        report = init_dataset(
            client, project, dataset, location, partition_expiration_days=partition_expiration_days
        )
    except LookoutError as error:
        _die(str(error))
    except exceptions.GoogleAPIError as error:
        _die(f"BigQuery refused ({type(error).__name__}): {error}")
    except auth_exceptions.GoogleAuthError as error:  # as `pubsub init` words it
        _die(
            f"no Google credentials ({describe(error)}); run `gcloud auth application-default "
            "login` or set BIGQUERY_EMULATOR_HOST for the emulator"
        )
    except Exception as error:  # no credentials, no network: one line, no traceback
        _die(f"{type(error).__name__}: {error}")
    for line in report.advice:
        typer.echo(f"lookout bq init: {line}", err=True)
    if not report.changed:
        typer.echo(f"{project}.{dataset}: up to date, nothing changed")
        return
    if report.created_dataset:
        typer.echo(f"created dataset {project}.{dataset}")
    for name in report.created_tables:
        typer.echo(f"created table {dataset}.{name}")
    for column in report.added_columns:
        typer.echo(f"added column {dataset}.{column}")
    for name in report.replaced_views:
        typer.echo(f"created or replaced view {dataset}.{name}")
    for change in report.expirations:
        typer.echo(f"partition expiration of {dataset}.{change}")
