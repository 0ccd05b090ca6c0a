"""The streaming engine: fold decoded batches into windows, checkpoint, then ack, then evaluate.

Order of effects, which is what makes "nothing is lost" hold:
1. `feed` folds a batch into the open windows' deltas and remembers the batch's ack ids;
2. `checkpoint` writes every delta, the request ids, new detections, alerts and alert state to
   the sink in one transaction, and only after it succeeded acks the source's messages and sends
   the alerts to the notifiers. A failed write keeps everything pending for the next attempt.
   With `background_checkpoints`, an interval checkpoint is written on a second thread: its
   windows start fresh deltas at once and folding goes on, while acks, alerts and forgetting
   windows wait until the write is seen to have succeeded (a failure puts it all back).
3. Windows are evaluated once, when the watermark passes their end; their detections travel in
   the next checkpoint. Records later than that still land in the aggregates (counted as late)
   but do not re-fire alerts.

The engine never reads a clock itself: `now` is injected, so tests drive checkpoint timing.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from detectors.base import Detector
from schemas.batch import LogBatch
from schemas.detection import Alert, Detection
from worker.alert_handoff import AlertHandoff, HandoffJournal
from worker.errors import SinkBroken
from worker.evaluator import WindowEvaluator
from worker.event_time import Admission, EventTimeGuard, EventTimeLimits
from worker.judged_elsewhere import late_where_judged, stored_request_ids
from worker.late_records import LateRecords
from worker.metrics import EngineMetrics
from worker.sink import (
    BaselineAccept,
    Checkpoint,
    QuarantinedRecord,
    RequestIdRows,
    Sink,
    StoredWindow,
)
from worker.unjudged import UnjudgedStreams
from worker.window_parts import window_parts
from worker.window_state import ID_SEED, CommitUndo, OpenWindow, describe_versions
from worker.windows import Watermark, group_by_window, window_starts

log = logging.getLogger("lookout.engine")

#: whether a batch came in messages delivered before: all of it, or a mask of its rows
Redelivered = bool | npt.NDArray[np.bool_]


def _holds_redelivered(redelivered: Redelivered, rows: npt.NDArray[np.int64] | None) -> bool:
    """Do the rows of one window (None: every row) hold a redelivered record?"""
    if isinstance(redelivered, bool):
        return redelivered
    return bool(redelivered.any() if rows is None else redelivered[rows].any())


#: its own logger, so a caller that names each quarantined record itself (`lookout replay`)
#: can silence these without matching words
quarantine_log = logging.getLogger("lookout.engine.quarantine")


@dataclass(frozen=True)
class EngineSettings:
    window_seconds: int = 60
    allowed_lateness_seconds: float = 30.0
    checkpoint_seconds: float = 5.0
    #: also checkpoint when this many messages wait for an ack (a Pub/Sub source stops handing
    #: out messages once it holds its flow-control maximum, so time alone would throttle it)
    checkpoint_max_messages: int = 5000
    #: also checkpoint once this many records are folded and not written: with 100-record
    #: messages 5,000 messages are 500k records, written at once while ingest waits; written
    #: on the way (in the background, with `background_checkpoints`), the last write is short
    checkpoint_max_records: int = 50_000
    max_open_windows: int = 512
    writer_id: str = "worker"
    #: checkpoint early once this many judged windows wait to be written and dropped
    max_judged_windows_held: int = 32
    #: undelivered alerts kept for retry (oldest dropped beyond this, with an error log)
    max_outbox_alerts: int = 10_000
    #: evaluate windows in this process (False for an ingest-only replica)
    evaluate: bool = True
    #: which event times may be folded and move the watermark (see worker/event_time.py)
    event_time: EventTimeLimits = field(default_factory=EventTimeLimits)
    #: write interval checkpoints on a second thread while folding goes on (the sink must
    #: allow reads from the engine's thread during a write)
    background_checkpoints: bool = False
    #: judge no window for this long after start (Pub/Sub: the ack deadline and a margin)
    closing_hold_seconds: float = 0.0
    #: evaluate role: unjudged windows are looked for from this far behind the frontier...
    unjudged_recent_seconds: int = 86_400
    #: ...and among all stored windows at the first read and every this many reads (at a
    #: 5-second checkpoint interval, hourly)
    unjudged_full_scan_every: int = 720
    #: ...and judged for at most this long per read: the detections are written by the
    #: checkpoint after it, so a backlog of thousands of windows (each a sink query) is
    #: written slice by slice, not lost whole to a restart (see `judge_stored`)
    judge_slice_seconds: float = 60.0
    #: during that hold, report no frontier beyond this one: the last a predecessor under the
    #: same writer id reported (its row is overwritten by ours, and its unacked messages are
    #: still to come back); None for a writer id never seen (a new replica reports its own)
    hold_frontier_cap: float | None = None
    #: how long that cap lasts from start, at least the hold: as long as the evaluator would
    #: count the predecessor's own report (`writer_active_seconds`), so the redelivered
    #: messages are durable at another replica first
    hold_frontier_seconds: float = 0.0
    #: report the frontier again after this long without one, even with nothing new (None:
    #: only with new rows), unless this replica is the slowest of those the evaluator counts
    #: (reported within `writer_active_seconds` of the newest report). Live replicas that all
    #: fell quiet would otherwise keep a dead replica's older frontier counted, and its
    #: windows unjudged, until traffic came back; the slowest does not refresh, so an idle
    #: replica behind the others still stops holding windows after `writer_active_seconds`
    frontier_refresh_seconds: float | None = None
    #: the evaluator's `writer_active_seconds` (for the refresh's "slowest" test)
    writer_active_seconds: float = 60.0
    #: a live source quiet this long (`idle`): the frontier moves on at the clock's pace;
    #: None: only records move it (files, replays: their end closes every window)
    idle_close_seconds: float | None = None


@dataclass
class EngineStats:
    records: int = 0
    duplicates: int = 0
    late: int = 0
    windows_evaluated: int = 0
    checkpoints: int = 0
    checkpoint_failures: int = 0
    #: records not folded because of their event time (a broken producer clock)
    quarantined: int = 0
    quarantine_examples: deque[QuarantinedRecord] = field(default_factory=lambda: deque(maxlen=20))
    #: the most recent alert changes (bounded, so a long-running worker does not grow)
    alerts: deque[Alert] = field(default_factory=lambda: deque(maxlen=10_000))
    detections: list[Detection] = field(default_factory=list)


class Engine:
    def __init__(
        self,
        settings: EngineSettings,
        detectors: Mapping[str, Detector[Any]],
        sink: Sink,
        evaluator: WindowEvaluator,
        *,
        notify: Callable[[Sequence[Alert]], Sequence[Alert] | None] | None = None,
        metrics: EngineMetrics | None = None,
        on_ack: Callable[[Sequence[str]], None] | None = None,
        now: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] | None = time.time,
        keep_detections: bool = False,
        handoff: HandoffJournal | None = None,
    ) -> None:
        self.settings = settings
        self._detectors = detectors
        self._sink = sink
        self._evaluator = evaluator
        self._notify_hook = notify
        self._metrics = metrics
        self._on_ack = on_ack
        self._now = now
        self._last_progress = now()
        #: evaluate role: the last `judge_stored` stopped at its time slice with windows ready
        self.judging_behind = False
        self._unjudged = UnjudgedStreams.for_windows(settings.window_seconds)
        self._late = LateRecords(settings.allowed_lateness_seconds)
        self._keep_detections = keep_detections
        self._watermark = Watermark(settings.allowed_lateness_seconds)
        self._guard = EventTimeGuard(settings.event_time, wall_clock)
        self._pending_quarantine: list[QuarantinedRecord] = []
        #: evaluate role: windows found closable by the previous `judge_stored`
        self._closable_before: set[tuple[str, int]] = set()
        self._judge_reads = 0  # reads of unjudged windows so far (evaluate role)
        self._backlog = False  # the last read was cut at its limit: read from the oldest again
        self._windows: dict[tuple[str, int], OpenWindow] = {}
        self._newest_stored: dict[str, int | None] = {}
        self._pending_acks: list[str] = []
        self._pending_detections: list[Detection] = []
        self._pending_alerts: list[Alert] = []
        self._pending_references: dict[tuple[str, str], Any] = {}
        self._pending_accepts: list[BaselineAccept] = []
        self._alert_state_dirty = False
        self._last_checkpoint = now()
        #: until when no window closes: what a killed predecessor pulled and never acked comes
        #: back once its lease expires, and its windows must still be open to take it
        self._hold_until = now() + settings.closing_hold_seconds
        #: said at the first tick, once the source is up (a start that fails says only why)
        self._hold_said = settings.closing_hold_seconds <= 0
        #: a frontier held back by `hold_frontier_cap`: reported after the hold even with
        #: nothing new to write (a quiet stream would otherwise leave its windows unjudged)
        self._frontier_owed = False
        #: when a checkpoint carrying a frontier last landed (start: none yet)
        self._frontier_reported_at = now()
        #: when the write carrying this replica's last reported frontier began (the sink's row
        #: is that old, however long the write took)
        self._frontier_began = now()
        #: windows held while this replica may have been left out by the evaluator: asked
        #: about whenever they take records, until found judged or forgotten
        self._held_while_left_out: set[tuple[str, int]] = set()
        #: windows up to this watermark may have been judged without this replica: the
        #: evaluator's watermark never moves back, so after it went on without this replica
        #: it stays ahead of this replica's own for a while (`_note_how_far_judged`)
        self._judged_bound = -math.inf
        #: when a due refresh last asked the sink for the slowest frontier
        self._refresh_checked_at = now()
        self._cap_until = now() + max(settings.closing_hold_seconds, settings.hold_frontier_seconds)
        #: since when the source has been quiet (`idle`), and the frontier it was quiet at
        self._idle_since: float | None = None
        self._idle_from = -math.inf
        self._idle_said = False  # the spell's first move is logged
        self._sequence = 0
        self._last_checkpoint_failed = False
        self._in_flight: _Write | None = None
        #: windows judged whose verdicts no successful checkpoint has written yet: never
        #: forgotten before (reloaded from the sink they would look unjudged, and be judged again)
        self._judged_unwritten: set[tuple[str, int]] = set()
        #: batches whose window could not be opened because the sink could not be read
        self._deferred: list[tuple[LogBatch, list[str], Redelivered]] = []
        #: alerts made durable but not yet delivered to every receiver
        self._outbox: list[Alert] = []
        self._handoff = AlertHandoff(handoff if settings.evaluate else None, sink)
        self.stats = EngineStats()

    # -- ingest --------------------------------------------------------------------------------

    def report_start(self) -> float | None:
        """An ingest replica, before its first pull: put itself among the writers the evaluator
        waits for, no further than the slowest of them (or its predecessor's frontier, under
        the same writer id). Returns the frontier reported; None if the sink refused it.

        Until its first checkpoint a replica had no row: killed while working through a
        backlog before then, the others' frontier closed the windows its redelivered messages
        belonged to, and the evaluator judged them on part of their calls (879 records late,
        one false page and one missed, in an SRE's trial on the emulators). The row holds
        windows for `writer_active_seconds` from now, which covers those messages coming back
        to another replica when a replica dies within a checkpoint interval of its start."""
        frontier = self.settings.hold_frontier_cap
        try:
            if frontier is None:
                frontier = self._sink.load_frontier(self.settings.writer_active_seconds)
            self._note_how_far_judged()  # a restart: the evaluator may be ahead of it
            # nobody reported yet: a frontier before any window holds all of them
            start = Checkpoint(self.settings.writer_id, self._sequence, frontier=frontier or 0.0)
            self._sink.write_checkpoint(start)
        except SinkBroken:
            raise
        except Exception as error:  # its first checkpoint reports, or says why it cannot
            log.warning("could not report this replica's start to %s: %s", self._sink.name, error)
            return None
        self._sequence += 1
        self._frontier_reported_at = self._frontier_began = self._now()
        return start.frontier

    def feed(
        self, batch: LogBatch, ack_ids: Sequence[str] = (), *, redelivered: Redelivered = False
    ) -> None:
        """Fold a decoded batch; its messages are acked after the next successful checkpoint.

        `redelivered` says the source delivered some of these messages before (Pub/Sub's
        delivery_attempt > 1): True for all of them, or a mask of the rows that came in such
        messages. Another replica may have made them durable and died before acking: the
        request ids stored for their windows are read again first, so they are skipped as
        duplicates here too, not only by the replica that first counted them. Only the windows
        redelivered rows fall in are read: with one flag per poll, one redelivery among a
        backlog's messages re-read every window of the poll, three BigQuery queries each, and
        held checkpoints and acks back for minutes.

        If the sink cannot be read to open a window (an outage), the rows of that window wait
        in memory with their messages' ack ids held back, and are folded on a later tick.
        Records whose event time a broken clock wrote are quarantined first (never folded,
        never moving the watermark) and written with the next checkpoint, before the ack.
        """
        if len(batch):
            frontier = self._guard.frontier
            admission = self._guard.admit(batch.timestamp)
            if self._guard.frontier > frontier or len(batch) >= self._guard.limits.quorum:
                # records that move event time on, or as many as could, are not quiet. A trickle
                # too thin to move it (fewer than the quorum a poll) keeps the spell going: with
                # three models each calling every 70-120 s, windows five minutes old stayed open
                # (an SRE's trial). A full poll of old records does not: a backlog drained under
                # flow control has newer records queued behind it (388 late in a review's run)
                self._idle_since = None
            if admission.quarantined:
                self._quarantine(batch, admission)
                batch = batch.take(admission.admitted)
                if not isinstance(redelivered, bool):
                    redelivered = redelivered[admission.admitted]
        if self._deferred:
            self._deferred.append((batch, list(ack_ids), redelivered))
            return
        self._fold(batch, list(ack_ids), redelivered)

    def _fold(self, batch: LogBatch, ack_ids: list[str], redelivered: Redelivered = False) -> bool:
        if len(batch) == 0:
            self._pending_acks.extend(ack_ids)
            return True
        window = self.settings.window_seconds
        starts = window_starts(batch.timestamp, window)
        groups = group_by_window(batch.model, starts)
        try:
            self._open_windows(groups, redelivered)
        except Exception as error:
            if not self._deferred:
                log.warning(
                    "cannot read %s to open a window, holding the batch: %s", self._sink.name, error
                )
            self._deferred.insert(0, (batch, ack_ids, redelivered))
            return False
        self._pending_acks.extend(ack_ids)
        # one sort by (model, window) and one hash of the ids for the batch; parts are views
        for (model, start), part in window_parts(batch, groups, ID_SEED):
            state = self._windows[(model, start)]
            added, duplicates = state.fold(part, self._detectors)
            self.stats.records += added
            self.stats.duplicates += duplicates
            if state.evaluated:
                self.stats.late += added
                if added:
                    self._late.note(model, start, added)
            if self._metrics is not None:
                self._metrics.folded(model, added, duplicates, added if state.evaluated else 0)
        self._watermark.observe(self._guard.frontier)
        return True

    def idle(self) -> None:
        """The source answered with nothing and nothing waits for its ack. Once that has
        lasted `idle_close_seconds` (records too few to move event time, a trickle, do not
        end it), the frontier moves on from where it was at the wall clock's pace (less that
        wait), so the windows before a quiet spell close.

        Event time moves only with records: after a backlog with no traffic behind it, or
        when a model's callers go quiet for the night, the newest windows stayed open, and
        unjudged, until traffic came back (an SRE's trial on the emulators). A record that
        comes after the spell with the same delay as the records before it is not late: the
        frontier trails it by the wait."""
        after = self.settings.idle_close_seconds
        frontier = self._guard.frontier
        if after is None or not math.isfinite(frontier):
            return
        now = self._now()
        if self._idle_since is None:
            self._idle_since, self._idle_from, self._idle_said = now, frontier, False
            return
        quiet = now - self._idle_since
        if quiet <= after:
            return
        if not self._idle_said:
            self._idle_said = True
            log.info(
                "event time has not moved for %.0f s (no messages, or too few to move it): "
                "the frontier moves on with the clock (engine.idle_close_seconds %g), so the "
                "windows before the quiet spell close",
                quiet,
                after,
            )
        self._guard.advance_idle(self._idle_from + quiet - after)
        self._watermark.observe(self._guard.frontier)

    def not_idle(self) -> None:
        """A poll came back empty for another reason than a quiet stream (its pull failed, or
        flow control held it back): the quiet spell, if any, ends here. Counted on through an
        outage, the first empty answer after it moved the frontier past the backlog Pub/Sub
        kept meanwhile, into windows already judged."""
        self._idle_since = None

    def _quarantine(self, batch: LogBatch, admission: Admission) -> None:
        for q in admission.quarantined:
            record = QuarantinedRecord(
                model=str(batch.model[q.row]),
                request_id=str(batch.request_id[q.row]),
                event_time=q.event_time,
                reason=q.reason,
            )
            self._pending_quarantine.append(record)
            self.stats.quarantined += 1
            self.stats.quarantine_examples.append(record)
            if self._metrics is not None:
                self._metrics.quarantined(record.model, q.kind)
            # every one while they are rare; then every 1,000th, so a flood cannot flood logs
            if self.stats.quarantined <= 20 or self.stats.quarantined % 1000 == 0:
                quarantine_log.warning(
                    "quarantined record %s of model %s (%d so far): %s",
                    record.request_id,
                    record.model,
                    self.stats.quarantined,
                    record.reason,
                )

    def _retry_deferred(self) -> None:
        while self._deferred:
            batch, ack_ids, redelivered = self._deferred.pop(0)
            if not self._fold(batch, ack_ids, redelivered):
                return

    def set_ack_handler(self, on_ack: Callable[[Sequence[str]], None]) -> None:
        """Where acks go once a checkpoint is durable (the source, once it exists)."""
        self._on_ack = on_ack

    @property
    def pending_messages(self) -> int:
        """Messages held un-acked: waiting for a checkpoint, or for the sink to be readable."""
        writing = len(self._in_flight.acks) if self._in_flight is not None else 0
        return writing + len(self._pending_acks) + sum(len(ids) for _, ids, _ in self._deferred)

    def _open_windows(
        self, groups: Sequence[tuple[tuple[str, int], Any]], redelivered: Redelivered
    ) -> None:
        """Open a batch's windows, reading what the sink holds for all of them at once: the
        windows this replica has not open that the sink may hold, and every window a
        redelivered record falls in, even one this replica never saw stored (another writer
        may have), or whose stored ids are read again.

        The ids are read when a window opens; without the second read a window this replica
        already had open counted a redelivered record a dead replica had made durable a second
        time. Read for every batch holding a redelivery, not once in a while: a read is only
        good for writes before it, and the replica whose message this is may have written
        since. Read window by window, a poll of redeliveries spanning many windows cost three
        BigQuery queries per window, in turn, on the main loop, and held back checkpoints and
        acks (which made more leases expire, and more redeliveries)."""
        again: list[tuple[str, int]] = []
        unread: list[tuple[str, int]] = []
        for key, rows in groups:
            if _holds_redelivered(redelivered, rows):
                again.append(key)
            elif key not in self._windows and self._may_be_stored(*key):
                unread.append(key)
        stored = self._sink.load_windows([*again, *unread]) if again or unread else {}
        for key, _ in groups:
            state = self._windows.get(key)
            if state is None:
                self._window_for(*key, stored=stored.get(key))
            elif key in stored:
                state.seen_ids.update(stored[key].request_ids)

    def _may_be_stored(self, model: str, start: int) -> bool:
        """Whether the sink may hold part of this window: none past the model's newest stored
        window (read once per model), so a live stream's new windows cost no read."""
        if model not in self._newest_stored:
            self._newest_stored[model] = self._sink.newest_window_start(model)
        newest = self._newest_stored[model]
        return newest is not None and start <= newest

    def _window_for(
        self,
        model: str,
        start: int,
        *,
        stored_known: bool = False,
        stored: StoredWindow | None = None,
    ) -> OpenWindow:
        """The open window, opened with what the sink holds for it: `stored` when the caller
        read it, else read here if `stored_known` or the sink may hold it."""
        key = (model, start)
        state = self._windows.get(key)
        if state is not None:
            return state
        end = start + self.settings.window_seconds
        state = OpenWindow.fresh(model, start, end, self._detectors)
        if stored is None and (stored_known or self._may_be_stored(model, start)):
            stored = self._sink.load_window(model, start)
        if stored is not None:
            for row in stored.partial_states:
                for name, detector in self._detectors.items():
                    if name in row:
                        state.durable[name] = detector.merge(
                            state.durable[name], detector.from_row(row[name])
                        )
            state.seen_ids.update(stored.request_ids)
            state.durable_records = stored.records
            state.evaluated = state.closed = stored.evaluated
            state.versions = dict(stored.versions)
        self._windows[key] = state
        return state

    def resume(self, windows: Sequence[tuple[str, int]]) -> None:
        """Reopen stored windows a stopped worker left unjudged, so they are judged once.

        Without this, a window made durable just before a SIGTERM or a crash, and receiving no
        further records, would never be evaluated after the restart.
        """
        reopened = []
        for model, start in windows:
            state = self._window_for(model, start, stored_known=True)
            reopened.append((float(start), state.durable_records))
            self._last_progress = self._now()  # a read per window: not a stall
        if not reopened:
            return
        reached = self._resumed_event_time(reopened)
        self._watermark.observe(reached)
        if self.settings.idle_close_seconds is not None:
            # a quiet stream after the restart: idle close moves on from there
            self._guard.resume_at(reached)

    def _resumed_event_time(self, reopened: Sequence[tuple[float, int]]) -> float:
        """Where event time stood when the predecessor stopped, from the windows it left
        unjudged (start, records), by the rule the running frontier follows
        (`EventTimeGuard`): the newest start that at least `quorum` of their records, and at
        least `share` of them, reach. With fewer records than the quorum, the oldest start.

        It took the newest window's start. A single record from a fast clock (admitted up to
        `max_future_skew_seconds` ahead, an hour by default) opens a window of its own, which
        the running frontier never follows; after a restart every window before it closed at
        once: with one record 32 minutes fast, 162 of the 1,297 records that came after the
        restart were late, their windows judged on their first seconds. (Not the frontier the
        sink's `writer_progress` holds: with another writer or an older writer id's row in
        the same database, that kept the reopened windows from being judged for hours.)"""
        limits = self._guard.limits
        total = sum(records for _, records in reopened)
        if total < limits.quorum:
            return min(start for start, _ in reopened)
        needed = max(limits.quorum, math.ceil(limits.share * total))
        reached = 0
        for start, records in sorted(reopened, reverse=True):
            reached += records
            if reached >= needed:
                return start
        return min(start for start, _ in reopened)

    # -- time ----------------------------------------------------------------------------------

    @property
    def seconds_since_progress(self) -> float:
        """Since the main loop last ticked or began a checkpoint: what /healthz judges."""
        return self._now() - self._last_progress

    def tick(self) -> None:
        """Evaluate windows the watermark has passed; checkpoint when the interval is up."""
        self._last_progress = self._now()
        late = self._late.due(self._last_progress)
        if late is not None:
            log.warning("%s", late)
        self._settle(block=False)
        if self._deferred:
            self._retry_deferred()
        if self._now() < self._hold_until:
            if not self._hold_said:
                self._hold_said = True
                # an ingest replica never judges: what it holds back is closing its windows
                # (and writing their held samples)
                what = "judged" if self.settings.evaluate else "closed (their samples written)"
                log.info(
                    "windows are %s from %.0f s after start: messages a stopped run "
                    "pulled and did not ack come back within the ack deadline, into open "
                    "windows",
                    what,
                    self.settings.closing_hold_seconds,
                )
        elif self.settings.evaluate:
            self._evaluate_closed(final=False)
        else:
            window = self.settings.window_seconds
            for state in self._windows.values():
                if not state.closed and self._watermark.closes(state.start, window):
                    state.closed = True
        due = self._now() - self._last_checkpoint >= self.settings.checkpoint_seconds
        # judged windows are dropped only after a checkpoint; on a fast replay many can close
        # within one interval, so also checkpoint when they pile up (memory follows config,
        # not processing speed)
        judged_held = unwritten = 0
        for w in self._windows.values():
            unwritten += w.delta_records
            judged_held += w.evaluated and w.dirty
        early = (
            len(self._pending_acks) >= self.settings.checkpoint_max_messages
            or unwritten >= self.settings.checkpoint_max_records
            or judged_held >= self.settings.max_judged_windows_held
        )
        # after a failure, retry only on the interval: a down sink is not hammered every tick
        if due or (early and not self._last_checkpoint_failed):
            if not self.settings.background_checkpoints:
                self.checkpoint()
            elif self._settle(block=True):  # one write at a time, in sequence order
                self._begin_checkpoint()
        if len(self._windows) > self.settings.max_open_windows:
            self._shed_windows()
        if self._metrics is not None:  # every tick: it must move while checkpoints fail
            self._metrics.windows_open.set(len(self._windows))

    def finish(self, *, end_of_input: bool) -> bool:
        """Final checkpoint. At the end of a finite input, every window is evaluated first;
        held samples of windows still open are written too, so a stop loses none."""
        holding = self._now() < self._hold_until  # stopped early: the next start judges them
        if self.settings.evaluate and (end_of_input or not holding):
            self._evaluate_closed(final=end_of_input)
        for state in self._windows.values():
            state.closed = True
        written = self.checkpoint()
        # after the checkpoint: an ingest replica's write may find records late (`_learn_judged`)
        late = self._late.due(self._now(), final=True)
        if late is not None:
            log.warning("%s", late)
        return written

    def _evaluate_closed(self, *, final: bool) -> None:
        window = self.settings.window_seconds
        closable = sorted(
            (
                key
                for key, w in self._windows.items()
                if not w.evaluated and (final or self._watermark.closes(w.start, window))
            ),
            key=lambda key: (key[1], key[0]),
        )
        for key in closable:
            self._evaluate(self._windows[key])

    def _evaluate(self, state: OpenWindow) -> None:
        result = self._evaluator.evaluate(
            state.model,
            state.start,
            state.current(self._detectors),
            describe_versions(state.versions),
        )
        state.evaluated = state.closed = True
        self._judged_unwritten.add((state.model, state.start))
        self.stats.windows_evaluated += 1
        self._pending_detections.extend(result.detections)
        for warning in self._unjudged.observe(result.detections):
            log.warning("%s", warning)
        self._pending_alerts.extend(self._handoff.not_recovered(result.alerts))
        self._pending_references.update(result.references)
        self._pending_accepts.extend(result.accepts)
        self._alert_state_dirty = True
        if self._metrics is not None:
            self._metrics.evaluated(result.detections)
        if self._keep_detections:
            self.stats.detections.extend(result.detections)

    # -- durability ----------------------------------------------------------------------------

    def checkpoint(self) -> bool:
        """Write everything pending, then ack and notify; returns once that is done (or failed:
        False). A background write still running is settled first."""
        # a background write that failed was put back pending: this call writes it again
        self._last_progress = self._now()
        self._settle(block=True)
        return self._begin_checkpoint() and self._settle(block=True)

    def _keep_windows_from(self) -> int | None:
        """What the sink's retention must keep for a restart of this evaluator (None when it
        does not evaluate)."""
        if not self.settings.evaluate:
            return None
        first_open: dict[str, int] = {}
        for w in self._windows.values():
            first_open[w.model] = min(w.start, first_open.get(w.model, w.start))
        return self._evaluator.earliest_needed(first_open)

    def _begin_checkpoint(self) -> bool:
        """Hand everything pending to the writer (if anything is); False when batches held
        for an unreadable sink still cannot be folded, so no checkpoint can be complete.

        The checkpoint's windows are committed at once (their deltas move into `durable`, the
        undo kept), so folding goes on into fresh deltas while the write runs; nothing is acked,
        sent or forgotten before `_settle` has seen the write succeed."""
        self._last_checkpoint = self._now()
        if self._deferred:
            self._retry_deferred()
            if self._deferred:
                return False
        dirty = [w for w in self._windows.values() if w.dirty]
        if not self.settings.evaluate:
            self._trim_held_samples(dirty)
        request_ids = RequestIdRows((w.model, w.start, w.delta_ids) for w in dirty)
        checkpoint = Checkpoint(
            writer_id=self.settings.writer_id,
            sequence=self._sequence,
            partials=[w.partial_row(self._detectors) for w in dirty],
            request_ids=request_ids,
            detections=list(self._pending_detections),
            alerts=list(self._pending_alerts),
            alert_state=self._evaluator.tracker.to_rows() if self._alert_state_dirty else None,
            references={
                key: self._detectors[key[1]].to_row(ref)
                for key, ref in self._pending_references.items()
            },
            quarantined=list(self._pending_quarantine),
            frontier=self._frontier_with(dirty),
            baseline_accepts=list(self._pending_accepts),
            keep_windows_from=self._keep_windows_from(),
        )
        if checkpoint.empty and not self._pending_acks:
            return True
        self._handoff.prepare(checkpoint.alerts)
        # before `committed` below empties the windows' deltas
        ask_judged = frozenset() if self.settings.evaluate else self._maybe_judged(dirty)
        write = _Write(
            checkpoint=checkpoint,
            undo=[(w, w.committed(self._detectors)) for w in dirty],
            acks=self._pending_acks,
            alerts=self._pending_alerts,
            detections=self._pending_detections,
            references=self._pending_references,
            quarantined=self._pending_quarantine,
            accepts=self._pending_accepts,
            alert_state_dirty=self._alert_state_dirty,
            judged=self._judged_unwritten,
            began=self._now(),
            ask_judged=ask_judged,
        )
        self._pending_acks, self._pending_alerts, self._pending_detections = [], [], []
        self._pending_references, self._pending_quarantine = {}, []
        self._pending_accepts = []
        self._alert_state_dirty = False
        self._judged_unwritten = set()
        self._in_flight = write
        if checkpoint.empty:
            write.done.set()  # acks alone: nothing to write
        elif self.settings.background_checkpoints:
            # not a daemon: should the engine's thread die mid-write, the interpreter waits for
            # the write instead of freezing it inside the sink's driver at exit
            try:
                threading.Thread(
                    target=write.run, args=(self._sink,), name="lookout-checkpoint"
                ).start()
            except RuntimeError:  # no thread to be had (resources, shutdown): write it here
                write.run(self._sink)
        else:
            write.run(self._sink)
        return True

    def _settle(self, *, block: bool) -> bool:
        """Finish the write in flight, if any: on success ack, notify and forget finished
        windows; on failure put everything back pending. False only for a failed write."""
        write = self._in_flight
        if write is None:
            return True
        if not block and not write.done.is_set():
            return True
        write.done.wait()
        self._in_flight = None
        if write.error is not None:
            self._restore(write)
            self._frontier_owed = self._frontier_owed or write.checkpoint.frontier is not None
            if isinstance(write.error, SinkBroken) or not isinstance(write.error, Exception):
                # never writable again (retrying would hold every ack forever), or Ctrl-C /
                # SystemExit during the write: both stop the worker, with nothing acked
                raise write.error
            self._last_checkpoint_failed = True
            self.stats.checkpoint_failures += 1
            if self._metrics is not None:
                # timed too: the slow writes are the ones that fail (a sink down for its write
                # timeout), and the runbook sends the on-call to this histogram
                self._metrics.checkpoint_failed(write.seconds, len(self._windows))
            log.warning(
                "checkpoint %d to %s failed, will retry: %s",
                write.checkpoint.sequence,
                self._sink.name,
                write.error,
            )
            return False
        self._sequence += 1
        self._last_checkpoint_failed = False
        if write.checkpoint.frontier is not None:
            self._frontier_reported_at = self._now()
            self._frontier_began = write.began
        self.stats.checkpoints += 1
        for w, _ in write.undo:
            if w.model in self._newest_stored:  # else read afresh (`_maybe_judged` forgot it)
                newest = self._newest_stored[w.model]
                self._newest_stored[w.model] = w.start if newest is None else max(newest, w.start)
        if write.acks and self._on_ack is not None:
            self._on_ack(write.acks)
        self.stats.alerts.extend(write.alerts)
        if self._metrics is not None:
            self._metrics.alerts_sent(write.alerts)
        recovered = self._handoff.recover(this_run=[*self._outbox, *write.alerts])
        fresh = list(write.alerts)
        if recovered:  # late (the sink could not be read at start): windows judged meanwhile
            # may have made the same changes again; stored twice, they are not paged twice
            fresh = self._handoff.not_recovered(write.alerts)
            self._handoff.handed([a for a in write.alerts if a not in fresh])
            self._pending_alerts = self._handoff.not_recovered(self._pending_alerts)
        self._notify([*recovered, *fresh])
        self._learn_judged(write)
        self._drop_finished_windows()
        if self._metrics is not None:
            self._metrics.checkpointed(write.seconds, len(self._windows))
        return True

    def _learn_judged(self, write: _Write) -> None:
        """An ingest replica's write found some of its windows judged by the evaluator: their
        rows went as late, and so does whatever the replica folds into them from now on; the
        ids other replicas stored for them are added, so records already counted elsewhere
        (a re-publish) are duplicates here too. The windows close, so their held drift
        samples are written with the next checkpoint and the windows can be forgotten."""
        for key, late in write.judged_late.items():
            state = self._windows.get(key)
            if state is not None:
                state.evaluated = state.closed = True
                state.seen_ids.update(write.judged_ids.get(key, ()))
                # folded while the write was on its way: after the verdict too
                late += state.count_delta_late()
            self.stats.late += late
            self._late.note(*key, late)
            if self._metrics is not None:
                self._metrics.folded(key[0], 0, 0, late)

    def _restore(self, write: _Write) -> None:
        """A failed write's content is pending again, ahead of what came after it."""
        for w, undo in write.undo:
            w.uncommit(undo, self._detectors)
        self._pending_acks = write.acks + self._pending_acks
        self._pending_alerts = write.alerts + self._pending_alerts
        self._pending_detections = write.detections + self._pending_detections
        self._pending_references = {**write.references, **self._pending_references}
        self._pending_quarantine = write.quarantined + self._pending_quarantine
        self._pending_accepts = write.accepts + self._pending_accepts
        self._alert_state_dirty = self._alert_state_dirty or write.alert_state_dirty
        self._judged_unwritten |= write.judged

    def _trim_held_samples(self, dirty: Sequence[OpenWindow]) -> None:
        """An ingest writer is one of several: before writing closed windows' held samples,
        keep only the rows that can still make each window's sample, sized by the records all
        writers stored (one cheap read per checkpoint that closes windows). Unreadable sink:
        write them whole (more bytes, the same merge)."""
        closing = [w for w in dirty if w.closed and not w.trimmed]
        if not closing:
            return
        try:
            stored = self._sink.stored_records([(w.model, w.start) for w in closing])
        except Exception as error:  # the write that follows reports a down sink
            log.debug("reading stored record counts from %s failed: %s", self._sink.name, error)
            return
        for w in closing:
            w.trim_held(stored.get((w.model, w.start), 0), self._detectors)

    def _maybe_judged(self, dirty: Sequence[OpenWindow]) -> frozenset[tuple[str, int]]:
        """The windows of an ingest replica's checkpoint the evaluator may have judged already
        (`judged_elsewhere`): those this replica's own watermark has passed, since the
        evaluator's frontier is never ahead of a replica it counts, or all of them when this
        replica has not reported for half the evaluator's `writer_active_seconds`, after which
        it may have been left out. A replica keeping up with its stream asks for none: asked
        every checkpoint, it would be about 17,000 BigQuery queries a day for each replica.

        Being left out is found at the first checkpoint after it, and that checkpoint reports
        the frontier again, so every window held then stays in question for as long as it is
        held: in an SRE's trial a window judged while its replica was paused took records a
        minute after the replica came back, and they were counted as on time. The newest stored
        window of each model is read again too (the other replicas wrote on meanwhile), so a
        window opened from now on is read from the sink with its verdict."""
        window = self.settings.window_seconds
        held = self._held_while_left_out
        if self._now() - self._frontier_began >= self.settings.writer_active_seconds / 2:
            held.update(key for key, w in self._windows.items() if not w.evaluated)
            self._newest_stored.clear()
            self._note_how_far_judged()
        held.intersection_update(self._windows)
        bound = self._judged_bound
        return frozenset(
            (w.model, w.start)
            for w in dirty
            if w.delta_records
            and not w.evaluated
            and (
                (w.model, w.start) in held
                or w.start + window <= bound
                or self._watermark.closes(w.start, window)
            )
        )

    def _note_how_far_judged(self) -> None:
        """Read how far the other replicas got (`Sink.newest_frontier`): the evaluator may
        have judged every window their watermark passed, and its watermark stays there even
        once this replica is counted again (a reviewer's run: 359 records folded into judged
        windows while catching up, 94 of them counted late). A failed read leaves the windows
        held meanwhile as the only ones in question."""
        try:
            newest = self._sink.newest_frontier(excluding=self.settings.writer_id)
        except Exception as error:
            log.debug("could not read the other replicas' frontiers: %s", error)
            return
        if newest is not None:
            bound = newest - self.settings.allowed_lateness_seconds
            self._judged_bound = max(self._judged_bound, bound)

    def _frontier_with(self, dirty: Sequence[OpenWindow]) -> float | None:
        """The frontier travels with the partial rows it covers, never ahead of them, and
        during the restart hold never ahead of the predecessor's (`hold_frontier_cap`) nor,
        on an ingest replica, past its oldest open window (`_oldest_held_window`)."""
        frontier = self._guard.frontier
        if not np.isfinite(frontier):
            return None
        cap = self.settings.hold_frontier_cap
        if cap is not None and self._now() < self._cap_until:
            if not dirty:
                return None
            self._frontier_owed = self._frontier_owed or frontier > cap
            return min(frontier, cap)
        held = self._oldest_held_window()
        if held < frontier:
            self._frontier_owed = True  # the whole frontier goes out once the hold ends
            return held if dirty else None
        if dirty or self._frontier_owed:
            self._frontier_owed = False
            return frontier
        refresh, now = self.settings.frontier_refresh_seconds, self._now()
        last = max(self._frontier_reported_at, self._refresh_checked_at)
        if refresh is None or now - last < refresh:
            return None
        # asked once per refresh interval, whatever the answer: the read is a query
        self._refresh_checked_at = now
        return frontier if self._ahead_of_slowest(frontier) else None

    def _oldest_held_window(self) -> float:
        """Where an ingest replica's reports stop during its start hold (inf otherwise).

        Under a new writer id it reports its frontier at once (no predecessor to wait for),
        but it closes no window during the hold, and a window's held drift samples are
        written when it closes: the evaluator judged those windows, and pinned drift
        references, on samples that landed seconds later (a descriptor reference pinned with
        an empty sample, in an SRE's trial on the emulators)."""
        if self.settings.evaluate or self._now() >= self._hold_until:
            return math.inf
        starts = [w.start for w in self._windows.values() if not w.closed]
        return float(min(starts)) if starts else math.inf

    def _ahead_of_slowest(self, frontier: float) -> bool:
        """Is another counted replica behind this one (a dead one, maybe), or none counted
        but this one? Then a refresh helps the other stop counting, or moves the evaluator
        on a quiet stream; if another is ahead, refreshing would only keep this one holding
        windows it has nothing left for. Against the others' rows, not its own: since its
        frontier moves on over a quiet spell (`idle`), it is always ahead of its own last
        report, and a replica Pub/Sub gave nothing kept the evaluator 60-95 s behind."""
        try:
            others = self._sink.load_frontier(
                self.settings.writer_active_seconds, excluding=self.settings.writer_id
            )
        except Exception as error:  # a read that fails costs a refresh, never a checkpoint
            log.debug("could not read the replicas' frontiers to refresh ours: %s", error)
            return False
        return others is None or frontier > others

    # -- the evaluate role ---------------------------------------------------------------------

    def judge_stored(self, frontier: float | None, *, limit: int = 4096) -> int:
        """Evaluate role: judge windows ingest replicas made durable, once their frontier
        passed them, from the merged partial rows in the sink. Returns how many were judged.

        A window is judged one call after it first became closable, so every ingest replica has
        had a checkpoint interval to make what it folded for it durable (their frontiers move
        independently). Windows are always read afresh from the sink, oldest first.
        """
        self._settle(block=True)  # windows are read from the sink: let it hold what we wrote
        self.judging_behind = False  # until a slice stops early (a failed read must wait)
        if frontier is not None:
            self._watermark.observe(frontier)
        window = self.settings.window_seconds
        full = self._judge_reads % self.settings.unjudged_full_scan_every == 0
        since = (
            None if full or self._backlog or frontier is None else self._unjudged_since(frontier)
        )
        self._judge_reads += 1
        stored = self._sink.unevaluated_windows(limit, since=since)
        self._backlog = len(stored) >= limit
        closable = {
            (model, start) for model, start in stored if self._watermark.closes(start, window)
        }
        ready = sorted(closable & self._closable_before, key=lambda key: (key[1], key[0]))
        self._closable_before = closable - set(ready)
        began = self._now()
        for done, (model, start) in enumerate(ready):
            if self._now() - began >= self.settings.judge_slice_seconds:
                # the rest next call, after a checkpoint has written these: a restart then
                # loses a slice, not the whole backlog, and they count as seen twice already
                self._closable_before.update(ready[done:])
                self.judging_behind = True
                return done
            held = self._windows.get((model, start))
            if held is not None and held.evaluated:
                # judged already, its detections waiting for a checkpoint that failed: judging
                # it again would store every detection twice
                continue
            self._windows.pop((model, start), None)
            state = self._window_for(model, start, stored_known=True)
            if not state.evaluated:
                self._evaluate(state)
            # each window read and judged is progress: /healthz must not call a backlog a stall
            self._last_progress = self._now()
        self.judging_behind = False
        return len(ready)

    def _unjudged_since(self, frontier: float) -> int:
        """Where the evaluator's regular read of unjudged windows starts: a day behind the
        frontier covers every window ingest still writes first parts of (late records, a
        replica's restart), and the windows waiting for their second sighting stay in view.
        Older windows stored for the first time (a model silent for days, records up to
        `max_past_seconds` old) are found by the full read every `unjudged_full_scan_every`."""
        oldest = int(frontier) - self.settings.unjudged_recent_seconds
        return min([oldest, *(start for _, start in self._closable_before)])

    def _notify(self, alerts: Sequence[Alert]) -> None:
        """Deliver new alerts and retry earlier undelivered ones (they are durable already).

        The alert state already counts them as sent, so a receiver outage must not lose a page:
        undelivered alerts wait in a bounded outbox and go out again after the next checkpoint
        (receivers dedup on the stable dedup_key, so a repeat is harmless). The hook returns
        the alerts to retry; None means all were delivered.
        """
        # each alert once, where it first waited (a noted alert recovered late may also be
        # in the write that just landed)
        outbox = list({a.fingerprint: a for a in [*self._outbox, *alerts]}.values())
        if not outbox or self._notify_hook is None:
            self._outbox = []
            self._handoff.handed(outbox)
            return
        try:
            undelivered = list(self._notify_hook(outbox) or ())
        except Exception as error:
            log.error("sending %d alert(s) failed, will retry: %s", len(outbox), error)
            undelivered = outbox
        if len(undelivered) > self.settings.max_outbox_alerts:
            dropped = len(undelivered) - self.settings.max_outbox_alerts
            log.error("alert outbox full: dropping the %d oldest undelivered alerts", dropped)
            undelivered = undelivered[dropped:]
        self._outbox = undelivered
        waiting = {a.fingerprint for a in undelivered}
        self._handoff.handed([a for a in outbox if a.fingerprint not in waiting])

    def send_unsent_alerts(self) -> int:
        """At start: page for the alerts a previous run stored and was stopped before sending
        (see `worker.alert_handoff`); returns how many. A sink that cannot be read yet is asked
        again after each checkpoint."""
        recovered = self._handoff.recover()
        if recovered:
            self._notify(recovered)
        return len(recovered)

    def _drop_finished_windows(self) -> None:
        """Forget fully durable windows well behind the watermark (memory bound): evaluated
        ones, or any on an ingest-only replica, which never evaluates."""
        horizon = self._watermark.value - self.settings.window_seconds
        judged_elsewhere = not self.settings.evaluate
        for key in [
            k
            for k, w in self._windows.items()
            # a held sample is written when its window closes: until then it is not durable
            if (w.evaluated or judged_elsewhere)
            and not w.dirty
            and not w.holding
            and w.end <= horizon
            and k not in self._judged_unwritten
        ]:
            del self._windows[key]

    def _shed_windows(self) -> None:
        """Too many open windows: evaluate and persist the oldest, and forget them. Said when
        some were still open to the watermark (unsorted input: judged before all their records
        came); windows it had closed are complete, only not written yet (one poll of a quiet
        stream's file spans hundreds: a newcomer's 50-hour replay at 10 calls a minute was
        warned 14 times of windows closed "early" that were not)."""
        excess = len(self._windows) - self.settings.max_open_windows
        oldest = sorted(self._windows, key=lambda key: key[1])[: max(excess, 0)]
        early = sum(not self._windows[key].closed for key in oldest)
        if early:
            log.warning(
                "more than %d open windows: closing the %d oldest early",
                self.settings.max_open_windows,
                early,
            )
        for key in oldest:
            state = self._windows[key]
            if not state.evaluated and self.settings.evaluate:
                self._evaluate(state)
        if self.checkpoint():
            for key in oldest:
                self._windows.pop(key, None)

    @property
    def undelivered_alerts(self) -> tuple[Alert, ...]:
        """Alert changes a receiver failed to take, retried after the next checkpoint (a
        replay has none after its last: they never arrive, and it must say so)."""
        return tuple(self._outbox)

    @property
    def open_windows(self) -> int:
        return len(self._windows)

    @property
    def watermark(self) -> float:
        return self._watermark.value


@dataclass(eq=False)
class _Write:
    """One checkpoint on its way to the sink, and what its success releases."""

    checkpoint: Checkpoint
    undo: list[tuple[OpenWindow, CommitUndo]]
    acks: list[str]
    alerts: list[Alert]
    detections: list[Detection]
    references: dict[tuple[str, str], Any]
    quarantined: list[QuarantinedRecord]
    accepts: list[BaselineAccept]
    alert_state_dirty: bool
    judged: set[tuple[str, int]]
    #: the engine's clock when the write was handed over
    began: float = 0.0
    #: an ingest replica's windows the evaluator may have judged meanwhile: asked for before
    #: the write, and the rows of those it did judge go as late
    ask_judged: frozenset[tuple[str, int]] = frozenset()
    #: what the write found judged elsewhere: records it counted late, per window...
    judged_late: dict[tuple[str, int], int] = field(default_factory=dict)
    #: ...and the request ids every writer stored for those windows, read after the write
    judged_ids: Mapping[tuple[str, int], frozenset[str]] = field(default_factory=dict)
    done: threading.Event = field(default_factory=threading.Event)
    error: BaseException | None = None
    seconds: float = 0.0

    def run(self, sink: Sink) -> None:
        started = time.perf_counter()
        try:
            if self.ask_judged:
                self.checkpoint, self.judged_late = late_where_judged(
                    sink, self.checkpoint, self.ask_judged
                )
            sink.write_checkpoint(self.checkpoint)
            self.judged_ids = stored_request_ids(sink, list(self.judged_late))
        except BaseException as error:  # handed to `_settle`, on the engine's thread
            self.error = error
        finally:
            self.seconds = time.perf_counter() - started
            self.done.set()
