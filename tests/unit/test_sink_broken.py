"""A sink that can never write again stops the worker instead of retrying forever.

DuckDB invalidates a database after a fatal error (seen when its own checkpoint ran out of a
small `sink.memory_limit`): every later statement fails. Before, the engine retried each
checkpoint for ever, acked nothing and piled up open windows while the log only said "will
retry". Now the engine raises `SinkBroken`, the CLI prints one line and exits 1, and a restart
(Kubernetes) gets a fresh connection while Pub/Sub redelivers what was never acked.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import duckdb
import pytest

from tests.unit.test_engine import logs, make_engine
from worker.errors import SinkBroken
from worker.sink import Checkpoint
from worker.sinks.duckdb_sink import DuckDBSink
from worker.testing import MemorySink


class BrokenSink(MemorySink):
    def write_checkpoint(self, checkpoint: Checkpoint) -> None:
        raise SinkBroken("the sink is unusable")


def test_the_engine_stops_on_a_broken_sink_and_acks_nothing() -> None:
    acked: list[str] = []
    engine = make_engine(BrokenSink())
    engine.set_ack_handler(acked.extend)
    engine.feed(logs("m", 5, 4), ["m"])
    with pytest.raises(SinkBroken):
        engine.checkpoint()
    assert acked == []
    assert engine.pending_messages == 1


class _FatalOnCommit:
    """The DuckDB connection, except that COMMIT fails as an invalidated database does."""

    def __init__(self, con: duckdb.DuckDBPyConnection) -> None:
        self._con = con

    def execute(self, sql: str, *args: Any) -> Any:
        if sql == "COMMIT":
            raise duckdb.FatalException("Out of Memory Error: failed to pin block of size 256 KiB")
        if sql == "ROLLBACK":
            raise duckdb.FatalException("database has been invalidated because of a previous error")
        return self._con.execute(sql, *args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._con, name)


def test_a_fatal_duckdb_error_becomes_one_line_that_names_the_memory_limit(tmp_path: Path) -> None:
    sink = DuckDBSink(tmp_path / "l.duckdb", memory_limit="64MB")
    real = sink._con
    sink._con = _FatalOnCommit(real)  # type: ignore[assignment]
    engine = make_engine(sink)
    engine.feed(logs("m", 5, 4), ["m"])
    with pytest.raises(SinkBroken) as raised:
        engine.checkpoint()
    message = str(raised.value)
    assert "sink.memory_limit (now 64MB)" in message
    assert "failed to pin block" in message
    assert "\n" not in message
    sink._con = real
    sink.close()
