"""The recorded provider responses decode to what the services meant (blocks, tokens, streams)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import orjson
import pytest

from schemas.decode import decode_message, decode_records
from schemas.prediction_log import PredictionLog

CORPUS = Path(__file__).parents[1] / "fixtures" / "payloads" / "responses.ndjson"
ENTRIES: dict[str, dict[str, Any]] = {
    e["id"]: e for e in map(orjson.loads, CORPUS.read_bytes().splitlines()) if e
}


def envelope(entry: dict[str, Any]) -> bytes:
    body = entry["response_body"]
    first = body[0] if isinstance(body, list) else body
    model = entry["request_model"] or first.get("model") or first.get("modelVersion") or "unknown"
    return orjson.dumps(
        {
            "timestamp": "2025-01-01T00:00:00Z",
            "model": model,
            "latency_ms": 120.0,
            "response_body": body,
        }
    )


def decoded(entry_id: str) -> PredictionLog:
    (record,) = decode_records(envelope(ENTRIES[entry_id]))
    assert isinstance(record, PredictionLog), record
    return record


def test_every_corpus_response_decodes_to_one_record() -> None:
    assert len(ENTRIES) == 34
    for entry_id, entry in ENTRIES.items():
        message = decode_message(envelope(entry))
        assert not message.errors, (entry_id, message.errors)
        assert len(message.batch) == 1, entry_id


# id: (blocked, block_stage, block_reason, finish_reason, input, output, citations)
EXPECTED = {
    "gemini-aistudio-prompt-blocked-safety": (True, "prompt", "SAFETY", None, None, None, None),
    "gemini-vertex-prompt-blocked-model-armor": (
        True,
        "prompt",
        "MODEL_ARMOR",
        None,
        None,
        None,
        None,
    ),
    "gemini-aistudio-finish-safety-blocked-rating": (
        True,
        "response",
        "SAFETY",
        "safety",
        14,
        0,
        0,
    ),
    "gemini-vertex-finish-model-armor": (
        True,
        "response",
        "MODEL_ARMOR",
        "safety",
        19,
        6 + 27,
        0,
    ),
    "gemini-aistudio-recitation-no-content": (
        True,
        "response",
        "RECITATION",
        "recitation",
        18,
        0,
        0,
    ),
    "gemini-aistudio-max-tokens": (False, None, None, "length", 15, 5, 0),
    "gemini-aistudio-max-tokens-thinking-no-parts": (False, None, None, "length", 15, 2, 0),
    "gemini-vertex-int-enum-max-tokens": (False, None, None, "length", 5, 4, 0),
    "gemini-vertex-int-enum-stream-json-array": (False, None, None, "stop", 11, 16 + 232, 0),
    "gemini-vertex-citations": (False, None, None, "stop", 19875, 125, 2),
    "gemini-aistudio-citationsources-functioncall": (False, None, None, "stop", 56, 158, 1),
    "gemini-vertex-unexpected-tool-call": (
        False,
        None,
        None,
        "unexpected_tool_call",
        22,
        3 + 142,
        0,
    ),
    "gemini-vertex-stream-json-array-safety-scores": (False, None, None, "stop", 6, 168, 0),
    "gemini-vertex-sse": (False, None, None, "stop", 8, 388 + 2193, 0),
    "palm-text-bison-predict-sdk-repr": (False, None, None, None, 448, 112, 0),
    "openai-chat-n2-choices": (False, None, None, "stop", 12, 24, None),
    "openai-chat-tool-calls": (False, None, None, "tool_calls", 75, 51, None),
    "openai-chat-length": (False, None, None, "length", 14, 15, 0),
    "openai-chat-sse-include-usage": (False, None, None, "stop", 12, 5, None),
    "azure-chat-stop-filter-results": (False, None, None, "stop", 14, 9, None),
    "azure-chat-sse-prompt-filter-preamble": (False, None, None, "stop", 12, 24, None),
    # this API version sends no usage in the stream: tokens unknown, not zero
    "azure-chat-sse-2023-07-preview": (False, None, None, "stop", None, None, None),
}


@pytest.mark.parametrize("entry_id", sorted(EXPECTED))
def test_corpus_blocks_finish_reasons_tokens_and_citations(entry_id: str) -> None:
    r = decoded(entry_id)
    got = (
        r.blocked,
        r.block_stage,
        r.block_reason,
        r.finish_reason,
        r.input_tokens,
        r.output_tokens,
        r.citation_count,
    )
    assert got == EXPECTED[entry_id]


def test_safety_scores_use_probability_score_else_the_band_lower_bound() -> None:
    curated = decoded("gemini-vertex-finish-safety-scores-curated")
    assert curated.safety_scores["harassment"] == pytest.approx(0.61328125)
    assert curated.blocked and curated.block_stage == "response"
    prompt_blocked = decoded("gemini-aistudio-prompt-blocked-safety")
    assert prompt_blocked.safety_scores == {
        "sexually_explicit": 0.0,
        "hate_speech": 0.0,
        "harassment": 0.5,
        "dangerous_content": 0.0,
    }
    palm = decoded("palm-text-bison-predict-sdk-repr")
    assert palm.safety_scores["health"] == 1.0
    assert palm.safety_scores["dangerous_content"] == pytest.approx(0.6)
    assert palm.safety_scores["illicit_drugs"] == pytest.approx(0.1)


def test_streams_concatenate_text_and_keep_the_highest_score_per_category() -> None:
    stream = decoded("gemini-vertex-stream-json-array-safety-scores")
    chunks = ENTRIES["gemini-vertex-stream-json-array-safety-scores"]["response_body"]
    text = "".join(c["candidates"][0]["content"]["parts"][0]["text"] for c in chunks)
    assert stream.response == text
    best = max(
        r["probabilityScore"]
        for c in chunks
        for r in c["candidates"][0]["safetyRatings"]
        if r["category"] == "HARM_CATEGORY_DANGEROUS_CONTENT"
    )
    assert stream.safety_scores["dangerous_content"] == pytest.approx(best)
    sse = decoded("openai-chat-sse-include-usage")
    assert sse.response == '"This is a test."'
    thoughts = decoded("gemini-aistudio-sse-thought-parts")
    assert thoughts.response is not None and "Defining the Narrative" not in thoughts.response


def test_failed_call_is_a_record_with_the_error() -> None:
    r = decoded("gemini-vertex-error-400-invalid-argument")
    assert r.error is not None and r.error.startswith("400 INVALID_ARGUMENT: Unable to submit")
    assert not r.blocked and r.input_tokens is None


def test_n2_choices_are_one_call_described_by_the_first_choice() -> None:
    r = decoded("openai-chat-n2-choices")
    assert r.response == "This is a test. How can I assist you further?"
    assert r.model_version == "gpt-4o-mini-2024-07-18"


def test_azure_filters_become_scores_in_the_columns() -> None:
    message = decode_message(envelope(ENTRIES["azure-chat-stop-filter-results"]))
    scores = message.batch.safety_scores
    assert scores["hate"][0] == 0.0 and scores["jailbreak"][0] == 0.0
    assert not message.batch.blocked[0]
    assert math.isclose(
        message.batch.response_length[0], len("The capital of France is **Paris**.")
    )
