"""An agent framework's trace, exported as OTLP: only the model calls under the agent are calls.

In the GenAI semantic conventions an `invoke_agent` span carries the agent's model and the
usage of the inference spans under it, and an `execute_tool` span has no model at all. Counted
as calls, the agent span doubled every call and token of the trace (and its latency was the
whole agent run), and each tool span was dead-lettered as "a GenAI span needs a model", so
every trace of an agent app failed `lookout replay` with exit status 1.
"""

from __future__ import annotations

from typing import Any

import orjson

from schemas.decode.api import MessageBytes
from tests.decode_agreement import assert_agree

T = 1_704_067_200_000_000_000


def span(
    span_id: str, operation: str, *, model: str | None, tokens: tuple[int, int] | None, **extra: str
) -> dict[str, Any]:
    attributes = [{"key": "gen_ai.operation.name", "value": {"stringValue": operation}}]
    if model is not None:
        attributes.append({"key": "gen_ai.request.model", "value": {"stringValue": model}})
    if tokens is not None:
        for key, count in zip(("input_tokens", "output_tokens"), tokens, strict=True):
            attributes.append({"key": f"gen_ai.usage.{key}", "value": {"intValue": str(count)}})
    for key, value in extra.items():
        attributes.append({"key": key.replace("_", ".", 1), "value": {"stringValue": value}})
    return {
        "traceId": "5b8efff798038103d269b633813fc60c",
        "spanId": span_id,
        "name": f"{operation} {model or 'calc'}",
        "startTimeUnixNano": str(T + int(span_id, 16) * 1_000_000),
        "endTimeUnixNano": str(T + int(span_id, 16) * 1_000_000 + 400_000_000),
        "attributes": attributes,
        "status": {},
    }


def document(*spans: dict[str, Any]) -> bytes:
    return orjson.dumps({"resourceSpans": [{"scopeSpans": [{"spans": list(spans)}]}]})


AGENT = span("0000000000000001", "invoke_agent", model="gpt-4o", tokens=(300, 80))
CHATS = [
    span("0000000000000002", "chat", model="gpt-4o", tokens=(100, 20)),
    span("0000000000000003", "chat", model="gpt-4o", tokens=(200, 60)),
]
TOOL = span("0000000000000004", "execute_tool", model=None, tokens=None, gen_ai_tool_name="calc")


def test_an_agent_trace_counts_its_model_calls_once_and_no_tool_span_is_an_error() -> None:
    decoded = assert_agree([MessageBytes(document(AGENT, *CHATS, TOOL))])
    assert decoded.errors == ((),)
    (batch,) = decoded.batches
    assert len(batch) == 2
    assert int(batch.input_tokens.sum()) == 300 and int(batch.output_tokens.sum()) == 80


def test_agent_and_tool_spans_alone_are_skipped_by_both_decoders() -> None:
    """One span per document is what the compiled decoder reads itself."""
    lines = [document(AGENT), document(TOOL), document(CHATS[0])]
    decoded = assert_agree([MessageBytes(line + b"\n", None, 1) for line in lines])
    assert decoded.errors == ((), (), ())
    assert sum(len(b) for b in decoded.batches) == 1


def test_a_chat_span_named_by_its_operation_is_still_a_call() -> None:
    decoded = assert_agree([MessageBytes(document(*CHATS) + b"\n")])
    assert sum(len(b) for b in decoded.batches) == 2
