"""Fakes that ship with the package, for unit tests of the engine, the runner and their users.

Like bytewax's `testing.py` and dramatiq's stub broker, these implement the real contracts
(`worker.sink.Sink`, `worker.source.Source`, the engine's `now` callable) in memory, so a test
drives time and failures and asserts what a user would notice:

- `FakeClock`: a `now` callable that moves only when told (`advance`);
- `ClockedEvent`: a `threading.Event` whose `wait(timeout)` advances a `FakeClock` instead of
  sleeping, for loops that back off on a stop event (the runner while the sink is down);
- `MemorySink`: the `Sink` contract with DuckDBSink's semantics (atomic checkpoints, states
  round-tripped through JSON, a window is evaluated once any detection is stored for it), views
  that mirror the analyst tables, and a switch that refuses writes for a while;
- `FakeSource`: the `Source` contract over a fixed list of messages, recording every ack, nack
  and dead letter, with redelivery of un-acked messages on demand;
- `ndjson_messages`: prediction logs as NDJSON `SourceMessage`s, the way Pub/Sub carries them.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import orjson

from schemas.decode.api import DecodeLimits, decode_message
from schemas.detection import Alert, AlertChangeKey, Detection
from schemas.errors import DecodeError
from schemas.prediction_log import PredictionLog, canonical_json
from worker.analyst_columns import ANALYST_COLUMNS, analyst_values
from worker.errors import LookoutError
from worker.sink import (
    BaselineAccept,
    Checkpoint,
    DetectorRow,
    PartialRow,
    QuarantinedRecord,
    StoredWindow,
    add_version_records,
    checkpoint_digest,
    windows_one_by_one,
)
from worker.source import Source, SourceMessage

# -- time ------------------------------------------------------------------------------------


class FakeClock:
    """Monotonic seconds that only move when a test says so; pass it as the engine's `now`."""

    def __init__(self, start: float = 0.0) -> None:
        self._now = float(start)

    def __call__(self) -> float:
        return self._now

    def advance(self, seconds: float) -> float:
        """Move forward (never back) and return the new time."""
        if seconds < 0:
            msg = f"FakeClock.advance: seconds must be >= 0, got {seconds}"
            raise ValueError(msg)
        self._now += seconds
        return self._now

    def sleep(self, seconds: float) -> None:
        """A `sleep` for code under test that takes one: spends fake time, returns at once."""
        self.advance(seconds)


class ClockedEvent(threading.Event):
    """A stop event whose `wait` spends fake time: it advances the clock and returns at once."""

    def __init__(self, clock: FakeClock) -> None:
        super().__init__()
        self._clock = clock
        self.waits: list[float] = []

    def wait(self, timeout: float | None = None) -> bool:
        if not self.is_set():
            if timeout is None:
                msg = "ClockedEvent.wait without a timeout would block a test forever"
                raise RuntimeError(msg)
            self.waits.append(timeout)
            self._clock.advance(timeout)
        return self.is_set()


# -- sink ------------------------------------------------------------------------------------


class SinkUnavailable(LookoutError, ConnectionError):
    """The MemorySink was told to refuse writes (a sink outage in a test)."""


@dataclass(frozen=True)
class MergedWindow:
    """One row of the `window_metrics_merged` view: partial rows of a window summed."""

    model: str
    window_start: int
    records: int
    late_records: int
    partial_rows: int
    #: every analyst column (`calls`, `blocked`, `input_tokens`, …) summed; None if all were
    sums: Mapping[str, float | int | None]

    @property
    def calls(self) -> int:
        return int(self.sums["calls"] or 0)


@dataclass(frozen=True)
class _Partial:
    writer_id: str
    sequence: int
    model: str
    window_start: int
    window_end: int
    records: int
    late_records: int
    analyst: Mapping[str, float | int | None]
    states_json: bytes
    #: records per model_version, as the sinks' slice rows hold them
    versions: Mapping[str | None, int] = field(default_factory=dict)


def _slice_versions(p: PartialRow) -> dict[str | None, int]:
    """Records per model_version of a partial row (one slice without a version when it has
    none), as the real sinks read them back from their slice rows."""
    versions: dict[str | None, int] = {}
    for row in p.slices or ():
        add_version_records(versions, row.model_version, row.records)
    return versions or {None: p.records}


def _json(value: Any, what: str) -> bytes:
    try:
        return orjson.dumps(value, option=orjson.OPT_SERIALIZE_NUMPY)
    except TypeError as error:
        msg = f"MemorySink: {what} is not JSON-serialisable: {error}"
        raise TypeError(msg) from error


class MemorySink:
    """`worker.sink.Sink` in memory, with the semantics of `DuckDBSink`.

    A checkpoint is serialised completely before anything is stored, so a checkpoint that cannot
    be written leaves nothing behind (atomicity). Detector states, alert state and references
    come back from JSON, never as the objects that were written, exactly as from a file.

    `fail_writes()` makes writes raise `SinkUnavailable` (for `count` attempts, while a clock is
    before a deadline, or until `heal()`). Reads keep working, as they do when only the write
    path of a warehouse is refusing, unless `reads=True` takes the whole sink down.
    """

    def __init__(self, name: str = "memory", *, clock: Callable[[], float] = time.time) -> None:
        self.name = name
        self._clock = clock
        self._lock = threading.Lock()
        self._partials: list[_Partial] = []
        self._request_ids: dict[tuple[str, int], list[str]] = {}
        self._detections: dict[tuple[str, str, int], Detection] = {}
        self._alerts: list[Alert] = []
        self._alert_state: bytes = b"[]"
        self._references: dict[tuple[str, str], bytes] = {}
        self._baseline_accepts: list[BaselineAccept] = []
        #: records the engine quarantined for their event time, as written
        self.quarantined: list[QuarantinedRecord] = []
        #: writer → (frontier, when it reported by the sink's clock)
        self._frontiers: dict[str, tuple[float, float]] = {}
        self._applied: set[tuple[str, int, str]] = set()
        self._closed = False
        self._fail_count: int | None = None
        self._fail_forever = False
        self._fail_until: tuple[Callable[[], float], float] | None = None
        self._fail_reads = False
        self.write_attempts = 0
        self.failed_writes = 0
        #: the `since` of every `unevaluated_windows` read, in order (None: every window)
        self.unevaluated_reads: list[int | None] = []
        self.checkpoints_written = 0

    # -- the failure switch --------------------------------------------------------------------

    def fail_writes(
        self,
        *,
        count: int | None = None,
        until: float | None = None,
        clock: Callable[[], float] | None = None,
        reads: bool = False,
    ) -> None:
        """Refuse writes: the next `count` attempts, or while `clock() < until`, or until `heal`.

        With `reads`, reads fail too for as long as writes do (the whole sink is unreachable).
        """
        if (until is None) != (clock is None):
            msg = "MemorySink.fail_writes: `until` and `clock` go together"
            raise ValueError(msg)
        if count is not None and count < 1:
            msg = f"MemorySink.fail_writes: count must be >= 1, got {count}"
            raise ValueError(msg)
        self._fail_count = count
        self._fail_until = (clock, until) if clock is not None and until is not None else None
        self._fail_forever = count is None and until is None
        self._fail_reads = reads

    def heal(self) -> None:
        """Accept writes (and reads) again."""
        self._fail_count = None
        self._fail_until = None
        self._fail_forever = False
        self._fail_reads = False

    def _down(self) -> bool:
        """Whether an outage is on now (without using up a `count`)."""
        if self._fail_forever or self._fail_count is not None:
            return True
        return self._fail_until is not None and self._fail_until[0]() < self._fail_until[1]

    def _check_read(self) -> None:
        if self._closed or (self._fail_reads and self._down()):
            msg = f"{self.name} cannot be read (test outage)"
            raise SinkUnavailable(msg)

    def _refusing(self) -> bool:
        if self._fail_forever:
            return True
        if self._fail_count is not None:
            self._fail_count -= 1
            if self._fail_count <= 0:
                self._fail_count = None
            return True
        if self._fail_until is not None:
            clock, until = self._fail_until
            if clock() < until:
                return True
            self._fail_until = None
        return False

    # -- writes --------------------------------------------------------------------------------

    def write_checkpoint(self, checkpoint: Checkpoint) -> None:
        with self._lock:
            self.write_attempts += 1
            if self._closed:
                self.failed_writes += 1
                msg = f"{self.name} is closed"
                raise SinkUnavailable(msg)
            if self._refusing():
                self.failed_writes += 1
                msg = f"{self.name} refuses writes (test outage)"
                raise SinkUnavailable(msg)
            key = (checkpoint.writer_id, checkpoint.sequence, checkpoint_digest(checkpoint))
            if key in self._applied:  # the same checkpoint again: stored once, as in DuckDB
                if checkpoint.frontier is not None and checkpoint.writer_id in self._frontiers:
                    # ...but its report counts from now (a same-id restart's start report)
                    self._frontiers[checkpoint.writer_id] = (
                        self._frontiers[checkpoint.writer_id][0],
                        self._clock(),
                    )
                return
            try:
                staged = self._stage(checkpoint)
            except Exception:
                self.failed_writes += 1
                raise
            self._commit(checkpoint, *staged)
            self._applied.add(key)
            self.checkpoints_written += 1

    def _stage(
        self, cp: Checkpoint
    ) -> tuple[list[_Partial], list[Detection], bytes | None, dict[tuple[str, str], bytes]]:
        """Everything serialised up front: a failure here stores nothing."""
        partials = [
            _Partial(
                writer_id=cp.writer_id,
                sequence=cp.sequence,
                model=p.model,
                window_start=p.window_start,
                window_end=p.window_end,
                records=p.records,
                late_records=p.late_records,
                analyst=analyst_values(p.states, p.extras),
                states_json=_json(p.states, f"partial state of {p.model}@{p.window_start}"),
                versions=_slice_versions(p),
            )
            for p in cp.partials
        ]
        detections = list(cp.detections)
        for d in detections:
            _json(d.details, f"details of detection {d.model}/{d.detector}")
        alert_state = None if cp.alert_state is None else _json(cp.alert_state, "alert state")
        references = {key: _json(state, f"reference {key}") for key, state in cp.references.items()}
        return partials, detections, alert_state, references

    def _commit(
        self,
        cp: Checkpoint,
        partials: list[_Partial],
        detections: list[Detection],
        alert_state: bytes | None,
        references: dict[tuple[str, str], bytes],
    ) -> None:
        self._partials.extend(partials)
        for model, start, request_id in cp.request_ids:
            self._request_ids.setdefault((model, start), []).append(request_id)
        for d in detections:
            self._detections[(d.model, d.detector, int(d.window_start.timestamp()))] = d
        self._alerts.extend(cp.alerts)
        self.quarantined.extend(cp.quarantined)
        if cp.frontier is not None:
            self._frontiers[cp.writer_id] = (cp.frontier, self._clock())
        if alert_state is not None:
            self._alert_state = alert_state
        self._references.update(references)
        self._baseline_accepts.extend(cp.baseline_accepts)

    # -- the Sink reads ------------------------------------------------------------------------

    def newest_window_start(self, model: str) -> int | None:
        self._check_read()
        with self._lock:
            starts = [p.window_start for p in self._partials if p.model == model]
        return max(starts) if starts else None

    def load_window(self, model: str, window_start: int) -> StoredWindow:
        self._check_read()
        with self._lock:
            rows = [
                p for p in self._partials if p.model == model and p.window_start == window_start
            ]
            ids = frozenset(self._request_ids.get((model, window_start), ()))
            evaluated = any(m == model and s == window_start for m, _, s in self._detections)
        versions: dict[str | None, int] = {}
        for p in rows:
            for version, n in p.versions.items():
                add_version_records(versions, version, n)
        return StoredWindow(
            partial_states=[orjson.loads(p.states_json) for p in rows],
            request_ids=ids,
            records=sum(p.records for p in rows),
            evaluated=evaluated,
            versions=versions,
        )

    def load_windows(
        self, windows: Sequence[tuple[str, int]]
    ) -> Mapping[tuple[str, int], StoredWindow]:
        return windows_one_by_one(self.load_window, windows)

    def load_recent_windows(
        self, model: str, since: int, until: int
    ) -> Mapping[int, Sequence[Mapping[str, DetectorRow]]]:
        self._check_read()
        with self._lock:
            rows = sorted(
                (p for p in self._partials if p.model == model and since <= p.window_start < until),
                key=lambda p: p.window_start,
            )
        out: dict[int, list[Mapping[str, DetectorRow]]] = {}
        for p in rows:
            out.setdefault(p.window_start, []).append(orjson.loads(p.states_json))
        return out

    def stored_records(self, windows: Sequence[tuple[str, int]]) -> Mapping[tuple[str, int], int]:
        self._check_read()
        wanted = set(windows)
        out: dict[tuple[str, int], int] = {}
        with self._lock:
            for p in self._partials:
                key = (p.model, p.window_start)
                if key in wanted:
                    out[key] = out.get(key, 0) + p.records
        return out

    def judged_windows(self, windows: Sequence[tuple[str, int]]) -> frozenset[tuple[str, int]]:
        self._check_read()
        with self._lock:
            judged = {(m, s) for m, _, s in self._detections}
        return frozenset(judged.intersection(windows))

    def models(self) -> Sequence[str]:
        self._check_read()
        with self._lock:
            return sorted({p.model for p in self._partials})

    def unevaluated_windows(
        self, limit: int, *, since: int | None = None
    ) -> Sequence[tuple[str, int]]:
        self._check_read()
        self.unevaluated_reads.append(since)
        with self._lock:
            judged = {(m, s) for m, _, s in self._detections}
            windows = {
                (p.model, p.window_start)
                for p in self._partials
                if since is None or p.window_start >= since
            } - judged
        return sorted(windows, key=lambda w: (w[1], w[0]))[:limit]

    def load_frontier(
        self, active_within: float = 60.0, *, excluding: str | None = None
    ) -> float | None:
        self._check_read()
        with self._lock:
            reports = list(self._frontiers.items())
        if not reports:
            return None
        newest = max(at for _, (_, at) in reports)
        counted = [f for w, (f, at) in reports if at >= newest - active_within and w != excluding]
        return min(counted) if counted else None

    def any_writer_progress(self) -> bool:
        self._check_read()
        with self._lock:
            return bool(self._frontiers)

    def newest_frontier(self, *, excluding: str) -> float | None:
        self._check_read()
        with self._lock:
            others = [f for w, (f, _) in self._frontiers.items() if w != excluding]
        return max(others) if others else None

    def writer_frontier(self, writer_id: str) -> float | None:
        self._check_read()
        with self._lock:
            report = self._frontiers.get(writer_id)
        return None if report is None else report[0]

    def load_alert_state(self) -> Sequence[Mapping[str, Any]]:
        self._check_read()
        with self._lock:
            rows: list[Mapping[str, Any]] = orjson.loads(self._alert_state)
        return rows

    def load_references(self) -> Mapping[tuple[str, str], DetectorRow]:
        self._check_read()
        with self._lock:
            return {key: orjson.loads(row) for key, row in self._references.items()}

    def stored_alerts(self, alerts: Sequence[Alert]) -> frozenset[AlertChangeKey]:
        self._check_read()
        with self._lock:
            stored = {a.change_key for a in self._alerts}
        return frozenset(a.change_key for a in alerts if a.change_key in stored)

    def load_baseline_accepts(self) -> Sequence[BaselineAccept]:
        self._check_read()
        with self._lock:
            return sorted(self._baseline_accepts, key=lambda a: a.accepted_at)

    def writable(self) -> bool:
        return not (self._closed or self._down())

    def close(self) -> None:
        with self._lock:
            self._closed = True

    # -- what an analyst would query -------------------------------------------------------

    def merged(self) -> dict[tuple[str, int], MergedWindow]:
        """The `window_metrics_merged` view: one row per (model, window start)."""
        with self._lock:
            partials = list(self._partials)
        groups: dict[tuple[str, int], list[_Partial]] = {}
        for p in partials:
            groups.setdefault((p.model, p.window_start), []).append(p)
        out: dict[tuple[str, int], MergedWindow] = {}
        for key, rows in sorted(groups.items()):
            sums: dict[str, float | int | None] = {}
            for column, _ in ANALYST_COLUMNS:
                values = [r.analyst[column] for r in rows if r.analyst[column] is not None]
                sums[column] = sum(v for v in values if v is not None) if values else None
            out[key] = MergedWindow(
                model=key[0],
                window_start=key[1],
                records=sum(r.records for r in rows),
                late_records=sum(r.late_records for r in rows),
                partial_rows=len(rows),
                sums=sums,
            )
        return out

    def total_records(self) -> int:
        """Records counted over every window: what `SELECT sum(records)` would say."""
        return sum(w.records for w in self.merged().values())

    def writers(self) -> set[str]:
        with self._lock:
            return {p.writer_id for p in self._partials}

    def request_ids(self) -> list[str]:
        """Every stored request id row (a redelivery that double-counted shows up twice)."""
        with self._lock:
            return [rid for ids in self._request_ids.values() for rid in ids]

    def detections(self) -> list[Detection]:
        """The `detections` table: one verdict per (model, detector, window), oldest first."""
        with self._lock:
            return [self._detections[k] for k in sorted(self._detections, key=lambda k: k[2])]

    def alerts(self) -> list[Alert]:
        """The `alerts` table: every state change as sent to receivers."""
        with self._lock:
            return list(self._alerts)


# -- source ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class DeadLetter:
    message: SourceMessage
    errors: tuple[DecodeError, ...]


class FakeSource:
    """`worker.source.Source` over given messages, recording what the engine did with them.

    `poll` hands out up to `max_messages` queued messages (and calls `on_poll` first, e.g. to
    advance a FakeClock, so time passes as the stream is consumed). It is exhausted once the
    queue is empty, unless `finite=False` (a subscription never ends). `redeliver()` puts every
    handed-out message that was not acked back in the queue, as Pub/Sub does when a lease
    expires or a worker dies.
    """

    def __init__(
        self,
        messages: Iterable[SourceMessage],
        *,
        name: str = "fake",
        finite: bool = True,
        on_poll: Callable[[FakeSource], None] | None = None,
        dead_letter_works: bool = True,
    ) -> None:
        self.name = name
        self._queue: deque[SourceMessage] = deque(messages)
        self._finite = finite
        self._on_poll = on_poll
        self.dead_letter_works = dead_letter_works
        self.delivered: list[SourceMessage] = []
        self.acked: list[str] = []
        self.nacked: list[str] = []
        self.dead_letters: list[DeadLetter] = []
        self.ack_calls = 0
        self.polls = 0
        self.stopped = False
        self.closed = False

    def poll(self, max_messages: int, timeout_seconds: float) -> Sequence[SourceMessage]:
        self.polls += 1
        if self._on_poll is not None:
            self._on_poll(self)
        if self.stopped:
            return []
        out: list[SourceMessage] = []
        while self._queue and len(out) < max_messages:
            out.append(self._queue.popleft())
        self.delivered.extend(out)
        return out

    @property
    def exhausted(self) -> bool:
        return self.stopped or (self._finite and not self._queue)

    @property
    def remaining(self) -> int:
        return len(self._queue)

    def push(self, messages: Iterable[SourceMessage]) -> None:
        """More messages published to the subscription."""
        self._queue.extend(messages)

    def dead_letter(self, message: SourceMessage, errors: Sequence[DecodeError]) -> bool:
        if not self.dead_letter_works:
            return False
        self.dead_letters.append(DeadLetter(message, tuple(errors)))
        return True

    def ack(self, ack_ids: Sequence[str]) -> None:
        self.ack_calls += 1
        self.acked.extend(ack_ids)

    def nack(self, ack_ids: Sequence[str]) -> None:
        self.nacked.extend(ack_ids)

    def stop(self) -> None:
        self.stopped = True

    def close(self) -> None:
        self.closed = True

    def ready(self) -> bool:
        return not self.closed

    @property
    def unacked(self) -> list[SourceMessage]:
        """Messages handed out and not acked (nacked ones included)."""
        acked = set(self.acked)
        return [m for m in self.delivered if m.ack_id not in acked]

    def redeliver(self) -> int:
        """Queue every un-acked message again (lease expiry, worker death); returns how many.

        Each carries its next delivery attempt, as Pub/Sub sets it on a subscription with a
        dead-letter policy."""
        again = [replace(m, delivery_attempt=max(m.delivery_attempt, 1) + 1) for m in self.unacked]
        self._queue.extendleft(reversed(again))
        self.stopped = False
        return len(again)


def ndjson_messages(
    logs: Iterable[PredictionLog], *, per_message: int = 100, prefix: str = "m"
) -> list[SourceMessage]:
    """Prediction logs as NDJSON messages of `per_message` records, ack ids `{prefix}{i}`."""
    out: list[SourceMessage] = []
    chunk: list[bytes] = []

    def flush() -> None:
        i = len(out)
        out.append(
            SourceMessage(message_id=f"{prefix}{i}", data=b"\n".join(chunk), ack_id=f"{prefix}{i}")
        )
        chunk.clear()

    for log in logs:
        chunk.append(canonical_json(log))
        if len(chunk) >= per_message:
            flush()
    if chunk:
        flush()
    return out


def request_ids_of(message: SourceMessage, limits: DecodeLimits | None = None) -> list[str]:
    """The request ids of the good records a message carries, as the engine will see them."""
    decoded = decode_message(
        message.data,
        format_hint=message.attributes.get("format"),
        first_line=message.first_line,
        limits=limits or DecodeLimits(),
    )
    ids: list[str] = decoded.batch.request_id.tolist()
    return ids


def drain(source: Source, timeout_seconds: float = 30.0) -> list[SourceMessage]:
    """Every message a finite source hands out, then stop and close it; fails if the source is
    not exhausted within `timeout_seconds`."""
    messages: list[SourceMessage] = []
    deadline = time.monotonic() + timeout_seconds
    try:
        while not source.exhausted and time.monotonic() < deadline:
            messages.extend(source.poll(100, 0.2))
    finally:
        source.stop()
        source.close()
    assert source.exhausted, f"the source was not read to its end within {timeout_seconds} s"
    return messages
