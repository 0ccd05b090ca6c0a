"""Seed inputs for the decoder fuzzing: good lines of every wire format, and known bad lines.

Good lines come from three places, all inside the repository: the recorded provider payloads
(`tests/fixtures/payloads/responses.ndjson`, each body wrapped in an envelope as a gateway
sends it), the wire fixtures written from the public API docs, and the simulator's six wire
formats (`worker.sources.wire_encode`). Only lines that decode to records with no error on
their own are kept as "good", so a property can say exactly what a bad neighbour may not change.

Known bad lines are the failures measured against the decoder (issue 9): a 50,000-deep line,
invalid UTF-8, a line over the size limit, `[1,2,3]`, numbers out of range, NaN, and so on.
"""

from __future__ import annotations

from datetime import UTC, datetime
from functools import cache
from pathlib import Path

import orjson

from schemas.decode.api import DecodeLimits, decode_message
from worker.sources.simulator import SimulationConfig, simulate_logs
from worker.sources.wire_encode import FORMATS, encode

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
#: embeddings of the simulator's lines; with this width configured, whether one line's
#: embedding is accepted never depends on the other lines of its message (the majority rule
#: applies only when no width is configured, and is per message by design)
EMBEDDING_DIM = 8
LIMITS = DecodeLimits(expected_embedding_dim=EMBEDDING_DIM)
GOOD_RECORD = {
    "request_id": "fuzz-1",
    "timestamp": "2025-01-01T00:00:00Z",
    "model": "m",
    "latency_ms": 12.5,
}


def _envelope(entry: dict[str, object]) -> bytes:
    body = entry["response_body"]
    first = body[0] if isinstance(body, list) and body else body
    model = entry.get("request_model") or (
        isinstance(first, dict) and (first.get("model") or first.get("modelVersion"))
    )
    envelope = {
        "timestamp": "2025-01-01T00:00:00Z",
        "model": model or "unknown",
        "latency_ms": 321.0,
        "response_body": body,
    }
    return orjson.dumps(envelope)


def _simulated() -> list[bytes]:
    config = SimulationConfig(
        start=datetime(2025, 1, 1, tzinfo=UTC),
        hours=0.002,
        calls_per_minute=120,
        embedding_dim=EMBEDDING_DIM,
        embedding_fraction=0.5,
        with_text=True,
        seed=3,
    )
    logs = list(simulate_logs(config))
    return [encode(log, fmt) for i, log in enumerate(logs) for fmt in FORMATS[i % 2 :: 2]]


def _decodes_cleanly(line: bytes) -> bool:
    decoded = decode_message(line, limits=LIMITS)
    return not decoded.errors and len(decoded.batch) > 0


@cache
def good_lines() -> tuple[bytes, ...]:
    """Every seed line that decodes to records with no error on its own."""
    lines = [orjson.dumps(GOOD_RECORD)]
    for raw in (FIXTURES / "payloads" / "responses.ndjson").read_bytes().splitlines():
        lines.append(_envelope(orjson.loads(raw)))
    for path in sorted((FIXTURES / "wire").glob("*.json")):
        lines.append(orjson.dumps(orjson.loads(path.read_bytes())))
    lines.extend(_simulated())
    return tuple(line for line in lines if _decodes_cleanly(line))


def _with(**fields: object) -> bytes:
    return orjson.dumps(GOOD_RECORD | fields)


#: lines that must each be one error, whatever their neighbours; name → line
KNOWN_BAD: dict[str, bytes] = {
    "deep_object": b'{"a":' * 50_000 + b"1" + b"}" * 50_000,
    "deep_array": b"[" * 50_000 + b"]" * 50_000,
    "deep_in_a_known_record": _with(labels={})[:-1] + b',"x":' + b"[" * 70 + b"]" * 70 + b"}",
    "invalid_utf8": _with(model="m")[:-1] + b',"model_version":"\xff\xfe"}',
    "oversized": _with(prompt="x" * (LIMITS.max_record_bytes + 10)),
    "array_of_numbers": b"[1,2,3]",
    "empty_array": b"[]",
    "number": b"42",
    "string": b'"a record?"',
    "null": b"null",
    "truncated": _with()[:25],
    "nan": _with(latency_ms=0.5).replace(b"0.5", b"NaN"),
    "infinity": _with(latency_ms=0.5).replace(b"0.5", b"Infinity"),
    "overflow_to_inf": _with(latency_ms=0.5).replace(b"0.5", b"1e999"),
    "huge_int": _with(input_tokens=1).replace(
        b'"input_tokens":1', b'"input_tokens":1' + b"0" * 400
    ),
    "int_beyond_float": _with(output_tokens=1).replace(b":1}", b":99999999999999999999}"),
    "string_latency": _with(latency_ms="812ms"),
    "negative_tokens": _with(input_tokens=-3),
    "embedding_beyond_float32": _with(embedding=[1.0] * EMBEDDING_DIM).replace(
        b"[1.0", b"[1e300", 1
    ),
    "embedding_wrong_dimension": _with(embedding=[0.5] * (EMBEDDING_DIM + 1)),
    "embedding_empty": _with(embedding=[]),
    "score_out_of_range": _with(safety_scores={"hate": 1.5}),
    "naive_timestamp": _with(timestamp="2025-01-01T00:00:00"),
    "no_model": orjson.dumps({"timestamp": "2025-01-01T00:00:00Z"}),
    "unknown_shape": b'{"id":"msg_1","type":"message","content":[]}',
    "sse_too_deep": _with(response_body="data: " + "[" * 5_000 + "]" * 5_000 + "\n\n"),
    "otlp_time_overflow": (
        b'{"resourceSpans":[{"scopeSpans":[{"spans":[{"startTimeUnixNano":"1'
        + b"0" * 400
        + b'","endTimeUnixNano":"2","attributes":[{"key":"gen_ai.request.model",'
        b'"value":{"stringValue":"m"}}]}]}]}]}'
    ),
    "otlp_int_not_a_number": (
        b'{"resourceSpans":[{"scopeSpans":[{"spans":[{"startTimeUnixNano":"1",'
        b'"endTimeUnixNano":"2","attributes":[{"key":"gen_ai.request.model",'
        b'"value":{"stringValue":"m"}},{"key":"gen_ai.usage.input_tokens",'
        b'"value":{"intValue":"12abc"}}]}]}]}]}'
    ),
    "bom_in_the_middle": b'{"model":\xef\xbb\xbf"m"}',
    "control_bytes": b"\x00\x01\x02{",
}
