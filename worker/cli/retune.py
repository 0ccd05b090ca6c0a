"""`lookout retune export`: the tuning dataset for one model and time range, by hand.

The same export a retune action runs before it starts a pipeline (`alerting.retune.export`
in the config): the configured query's samples as `input_text` / `output_text` JSONL, split
train / eval with the configured seed. Prints where the files went and how many lines each.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

import typer

from worker.cli.app import ConfigOption, app, configured, fail

retune_app = typer.Typer(help="The retuning loop: export tuning datasets.", no_args_is_help=True)
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
