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
    "a band without a score": [
        {"candidates": [{"safetyRatings": [{"category": "X", "probability": "HIGH"}]}]}
    ],
    "azure prompt filter": [{**OPENAI, "prompt_filter_results": []}],
    "azure choice filter": [
        {**OPENAI, "choices": [{"delta": {}, "content_filter_results": {}}]},
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
