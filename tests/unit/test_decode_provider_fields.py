"""Fields of real provider payloads that were misread, each in both decoders.

Gemini's usage block: input tokens are what is billed as input, tool prompts included. A call
with Search grounding or code execution reports the tool-use prompts apart from the prompt
(`toolUsePromptTokenCount`); `totalTokenCount` counts them. Read as the prompt alone, such a
call's input tokens fell short of its total by hundreds of tokens, and a token-usage shift from
a new tool was invisible.
"""

from __future__ import annotations

from typing import Any

import orjson

from schemas.decode.api import MessageBytes
from tests.decode_agreement import assert_agree

HEAD = {"request_id": "r", "timestamp": "2024-01-01T00:00:00Z", "model": "gemini-2.5-flash"}


def gemini(usage: dict[str, int]) -> bytes:
    body = {"candidates": [{"index": 0, "finishReason": "STOP"}], "usageMetadata": usage}
    record: dict[str, Any] = HEAD | {"latency_ms": 812.0, "response_body": body}
    return orjson.dumps(record)


def test_tool_use_prompt_tokens_are_input_tokens_in_both_decoders() -> None:
    usage = {
        "promptTokenCount": 12,
        "candidatesTokenCount": 40,
        "toolUsePromptTokenCount": 310,
        "thoughtsTokenCount": 100,
        "totalTokenCount": 462,
    }
    without_tools = {"promptTokenCount": 12, "candidatesTokenCount": 40, "totalTokenCount": 52}
    lines = [gemini(usage), gemini(without_tools)]
    for messages in (
        [MessageBytes(line, None, 1) for line in lines],
        [MessageBytes(b"\n".join(lines))],
    ):
        decoded = assert_agree(messages)
        inputs = [int(x) for b in decoded.batches for x in b.input_tokens]
        outputs = [int(x) for b in decoded.batches for x in b.output_tokens]
        assert inputs == [322, 12] and outputs == [140, 40]
        assert inputs[0] + outputs[0] == usage["totalTokenCount"]


def test_a_chat_bison_reply_is_read_as_the_response() -> None:
    """PaLM's chat model answers in `predictions[].candidates[]` (text-bison in `content`):
    read as text-bison, every chat-bison response was missing and response length blind."""
    body = {
        "predictions": [
            {
                "candidates": [{"author": "1", "content": "Hello there"}],
                "citationMetadata": {"citations": []},
                "safetyAttributes": {"categories": ["Violent"], "scores": [0.1], "blocked": False},
            }
        ],
        "metadata": {"tokenMetadata": {"outputTokenCount": {"totalTokens": 3.0}}},
    }
    record = HEAD | {"model": "chat-bison", "latency_ms": 300.0, "response_body": body}
    decoded = assert_agree([MessageBytes(orjson.dumps(record))])
    (batch,) = decoded.batches
    assert batch.response_length.tolist() == [len("Hello there")]
    assert int(batch.output_tokens[0]) == 3


def test_a_blocking_finish_word_in_a_native_record_is_a_block() -> None:
    """`finish_reason: SAFETY` (or `content_filter`) in a native record is the same block as in
    a body or a span, whatever `blocked` a logger left out or wrote as its default false; a
    block the record states itself keeps its stage and reason."""
    native = HEAD | {"latency_ms": 300.0}
    records = [
        native | {"request_id": "a", "finish_reason": "SAFETY"},
        native | {"request_id": "b", "finish_reason": "content_filter", "blocked": False},
        native | {"request_id": "c", "finish_reason": "stop"},
        native | {"request_id": "e", "finish_reason": "SAFETY", "block_reason": ""},
        native
        | {
            "request_id": "d",
            "finish_reason": "SAFETY",
            "blocked": True,
            "block_stage": "prompt",
            "block_reason": "BLOCKLIST",
        },
    ]
    lines = [orjson.dumps(r) for r in records]
    for messages in (
        [MessageBytes(line, None, 1) for line in lines],
        [MessageBytes(b"\n".join(lines))],
    ):
        decoded = assert_agree(messages)
        rows = [
            (bool(b.blocked[i]), b.block_stage[i], b.block_reason[i], b.finish_reason[i])
            for b in decoded.batches
            for i in range(len(b))
        ]
        assert rows == [
            (True, "response", "SAFETY", "safety"),
            (True, "response", "CONTENT_FILTER", "safety"),
            (False, None, None, "stop"),
            (True, "response", "SAFETY", "safety"),
            (True, "prompt", "BLOCKLIST", "safety"),
        ]


def test_an_envelopes_default_false_does_not_hide_a_blocked_body() -> None:
    body = {"candidates": [{"index": 0, "finishReason": "SAFETY"}]}
    record = HEAD | {"latency_ms": 300.0, "blocked": False, "response_body": body}
    decoded = assert_agree([MessageBytes(orjson.dumps(record))])
    (batch,) = decoded.batches
    assert bool(batch.blocked[0]) and batch.block_stage[0] == "response"
    assert batch.block_reason[0] == "SAFETY"


def test_a_timestamp_without_seconds_is_told_what_it_lacks() -> None:
    """`06:00Z` carries a timezone; the reason said it needed one."""
    record = HEAD | {"timestamp": "2026-01-05T06:00Z", "latency_ms": 300.0}
    decoded = assert_agree([MessageBytes(orjson.dumps(record))])
    ((error,),) = decoded.errors
    assert error.field == "timestamp"
    assert "a time with seconds and a timezone" in error.reason, error.reason
    assert '"2026-01-05T06:00Z"' in error.reason
