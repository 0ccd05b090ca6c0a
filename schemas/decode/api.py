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
from schemas.decode.columns import Vector, build_batch, embedding_problems
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


def decode_message(
    data: bytes,
    *,
    format_hint: str | None = None,
    first_line: int = 1,
    limits: DecodeLimits = DecodeLimits(),
) -> DecodedMessage:
    """Decode one message (one record or NDJSON) into columns; never raises on bad input.

    The whole message is turned into columns at once: building them a few hundred records at
    a time measured no faster, and the embedding rule needs the whole message anyway.
    """
    try:
        rows: list[Wire] = []
        lines: list[int] = []
        raws: list[bytes] = []
        errors: list[DecodeError] = []
        embeddings: list[Vector | None] = []
        add_row, add_line, add_raw = rows.append, lines.append, raws.append
        add_embedding = embeddings.append
        for line, raw, item in iter_items(data, format_hint, first_line, limits.max_record_bytes):
            if isinstance(item, DecodeError):
                errors.append(item)
                continue
            add_row(item)
            add_line(line)
            add_raw(raw)
            emb = item.embedding
            if emb is None:
                add_embedding(None)
            else:  # to float32 now, while its floats are in cache (see build_batch); fromiter
                # gives the same values as np.array of the list, at half the cost
                add_embedding(np.fromiter(emb, np.float32, len(emb)))
                item.embedding = None
        batch, line_array, bad = build_batch(
            rows, lines, raws, limits.expected_embedding_dim, embeddings
        )
    except Exception as e:
        empty = np.zeros(0, dtype=np.int64)
        return DecodedMessage(LogBatch.empty(), (_internal_error(data, first_line, e),), empty)
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
