"""`lookout baseline accept`: a person says an incident's new level is the new normal.

While an incident is open its detector judges against the baseline frozen when it began, so a
lasting change (a new model version that blocks more, a slower region) keeps firing as a
"sustained level shift" until someone decides. This command records that decision in the sink
(table `baseline_accepts`), naming the open incident by its start, so it can never carry over
to a later incident. The evaluator applies it at the next window it judges for that model: the
incident resolves with a notification saying the level was accepted, and later windows are
judged against the incident's own windows as the new baseline.
"""

from __future__ import annotations

import getpass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer

from worker.cli.app import ConfigOption, app, configured, fail
from worker.sink import BaselineAccept, Checkpoint

baseline_app = typer.Typer(
    help="Accept a sustained level shift as the new baseline.", no_args_is_help=True
)
app.add_typer(baseline_app, name="baseline")


@baseline_app.command(
    "accept", short_help="Accept an open incident's current level as the new baseline."
)
def accept(
    model: Annotated[str, typer.Option("--model", "-m", help="Model name, as in the alert.")],
    detector: Annotated[
        str, typer.Option("--detector", "-d", help="Detector, as in the alert (e.g. safety).")
    ],
    config_path: ConfigOption = None,
    db: Annotated[Path | None, typer.Option(help="DuckDB file (default from config).")] = None,
    by: Annotated[
        str | None, typer.Option(help="Who accepts (recorded and shown); default: your user.")
    ] = None,
) -> None:
    """Accept the current level of an open incident as the new baseline for (model, detector).

    The incident resolves at the evaluator's next window for that model, with a notification
    that says the level was accepted; the detector is then quiet at the new level and fires
    again on a further shift. The embedded DuckDB sink allows one process at a time: stop the
    worker first (it applies the acceptance when it starts again).
    """
    from alerts.tracking import EvidenceTracker  # here: alerts pulls httpx, not for --help
    from schemas.config import DuckDBSinkConfig, unknown_detectors
    from worker.cli.pipeline import open_duckdb_sink
    from worker.cli.sql import refuse_non_duckdb
    from worker.sink import Sink

    problem = unknown_detectors([detector])
    if problem is not None:  # before the sink: a typo is not "no open incident"
        fail(f"baseline accept: --detector: {problem}")
    # as for `replay`: --db names the DuckDB file, in place of the config's sink
    config = configured(config_path, sink={"kind": "duckdb", "path": str(db)} if db else None)
    sink: Sink
    if not isinstance(config.sink, DuckDBSinkConfig):  # BigQuery: shared, no lock to take
        from worker.cli.pipeline import build_sink

        sink = build_sink(config, keeps=False)  # it reads no window: never blocked by them
    else:
        path = Path(config.sink.path)
        if not path.exists():
            where = "--db" if db else "sink.path"
            fail(f"baseline accept: no sink at {path} ({where}); nothing to accept")
        # a directory or `notes.txt`: exit 2 as `sql` does, not the sink's "give a new path"
        # (exit 1), which is for a writer; accepting needs the file lookout wrote
        refuse_non_duckdb("baseline accept", path)
        if not _is_lookout_file(path):
            # opening it as the sink would add Lookout's tables to someone else's file
            fail(f"baseline accept: {path} is not a Lookout DuckDB file; nothing to accept")
        sink = open_duckdb_sink(path, memory_limit=config.sink.memory_limit)
    try:
        tracker = EvidenceTracker.load(sink.load_alert_state(), config.alerting)
        incident = tracker.open_incident(model, detector)
        if incident is None or incident.started_at is None:
            others = (
                ", ".join(f"{i.model}/{i.detector}" for i in tracker.open_incidents()) or "none"
            )
            fail(
                f"baseline accept: no open incident for model {model!r}, detector "
                f"{detector!r} (open incidents: {others})",
                code=1,
            )
        started = incident.started_at
        for done in sink.load_baseline_accepts():
            if (done.model, done.detector, done.incident_started_at) == (model, detector, started):
                typer.echo(
                    f"already accepted at {done.accepted_at:%Y-%m-%d %H:%M}Z: the incident of "
                    f"{model} / {detector} since {started:%Y-%m-%d %H:%M}Z"
                )
                return
        record = BaselineAccept(
            model=model,
            detector=detector,
            incident_started_at=started,
            accepted_at=datetime.now(UTC),
            accepted_by=by if by is not None else getpass.getuser(),
        )
        sink.write_checkpoint(
            Checkpoint(writer_id="baseline-accept", sequence=0, baseline_accepts=[record])
        )
    finally:
        sink.close()
    typer.echo(
        f"accepted the new level of {model} / {detector} (incident since "
        f"{started:%Y-%m-%d %H:%M}Z, {incident.condition}); the evaluator resolves it at its "
        "next window and judges later windows against the new level"
    )


def _is_lookout_file(path: Path) -> bool:
    """Whether the DuckDB file holds Lookout's alert state (read-only: a file that is not
    Lookout's is left as it was; a locked or unreadable one is for the sink's own message)."""
    import duckdb

    try:
        con = duckdb.connect(str(path), read_only=True)
    except (duckdb.Error, OSError):
        return True  # let the sink say what is wrong, in its words
    try:
        found = con.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_name = 'alert_state'"
        ).fetchone()
        return bool(found and found[0])
    except duckdb.Error:
        return True
    finally:
        con.close()
