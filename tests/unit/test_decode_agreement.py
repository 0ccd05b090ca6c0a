"""The columnar hot path and the pydantic slow path accept, reject and read records alike.

Both share the record stage, and the slow path re-validates every record with `PredictionLog`,
so any column check that drifts from the model's bounds shows up here.
"""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

import numpy as np
import orjson

from schemas.batch import LogBatch
from schemas.decode import decode_message, decode_records
from schemas.prediction_log import PredictionLog

WIRE = Path(__file__).parents[1] / "fixtures" / "wire"
CORPUS = Path("../shared/payloads/responses.ndjson")


def corpus_envelopes() -> list[bytes]:
    out = []
    for line in CORPUS.read_bytes().splitlines():
        entry = orjson.loads(line)
        body = entry["response_body"]
        first = body[0] if isinstance(body, list) else body
        model = entry["request_model"] or first.get("model") or first.get("modelVersion") or "m"
        out.append(
            orjson.dumps(
                {
                    "timestamp": "2025-01-01T00:00:00Z",
                    "model": model,
                    "latency_ms": 1,
                    "response_body": body,
                }
            )
        )
    return out


# records made to sit on every bound the model declares
EDGES = [
    b'{"timestamp": "2024-01-01T00:00:00Z", "model": "m", "safety_scores": {"a": 1.0}}',
    b'{"timestamp": "2024-01-01T00:00:00Z", "model": "m", "safety_scores": {"a": 1.01}}',
    b'{"timestamp": "2024-01-01T00:00:00Z", "model": "m", "safety_scores": {"a": -0.0}}',
    b'{"timestamp": "2024-01-01T00:00:00Z", "model": "m", "latency_ms": 0}',
    b'{"timestamp": "2024-01-01T00:00:00Z", "model": "m", "output_tokens": -1}',
    b'{"timestamp": "2024-01-01T00:00:00Z", "model": "m", "citation_count": 1.5}',
    b'{"timestamp": "2024-01-01T00:00:00Z", "model": "m", "embedding": []}',
    b'{"timestamp": "2024-01-01T00:00:00Z", "model": "m", "block_stage": "tool"}',
    b'{"timestamp": "2024-01-01T00:00:00Z", "model": "' + b"x" * 257 + b'"}',
    b'{"timestamp": "2024-01-01T00:00:00Z", "model": "' + b"x" * 256 + b'"}',
    b'{"timestamp": "2024-01-01T00:00:00Z", "model": "m", "request_id": ""}',
    b'{"timestamp": "2024-01-01T00:00:00Z", "model": "m", "labels": {"a": 1}}',
    b'{"timestamp": "2024-01-01T00:00:00Z", "model": "m", "blocked": "yes"}',
    b'{"timestamp": 1704067200, "model": "m"}',
]


def messages() -> list[bytes]:
    fixtures = [p.read_bytes() for p in sorted(WIRE.iterdir())]
    return [*fixtures, *corpus_envelopes(), b"\n".join(EDGES)]


def assert_same_columns(a: LogBatch, b: LogBatch) -> None:
    for f in fields(LogBatch):
        x, y = getattr(a, f.name), getattr(b, f.name)
        if f.name == "safety_scores":
            assert sorted(x) == sorted(y)
            for k in x:
                np.testing.assert_array_equal(x[k], y[k])
        elif isinstance(x, np.ndarray) and x.dtype == object:
            assert list(x) == list(y), f.name
        else:
            np.testing.assert_array_equal(x, y, err_msg=f.name)


def test_fast_and_slow_paths_agree_on_every_fixture_and_corpus_record() -> None:
    for data in messages():
        fast = decode_message(data)
        slow = decode_records(data)
        logs = [r for r in slow if isinstance(r, PredictionLog)]
        slow_errors = [r for r in slow if not isinstance(r, PredictionLog)]
        assert [(e.line, e.field) for e in fast.errors] == [
            (e.line, e.field) for e in slow_errors
        ], data[:200]
        assert [e.error_type for e in slow_errors] == [e.error_type for e in fast.errors]
        assert_same_columns(fast.batch, LogBatch.from_logs(logs))


def test_edge_records_are_judged_as_the_model_judges_them() -> None:
    fast = decode_message(b"\n".join(EDGES))
    assert list(fast.lines) == [1, 3, 4, 10]
    for line, raw in enumerate(EDGES, start=1):
        record = orjson.loads(raw)
        record.setdefault("request_id", "derived by the decoder")
        accepted_by_model = True
        try:
            PredictionLog.model_validate(record)
        except ValueError:
            accepted_by_model = False
        if line >= len(EDGES) - 1:
            # deliberately stricter than pydantic's lax mode: "yes" is not a boolean, and a bare
            # epoch number is ambiguous (seconds or milliseconds?), so timestamps are RFC 3339
            assert accepted_by_model and line not in fast.lines
            continue
        assert accepted_by_model == (line in fast.lines), raw
