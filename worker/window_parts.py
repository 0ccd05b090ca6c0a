"""A decoded batch cut into its (model, window) parts with one sort, and the parts as views.

The engine folds each part into its window. Taking each part's rows out separately
(`LogBatch.take` per window) copied every column once per window and rebuilt a row map the
size of the whole batch each time; here the batch is put in (model, window) order once and each
part is a slice of that: views of the columns, no copy. The request ids are hashed once for the
whole batch too, and each part's keys are a slice of those (`reservoir.remember_keys`), so
deduplication and every detector's sample reuse them instead of hashing per window.
"""

from __future__ import annotations

from dataclasses import fields
from typing import Any

import numpy as np
import numpy.typing as npt

from detectors import reservoir as rs
from schemas.batch import LogBatch

IntArray = npt.NDArray[np.int64]
#: what `worker.windows.group_by_window` returns: rows per (model, start), None for all rows
Groups = list[tuple[tuple[str, int], IntArray | None]]

_PER_ROW = tuple(
    f.name
    for f in fields(LogBatch)
    if f.name not in ("embeddings", "embedding_rows", "safety_scores")
)


def window_parts(
    batch: LogBatch, groups: Groups, seed: int
) -> list[tuple[tuple[str, int], LogBatch]]:
    """Each group's rows as a batch, in the group's row order, sharing one sorted copy; the
    request ids hashed with `seed` once for them all."""
    if len(groups) == 1 and groups[0][1] is None:
        rs.hash_ids(batch.request_id, seed)
        return [(groups[0][0], batch)]
    chunks = [rows for _, rows in groups if rows is not None]
    order = np.concatenate(chunks) if chunks else np.zeros(0, np.int64)
    ordered = _reordered(batch, order)
    # the batch's keys put in the same order (hashed on the decode thread, usually)
    keys = rs.hash_rows(batch.request_id, order, seed)
    out = []
    start = 0
    for key, rows in groups:
        assert rows is not None  # several groups: each has its rows
        end = start + len(rows)
        part = rows_between(ordered, start, end)
        rs.remember_keys(part.request_id, seed, keys[start:end])
        out.append((key, part))
        start = end
    return out


def _reordered(batch: LogBatch, order: IntArray) -> LogBatch:
    """`batch.take(order)` for a permutation, with the embeddings gathered in one copy (the
    general take masks, then sorts, then copies them twice: most of a poll's bytes)."""
    columns: dict[str, Any] = {name: getattr(batch, name)[order] for name in _PER_ROW}
    columns["safety_scores"] = {c: v[order] for c, v in batch.safety_scores.items()}
    slot = np.full(len(batch), -1, dtype=np.int64)  # each row's index among the embeddings
    slot[batch.embedding_rows] = np.arange(len(batch.embedding_rows))
    slot = slot[order]
    has = slot >= 0
    columns["embeddings"] = batch.embeddings[slot[has]]
    columns["embedding_rows"] = np.flatnonzero(has).astype(np.int64)
    return LogBatch(**columns)


def rows_between(batch: LogBatch, start: int, end: int) -> LogBatch:
    """Rows [start, end) of a batch whose `embedding_rows` are sorted, as views."""
    columns: dict[str, Any] = {name: getattr(batch, name)[start:end] for name in _PER_ROW}
    columns["safety_scores"] = {c: v[start:end] for c, v in batch.safety_scores.items()}
    first, last = np.searchsorted(batch.embedding_rows, (start, end))
    columns["embeddings"] = batch.embeddings[first:last]
    columns["embedding_rows"] = batch.embedding_rows[first:last] - start
    return LogBatch(**columns)
