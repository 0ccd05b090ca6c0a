"""An ingest replica learns which of its windows the evaluator has already judged.

In split mode an ingest replica never judges, so it cannot tell on its own that a window it
still holds open was judged: the evaluator follows the slowest replica still reporting, and a
replica that stopped reporting for a while (idle, or behind on a backlog) is left out. In an
SRE's trial, publishing an hour a second time added 1,455 records to windows judged minutes
before, counted as on time (`late_records` 0, no log line) because the replica holding them
did not have the other replica's request ids and did not know of the verdict.

A partial row the evaluator did not have when it judged was not seen by the verdict, whatever
its records' event times: so before a checkpoint is written, the windows of its rows that may
have been judged (`Engine._maybe_judged`) are looked up among the detections, and the rows of
judged ones are written as late records.
After the write, those windows' stored request ids are read, so that what other replicas
counted is skipped as a duplicate from then on.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import replace

from worker.sink import Checkpoint, PartialRow, Sink

log = logging.getLogger(__name__)

Window = tuple[str, int]


def _all_late(row: PartialRow) -> PartialRow:
    slices = [replace(s, late_records=s.records) for s in row.slices]
    return replace(row, late_records=row.records, slices=slices)


def late_where_judged(
    sink: Sink, checkpoint: Checkpoint, candidates: frozenset[Window]
) -> tuple[Checkpoint, dict[Window, int]]:
    """The checkpoint with the rows of already-judged windows among `candidates` counted late,
    and the records newly counted late per window. A failed read changes nothing: the rows are
    written as they were, and the write itself reports a down sink."""
    asked = [
        (p.model, p.window_start)
        for p in checkpoint.partials
        if p.records > p.late_records and (p.model, p.window_start) in candidates
    ]
    if not asked:
        return checkpoint, {}
    try:
        judged = sink.judged_windows(asked)
    except Exception as error:
        log.debug("could not read which windows %s has judged: %s", sink.name, error)
        return checkpoint, {}
    if not judged:
        return checkpoint, {}
    newly_late: dict[Window, int] = {}
    partials = []
    for row in checkpoint.partials:
        key = (row.model, row.window_start)
        if key in judged and row.records > row.late_records:
            newly_late[key] = row.records - row.late_records
            row = _all_late(row)
        partials.append(row)
    return replace(checkpoint, partials=partials), newly_late


def stored_request_ids(sink: Sink, windows: list[Window]) -> Mapping[Window, frozenset[str]]:
    """The request ids every writer stored for `windows` (empty on a failed read: the
    replica then goes on with the ids it has, and a record another replica counted may be
    counted again, as late)."""
    if not windows:
        return {}
    try:
        stored = sink.load_windows(windows)
    except Exception as error:
        log.debug("could not read the stored ids of judged windows from %s: %s", sink.name, error)
        return {}
    return {key: window.request_ids for key, window in stored.items()}
