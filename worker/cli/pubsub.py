"""`lookout pubsub init` and `lookout publish`: set up a subscription, feed it a log stream.

Thin wrappers over `worker.sources.pubsub_admin.init_pubsub` and
`worker.sources.pubsub_publish.publish_lines`.
`PUBSUB_EMULATOR_HOST` is read here, once, at the edge (`emulator_host_from_env`) and passed
down as a channel factory. Every expected failure (a `LookoutError`, a Google API error, an
unreadable file) is one line on stderr and a non-zero exit, never a traceback.

Both commands first check that Pub/Sub answers at all, within `--timeout` (15 s): measured
before, a dead PUBSUB_EMULATOR_HOST left `pubsub init` silent for 400 s and more and `publish`
for 240 s ending in `TimeoutError: no detail`; now one line names the endpoint and what to
check, and the exit status is 1.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, TYPE_CHECKING, Annotated, NoReturn, TypeVar

import typer

from schemas.decode import FORMATS
from worker.cli.app import app
from worker.errors import LookoutError, describe

if TYPE_CHECKING:
    from worker.sources.grpc_channel import ChannelFactory

pubsub_app = typer.Typer(
    help="Set up Cloud Pub/Sub resources for Lookout (honours PUBSUB_EMULATOR_HOST).",
    short_help="Set up Cloud Pub/Sub resources (honours PUBSUB_EMULATOR_HOST).",
    no_args_is_help=True,
)
app.add_typer(pubsub_app, name="pubsub")

T = TypeVar("T")

ProjectOption = Annotated[
    str, typer.Option("--project", "-p", help="Google Cloud project id (any id on the emulator).")
]
TopicOption = Annotated[str, typer.Option("--topic", "-t", help="Topic the logs are published to.")]
TimeoutOption = Annotated[
    float,
    typer.Option(
        "--timeout",
        min=0.5,
        help="Seconds to wait for Pub/Sub to answer (connecting, and each call with its "
        "retries) before giving up with exit status 1.",
    ),
]


def _die(step: str, message: str, code: int = 1) -> NoReturn:
    typer.echo(f"lookout {step}: {message}", err=True)
    raise typer.Exit(code)


def _channels() -> ChannelFactory:
    """The emulator when PUBSUB_EMULATOR_HOST is set, else pubsub.googleapis.com.

    The Google client libraries are imported here, not at module level: they cost about a
    second of start-up that every other command (`--help`, `replay`, `demo`) would pay.
    """
    from worker.sources.grpc_channel import channel_factory, emulator_host_from_env

    return channel_factory(emulator_host_from_env())


def _run_guarded(step: str, call: Callable[[], T], channels: ChannelFactory, timeout: float) -> T:
    """Check Pub/Sub answers within `timeout`, then run `call`; expected failures become one
    readable line and exit status 1."""
    from google.api_core import exceptions as gexc
    from google.auth import exceptions as auth_exceptions

    from worker.sources.grpc_channel import check_reachable

    try:
        check_reachable(channels, timeout)
        return call()
    except LookoutError as e:
        _die(step, str(e))
    except gexc.GoogleAPIError as e:
        _die(step, describe(e))
    except auth_exceptions.GoogleAuthError as e:
        _die(
            step,
            f"no Google credentials ({describe(e)}); run `gcloud auth application-default "
            "login` or set PUBSUB_EMULATOR_HOST for the emulator",
        )


@pubsub_app.command(
    "init", short_help="Create the topic, subscription and dead-letter topic, idempotently."
)
def pubsub_init(
    project: ProjectOption,
    topic: TopicOption,
    subscription: Annotated[
        str, typer.Option("--subscription", "-s", help="Subscription the workers share.")
    ],
    dead_letter_topic: Annotated[
        str | None,
        typer.Option(
            "--dead-letter-topic",
            "-d",
            help="Topic for bad records and for messages past --max-delivery-attempts; a "
            "subscription '<topic>-sub' is created on it so nothing published there is dropped.",
        ),
    ] = None,
    ack_deadline: Annotated[
        int,
        typer.Option(
            "--ack-deadline",
            help="Subscription ack deadline in seconds (10-600); workers extend leases.",
        ),
    ] = 60,
    max_delivery_attempts: Annotated[
        int,
        typer.Option(
            "--max-delivery-attempts",
            help="Deliveries before Pub/Sub moves a message to the dead-letter topic (5-100).",
        ),
    ] = 10,
    exactly_once: Annotated[
        bool,
        typer.Option(
            "--exactly-once/--no-exactly-once",
            help="Enable exactly-once delivery on the subscription.",
        ),
    ] = False,
    retry_min_backoff: Annotated[
        int | None,
        typer.Option(
            "--retry-min-backoff",
            help="Seconds before a nacked or expired message is redelivered, at first (0-600; "
            "default 10).",
            show_default=False,
        ),
    ] = None,
    retry_max_backoff: Annotated[
        int | None,
        typer.Option(
            "--retry-max-backoff",
            help="Longest redelivery backoff in seconds (0-600, at least --retry-min-backoff; "
            "default 600).",
            show_default=False,
        ),
    ] = None,
    immediate_redelivery: Annotated[
        bool,
        typer.Option(
            "--immediate-redelivery",
            help="No retry policy: Pub/Sub redelivers nacked or expired messages at once "
            "(its own default); the --retry-* backoffs are not used.",
        ),
    ] = False,
    message_retention: Annotated[
        int | None,
        typer.Option(
            "--message-retention",
            help="Seconds the subscription keeps un-acked messages (600-604800; default: "
            "Pub/Sub's 7 days, and an existing subscription's value is not checked).",
            show_default=False,
        ),
    ] = None,
    update: Annotated[
        bool,
        typer.Option(
            "--update",
            help="Change an existing subscription whose settings differ, where Pub/Sub allows "
            "it: ack deadline, retry policy, dead-letter policy, exactly-once, retention. "
            "Its topic, filter and message ordering cannot be changed.",
        ),
    ] = False,
    timeout: TimeoutOption = 15.0,
) -> None:
    """Create the topic, the subscription (ack deadline, retry policy, dead-letter policy,
    optional exactly-once delivery) and the dead-letter topic, idempotently.

    Resources that exist are checked, and changed only with --update: one line per resource
    says created, exists, updated, or mismatch with the differing settings and how to
    reconcile them. Exit status 0 when everything matches (or was updated), 1 on a mismatch
    or error. Uses the emulator when PUBSUB_EMULATOR_HOST is set.
    """
    from worker.sources.pubsub_admin import init_pubsub

    if immediate_redelivery and (retry_min_backoff is not None or retry_max_backoff is not None):
        _die(
            "pubsub init",
            "--immediate-redelivery makes a subscription without a retry policy; "
            "drop --retry-min-backoff / --retry-max-backoff",
            code=2,
        )
    channels = _channels()
    report = _run_guarded(
        "pubsub init",
        lambda: init_pubsub(
            project,
            topic,
            subscription,
            dead_letter_topic,
            ack_deadline_seconds=ack_deadline,
            max_delivery_attempts=max_delivery_attempts,
            exactly_once=exactly_once,
            retry_min_backoff_seconds=10 if retry_min_backoff is None else retry_min_backoff,
            retry_max_backoff_seconds=600 if retry_max_backoff is None else retry_max_backoff,
            retry_policy=not immediate_redelivery,
            message_retention_seconds=message_retention,
            channels=channels,
            update=update,
            timeout_seconds=timeout,
        ),
        channels,
        timeout,
    )
    for line in report.lines():
        typer.echo(line)
    if not report.ok:
        if report.updatable:
            _die(
                "pubsub init",
                "an existing subscription differs from what was asked; re-run with --update "
                "to change it in place (running workers keep working)",
            )
        _die(
            "pubsub init",
            "an existing resource differs in a setting Pub/Sub cannot change; see the "
            "mismatch line for what to do",
        )


def _read_lines(stream: IO[bytes]) -> Iterator[bytes]:
    """Lines of a binary stream, one at a time (a 10 GB file is never held in memory)."""
    yield from iter(stream.readline, b"")


@app.command(short_help="Publish prediction logs from a file or stdin to a Pub/Sub topic.")
def publish(
    file: Annotated[
        str, typer.Argument(help="NDJSON file of prediction logs, or - for standard input.")
    ],
    project: ProjectOption,
    topic: TopicOption,
    batch: Annotated[
        int,
        typer.Option(
            "--batch",
            "-b",
            min=1,
            help="Lines per message: 1 publishes one record per message, N > 1 NDJSON batches "
            "(cut early to stay under Pub/Sub's 10 MB message limit).",
        ),
    ] = 1,
    gzip: Annotated[
        bool,
        typer.Option(
            "--gzip/--no-gzip", help="Compress bodies, with attribute Content-Encoding: gzip."
        ),
    ] = False,
    format_hint: Annotated[
        str | None,
        typer.Option(
            "--format",
            help=f"Set the `format` attribute (one of {', '.join(FORMATS)}); default: workers "
            "detect the format per record.",
        ),
    ] = None,
    timeout: TimeoutOption = 15.0,
) -> None:
    """Publish a stream of prediction logs, such as `lookout simulate` writes, to a topic.

    Blank lines are skipped. Waits for every publish to be confirmed by Pub/Sub, shows a
    progress bar on stderr when it is a terminal, then prints how many lines and messages were
    published. Exit status 1 if any message failed (the failures are summarised). Uses the
    emulator when PUBSUB_EMULATOR_HOST is set.
    """
    from worker.sources.pubsub_publish import publish_lines

    if format_hint is not None and format_hint not in FORMATS:
        known = ", ".join(FORMATS)
        _die("publish", f"unknown --format {format_hint!r}; expected one of {known}", 2)
    if file == "-":
        stream: IO[bytes] = sys.stdin.buffer
    else:
        try:
            stream = Path(file).open("rb")  # noqa: SIM115 - closed in the finally below
        except OSError as e:
            _die("publish", f"cannot read {file}: {e.strerror}", 2)
    channels = _channels()
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )

    progress = Progress(
        TextColumn("publishing"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("lines confirmed"),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        disable=not sys.stderr.isatty(),
    )
    try:
        with progress:
            task = progress.add_task("publish", total=None)
            report = _run_guarded(
                "publish",
                lambda: publish_lines(
                    _read_lines(stream),
                    project,
                    topic,
                    batch=batch,
                    gzip=gzip,
                    format_hint=format_hint,
                    progress=lambda n: progress.advance(task, n),
                    channels=channels,
                    timeout_seconds=timeout,
                ),
                channels,
                timeout,
            )
    except OSError as e:
        _die("publish", f"reading {file} failed: {e.strerror or e}", 2)
    finally:
        if stream is not sys.stdin.buffer:
            stream.close()
    typer.echo(report.summary())
    if not report.ok:
        raise typer.Exit(1)
