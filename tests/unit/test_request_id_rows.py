"""A checkpoint's request ids held window by window store exactly what rows one by one store."""

from __future__ import annotations

from pathlib import Path

import duckdb

from tests.sink_cases import S0, batch, ids, partial
from worker.sink import Checkpoint, RequestIdRows, checkpoint_digest, request_id_groups
from worker.sinks.duckdb_sink import DuckDBSink


def test_rows_and_groups_are_two_views_of_the_same_ids() -> None:
    groups = RequestIdRows([("a", S0, ["r1", "r2"]), ("b", S0, []), ("b", S0 + 60, ["r3"])])
    rows = [("a", S0, "r1"), ("a", S0, "r2"), ("b", S0 + 60, "r3")]
    assert len(groups) == 3
    assert list(groups) == rows
    assert groups[1] == rows[1]
    assert groups[-1] == rows[-1]
    assert request_id_groups(rows) == request_id_groups(groups)
    # the fingerprint a sink dedups a replayed checkpoint by does not depend on the form
    assert checkpoint_digest(Checkpoint("w", 1, request_ids=rows)) == checkpoint_digest(
        Checkpoint("w", 1, request_ids=groups)
    )
    assert not Checkpoint("w", 1, request_ids=RequestIdRows([("a", S0, [])])).request_ids


def test_duckdb_stores_the_same_rows_from_either_form(tmp_path: Path) -> None:
    first, second = batch("x", 40), batch("y", 25)
    as_rows = [*ids(first), *ids(second, model="b", start=S0 + 60)]
    as_groups = RequestIdRows(
        [
            ("a", S0, first.request_id.tolist()),
            ("b", S0 + 60, second.request_id.tolist()),
        ]
    )
    stored = []
    for name, request_ids in (("rows", as_rows), ("groups", as_groups)):
        path = tmp_path / f"{name}.duckdb"
        sink = DuckDBSink(path)
        sink.write_checkpoint(Checkpoint("w1", 0, [partial(first)], request_ids))
        sink.close()
        with duckdb.connect(str(path), read_only=True) as con:
            stored.append(
                con.execute(
                    "SELECT model, epoch(window_start)::BIGINT, request_id "
                    "FROM window_request_ids ORDER BY ALL"
                ).fetchall()
            )
    assert stored[0] == stored[1]
    assert sorted(stored[1]) == sorted(as_rows)
