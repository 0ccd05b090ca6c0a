"""Event time a broken clock cannot hijack: which records may move the watermark.

A watermark that follows the maximum event time seen is poisoned by a single record from a
gateway whose clock says 2099: every open window is judged at once on part of its data and
every later record counts as late (Flink's bounded-out-of-orderness watermarks fail the same
way). So event time is guarded in two ways before a batch is folded:

- **The frontier is corroborated, not a maximum.** It moves to the event time that `share`
  (half) of a batch's admitted records reach, and at least `quorum` of them (5): one record,
  or four, cannot move it, and neither can one gateway whose clock is fast, however many
  records it sends, while it sends less than half of each batch (counted by records, a fixed
  quorum let five of its records in one message move it, and every other producer's records
  turned late). Nor can one poll it dominates (a gateway that publishes its logs 100 to a
  message, in a quiet minute): a batch that agrees on a time further beyond what the previous
  deciding batch agreed on than the stream's usual step (`confirm_after_seconds`, the allowed
  lateness, or twice the step between the two decisions before, if more) moves the frontier
  only to that earlier time, and the next batch must agree too. Before, such a poll moved the
  frontier by its clock's error, and every honest record for that long counted late. A trickle
  that decides once a minute, or a replay whose slices span minutes, keeps its pace; a burst
  after a quiet spell (a backlog, a replay catching up) moves it a batch behind.
  Batches too small to decide (a trickle of single records) are pooled until they hold a
  quorum, which must then all agree.
- **Records too far from it are quarantined**, never folded, and never move it: more than
  `max_future_skew_seconds` ahead of the newest time a quorum reaches (not of the frontier:
  half a batch of a sparse file spans hours) when the records after it in the batch come
  back by more than that (a file read in order only goes forward, a wrong clock does not)
  (a live source, whose frontier trails the wall clock, bounds by the wall clock instead:
  new data after a quiet night is not suspicious there), or ahead of the wall clock by that
  much whatever the source (nothing real comes from the future), or more than
  `max_past_seconds` behind the frontier.

Until `quorum` records have been admitted there is no frontier: nothing closes early and the
relative bounds do not apply, only the wall clock's. Pure computation: the wall clock is
injected.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np
import numpy.typing as npt


@dataclass(frozen=True)
class EventTimeLimits:
    #: how far ahead of the frontier (and of the wall clock) an event time may be
    max_future_skew_seconds: float = 3600.0
    #: how far behind the frontier an event time may be before it is quarantined, not late
    max_past_seconds: float = 7 * 86_400.0
    #: admitted records that must agree before the frontier moves
    quorum: int = 5
    #: ...and the share of a batch's admitted records that must (more than any one producer)
    share: float = 0.5
    #: a batch agreeing on a time further than this beyond the previous deciding batch's is
    #: confirmed by the next before the frontier follows it (the engine's allowed lateness)
    confirm_after_seconds: float = 30.0
    #: a live source (Pub/Sub): bound new records by the wall clock, not by the frontier
    live: bool = False


@dataclass(frozen=True)
class Quarantined:
    """One record that was not folded, and why (kept with the checkpoint that acks it)."""

    row: int
    event_time: float
    reason: str
    #: "future" or "past", the metric label
    kind: str


@dataclass(frozen=True)
class Admission:
    admitted: npt.NDArray[np.bool_]
    quarantined: list[Quarantined]


def _when(seconds: float) -> str:
    try:
        return datetime.fromtimestamp(seconds, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    except (OverflowError, OSError, ValueError):
        return f"{seconds:.0f} s since the epoch"


def _span(seconds: float) -> str:
    for unit, size in (("days", 86_400.0), ("hours", 3600.0), ("minutes", 60.0)):
        if seconds >= 2 * size:
            return f"{seconds / size:,.0f} {unit}"
    return f"{seconds:,.0f} s"


class EventTimeGuard:
    """Decides, batch by batch, which event times are admitted; keeps the frontier."""

    def __init__(
        self, limits: EventTimeLimits, wall_clock: Callable[[], float] | None = None
    ) -> None:
        if limits.quorum < 1:
            msg = f"event-time quorum must be at least 1, got {limits.quorum}"
            raise ValueError(msg)
        if not 0.0 < limits.share <= 1.0:
            msg = f"event-time share must be in (0, 1], got {limits.share}"
            raise ValueError(msg)
        if limits.confirm_after_seconds < 0:
            given = limits.confirm_after_seconds
            msg = f"event-time confirm_after_seconds must be at least 0, got {given}"
            raise ValueError(msg)
        self.limits = limits
        self._wall_clock = wall_clock
        self._frontier = float("-inf")
        #: the times the latest two deciding batches agreed on (None before there were any)
        self._last_agreed: float | None = None
        self._before_last: float | None = None
        #: admitted event times of batches too small to decide on, until there are enough
        self._pending = np.zeros(0, dtype=np.float64)

    @property
    def frontier(self) -> float:
        """The highest event time batches agreed on (a jump confirmed by the next); -inf
        until one could."""
        return self._frontier

    def _agreed(self, timestamps: npt.NDArray[np.float64]) -> tuple[float, float | None]:
        """(the frontier these pending plus new event times give, the time they agree on, or
        None when they are too few to decide)."""
        pool = np.concatenate((self._pending, timestamps)) if len(self._pending) else timestamps
        quorum = self.limits.quorum
        if len(pool) < quorum:
            return self._frontier, None
        k = max(quorum, math.ceil(self.limits.share * len(pool)))
        agreed = float(np.partition(pool, len(pool) - k)[len(pool) - k])
        last = self._last_agreed
        if last is not None and agreed - last > self._usual_step():
            return max(self._frontier, last), agreed  # a jump: the next batch must agree too
        return max(self._frontier, agreed), agreed

    def _usual_step(self) -> float:
        """How far one deciding batch may move the frontier beyond the last one's agreed time
        at once: the allowed lateness, or twice the step between the last two decisions,
        whichever is more. A trickle deciding once a minute, or a replay whose slices span
        minutes each, moves at its own pace; a fast clock's jump of an hour stands out."""
        step = self.limits.confirm_after_seconds
        if self._last_agreed is not None and self._before_last is not None:
            step = max(step, 2.0 * (self._last_agreed - self._before_last))
        return step

    def _corroborated(self, timestamps: npt.NDArray[np.float64]) -> float:
        """The newest event time at least `quorum` records (pending and new) reach, or the
        frontier if later: a record further ahead than the skew has fewer than `quorum` near
        it. Not the frontier itself: half a batch of a sparse file can span hours, and its
        newer half is not a broken clock."""
        pool = np.concatenate((self._pending, timestamps)) if len(self._pending) else timestamps
        k = self.limits.quorum
        if len(pool) < k:
            return self._frontier
        return max(self._frontier, float(np.partition(pool, len(pool) - k)[len(pool) - k]))

    def resume_at(self, at: float) -> None:
        """A restarted worker's frontier before any record: where its predecessor had surely
        reached (the newest window it left unjudged began there). Only when there is none yet.
        Without it a restart on a quiet stream had no frontier to move on from, and the windows
        it reopened waited for traffic."""
        if not math.isfinite(self._frontier):
            self._frontier = at

    def advance_idle(self, to: float) -> None:
        """Move the frontier to `to` with no record saying so: the source has been quiet
        (see `Engine.idle`). Never back, never before there is a frontier, and with a wall
        clock never past it (nor past the frontier, if that is ahead already)."""
        if not math.isfinite(self._frontier):
            return
        if self._wall_clock is not None:
            to = min(to, max(self._frontier, self._wall_clock()))
        self._frontier = max(self._frontier, to)

    def admit(self, timestamps: npt.NDArray[np.float64]) -> Admission:
        limits = self.limits
        admitted = np.ones(len(timestamps), dtype=bool)
        quarantined: list[Quarantined] = []
        skew = limits.max_future_skew_seconds
        wall = self._wall_clock() if self._wall_clock is not None else None
        if wall is not None:
            ahead = admitted & (timestamps > wall + skew)
            for row in np.flatnonzero(ahead):
                t = float(timestamps[row])
                quarantined.append(
                    Quarantined(
                        int(row),
                        t,
                        f"event time {_when(t)} is {_span(t - wall)} ahead of the wall clock "
                        f"(limit {_span(skew)}): a producer clock is wrong",
                        "future",
                    )
                )
            admitted &= ~ahead
        # the frontier this batch would give if it all counted: most of the batch itself may
        # move it (a replay catching up), a lone outlier or one fast producer cannot
        frontier, _ = self._agreed(timestamps[admitted])
        if np.isfinite(frontier):
            if not limits.live:
                newest = self._corroborated(timestamps[admitted])
                ahead = admitted & (timestamps > newest + skew)
                # ...and the stream comes back from it: a record after it (in input order)
                # is more than the skew earlier. A file read in order only goes forward: the
                # newest records of a sparse file, or those after a quiet night at the end of
                # a batch, have fewer than a quorum near them and were quarantined, never
                # folded. A wrong clock at the very end of a batch is admitted: one record in
                # a window ahead, which moves nothing
                later = np.append(np.fmin.accumulate(timestamps[::-1])[::-1][1:], np.inf)
                ahead &= later < timestamps - skew
                for row in np.flatnonzero(ahead):
                    t = float(timestamps[row])
                    quarantined.append(
                        Quarantined(
                            int(row),
                            t,
                            f"event time {_when(t)} is {_span(t - newest)} ahead of the "
                            f"stream ({_when(newest)}; limit {_span(skew)}), fewer than "
                            f"{limits.quorum} records agree and the records after it are "
                            f"back at {_when(float(later[row]))}: a producer clock is wrong",
                            "future",
                        )
                    )
                admitted &= ~ahead
            behind = admitted & (timestamps < frontier - limits.max_past_seconds)
            for row in np.flatnonzero(behind):
                t = float(timestamps[row])
                quarantined.append(
                    Quarantined(
                        int(row),
                        t,
                        f"event time {_when(t)} is {_span(frontier - t)} behind the stream "
                        f"({_when(frontier)}; limit {_span(limits.max_past_seconds)})",
                        "past",
                    )
                )
            admitted &= ~behind
        if admitted.any():
            self._frontier, agreed = self._agreed(timestamps[admitted])
            kept = np.concatenate((self._pending, timestamps[admitted]))
            self._pending = np.zeros(0, dtype=np.float64) if agreed is not None else kept
            if agreed is not None:
                self._before_last, self._last_agreed = self._last_agreed, agreed
        quarantined.sort(key=lambda q: q.row)
        return Admission(admitted, quarantined)
