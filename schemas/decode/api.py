"""Public entry points: a Pub/Sub message or a chunk of an NDJSON file → records.

`decode_message` is the hot path (columns, no object per record); `decode_records` is the slow
path for `lookout decode` (pydantic records). Both start from the same shared decoding
(`schemas.decode.records`), and the pydantic model re-validates every record on the slow path,
so a test comparing the two over every fixture proves the column checks match the model.
Bad input never raises: it comes back as `DecodeError`s carrying the original bytes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import numpy.typing as npt
from pydantic import ValidationError

from schemas.batch import LogBatch
from schemas.decode.columns import Vector, beyond_float32, build_batch, embedding_problems
from schemas.decode.records import FORMATS, decode_items, iter_items
from schemas.decode.wire import CANONICAL_FIELDS, Wire
from schemas.errors import DecodeError
from schemas.prediction_log import PredictionLog

__all__ = [
    "FORMATS",
    "DecodeLimits",
    "DecodedMessage",
    "DecodedPoll",
    "MessageBytes",
    "decode_message",
    "decode_messages",
    "decode_records",
]


@dataclass(frozen=True)
class DecodeLimits:
    """Bounds on what one record may be; configuration, read once at the edge."""

    max_record_bytes: int = 1_048_576
    expected_embedding_dim: int | None = None
    #: deepest nesting of objects and arrays a record may have (checked before parsing)
    max_depth: int = 64


@dataclass(frozen=True)
class DecodedMessage:
    """The good records of a message as columns, and the bad ones as errors."""

    batch: LogBatch
    errors: tuple[DecodeError, ...]
    #: per good row, the 1-based line it came from (same order as batch rows)
    lines: npt.NDArray[np.int64]


@dataclass(frozen=True)
class MessageBytes:
    """One message as the decoder needs it: its bytes, its `format` hint, its first line."""

    data: bytes
    format_hint: str | None = None
    first_line: int = 1


@dataclass(frozen=True)
class DecodedPoll:
    """The good records of several messages as columns, and each message's bad records.

    Usually one batch; one per embedding width when messages of a poll carry embeddings of
    different widths (a batch holds one 2-d block), since each message is judged on its own.
    """

    batches: tuple[LogBatch, ...]
    #: per batch, for each row, the index of the message it came from
    origins: tuple[npt.NDArray[np.int64], ...]
    #: per batch, for each row, the 1-based line within its message
    lines: tuple[npt.NDArray[np.int64], ...]
    #: per message, its bad records in line order
    errors: tuple[tuple[DecodeError, ...], ...]

    def rows_of(self, messages: Sequence[int]) -> list[LogBatch]:
        """The non-empty batches restricted to rows of `messages` (all rows if it is all)."""
        return [batch for batch, _ in self._selected(messages)]

    def origins_of(self, messages: Sequence[int]) -> list[npt.NDArray[np.int64]]:
        """For each batch `rows_of(messages)` gives, the message index of each of its rows."""
        return [origin for _, origin in self._selected(messages)]

    def _selected(self, messages: Sequence[int]) -> list[tuple[LogBatch, npt.NDArray[np.int64]]]:
        wanted = np.asarray(messages, dtype=np.int64)
        pairs = zip(self.batches, self.origins, strict=True)
        if len(wanted) == len(self.errors) and (wanted == np.arange(len(wanted))).all():
            # every message kept (the common case): no per-row membership test
            return [(batch, origin) for batch, origin in pairs if len(batch)]
        out: list[tuple[LogBatch, npt.NDArray[np.int64]]] = []
        for batch, origin in pairs:
            keep = np.isin(origin, wanted)
            if keep.all():
                out.append((batch, origin))
            elif keep.any():
                rows = np.flatnonzero(keep)
                out.append((batch.take(rows), origin[rows]))
        return out

    def record_counts(self, messages: int) -> npt.NDArray[np.int64]:
        """Good records per message, for the first `messages` messages."""
        counts = np.zeros(messages, dtype=np.int64)
        for origin in self.origins:
            counts += np.bincount(origin, minlength=messages)[:messages]
        return counts


def _internal_error(data: bytes, first_line: int, exc: Exception) -> DecodeError:
    # a bug of ours must still not stop the stream: the message is dead-lettered with the reason
    reason = f"internal decoder error ({type(exc).__name__}: {exc})"
    return DecodeError(first_line, reason, data, None, "internal_error")


def decode_message(
    data: bytes,
    *,
    format_hint: str | None = None,
    first_line: int = 1,
    limits: DecodeLimits = DecodeLimits(),
) -> DecodedMessage:
    """Decode one message (one record or NDJSON) into columns; never raises on bad input."""
    poll = decode_messages([MessageBytes(data, format_hint, first_line)], limits=limits)
    if not poll.batches:
        return DecodedMessage(LogBatch.empty(), poll.errors[0], np.zeros(0, dtype=np.int64))
    # one message is one embedding width (the others are its bad records): one batch
    return DecodedMessage(poll.batches[0], poll.errors[0], poll.lines[0])


class _Rows:
    """Good rows of a poll so far, kept as parallel lists until the columns are built."""

    def __init__(self) -> None:
        self.wires: list[Wire] = []
        self.lines: list[int] = []
        self.raws: list[bytes] = []
        self.embeddings: list[Vector | None] = []
        self.origins: list[int] = []

    def truncate(self, n: int) -> None:
        for column in (self.wires, self.lines, self.raws, self.embeddings, self.origins):
            del column[n:]


def _read_rows(
    rows: _Rows, index: int, message: MessageBytes, limits: DecodeLimits, errors: list[DecodeError]
) -> None:
    """Each record of a message appended to `rows` (embedding as float32), or to `errors`."""
    add_row, add_line, add_raw = rows.wires.append, rows.lines.append, rows.raws.append
    add_embedding, add_origin = rows.embeddings.append, rows.origins.append
    for line, raw, item in iter_items(
        message.data,
        message.format_hint,
        message.first_line,
        limits.max_record_bytes,
        limits.max_depth,
    ):
        if isinstance(item, DecodeError):
            errors.append(item)
            continue
        emb = item.embedding
        vector: Vector | None = None
        if emb is not None:
            # to float32 now, while its floats are in cache (see build_batch); fromiter gives
            # the same values as np.array of the list, at half the cost
            vector = np.fromiter(emb, np.float32, len(emb))
            item.embedding = None
        add_row(item)
        add_line(line)
        add_raw(raw)
        add_origin(index)
        add_embedding(vector)


def _read_message(
    rows: _Rows, index: int, message: MessageBytes, limits: DecodeLimits
) -> list[DecodeError]:
    """Append a message's good rows to `rows`; its bad records, embedding rule included."""
    errors: list[DecodeError] = []
    start = len(rows.wires)
    add_row, add_line, add_raw = rows.wires.append, rows.lines.append, rows.raws.append
    add_embedding, add_origin = rows.embeddings.append, rows.origins.append
    with np.errstate(over="ignore"):  # a value beyond float32 becomes inf: refused below
        _read_rows(rows, index, message, limits, errors)
    vectors = rows.embeddings[start:]
    present = [v for v in vectors if v is not None]
    beyond: dict[int, str] = {}
    if present and not np.isfinite(np.concatenate(present)).all():
        for offset, vector in enumerate(vectors):
            if vector is not None and (reason := beyond_float32(vector)) is not None:
                beyond[offset] = reason
                vectors[offset] = None  # refused: not counted by the width rule
    # the width rule is the message's own (its majority, or the configured width)
    problems = beyond | embedding_problems(vectors, limits.expected_embedding_dim)
    if problems:
        for offset, reason in problems.items():
            i = start + offset
            errors.append(DecodeError(rows.lines[i], reason, rows.raws[i], "embedding"))
        keep = [start + k for k in range(len(rows.wires) - start) if k not in problems]
        kept = [
            (rows.wires[i], rows.lines[i], rows.raws[i], rows.embeddings[i], rows.origins[i])
            for i in keep
        ]
        rows.truncate(start)
        for wire, line, raw, vector, origin in kept:
            add_row(wire)
            add_line(line)
            add_raw(raw)
            add_embedding(vector)
            add_origin(origin)
    return errors


def _breaks_alone(rows: _Rows, i: int, limits: DecodeLimits) -> Exception | None:
    """The exception building row `i` alone raises, if any (only looked for after a failure)."""
    try:
        build_batch(
            [rows.wires[i]],
            [i],
            [rows.raws[i]],
            limits.expected_embedding_dim,
            [rows.embeddings[i]],
        )
    except Exception as e:
        return e
    return None


def _width_groups(embeddings: list[Vector | None]) -> list[list[int]]:
    """Row indices per embedding width; rows without one join the first group."""
    by_width: dict[int, list[int]] = {}
    plain: list[int] = []
    for i, emb in enumerate(embeddings):
        if emb is None:
            plain.append(i)
        else:
            by_width.setdefault(len(emb), []).append(i)
    if len(by_width) <= 1:
        return [list(range(len(embeddings)))]
    groups = list(by_width.values())
    groups[0] = sorted(groups[0] + plain)
    return groups


# ---- compiled fast path (issue 15; schemas/decode/compiled.py) -----------------------------
# The compiled scan writes columns for the lines it fully understands and hands every other
# line back to `reference_decode_messages` below, the reference and only source of errors.
# LOOKOUT_DECODER=python forces the reference.
def decode_messages(
    messages: Sequence[MessageBytes], *, limits: DecodeLimits = DecodeLimits()
) -> DecodedPoll:
    """Decode the messages of one poll into columns at once; never raises on bad input."""
    from schemas.decode import compiled

    if compiled.enabled():
        return compiled.decode_messages(messages, limits, _reference)
    return reference_decode_messages(messages, limits=limits)


def _reference(messages: Sequence[MessageBytes], limits: DecodeLimits) -> DecodedPoll:
    return reference_decode_messages(messages, limits=limits)


# ---- end of the compiled fast path hook ------------------------------------------------------


def reference_decode_messages(
    messages: Sequence[MessageBytes], *, limits: DecodeLimits = DecodeLimits()
) -> DecodedPoll:
    """Decode the messages of one poll into columns at once; never raises on bad input.

    Each message is split and judged on its own (line numbers, the embedding width rule, an
    internal error dead-letters only its message), but the columns are built once for all:
    building them per message cost ~110 µs each, which capped single-record Pub/Sub
    messages at ~9k/s (`decode_message` per message) against ~200k/s built together.
    """
    rows = _Rows()
    errors: list[list[DecodeError]] = []
    for index, message in enumerate(messages):
        start = len(rows.wires)
        try:
            errors.append(_read_message(rows, index, message, limits))
        except Exception as e:
            rows.truncate(start)
            errors.append([_internal_error(message.data, message.first_line, e)])
    batches: list[LogBatch] = []
    origins: list[npt.NDArray[np.int64]] = []
    lines: list[npt.NDArray[np.int64]] = []
    failed: set[int] = set()
    origin_all = np.array(rows.origins, dtype=np.int64)
    line_all = np.array(rows.lines, dtype=np.int64)
    pending = _width_groups(rows.embeddings) if rows.wires else []
    while pending:
        group = pending.pop(0)
        try:
            # row positions stand in for line numbers, to map bad rows to their message
            batch, kept, bad = build_batch(
                [rows.wires[i] for i in group],
                group,
                [rows.raws[i] for i in group],
                limits.expected_embedding_dim,
                [rows.embeddings[i] for i in group],
            )
        except Exception as e:
            # find the records that break it: build each alone. They cost only themselves
            broken = {i: err for i in group if (err := _breaks_alone(rows, i, limits))}
            if broken:
                for i, err in broken.items():
                    reason = f"internal decoder error ({type(err).__name__}: {err})"
                    errors[rows.origins[i]].append(
                        DecodeError(rows.lines[i], reason, rows.raws[i], None, "internal_error")
                    )
                rest = [i for i in group if i not in broken]
                if rest:
                    pending.append(rest)
                continue
            owners = sorted({rows.origins[i] for i in group})
            if len(owners) > 1:  # find the message that breaks it: build each one alone
                pending.extend([i for i in group if rows.origins[i] == m] for m in owners)
                continue
            failed.add(owners[0])
            message = messages[owners[0]]
            errors[owners[0]] = [_internal_error(message.data, message.first_line, e)]
            continue
        for error in bad:
            errors[rows.origins[error.line]].append(replace(error, line=rows.lines[error.line]))
        batches.append(batch)
        origins.append(origin_all[kept])
        lines.append(line_all[kept])
    if failed:  # a message that failed in one group must not leave rows in another
        keeps = [np.flatnonzero(~np.isin(o, sorted(failed))) for o in origins]
        batches = [b.take(k) for b, k in zip(batches, keeps, strict=True)]
        origins = [o[k] for o, k in zip(origins, keeps, strict=True)]
        lines = [ln[k] for ln, k in zip(lines, keeps, strict=True)]
    nonempty = [i for i, b in enumerate(batches) if len(b)]
    return DecodedPoll(
        tuple(batches[i] for i in nonempty),
        tuple(origins[i] for i in nonempty),
        tuple(lines[i] for i in nonempty),
        tuple(tuple(sorted(errs, key=lambda err: err.line)) for errs in errors),
    )


def _to_log(wire: Wire, line: int, raw: bytes) -> PredictionLog | DecodeError:
    """One record as the pydantic model; whatever goes wrong costs only this record."""
    values = {name: getattr(wire, name) for name in CANONICAL_FIELDS}
    try:
        return PredictionLog.model_validate({k: v for k, v in values.items() if v is not None})
    except ValidationError as e:
        first = e.errors()[0]
        field = ".".join(str(p) for p in first["loc"]) or None
        return DecodeError(line, f"{first['msg']}, got {first.get('input')!r}", raw, field)
    except Exception as e:
        reason = f"internal decoder error ({type(e).__name__}: {e})"
        return DecodeError(line, reason, raw, None, "internal_error")


def decode_records(
    data: bytes,
    *,
    format_hint: str | None = None,
    first_line: int = 1,
    limits: DecodeLimits = DecodeLimits(),
) -> list[PredictionLog | DecodeError]:
    """Slow path for `lookout decode`: pydantic records in input order."""
    try:
        items = decode_items(
            data, format_hint, first_line, limits.max_record_bytes, limits.max_depth
        )
    except Exception as e:  # a bug in splitting: nothing can be told apart
        return [_internal_error(data, first_line, e)]
    out: list[PredictionLog | DecodeError] = [
        item if isinstance(item, DecodeError) else _to_log(item, line, raw)
        for line, raw, item in items
    ]
    embeddings = [o.embedding if isinstance(o, PredictionLog) else None for o in out]
    for i, reason in embedding_problems(embeddings, limits.expected_embedding_dim).items():
        line, raw, _ = items[i]
        out[i] = DecodeError(line, reason, raw, "embedding")
    return out
