"""Public entry points: a Pub/Sub message or a chunk of an NDJSON file → records.

`decode_message` is the hot path (columns, no object per record); `decode_records` is the slow
path for `lookout decode` (pydantic records). Both start from the same shared decoding
(`schemas.decode.records`), and the pydantic model re-validates every record on the slow path,
so a test comparing the two over every fixture proves the column checks match the model.
Bad input never raises: it comes back as `DecodeError`s carrying the original bytes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from pydantic import ValidationError

from schemas.batch import LogBatch
from schemas.decode.columns import build_batch, embedding_problems
from schemas.decode.records import FORMATS, decode_items, iter_items
from schemas.decode.wire import CANONICAL_FIELDS, Wire
from schemas.errors import DecodeError
from schemas.prediction_log import PredictionLog

__all__ = ["FORMATS", "DecodeLimits", "DecodedMessage", "decode_message", "decode_records"]


@dataclass(frozen=True)
class DecodeLimits:
    """Bounds on what one record may be; configuration, read once at the edge."""

    max_record_bytes: int = 1_048_576
    expected_embedding_dim: int | None = None


@dataclass(frozen=True)
class DecodedMessage:
    """The good records of a message as columns, and the bad ones as errors."""

    batch: LogBatch
    errors: tuple[DecodeError, ...]
    #: per good row, the 1-based line it came from (same order as batch rows)
    lines: npt.NDArray[np.int64]


def _internal_error(data: bytes, first_line: int, exc: Exception) -> DecodeError:
    # a bug of ours must still not stop the stream: the message is dead-lettered with the reason
    reason = f"internal decoder error ({type(exc).__name__}: {exc})"
    return DecodeError(first_line, reason, data, None, "internal_error")


#: records turned into columns at a time: holding a whole message of decoded records before
#: building columns costs about twice as much per record (the objects no longer stay in cache)
CHUNK_RECORDS = 256


def decode_message(
    data: bytes,
    *,
    format_hint: str | None = None,
    first_line: int = 1,
    limits: DecodeLimits = DecodeLimits(),
) -> DecodedMessage:
    """Decode one message (one record or NDJSON) into columns; never raises on bad input."""
    try:
        decoded = _decode_chunked(data, format_hint, first_line, limits)
        if decoded is None:  # embeddings of several dimensions: the whole message decides
            decoded = _decode_whole(data, format_hint, first_line, limits)
    except Exception as e:
        empty = np.zeros(0, dtype=np.int64)
        return DecodedMessage(LogBatch.empty(), (_internal_error(data, first_line, e),), empty)
    return decoded


def _decode_chunked(
    data: bytes, format_hint: str | None, first_line: int, limits: DecodeLimits
) -> DecodedMessage | None:
    """Columns built a chunk of records at a time; None when the message needs `_decode_whole`.

    Exact as long as every embedding of the message has one dimension (or the limits fix it):
    only then is the per-message majority rule of `embedding_problems` the same per chunk.
    """
    batches: list[LogBatch] = []
    line_arrays: list[npt.NDArray[np.int64]] = []
    errors: list[DecodeError] = []
    bad_rows = False
    dims: set[int] = set()
    rows: list[Wire] = []
    lines: list[int] = []
    raws: list[bytes] = []
    expected = limits.expected_embedding_dim
    items = iter_items(data, format_hint, first_line, limits.max_record_bytes)
    while True:
        for line, raw, item in items:
            if isinstance(item, DecodeError):
                errors.append(item)
            else:
                rows.append(item)
                lines.append(line)
                raws.append(raw)
                if len(rows) == CHUNK_RECORDS:
                    break
        if not rows:
            break
        if expected is None:
            dims.update([len(e) for r in rows if (e := r.embedding)])
            if len(dims) > 1:
                return None
        batch, line_array, bad = build_batch(rows, lines, raws, expected)
        batches.append(batch)
        line_arrays.append(line_array)
        if bad:
            errors += bad
            bad_rows = True
        rows, lines, raws = [], [], []
    if bad_rows:
        errors.sort(key=lambda err: err.line)
    line_array = np.concatenate(line_arrays) if line_arrays else np.zeros(0, dtype=np.int64)
    return DecodedMessage(LogBatch.concat(batches), tuple(errors), line_array)


def _decode_whole(
    data: bytes, format_hint: str | None, first_line: int, limits: DecodeLimits
) -> DecodedMessage:
    """Every record of the message into columns at once (embedding dimensions disagree)."""
    rows: list[Wire] = []
    lines: list[int] = []
    raws: list[bytes] = []
    errors: list[DecodeError] = []
    for line, raw, item in iter_items(data, format_hint, first_line, limits.max_record_bytes):
        if isinstance(item, DecodeError):
            errors.append(item)
        else:
            rows.append(item)
            lines.append(line)
            raws.append(raw)
    batch, line_array, bad = build_batch(rows, lines, raws, limits.expected_embedding_dim)
    if bad:
        errors = sorted([*errors, *bad], key=lambda err: err.line)
    return DecodedMessage(batch, tuple(errors), line_array)


def _to_log(wire: Wire, line: int, raw: bytes) -> PredictionLog | DecodeError:
    values = {name: getattr(wire, name) for name in CANONICAL_FIELDS}
    try:
        return PredictionLog.model_validate({k: v for k, v in values.items() if v is not None})
    except ValidationError as e:
        first = e.errors()[0]
        field = ".".join(str(p) for p in first["loc"]) or None
        return DecodeError(line, f"{first['msg']}, got {first.get('input')!r}", raw, field)


def decode_records(
    data: bytes,
    *,
    format_hint: str | None = None,
    first_line: int = 1,
    limits: DecodeLimits = DecodeLimits(),
) -> list[PredictionLog | DecodeError]:
    """Slow path for `lookout decode`: pydantic records in input order."""
    try:
        items = decode_items(data, format_hint, first_line, limits.max_record_bytes)
        out: list[PredictionLog | DecodeError] = [
            item if isinstance(item, DecodeError) else _to_log(item, line, raw)
            for line, raw, item in items
        ]
        embeddings = [o.embedding if isinstance(o, PredictionLog) else None for o in out]
        for i, reason in embedding_problems(embeddings, limits.expected_embedding_dim).items():
            line, raw, _ = items[i]
            out[i] = DecodeError(line, reason, raw, "embedding")
    except Exception as e:
        return [_internal_error(data, first_line, e)]
    return out
