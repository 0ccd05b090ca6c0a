"""The columnar hot path and the pydantic slow path accept, reject and read records alike.

Both share the record stage, and the slow path re-validates every record with `PredictionLog`,
so any column check that drifts from the model's bounds shows up here.
"""

from __future__ import annotations

from dataclasses import fields
from datetime import UTC, datetime
from itertools import islice
from pathlib import Path

import numpy as np
import orjson

from schemas.batch import LogBatch
from schemas.decode import decode_message, decode_records
from schemas.prediction_log import PredictionLog
from worker.sources.simulator import SimulationConfig, simulate_logs
from worker.sources.wire_encode import encode_mixed

WIRE = Path(__file__).parents[1] / "fixtures" / "wire"
CORPUS = Path(__file__).parents[1] / "fixtures" / "payloads" / "responses.ndjson"


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


def simulated_traffic(n: int, embedding_fraction: float) -> list[bytes]:
    """`lookout simulate` lines in every wire format (blocks, errors, OTLP spans included)."""
    config = SimulationConfig(
        start=datetime(2025, 1, 1, tzinfo=UTC),
        hours=0.05,
        embedding_dim=8,
        embedding_fraction=embedding_fraction,
        seed=3,
        with_text=True,
    )
    return list(islice(encode_mixed(simulate_logs(config), seed=3), n))


#: more records than any batching inside the decoder would take at once
LONG = 256


def long_messages() -> list[bytes]:
    """Long messages, so rules that span a message (embedding dimensions) are exercised."""
    lines = simulated_traffic(3 * LONG + 17, 0.3)
    head = b'{"timestamp": "2024-01-01T00:00:00Z", "model": "m", '
    # scores a body computed are checked with the columns (a native record's, while parsing)
    palm = {"predictions": [{"safetyAttributes": {"categories": ["Z", "A"], "scores": [1.5, -1]}}]}
    bad_scores = head + b'"response_body": ' + orjson.dumps(palm) + b"}"
    with_dim = [head + b'"embedding": ' + orjson.dumps([0.5] * d) + b"}" for d in (3, 4)]
    return [
        b"\n".join(lines),
        # a bad row late in the message, a bad line early, CRLF terminators
        b"\r\n".join([lines[0], b"{", *lines[1:300], bad_scores, *lines[300:]]),
        # embeddings of 3 dimensions first, more of 4 far after: the whole message decides
        b"\n".join([with_dim[0]] * 5 + [head[:-2] + b"}"] * LONG + [with_dim[1]] * 9),
    ]


def messages() -> list[bytes]:
    fixtures = [p.read_bytes() for p in sorted(WIRE.iterdir())]
    return [*fixtures, *corpus_envelopes(), b"\n".join(EDGES), *long_messages()]


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
        assert [e.raw for e in fast.errors] == [e.raw for e in slow_errors], data[:200]
        assert_same_columns(fast.batch, LogBatch.from_logs(logs))


def test_long_messages_keep_every_record_and_rule() -> None:
    whole, crlf, dims = (decode_message(m) for m in long_messages())
    assert not whole.errors and len(whole.batch) == 3 * LONG + 17
    assert len(set(whole.batch.model)) == 3 and whole.batch.blocked.any()
    assert [(e.line, e.field, e.raw) for e in crlf.errors] == [
        (2, None, b"{"),
        (302, "safety_scores.z", crlf.errors[1].raw),
    ]
    assert crlf.errors[1].reason == "must be a probability between 0 and 1, got 1.5"
    assert not crlf.errors[1].raw.endswith(b"\r")
    # 9 embeddings of 4 dimensions outvote the 5 of 3, although the 3s came first
    assert [e.line for e in dims.errors] == [1, 2, 3, 4, 5]
    assert dims.batch.embeddings.shape == (9, 4)


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
