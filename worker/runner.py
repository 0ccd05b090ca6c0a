"""The ingest loop: poll → decode → fold → tick, until the input ends or a signal arrives.

Sources hand over plain bytes (a Pub/Sub source gunzips `Content-Encoding: gzip` bodies and
dead-letters the ones that are not gzip). Bad records are handed back to the source to
dead-letter; if that fails the whole message is nacked and none of it is folded, so its
redelivery counts it exactly once. While the sink is refusing checkpoints the loop stops polling
(memory stays bounded by what is already held) and retries with backoff; nothing is acked until
a checkpoint succeeds.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from schemas.batch import LogBatch
from schemas.decode.api import DecodeLimits, MessageBytes, decode_messages
from worker.engine import Engine
from worker.metrics import EngineMetrics
from worker.source import Source, SourceMessage

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


@dataclass
class RunResult:
    messages: int = 0
    invalid_records: int = 0
    nacked_messages: int = 0
    stopped_by_signal: bool = False
    clean_exit: bool = True
    seconds: float = 0.0


def _feed(engine: Engine, batches: list[LogBatch], ack_ids: list[str]) -> None:
    """Fold the kept rows; the ack ids travel with the last batch, so a batch the engine must
    hold back (sink unreadable) keeps every message of the poll un-acked with it."""
    if not ack_ids:
        return
    for batch in batches[:-1]:
        engine.feed(batch, [])
    engine.feed(batches[-1] if batches else LogBatch.empty(), ack_ids)


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
    source: Source,
    engine: Engine,
    limits: DecodeLimits,
    result: RunResult,
    metrics: EngineMetrics | None,
    progress: Callable[[int], None] | None,
) -> None:
    """Decode messages together, dead-letter their bad records, fold the rest in one go.

    One decode and one vectorised fold for many messages, not one per message: single-record
    Pub/Sub messages would otherwise pay the column building and every detector's per-call
    overhead for each record. A message whose bad records cannot be dead-lettered is nacked
    and none of its records are folded, so its redelivery counts it exactly once.
    """
    decoded = decode_messages(
        [MessageBytes(m.data, m.attributes.get("format"), m.first_line) for m in messages],
        limits=limits,
    )
    counts = decoded.record_counts(len(messages)) if progress is not None else None
    kept: list[int] = []
    ack_ids: list[str] = []
    for index, message in enumerate(messages):
        result.messages += 1
        errors = decoded.errors[index]
        if errors:
            result.invalid_records += len(errors)
            if metrics is not None:
                for error in errors:
                    metrics.invalid_records(error.error_type)
            if not source.dead_letter(message, errors):
                source.nack([message.ack_id])
                result.nacked_messages += 1
                continue
        kept.append(index)
        ack_ids.append(message.ack_id)
        if progress is not None and counts is not None:
            progress(int(counts[index]) + len(errors))
    if ack_ids:
        _feed(engine, decoded.rows_of(kept), ack_ids)


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
    while not stop.is_set():
        if (
            engine.stats.checkpoint_failures
            and engine.pending_messages > settings.max_pending_messages
        ):
            # the sink is down and we hold a lot: stop pulling, keep retrying the checkpoint
            if engine.checkpoint():
                backoff = 0.5
            else:
                stop.wait(backoff)
                backoff = min(backoff * 2, 10.0)
            continue
        messages = _poll_batch(source, settings, stop, now)
        slices = _slices(messages, settings.decode_slice_bytes)
        for index, part in enumerate(slices):
            if stop.is_set():
                # answer SIGTERM within the grace period: hand the rest back undecoded
                source.nack([m.ack_id for later in slices[index:] for m in later])
                break
            _process(part, source, engine, limits, result, metrics, progress)
        if not messages:
            if source.exhausted:
                break
            # idle (or the source holds its flow-control maximum): make what we hold durable
            # and ack it now rather than at the next interval
            if engine.pending_messages:
                engine.checkpoint()
        engine.tick()
    result.stopped_by_signal = stop.is_set()
    source.stop()
    deadline = now() + max(settings.grace_period_seconds - settings.close_reserve_seconds, 0.0)
    end_of_input = source.exhausted and not result.stopped_by_signal
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
