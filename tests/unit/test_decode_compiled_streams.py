"""Streamed responses (a JSON array of Gemini `streamGenerateContent` or OpenAI chat completion
chunks as the envelope's `response_body`) are read by the compiled decoder, and read exactly as
the Python reference folds their chunks: same columns, same errors. Shapes the reference words
differently (several answers, two finish reasons, a prompt block, chunks of mixed or of no
shape) are handed to it.

Streams are where a log line is longest: left to Python they made the recorded corpus decode at
a fifth of a bare `orjson.loads` loop.
"""

from __future__ import annotations

import random

import pytest

from schemas.decode import compiled
from schemas.decode.api import DecodeLimits, MessageBytes
from tests.decode_agreement import assert_agree
from tests.stream_bodies import envelope, stream_body


def fast_rows(lines: list[bytes]) -> int:
    """How many of `lines` the compiled scan read itself (the rest it hands to Python)."""
    module = compiled.compiled_module()
    assert module is not None, "schemas.decode._fastdecode not built"
    limits = DecodeLimits()
    columns, _others, _left = module.scan(
        [b"\n".join(lines)], [1], [True], limits.max_record_bytes, limits.max_depth, -1
    )
    return len(columns["origin"])


@pytest.mark.parametrize("seed", range(4))
def test_streams_are_read_in_c_and_agree_with_the_reference(seed: int) -> None:
    rng = random.Random(seed)
    lines = [envelope(i, stream_body(rng)) for i in range(300)]
    poll = assert_agree([MessageBytes(b"\n".join(lines[i : i + 50])) for i in range(0, 300, 50)])
    assert sum(len(b) for b in poll.batches) == len(lines)
    assert fast_rows(lines) == len(lines)


FILTERED = {"hate": {"filtered": True, "severity": "high"}, "jailbreak": {"detected": False}}
GEMINI = {"candidates": [{"content": {"parts": [{"text": "a"}]}}], "modelVersion": "g"}
OPENAI = {"object": "chat.completion.chunk", "model": "o", "choices": [{"delta": {"content": "a"}}]}
LEFT_TO_PYTHON = {
    "no chunk": [],
    "a chunk of no shape": [GEMINI, {}],
    "gemini then openai": [GEMINI, OPENAI],
    "two finish reasons": [
        {"candidates": [{"finishReason": "SAFETY"}]},
        {"candidates": [{"finishReason": "STOP"}]},
    ],
    "two answers": [{"candidates": [{"index": 0}, {"index": 1}]}],
    "a second answer alone": [GEMINI, {"candidates": [{"index": 1, "finishReason": "STOP"}]}],
    "an empty model version first": [{**GEMINI, "modelVersion": ""}, GEMINI],
    "a prompt block": [{"promptFeedback": {"blockReason": "SAFETY"}}],
    "a band the reference spells its own way": [
        {"candidates": [{"safetyRatings": [{"category": "X", "probability": "high"}]}]}
    ],
    "an unspecified band": [
        {"candidates": [{"safetyRatings": [{"category": "X", "probability": "UNSPECIFIED"}]}]}
    ],
    "an azure severity the reference maps through its band table": [
        {**OPENAI, "choices": [{"content_filter_results": {"hate": {"severity": "LOW"}}}]},
    ],
    "an azure filter result that is not an object": [
        {**OPENAI, "choices": [{"content_filter_results": {"hate": "low"}}]},
    ],
    "openai chunk of no shape": [OPENAI, {"model": "o", "choices": None}],
    "two openai answers": [{**OPENAI, "choices": [{"index": 0}, {"index": 1}]}],
    "a chunk that is not an object": [GEMINI, "data: {}"],
    "an error chunk": [GEMINI, {"error": {"code": 500, "message": "boom"}}],
}


@pytest.mark.parametrize("case", sorted(LEFT_TO_PYTHON))
def test_streams_the_reference_words_differently_are_handed_to_it(case: str) -> None:
    line = envelope(0, LEFT_TO_PYTHON[case])
    assert fast_rows([line]) == 0
    assert_agree([MessageBytes(line)])
    assert_agree([MessageBytes(line + b"\n" + envelope(1, [GEMINI]), None, 7)])


AZURE_BLOCKS = {
    "a filtered prompt": (
        [{**OPENAI, "prompt_filter_results": [{"content_filter_results": FILTERED}]}],
        "prompt",
    ),
    "a filtered answer": (
        [{**OPENAI, "choices": [{"content_filter_results": FILTERED}]}],
        "response",
    ),
    "both: the prompt's block wins": (
        [
            {**OPENAI, "prompt_filter_results": [{"content_filter_results": FILTERED}]},
            {**OPENAI, "choices": [{"content_filter_results": FILTERED, "finish_reason": "stop"}]},
        ],
        "prompt",
    ),
}


@pytest.mark.parametrize("case", sorted(AZURE_BLOCKS))
def test_azure_filters_block_as_the_reference_says_and_are_read_in_c(case: str) -> None:
    body, stage = AZURE_BLOCKS[case]
    line = envelope(0, body)
    assert fast_rows([line]) == 1
    poll = assert_agree([MessageBytes(line)])
    (batch,) = poll.batches
    assert (bool(batch.blocked[0]), batch.block_stage[0], batch.block_reason[0]) == (
        True,
        stage,
        "CONTENT_FILTER",
    )
    assert batch.safety_scores["hate"][0] == 0.75
