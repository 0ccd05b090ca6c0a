"""One finish-reason vocabulary whatever the wire format, so mixed traffic shows no fake drift."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from schemas.decode import decode_message
from schemas.decode.finish import canonical_finish_reason, response_block_reason

HEAD: dict[str, Any] = {"timestamp": "2024-01-01T00:00:00Z", "model": "m", "latency_ms": 1}


@pytest.mark.parametrize(
    ("word", "canonical"),
    [
        ("STOP", "stop"),
        ("stop", "stop"),
        ("MAX_TOKENS", "length"),
        ("length", "length"),
        ("SAFETY", "safety"),
        ("BLOCKLIST", "safety"),
        ("PROHIBITED_CONTENT", "safety"),
        ("SPII", "safety"),
        ("IMAGE_SAFETY", "safety"),
        ("MODEL_ARMOR", "safety"),
        ("content_filter", "safety"),
        ("RECITATION", "recitation"),
        ("tool_calls", "tool_calls"),
        ("function_call", "tool_calls"),
        ("MALFORMED_FUNCTION_CALL", "malformed_function_call"),
        ("FINISH_REASON_12", "finish_reason_12"),
    ],
)
def test_table_and_idempotence(word: str, canonical: str) -> None:
    assert canonical_finish_reason(word) == canonical
    assert canonical_finish_reason(canonical) == canonical


def test_block_reason_is_the_provider_word_upper_cased() -> None:
    assert response_block_reason("content_filter") == "CONTENT_FILTER"
    assert response_block_reason("PROHIBITED_CONTENT") == "PROHIBITED_CONTENT"
    assert response_block_reason("RECITATION") == "RECITATION"
    assert response_block_reason("STOP") is None
    assert response_block_reason("length") is None


def gemini(finish: str | int) -> dict[str, Any]:
    body = {"candidates": [{"index": 0, "finishReason": finish}]}
    return HEAD | {"response_body": body}


def openai(finish: str) -> dict[str, Any]:
    body = {"object": "chat.completion", "choices": [{"index": 0, "finish_reason": finish}]}
    return HEAD | {"response_body": body}


def otlp(finish: str) -> dict[str, Any]:
    def attr(key: str, value: Any) -> dict[str, Any]:
        return {"key": key, "value": value}

    span = {
        "startTimeUnixNano": "1704067200000000000",
        "endTimeUnixNano": "1704067200001000000",
        "attributes": [
            attr("gen_ai.request.model", {"stringValue": "m"}),
            attr(
                "gen_ai.response.finish_reasons",
                {"arrayValue": {"values": [{"stringValue": finish}]}},
            ),
        ],
    }
    return {"resourceSpans": [{"scopeSpans": [{"spans": [span]}]}]}


# (the same outcome in each format's words) → (finish_reason, blocked, block_reason)
SAME_CALL = [
    ([gemini("STOP"), gemini(1), openai("stop"), otlp("stop"), otlp("STOP")], ("stop", None)),
    ([gemini("MAX_TOKENS"), gemini(2), openai("length"), otlp("length")], ("length", None)),
    ([gemini("SAFETY"), gemini(3), otlp("SAFETY")], ("safety", "SAFETY")),
    ([openai("content_filter"), otlp("content_filter")], ("safety", "CONTENT_FILTER")),
    ([gemini("PROHIBITED_CONTENT"), gemini(7)], ("safety", "PROHIBITED_CONTENT")),
    ([gemini("RECITATION"), otlp("recitation")], ("recitation", "RECITATION")),
    ([openai("tool_calls"), openai("function_call"), otlp("tool_calls")], ("tool_calls", None)),
    ([HEAD | {"finish_reason": "STOP"}, HEAD | {"finish_reason": "stop"}], ("stop", None)),
]


@pytest.mark.parametrize(("records", "expected"), SAME_CALL)
def test_every_format_says_the_same_call_in_the_same_words(
    records: list[dict[str, Any]], expected: tuple[str, str | None]
) -> None:
    finish, block_reason = expected
    message = decode_message(b"\n".join(orjson.dumps(r) for r in records))
    assert not message.errors
    assert set(message.batch.finish_reason) == {finish}
    assert set(message.batch.block_reason) == {block_reason}
    assert set(message.batch.blocked) == {block_reason is not None}
    assert set(message.batch.block_stage) == {None if block_reason is None else "response"}
