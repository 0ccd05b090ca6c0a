"""Event-time tumbling windows and the watermark.

A window is identified by its start in whole seconds since the epoch; a record belongs to the
window containing its event timestamp. The watermark is the event-time frontier the records
agree on (`worker.event_time`: not the highest event time seen, which one broken clock would
set) minus the allowed lateness: a window is evaluated once, when the watermark passes its
end. Records that arrive after that still land in the aggregates (counted as late) but never
re-fire alerts.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
import numpy.typing as npt


@dataclass(frozen=True)
class WindowKey:
    model: str
    start: int  # seconds since the epoch, a multiple of the window length

    def start_datetime(self) -> datetime:
        return datetime.fromtimestamp(self.start, tz=UTC)


def window_starts(
    timestamps: npt.NDArray[np.float64], window_seconds: int
) -> npt.NDArray[np.int64]:
    """The start of the window each event time falls in (vectorised)."""
    return (np.floor(timestamps / window_seconds) * window_seconds).astype(np.int64)


@dataclass
class Watermark:
    """Max event time seen minus allowed lateness; only ever moves forward."""

    allowed_lateness_seconds: float
    max_event_time: float = float("-inf")

    def observe(self, max_event_time_in_batch: float) -> None:
        self.max_event_time = max(self.max_event_time, max_event_time_in_batch)

    @property
    def value(self) -> float:
        return self.max_event_time - self.allowed_lateness_seconds

    def closes(self, window_start: int, window_seconds: int) -> bool:
        """True when the window [start, start + length) can be evaluated."""
        return self.value >= window_start + window_seconds


def group_by_window(
    models: np.ndarray[Any, np.dtype[np.object_]], starts: np.ndarray[Any, np.dtype[np.int64]]
) -> list[tuple[tuple[str, int], np.ndarray[Any, np.dtype[np.int64]] | None]]:
    """Row indices per (model, window start); None means "every row" (the common case)."""
    first_model, first_start = models[0], starts[0]
    if (starts == first_start).all() and (models == first_model).all():
        return [((str(first_model), int(first_start)), None)]
    uniques, codes = np.unique(models.astype(str), return_inverse=True)
    key = codes.astype(np.int64) * (1 << 40) + (starts - starts.min())
    order = np.argsort(key, kind="stable")
    sorted_key = key[order]
    bounds = np.flatnonzero(np.diff(sorted_key)) + 1
    groups: list[tuple[tuple[str, int], np.ndarray[Any, np.dtype[np.int64]] | None]] = []
    for chunk in np.split(order, bounds):
        row = int(chunk[0])
        groups.append(((str(models[row]), int(starts[row])), chunk.astype(np.int64)))
    del uniques
    return groups
