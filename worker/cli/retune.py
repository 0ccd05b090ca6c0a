"""`lookout retune export`: the tuning dataset for one model and time range, by hand;
`lookout retune list`: the requests the retuning loop made, and what became of each.

The same export a retune action runs before it starts a pipeline (`alerting.retune.export`
in the config): the configured query's samples as `input_text` / `output_text` JSONL, split
train / eval with the configured seed. Prints where the files went and how many lines each.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer

from worker.cli.app import ConfigOption, app, configured, fail

retune_app = typer.Typer(
    help="The retuning loop: export datasets, list requests.", no_args_is_help=True
)
app.add_typer(retune_app, name="retune")


def _moment(text: str, option: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        fail(f"{option} {text!r} is not an ISO 8601 time (e.g. 2026-01-05T06:00:00Z)")
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


@retune_app.command(
    "export", short_help="Export the tuning dataset for MODEL between --from and --to."
)
def export(
    model: Annotated[str, typer.Option("--model", help="The model whose samples to export.")],
    start: Annotated[str, typer.Option("--from", help="Start of the range (ISO 8601, UTC).")],
    end: Annotated[str, typer.Option("--to", help="End of the range, exclusive (ISO 8601).")],
    config_path: ConfigOption = None,
    uri: Annotated[
        str | None, typer.Option("--uri", help="Write here instead of the configured URI.")
    ] = None,
) -> None:
    """Export the tuning dataset for MODEL between --from and --to (alerting.retune.export)."""
    from alerts.retune.export import ExportError, export_dataset

    config = configured(config_path)
    settings = config.alerting.retune.export
    if settings is None:
        fail("no alerting.retune.export in the configuration (query and uri are needed)")
    if uri is not None:
        from schemas.retune_config import EXPORT_URI_FIELDS, check_template

        try:  # `model_copy` does not validate: a `{date}` here failed as a KeyError
            check_template(uri, EXPORT_URI_FIELDS)
        except ValueError as error:
            fail(f"--uri {error}")
        settings = settings.model_copy(update={"uri": uri})
    begin, finish = _moment(start, "--from"), _moment(end, "--to")
    if finish <= begin:
        fail(f"--to ({end}) must be after --from ({start})")
    try:
        result = export_dataset(settings, model=model, start=begin, end=finish)
    except ExportError as error:
        fail(str(error), code=1)
    typer.echo(f"train: {result.train_uri} ({result.train_rows} lines)")
    typer.echo(f"eval:  {result.eval_uri} ({result.eval_rows} lines)")


def _short_time(text: str) -> str:
    """`2026-01-05T07:45:00+00:00` as `2026-01-05 07:45Z` (the log keeps UTC event times)."""
    try:
        moment = datetime.fromisoformat(text).astimezone(UTC)
    except ValueError:
        return text
    return f"{moment:%Y-%m-%d %H:%M}Z"


@retune_app.command("list", short_help="The retune requests made so far, and what became of each.")
def list_requests(
    config_path: ConfigOption = None,
    model: Annotated[
        str | None, typer.Option("--model", help="Only this model's requests.")
    ] = None,
    as_json: Annotated[
        bool,
        typer.Option("--json", help="One JSON object per request, with the request itself."),
    ] = False,
) -> None:
    """The retune requests made so far, oldest first, and what became of each.

    Read from the retune log the worker keeps beside its alert outbox (`alerting.outbox_path`,
    by default `<sink path>.outbox.sqlite`), read-only, so it can run beside a worker (on
    Kubernetes, in the pod that evaluates: `kubectl exec statefulset/lookout-all -- lookout
    retune list -c /etc/lookout/lookout.yaml`, `lookout-evaluate` in split mode).
    Times are event time (the windows' UTC times). OUTCOME is `sent` (the action answered: the
    run or message it created is in RESULT), `dry_run`, `failed` (RESULT says why; the next
    start asks again unless a later request was sent) or `pending` (being asked now).
    """
    import orjson

    from alerts.retune.guard import RetuneEntry, read_history
    from worker.cli.pipeline import outbox_path

    config = configured(config_path)
    where = outbox_path(config)
    path = Path(where)
    if not config.alerting.retune.actions and (where == ":memory:" or not path.is_file()):
        # nothing could have been asked: an empty list, said once, not a failure
        typer.echo(
            f"no retune requests: this configuration has no retune actions "
            f"(alerting.retune.actions), so it keeps no retune log ({where})",
            err=True,
        )
        return
    if where == ":memory:" or not path.is_file():
        fail(
            f"no retune log at {where}: no worker has run with this configuration's outbox "
            "(alerting.outbox_path, else beside sink.path) here",
            code=1,
        )
    import sqlite3

    try:
        entries = read_history(path, model=model)
    except sqlite3.Error as error:
        fail(f"cannot read the retune log {where}: {error}", code=1)

    def shown(entry: RetuneEntry) -> str:
        # a dry run "sent" nothing: its own outcome, as lookout_retune_requests_total counts it
        return "dry_run" if entry.dry_run and entry.outcome == "sent" else entry.outcome

    if as_json:
        for entry in entries:
            request = entry.request or {}
            typer.echo(
                orjson.dumps(
                    {
                        "asked_at": entry.asked_at,
                        "action": entry.action,
                        "dry_run": entry.dry_run,
                        "model": entry.model,
                        "detector": request.get("detector"),
                        "condition": request.get("condition"),
                        "incident_start": entry.incident_start,
                        "consecutive_windows": request.get("consecutive_windows"),
                        "outcome": shown(entry),
                        "result": entry.result,
                        "request": entry.request,
                    }
                ).decode()
            )
        return
    if not entries:
        scope = f" for {model}" if model else ""
        typer.echo(f"no retune requests{scope} in {where}")
        return
    header = ("ASKED", "ACTION", "MODEL", "DETECTOR", "INCIDENT SINCE", "WINDOWS", "OUTCOME")
    rows = []
    for entry in entries:
        request = entry.request or {}
        rows.append(
            (
                _short_time(entry.asked_at),
                entry.action + (" (dry run)" if entry.dry_run else ""),
                entry.model,
                str(request.get("detector") or "-"),
                _short_time(entry.incident_start),
                str(request.get("consecutive_windows") or "-"),
                shown(entry),
                # a failed export's DuckDB error spans lines: the table shows its first
                # (`--json` has it whole)
                (entry.result or "-").strip().splitlines()[0].removeprefix("(dry run): "),
            )
        )
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for row in [(*header, "RESULT"), *rows]:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
        typer.echo("  ".join([*cells, row[-1]]).rstrip())
