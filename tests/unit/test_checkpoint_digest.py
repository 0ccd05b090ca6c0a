"""The fingerprint a sink dedups a replayed checkpoint by: it tells apart any two contents, and
it never holds a whole checkpoint's serialised form in memory at once."""

from __future__ import annotations

import os
import tracemalloc

from schemas.base64_text import Base64Text
from tests.sink_cases import S0, batch, partial
from worker.sink import Checkpoint, PartialRow, RequestIdRows, checkpoint_digest


def test_every_change_of_content_changes_the_digest() -> None:
    logs = batch("x", 20)
    base = Checkpoint(
        "w", 3, [partial(logs)], RequestIdRows([("a", S0, ["r1", "r2"]), ("a", S0 + 60, ["r3"])])
    )
    variants = [
        Checkpoint("w2", 3, base.partials, base.request_ids),
        Checkpoint("w", 4, base.partials, base.request_ids),
        Checkpoint("w", 3, [partial(logs, late=1)], base.request_ids),
        Checkpoint("w", 3, [partial(logs, start=S0 + 60)], base.request_ids),
        # the same ids, cut differently between windows
        Checkpoint(
            "w", 3, base.partials, RequestIdRows([("a", S0, ["r1"]), ("a", S0 + 60, ["r2", "r3"])])
        ),
        Checkpoint("w", 3, base.partials, RequestIdRows([("a", S0, ["r1", "r2", "r3"])])),
        Checkpoint("w", 3, base.partials, base.request_ids, frontier=float(S0)),
        Checkpoint("w", 3, [], base.request_ids),
    ]
    digests = {checkpoint_digest(c) for c in [base, *variants]}
    assert len(digests) == len(variants) + 1
    assert checkpoint_digest(base) == checkpoint_digest(
        Checkpoint("w", 3, [partial(logs)], list(base.request_ids))
    )


def test_a_large_checkpoint_is_hashed_window_by_window() -> None:
    """30 windows of about 1 MB of states each (an embedding sample is most of a window's row):
    hashing needs memory for a few windows' serialised rows (orjson reserves several times a
    long string's length), not for all of them at once, as it did (35 MB on a replay)."""
    rows = [
        PartialRow(
            model="m",
            window_start=S0 + 60 * k,
            window_end=S0 + 60 * (k + 1),
            records=1000,
            late_records=0,
            states={"embedding_drift": {"sample": Base64Text(os.urandom(750_000))}},
        )
        for k in range(30)
    ]
    ids = RequestIdRows(
        [("m", S0 + 60 * k, [f"req-{k}-{i}" for i in range(2000)]) for k in range(30)]
    )
    checkpoint = Checkpoint("w", 1, rows, ids)
    tracemalloc.start()
    try:
        checkpoint_digest(checkpoint)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    whole = sum(len(row.states["embedding_drift"]["sample"]) for row in rows)
    assert peak < whole / 3, f"hashing held {peak / 1e6:.1f} MB at once, of {whole / 1e6:.0f} MB"
