"""The compiled decoder's agreement with the Python reference, shared by the unit and fuzz tests.

`decode_messages` takes the compiled fast path; `reference_decode_messages` is the Python
decoder. They agree when they give bit-identical columns (floats compared by their bits), the
same request ids, rows in the same order from the same messages and lines, and the same
`DecodeError`s (line, field, reason, raw bytes).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import fields

import numpy as np

from schemas.batch import LogBatch
from schemas.decode import compiled
from schemas.decode.api import (
    DecodedPoll,
    DecodeLimits,
    MessageBytes,
    decode_messages,
    reference_decode_messages,
)


def _same_floats(a: np.ndarray, b: np.ndarray, what: str) -> None:
    assert a.dtype == b.dtype and a.shape == b.shape, what
    nan_a, nan_b = np.isnan(a), np.isnan(b)
    assert np.array_equal(nan_a, nan_b), what
    assert np.where(nan_a, 0, a).tobytes() == np.where(nan_b, 0, b).tobytes(), what


def assert_same_batch(a: LogBatch, b: LogBatch) -> None:
    for f in fields(LogBatch):
        x, y = getattr(a, f.name), getattr(b, f.name)
        if f.name == "safety_scores":
            assert list(x) == list(y)
            for category in x:
                _same_floats(x[category], y[category], f"safety_scores.{category}")
        elif x.dtype == object:
            assert x.tolist() == y.tolist(), f.name
            assert [type(v) for v in x] == [type(v) for v in y], f.name
        elif x.dtype.kind == "f":
            _same_floats(x, y, f.name)
        else:
            assert x.dtype == y.dtype and x.tobytes() == y.tobytes(), f.name
    assert a.embeddings.shape == b.embeddings.shape


DEFAULT = DecodeLimits()


def assert_agree(messages: Sequence[MessageBytes], limits: DecodeLimits = DEFAULT) -> DecodedPoll:
    assert compiled.enabled(), "the compiled decoder is not built"
    fast = decode_messages(messages, limits=limits)
    ref = reference_decode_messages(messages, limits=limits)
    assert len(fast.batches) == len(ref.batches)
    for a, b in zip(fast.batches, ref.batches, strict=True):
        assert_same_batch(a, b)
    for x, y in zip(fast.origins, ref.origins, strict=True):
        assert x.tolist() == y.tolist()
    for x, y in zip(fast.lines, ref.lines, strict=True):
        assert x.tolist() == y.tolist()
    assert fast.errors == ref.errors
    return fast
