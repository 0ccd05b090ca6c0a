"""Split mode: an ingest replica killed with messages pulled and not acked keeps holding windows
open until those messages can be durable at another replica, and no longer.

The evaluator closes windows at the slowest frontier among the replicas that reported within
`evaluator_writer_active_seconds()` of the newest report. A replica that dies stops reporting;
its messages come back to another replica only when their leases expire (the ack deadline plus
Pub/Sub's redelivery delay) and are durable there a checkpoint later. If the dead replica's
frontier is dropped before that, the live replicas' frontiers close those windows and they are
judged without the records (the former fixed 60 s against the default 60 s ack deadline).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from schemas.config import REDELIVERY_MARGIN_SECONDS, LookoutConfig
from worker.cli.pipeline import build_pipeline
from worker.sink import Checkpoint
from worker.sinks.duckdb_sink import DuckDBSink
from worker.testing import FakeClock, MemorySink

T0 = 1_767_600_000.0


def evaluator_config(ack_deadline: int, checkpoint: float) -> LookoutConfig:
    """The evaluate role's file as the chart renders it: the replicas' Pub/Sub settings in it."""
    return LookoutConfig.model_validate(
        {
            "source": {
                "kind": "pubsub",
                "project": "p",
                "subscription": "s",
                "ack_deadline_seconds": ack_deadline,
            },
            "engine": {"role": "evaluate", "checkpoint_seconds": checkpoint},
        }
    )


def report(sink: MemorySink, writer: str, sequence: int, frontier: float) -> None:
    sink.write_checkpoint(Checkpoint(writer, sequence, frontier=frontier))


@pytest.mark.parametrize(("ack_deadline", "checkpoint"), [(60, 5.0), (10, 5.0), (600, 1.0)])
def test_a_killed_replicas_frontier_holds_until_its_messages_are_durable_elsewhere(
    ack_deadline: int, checkpoint: float
) -> None:
    config = evaluator_config(ack_deadline, checkpoint)
    active = config.evaluator_writer_active_seconds()
    clock = FakeClock(start=1_000.0)
    sink = MemorySink(clock=clock)
    report(sink, "dead", 0, T0)  # its last checkpoint; it is killed a checkpoint later
    # the worst case: killed just before its next checkpoint, a write later than the interval,
    # leases expiring a full ack deadline later, redelivered after the emulator's or service's
    # delay, and durable at the live replica after its own checkpoint and write
    killed = clock() + checkpoint + 4.0
    durable_elsewhere = killed + ack_deadline + REDELIVERY_MARGIN_SECONDS + checkpoint + 4.0
    sequence = 0
    while clock() < durable_elsewhere:
        clock.advance(checkpoint)
        sequence += 1
        report(sink, "live", sequence, T0 + 120.0 + clock())  # far ahead of the dead one
        assert sink.load_frontier(active) == T0, f"dead replica dropped at +{clock() - 1_000:g}s"
    # the old fixed 60 s had let the live replica's frontier close those windows before then
    if ack_deadline >= 60:
        assert sink.load_frontier(60.0) != T0
    # and once its messages can be durable elsewhere, the dead replica no longer holds windows
    while clock() <= 1_000.0 + active:
        clock.advance(checkpoint)
        sequence += 1
        report(sink, "live", sequence, T0 + 120.0 + clock())
    assert sink.load_frontier(active) == T0 + 120.0 + clock()


def test_the_hold_is_set_by_the_replicas_ack_deadline_unless_the_file_names_one() -> None:
    assert evaluator_config(60, 5.0).evaluator_writer_active_seconds() == 95.0
    assert evaluator_config(10, 5.0).evaluator_writer_active_seconds() == 45.0
    chosen = LookoutConfig.model_validate(
        {
            "source": {"kind": "pubsub", "project": "p", "subscription": "s"},
            "engine": {"role": "evaluate", "writer_active_seconds": 30},
        }
    )
    assert chosen.evaluator_writer_active_seconds() == 30.0
    # an evaluator whose file does not say how the replicas read keeps the former 60 s
    assert LookoutConfig().evaluator_writer_active_seconds() == 60.0


@pytest.mark.parametrize(("writer", "expected"), [("ingest-0", T0), ("ingest-9", None)])
def test_an_ingest_start_on_pubsub_caps_its_hold_at_its_own_ids_last_report(
    tmp_path: Path, writer: str, expected: float | None
) -> None:
    """`lookout run --role ingest` reads the frontier its writer id last reported (a restart
    under the same id: held to it during the restart hold), and none for an id never seen."""
    db = tmp_path / "lookout.duckdb"
    first = DuckDBSink(db)
    first.write_checkpoint(Checkpoint("ingest-0", 0, frontier=T0))
    first.close()
    config = LookoutConfig.model_validate(
        {
            "source": {"kind": "pubsub", "project": "p", "subscription": "s"},
            "sink": {"kind": "duckdb", "path": str(db)},
            "engine": {"role": "ingest", "writer_id": writer},
            "metrics": {"enabled": False},
        }
    )
    pipeline = build_pipeline(config, alert_stream=None)
    try:
        assert pipeline.engine.settings.closing_hold_seconds == 75.0
        assert pipeline.engine.settings.hold_frontier_cap == expected
        # the cap lasts as long as the evaluator would count the predecessor's own report
        assert pipeline.engine.settings.hold_frontier_seconds == 95.0
        # and it reports at least three times within that, even on a quiet stream
        assert pipeline.engine.settings.frontier_refresh_seconds == 95.0 / 3
        assert pipeline.engine.settings.writer_active_seconds == 95.0
    finally:
        pipeline.close()
