"""The report's evidently line reads the embedding samples from stored states, in both the
compact encoding and the JSON of files written before it."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import duckdb
import numpy as np
import orjson

from detectors import reservoir as rs
from tests.sink_cases import S0, T0, batch, ids, partial, rows_of, states_of
from worker.cli.report_evidently import evidently_second_opinion
from worker.sink import Checkpoint
from worker.sinks.duckdb_sink import DuckDBSink


def sample(seed: int, shift: float) -> dict[str, object]:
    rng = np.random.default_rng(seed)
    rows = (rng.normal(size=(200, 16)) + shift).astype(np.float16)
    keys = np.sort(rng.choice(2**62, size=200, replace=False).astype(np.uint64))
    return {"sample": rs.to_row(rs.Reservoir(keys, rows, 200))}


def test_the_second_opinion_reads_compact_states_and_json_states_alike(tmp_path: Path) -> None:
    path = tmp_path / "lookout.duckdb"
    logs = batch("r", 5)
    states = {**rows_of(states_of(logs)), "embedding_drift": sample(1, 1.5)}
    reference = sample(2, 0.0)
    sink = DuckDBSink(path)
    sink.write_checkpoint(
        Checkpoint(
            "w1",
            0,
            [replace(partial(logs), states=states)],
            ids(logs),
            references={("a", "embedding_drift"): reference},
        )
    )
    compact = evidently_second_opinion(sink, "a", T0)
    sink.close()
    assert compact is not None and "200 vs 200 sampled embeddings" in compact
    assert compact.endswith(", drift")

    with duckdb.connect(str(path)) as con:  # the same file as the previous release wrote it
        for table, column, value in (
            ("window_metrics", "states", states),
            ("detector_references", "state", reference),
        ):
            con.execute(f"ALTER TABLE {table} ALTER {column} SET DATA TYPE VARCHAR USING ''")
            con.execute(f"UPDATE {table} SET {column} = ?", [orjson.dumps(value).decode()])
            con.execute(f"ALTER TABLE {table} ALTER {column} SET DATA TYPE JSON")
    reopened = DuckDBSink(path)
    assert evidently_second_opinion(reopened, "a", T0) == compact
    assert reopened.load_window("a", S0).partial_states == [states]
    reopened.close()
