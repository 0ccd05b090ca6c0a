"""Split mode: an ingest replica killed while working through a backlog, before its first
checkpoint, still holds the windows its messages belong to until they come back to another
replica; the evaluator judges those windows on all their calls.

Found by an SRE's trial on the emulators: with no row of its own until its first checkpoint,
the other replica's frontier closed those windows, and the evaluator judged them on 14-60 of
their 80-110 calls (879 records late, one false page, one missed page).
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import NoReturn

import pytest

from alerts.state import AlertTracker
from detectors.registry import build_detectors
from schemas.alert_config import AlertingConfig
from tests.unit.test_split_roles import NAMES, T0, one_process, stream, verdicts
from worker.cli.pipeline import Pipeline
from worker.engine import Engine, EngineSettings
from worker.evaluator import WindowEvaluator
from worker.testing import FakeClock, MemorySink

ACK_DEADLINE = 60.0
HOLD = ACK_DEADLINE + 15.0  # what `lookout run --role ingest` on Pub/Sub holds at start
ACTIVE = 95.0  # the evaluator's `writer_active_seconds` for a 60 s ack deadline


def engine(sink: MemorySink, clock: FakeClock, *, evaluate: bool, writer: str) -> Engine:
    detectors = build_detectors(dict.fromkeys(NAMES))
    tracker = AlertTracker.from_rows(sink.load_alert_state(), AlertingConfig())
    settings = EngineSettings(
        allowed_lateness_seconds=30,
        writer_id=writer,
        evaluate=evaluate,
        closing_hold_seconds=0.0 if evaluate else HOLD,
        hold_frontier_cap=None if evaluate else sink.writer_frontier(writer),
        hold_frontier_seconds=0.0 if evaluate else ACTIVE,
        frontier_refresh_seconds=None if evaluate else ACTIVE / 3,
        writer_active_seconds=ACTIVE,
    )
    evaluator = WindowEvaluator(detectors, 60, tracker)
    return Engine(settings, detectors, sink, evaluator, now=clock, wall_clock=None)


def test_a_replica_killed_before_its_first_checkpoint_holds_its_windows_until_they_come_back() -> (
    None
):
    batches = stream()
    reference = one_process(batches)

    clock = FakeClock(start=1_000.0)
    sink = MemorySink(clock=clock)
    evaluator = engine(sink, clock, evaluate=True, writer="evaluator")
    survivor = engine(sink, clock, evaluate=False, writer="ingest-b")
    survivor.report_start()
    clock.advance(HOLD + 5.0)  # it has been up a while when the backlog arrives

    killed = engine(sink, clock, evaluate=False, writer="ingest-a")
    killed.report_start()
    # it pulls three messages of minute 5, folds them, and is SIGKILLed before it checkpoints
    taken = [30, 32, 34]
    for i in taken:
        killed.feed(batches[i], [f"m{i}"])
    del killed
    came_back_at = clock() + ACK_DEADLINE + 15.0  # leases expire, Pub/Sub redelivers

    def evaluator_round() -> None:
        evaluator.judge_stored(sink.load_frontier(ACTIVE))
        assert evaluator.checkpoint()

    # the survivor works through the rest of the backlog, 20 messages a second
    rest = [b for i, b in enumerate(batches) if i not in taken]
    for at in range(0, len(rest), 100):
        for batch in rest[at : at + 100]:
            survivor.feed(batch)
        survivor.tick()
        assert survivor.checkpoint()
        clock.advance(5.0)
        evaluator_round()
    while clock() < came_back_at:
        clock.advance(5.0)
        survivor.tick()
        evaluator_round()
    for i in taken:  # redelivered to the survivor, its windows long closed there
        survivor.feed(batches[i], [f"m{i}"], redelivered=True)
    for _ in range(40):  # and on, until every window is judged
        survivor.tick()
        assert survivor.checkpoint()
        clock.advance(5.0)
        evaluator_round()
    assert survivor.finish(end_of_input=False)
    for _ in range(3):
        clock.advance(5.0)
        evaluator_round()

    expected, got = verdicts(reference), verdicts(sink)
    minute_5 = (T0 + timedelta(minutes=5)).timestamp()
    assert {k: v for k, v in got.items() if k[2] == minute_5} == {
        k: v for k, v in expected.items() if k[2] == minute_5
    }, "the killed replica's windows were judged before its messages came back"
    assert len(got) == len(expected) and got == expected
    pages = [(a.dedup_key, a.status, a.window_start) for a in sink.alerts()]
    assert pages == [(a.dedup_key, a.status, a.window_start) for a in reference.alerts()]


def test_lookout_run_reports_the_start_before_its_pub_sub_source_pulls(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Building the Pub/Sub source starts its pulls, which lease messages: reported after it,
    an ingest replica SIGKILLed half a second in had leased 50 messages and no row, and a page
    was missed (an SRE's trial on the emulators)."""
    from schemas.config import LookoutConfig
    from worker.cli import serve as serving
    from worker.sinks.duckdb_sink import DuckDBSink

    db = tmp_path / "lookout.duckdb"
    config = LookoutConfig.model_validate(
        {
            "source": {"kind": "pubsub", "project": "p", "subscription": "s"},
            "sink": {"kind": "duckdb", "path": str(db)},
            "engine": {"role": "ingest", "writer_id": "ingest-a"},
            "metrics": {"enabled": False},
        }
    )
    reported_first: list[bool] = []

    def build_source(config: LookoutConfig, pipeline: Pipeline) -> NoReturn:
        reported_first.append(pipeline.sink.writer_frontier("ingest-a") is not None)
        raise ValueError("stop here")  # what an unusable source does: `lookout run` exits 2

    monkeypatch.setattr(serving, "build_source", build_source)
    assert serving.serve(config) == 2
    assert reported_first == [True]
    sink = DuckDBSink(db)
    try:
        assert sink.writer_frontier("ingest-a") == 0.0  # nobody had reported: before any window
    finally:
        sink.close()
