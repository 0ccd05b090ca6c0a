"""The decoders' promises about bad input, as assertions shared by unit tests and the fuzzer.

1. Nothing raises past the decoder's boundary (`decode_messages`, `decode_records`).
2. Every non-blank input line is either records or a `DecodeError` with a reason. Two
   exceptions are by design: an OTLP document whose spans carry no `gen_ai.*` attribute (a
   collector exports whole traces; HTTP and database spans are not calls), and a message that
   opens with a lone `{` or `[` (a pretty-printed document: its lines are one record).
3. A bad line between good lines changes nothing in the good lines' decoding: the same columns
   on the hot path, the same records on the pydantic path, and no error anywhere but its own.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import fields
from typing import Any

import msgspec
import numpy as np

from schemas.batch import LogBatch
from schemas.decode.api import DecodeLimits, MessageBytes, decode_messages, decode_records
from schemas.decode.wire import ARRAY_DECODER, WIRE_DECODER
from schemas.errors import DecodeError
from schemas.prediction_log import PredictionLog


def assert_same_columns(got: LogBatch, want: LogBatch) -> None:
    """Every column of two batches equal (NaN equal to NaN, object columns by value).

    Representation only is ignored: a score category with no value in any row, and the width
    of an empty embedding block (rows taken out of a bigger batch keep both).
    """
    assert len(got) == len(want), (len(got), len(want))
    for f in fields(LogBatch):
        a, b = getattr(got, f.name), getattr(want, f.name)
        if f.name == "safety_scores":
            a = {k: v for k, v in a.items() if not np.isnan(v).all()}
            b = {k: v for k, v in b.items() if not np.isnan(v).all()}
            assert sorted(a) == sorted(b), f.name
            for key in a:
                np.testing.assert_array_equal(a[key], b[key], err_msg=f"safety_scores.{key}")
        elif f.name == "embeddings" and not len(a) and not len(b):
            continue
        elif a.dtype == object:
            assert list(a) == list(b), f.name
        else:
            np.testing.assert_array_equal(a, b, err_msg=f.name)


def _only_batch(data: bytes, limits: DecodeLimits) -> tuple[LogBatch, Any, tuple[DecodeError, ...]]:
    poll = decode_messages([MessageBytes(data)], limits=limits)
    assert len(poll.batches) <= 1, "one message with a configured width is one batch"
    if not poll.batches:
        return LogBatch.empty(), np.zeros(0, dtype=np.int64), poll.errors[0]
    return poll.batches[0], poll.lines[0], poll.errors[0]


def _harmless_silence(line: bytes) -> bool:
    """A line that may decode to nothing without an error: blank, or OTLP documents (as the
    decoder reads them) with no GenAI span."""
    text = line.strip()
    if not text:
        return True
    try:
        raws = ARRAY_DECODER.decode(text) if text[:1] == b"[" else [text]
        docs = [WIRE_DECODER.decode(bytes(raw)) for raw in raws]
    except (msgspec.DecodeError, UnicodeDecodeError):
        return False
    return bool(docs) and all(doc.resourceSpans is not None for doc in docs)


def assert_every_line_accounted(lines: Sequence[bytes], limits: DecodeLimits) -> None:
    """Promises 1 and 2 on one message made of `lines`, on both paths."""
    data = b"\n".join(lines)
    _, kept, errors = _only_batch(data, limits)
    with_records = set(kept.tolist())
    with_errors = {e.line for e in errors}
    for e in errors:
        assert e.reason.strip(), e
        assert 1 <= e.line <= len(lines), e
    start = next((i for i, line in enumerate(lines) if line.strip()), 0)
    if lines[start].strip() in (b"{", b"[") and len(errors) == 1 and not len(kept):
        # a message opening like a pretty-printed document, which did not parse, is one bad
        # document unless a later line is a document of its own (then it is NDJSON)
        assert errors[0].line == start + 1
    else:
        for number, line in enumerate(lines, start=1):
            if number not in with_records and number not in with_errors:
                assert _harmless_silence(line), f"line {number}: neither records nor an error"
    slow = decode_records(data, limits=limits)
    slow_errors = {e.line for e in slow if isinstance(e, DecodeError)}
    assert slow_errors == with_errors, "both paths refuse the same lines"
    assert sum(isinstance(r, PredictionLog) for r in slow) == len(kept)


def assert_isolated(
    good: Sequence[bytes], bad: bytes, at: int, limits: DecodeLimits
) -> list[DecodeError]:
    """Promise 3: `bad` inserted before `good[at]` leaves the good lines' decoding unchanged.

    Returns the errors the bad line got (all on its own line number).
    """
    assert 1 <= at < len(good), "between good lines"
    assert b"\n" not in bad
    mixed = [*good[:at], bad, *good[at:]]
    bad_number = at + 1
    # hot path: the same columns for the good lines; errors only on the bad line
    alone, _, alone_errors = _only_batch(b"\n".join(good), limits)
    assert not alone_errors, "the good lines are good on their own"
    batch, kept, errors = _only_batch(b"\n".join(mixed), limits)
    assert all(e.line == bad_number for e in errors), [e.describe() for e in errors]
    assert_same_columns(batch.take(np.flatnonzero(kept != bad_number)), alone)
    # pydantic path: the same records before and after the bad line's items
    before = decode_records(b"\n".join(good[:at]), limits=limits)
    whole = decode_records(b"\n".join(good), limits=limits)
    got = decode_records(b"\n".join(mixed), limits=limits)
    own = len(got) - len(whole)
    assert own >= 0
    assert got[: len(before)] == before
    assert got[len(before) + own :] == whole[len(before) :]
    slow_errors = [r for r in got[len(before) : len(before) + own] if isinstance(r, DecodeError)]
    assert all(e.line == bad_number for e in slow_errors)
    assert bool(slow_errors) == bool(errors), "both paths refuse the bad line, or neither"
    return list(errors)
