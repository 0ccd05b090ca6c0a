"""The ingest loop: poll → decode → fold → tick, until the input ends or a signal arrives.

Sources hand over plain bytes (a Pub/Sub source gunzips `Content-Encoding: gzip` bodies and
dead-letters the ones that are not gzip). Bad records are handed back to the source to
dead-letter; if that fails the whole message is nacked and none of it is folded, so its
redelivery counts it exactly once. While the sink is refusing checkpoints the loop stops polling
(memory stays bounded by what is already held) and retries with backoff; nothing is acked until
a checkpoint succeeds.

Decoding can overlap the rest: the compiled decoder releases the GIL while it parses, so slices
are decoded on a second thread (`decode_ahead_slices` of them ahead of the fold) and the next
poll's first slices are decoded while the engine evaluates and checkpoints the previous one.
Files are decoded in line all the same (`worker.cli.serve.file_run_settings`: the thread's
Python half held the GIL while the engine judged windows, which then took 2.5 times as long). The
source is only ever called from the loop's own thread, and folds happen in poll order, so acks,
dead-letters and nacks are exactly those of decoding in line (`decode_ahead_slices=0`).
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from detectors import reservoir
from schemas.batch import LogBatch
from schemas.decode.api import DecodedPoll, DecodeLimits, MessageBytes, decode_messages
from worker.engine import Engine
from worker.metrics import EngineMetrics
from worker.source import Source, SourceMessage
from worker.window_state import ID_SEED

log = logging.getLogger("lookout.runner")


@dataclass(frozen=True)
class RunSettings:
    poll_max_messages: int = 16
    poll_timeout_seconds: float = 0.5
    #: messages are decoded and folded in slices of about this many bytes (bounds memory)
    decode_slice_bytes: int = 8 * 1024 * 1024
    grace_period_seconds: float = 25.0
    #: the part of the grace period kept for `source.close()` (handing messages back), so a
    #: final checkpoint that keeps failing still leaves the exit inside the grace period
    close_reserve_seconds: float = 0.0
    #: stop polling while this many messages wait for a checkpoint that keeps failing
    max_pending_messages: int = 10_000
    #: slices decoded on a second thread ahead of the one being folded (0: decode in line).
    #: Memory: up to this many decoded slices more than in line, plus one poll taken ahead
    decode_ahead_slices: int = 1


@dataclass
class RunResult:
    messages: int = 0
    invalid_records: int = 0
    nacked_messages: int = 0
    stopped_by_signal: bool = False
    #: the source ran out (a file read to its end), as opposed to a stop
    end_of_input: bool = False
    clean_exit: bool = True
    seconds: float = 0.0


def _feed(
    engine: Engine,
    batches: list[LogBatch],
    ack_ids: list[str],
    *,
    redelivered: list[npt.NDArray[np.bool_]] | None = None,
) -> None:
    """Fold the kept rows; the ack ids travel with the last batch, so a batch the engine must
    hold back (sink unreadable) keeps every message of the poll un-acked with it.
    `redelivered`: per batch, the rows that came in messages delivered before (None: none)."""
    if not ack_ids:
        return
    if not batches:
        engine.feed(LogBatch.empty(), ack_ids)
        return
    for i, batch in enumerate(batches):
        again = False if redelivered is None else redelivered[i]
        engine.feed(batch, ack_ids if i == len(batches) - 1 else [], redelivered=again)


def _poll_batch(
    source: Source, settings: RunSettings, stop: threading.Event, now: Callable[[], float]
) -> list[SourceMessage]:
    """Wait for a first poll, then take what is ready, up to `poll_max_messages` and for at
    most `poll_timeout_seconds` more, or until a stop is asked for.

    A Pub/Sub pull returns at most ~100 messages (fewer when they trickle in): folding each
    pull alone paid the decode, fold and tick overheads per 100 single-record messages. The
    time bound keeps a trickle of messages from holding off ticks, checkpoints and SIGTERM.
    """
    messages = list(source.poll(settings.poll_max_messages, settings.poll_timeout_seconds))
    deadline = now() + settings.poll_timeout_seconds
    while messages and len(messages) < settings.poll_max_messages:
        if stop.is_set() or now() >= deadline:
            break
        more = source.poll(settings.poll_max_messages - len(messages), 0.0)
        if not more:
            break
        messages.extend(more)
    return messages


def _slices(messages: list[SourceMessage], max_bytes: int) -> list[list[SourceMessage]]:
    """Consecutive runs of messages of about `max_bytes` (at least one message each)."""
    out: list[list[SourceMessage]] = []
    current: list[SourceMessage] = []
    size = 0
    for message in messages:
        if current and size + len(message.data) > max_bytes:
            out.append(current)
            current, size = [], 0
        current.append(message)
        size += len(message.data)
    if current:
        out.append(current)
    return out


def _process(
    messages: list[SourceMessage],
    decoded: DecodedPoll,
    source: Source,
    engine: Engine,
    result: RunResult,
    metrics: EngineMetrics | None,
    progress: Callable[[int], None] | None,
) -> None:
    """Dead-letter the bad records of messages decoded together, fold the rest in one go.

    One decode and one vectorised fold for many messages, not one per message: single-record
    Pub/Sub messages would otherwise pay the column building and every detector's per-call
    overhead for each record. A message whose bad records cannot be dead-lettered is nacked
    and none of its records are folded, so its redelivery counts it exactly once.
    """
    counts = decoded.record_counts(len(messages)) if progress is not None else None
    kept: list[int] = []
    ack_ids: list[str] = []
    again: list[int] = []  # kept messages delivered before
    for index, message in enumerate(messages):
        result.messages += 1
        errors = decoded.errors[index]
        if errors:
            if not source.dead_letter(message, errors):
                # counted when its redelivery is dead-lettered: counting each try would
                # multiply the dead-letter rate while the dead-letter topic is broken
                source.nack([message.ack_id])
                result.nacked_messages += 1
                continue
            result.invalid_records += len(errors)
            if metrics is not None:
                for error in errors:
                    metrics.invalid_records(error.error_type)
        kept.append(index)
        ack_ids.append(message.ack_id)
        if message.delivery_attempt > 1:
            again.append(index)
        if progress is not None and counts is not None:
            progress(int(counts[index]) + len(errors))
    if ack_ids:
        quarantined = engine.stats.quarantined
        # the rows that came in redelivered messages: only their windows are read again
        redelivered = [np.isin(o, again) for o in decoded.origins_of(kept)] if again else None
        _feed(engine, decoded.rows_of(kept), ack_ids, redelivered=redelivered)
        if engine.stats.quarantined > quarantined:
            _locate_quarantined(engine, engine.stats.quarantined - quarantined, decoded)


def _locate_quarantined(engine: Engine, new: int, decoded: DecodedPoll) -> None:
    """Give the newest quarantine examples their input line (rare: a broken clock), so the
    CLI names each by line like a bad record; the first row of a request id wins."""
    examples = engine.stats.quarantine_examples
    fresh = list(examples)[-min(new, len(examples)) :]
    wanted = {q.request_id for q in fresh}
    lines: dict[str, int] = {}
    for batch, batch_lines in zip(decoded.batches, decoded.lines, strict=True):
        for row in np.flatnonzero(np.isin(batch.request_id, list(wanted))):
            lines.setdefault(str(batch.request_id[row]), int(batch_lines[row]))
    for _ in fresh:
        examples.pop()
    examples.extend(dataclasses.replace(q, line=lines.get(q.request_id)) for q in fresh)


def _decode(messages: list[SourceMessage], limits: DecodeLimits) -> DecodedPoll:
    """Decode a slice and hash its request ids. On the decode thread both run beside the
    engine's fold of the slice before (the hash releases the GIL); the fold and every
    detector then find the keys in the memo instead of hashing on the engine's thread."""
    decoded = decode_messages(
        [MessageBytes(m.data, m.attributes.get("format"), m.first_line) for m in messages],
        limits=limits,
    )
    for batch in decoded.batches:
        reservoir.hash_ids(batch.request_id, ID_SEED)
    return decoded


class _Decoder:
    """Decodes slices on one background thread; with `ahead` 0, in line when asked."""

    def __init__(self, limits: DecodeLimits, ahead: int) -> None:
        self.limits = limits
        self.ahead = max(ahead, 0)
        self._pool = (
            ThreadPoolExecutor(max_workers=1, thread_name_prefix="lookout-decode")
            if self.ahead
            else None
        )

    def submit(self, messages: list[SourceMessage]) -> Future[DecodedPoll]:
        if self._pool is not None:
            return self._pool.submit(_decode, messages, self.limits)
        done: Future[DecodedPoll] = Future()
        done.set_result(_decode(messages, self.limits))
        return done

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)


@dataclass
class _Poll:
    """One poll's messages in slices, and the decodes started for them (by slice index)."""

    messages: list[SourceMessage]
    slices: list[list[SourceMessage]]
    decoding: dict[int, Future[DecodedPoll]] = field(default_factory=dict)
    #: slices before this index were started (or folded) already
    started: int = 0

    @classmethod
    def of(cls, messages: list[SourceMessage], settings: RunSettings) -> _Poll:
        return cls(messages, _slices(messages, settings.decode_slice_bytes))

    def start(self, decoder: _Decoder, upto: int, stop: threading.Event) -> None:
        """Start decoding the slices up to index `upto` (never once a stop was asked for:
        what is handed back is not decoded)."""
        if decoder.ahead == 0:
            return  # decoded in line, when folded
        while self.started <= min(upto, len(self.slices) - 1):
            if stop.is_set():
                return
            self.decoding[self.started] = decoder.submit(self.slices[self.started])
            self.started += 1

    def decoded(self, index: int, decoder: _Decoder) -> DecodedPoll:
        future = self.decoding.pop(index, None)
        if future is None:
            future = decoder.submit(self.slices[index])
            self.started = max(self.started, index + 1)
        return future.result()

    def hand_back(self, source: Source, start: int = 0) -> None:
        """Nack the slices from `start` on (a stop was asked for); their decodes are dropped."""
        for index in range(start, len(self.slices)):
            future = self.decoding.pop(index, None)
            if future is not None:
                future.cancel()
        rest = [m.ack_id for later in self.slices[start:] for m in later]
        if rest:
            source.nack(rest)


def _process_poll(
    poll: _Poll,
    decoder: _Decoder,
    source: Source,
    engine: Engine,
    result: RunResult,
    stop: threading.Event,
    metrics: EngineMetrics | None,
    progress: Callable[[int], None] | None,
) -> None:
    """Fold a poll's slices in order, each decoded while the one before it is folded."""
    for index, part in enumerate(poll.slices):
        if stop.is_set():
            # answer SIGTERM within the grace period: hand the rest back undecoded
            poll.hand_back(source, index)
            return
        poll.start(decoder, index + decoder.ahead, stop)
        _process(part, poll.decoded(index, decoder), source, engine, result, metrics, progress)


def _sink_refusing(engine: Engine, settings: RunSettings) -> bool:
    return bool(
        engine.stats.checkpoint_failures and engine.pending_messages > settings.max_pending_messages
    )


def run(
    source: Source,
    engine: Engine,
    *,
    limits: DecodeLimits,
    stop: threading.Event,
    settings: RunSettings = RunSettings(),
    metrics: EngineMetrics | None = None,
    progress: Callable[[int], None] | None = None,
    now: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> RunResult:
    result = RunResult()
    started = now()
    backoff = 0.5
    decoder = _Decoder(limits, settings.decode_ahead_slices)
    ahead: _Poll | None = None  # a poll taken before the tick, its first slices decoding
    try:
        while not stop.is_set():
            if _sink_refusing(engine, settings):
                # the sink is down and we hold a lot: stop pulling, keep retrying the checkpoint
                if engine.checkpoint():
                    backoff = 0.5
                else:
                    stop.wait(backoff)
                    backoff = min(backoff * 2, 10.0)
                continue
            if ahead is None:
                poll = _Poll.of(_poll_batch(source, settings, stop, now), settings)
            else:
                poll, ahead = ahead, None
            _process_poll(poll, decoder, source, engine, result, stop, metrics, progress)
            if not poll.messages:
                if source.exhausted:
                    break
                # idle (or the source holds its flow-control maximum): make what we hold
                # durable and ack it now rather than at the next interval
                held_back = engine.pending_messages > 0
                acked = engine.checkpoint() if held_back else True
                # the frontier may move on without records only over polls that all came back
                # empty from a working source: nothing failing (a pull that fails returns
                # nothing too) and nothing held back by flow control, or what Pub/Sub kept
                # meanwhile would land in windows already judged. Held messages the checkpoint
                # just acked hold nothing back: a trickle of a message a minute had each
                # message end the spell, and its windows waited minutes
                if not acked or not source.ready():
                    engine.not_idle()
                else:
                    engine.idle()
            elif decoder.ahead and not stop.is_set() and not _sink_refusing(engine, settings):
                # take the next poll now, so it decodes while the engine evaluates and writes
                ahead = _Poll.of(_poll_batch(source, settings, stop, now), settings)
                ahead.start(decoder, decoder.ahead, stop)
            engine.tick()
        if ahead is not None:
            ahead.hand_back(source)  # stopped with a poll taken ahead: it was not folded
    finally:
        decoder.close()
    result.stopped_by_signal = stop.is_set()
    source.stop()
    deadline = now() + max(settings.grace_period_seconds - settings.close_reserve_seconds, 0.0)
    end_of_input = source.exhausted and not result.stopped_by_signal
    result.end_of_input = end_of_input
    ok = engine.finish(end_of_input=end_of_input)
    while not ok and now() < deadline:
        sleep(min(1.0, max(0.0, deadline - now())))
        ok = engine.checkpoint()
    result.clean_exit = ok
    if not ok:
        log.error(
            "could not write the final checkpoint within the grace period; "
            "un-acked messages will be redelivered"
        )
    source.close()
    result.seconds = now() - started
    return result
