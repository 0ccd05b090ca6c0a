"""Streamed LLM responses, as a JSON array of chunks in an envelope's `response_body`: Gemini
`streamGenerateContent` chunks and OpenAI / Azure OpenAI chat completion chunks (with the
usage-only final chunk `stream_options.include_usage` adds, and Azure's content filters), with
the variety a real stream has: text spread over chunks, safety ratings repeated with moving
scores, thoughts, citations, the finish reason and usage in the last chunk. Used by the
decoder's agreement tests and its benchmark.
"""

from __future__ import annotations

import random
from typing import Any

import orjson

CATEGORIES = [
    "HARM_CATEGORY_HATE_SPEECH",
    "HARM_CATEGORY_DANGEROUS_CONTENT",
    "HARM_CATEGORY_HARASSMENT",
    "HARM_CATEGORY_SEXUALLY_EXPLICIT",
]
BANDS = ["NEGLIGIBLE", "LOW", "MEDIUM", "HIGH"]
TEXTS = ["Hel", "lo ", "", "wörld ✓ ", "line\nbreak", "🙂"]


def gemini_chunk(rng: random.Random, last: bool) -> dict[str, Any]:
    parts: list[dict[str, Any]] = [{"text": rng.choice(TEXTS)}]
    if rng.random() < 0.2:
        parts.append({"text": "thinking...", "thought": True})
    candidate: dict[str, Any] = {"content": {"role": "model", "parts": parts}}
    if rng.random() < 0.3:
        candidate["index"] = 0
    if rng.random() < 0.6:  # repeated in many chunks with moving scores: the highest counts
        scored = rng.random() < 0.5  # the Gemini API sends bands only, Vertex AI scores too
        candidate["safetyRatings"] = [
            {"category": c, "probability": rng.choice(BANDS)}
            | ({"probabilityScore": round(rng.random(), 4)} if scored else {})
            for c in rng.sample(CATEGORIES, rng.randint(1, 4))
        ]
    if rng.random() < 0.2:
        candidate["citationMetadata"] = {"citations": [{"startIndex": 0}] * rng.randint(0, 2)}
    if last:
        candidate["finishReason"] = rng.choice(["STOP", "MAX_TOKENS", "SAFETY", "RECITATION"])
    chunk: dict[str, Any] = {"responseId": "r-1"}
    chunk["candidates"] = [] if not last and rng.random() < 0.1 else [candidate]
    if rng.random() < 0.7:
        chunk["modelVersion"] = rng.choice(["gemini-2.0-flash-001", "gemini-1.5-pro-002"])
    if last or rng.random() < 0.2:
        chunk["usageMetadata"] = {
            "promptTokenCount": rng.randint(1, 90),
            "candidatesTokenCount": rng.randint(0, 400),
            "totalTokenCount": 500,
            **({"thoughtsTokenCount": rng.randint(1, 50)} if rng.random() < 0.3 else {}),
        }
    return chunk


AZURE_HARMS = ["hate", "self_harm", "sexual", "violence"]


def azure_filters(rng: random.Random) -> dict[str, Any]:
    """Azure OpenAI's `content_filter_results`: severities for harms, `detected` for the rest,
    a list for custom blocklists; now and then one filtered."""
    results: dict[str, Any] = {
        harm: {"filtered": rng.random() < 0.03, "severity": rng.choice(["safe", "low", "medium"])}
        for harm in rng.sample(AZURE_HARMS, rng.randint(0, 4))
    }
    if rng.random() < 0.3:
        results["protected_material_text"] = {"filtered": False, "detected": rng.random() < 0.5}
    if rng.random() < 0.1:
        results["custom_blocklists"] = []
    return results


def openai_chunks(rng: random.Random, last: bool, azure: bool = False) -> list[dict[str, Any]]:
    model = rng.choice(["gpt-4o-mini-2024-07-18", ""])
    delta: dict[str, Any] = {"content": rng.choice([*TEXTS, None])}
    if rng.random() < 0.3:
        delta["role"] = "assistant"
    choice: dict[str, Any] = {"index": 0, "delta": delta, "logprobs": None}
    choice["finish_reason"] = (
        rng.choice(["stop", "length", "content_filter", "tool_calls"]) if last else None
    )
    if azure and rng.random() < 0.7:
        choice["content_filter_results"] = azure_filters(rng)
    head = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": model}
    chunks: list[dict[str, Any]] = [{**head, "choices": [choice]}]
    if last and rng.random() < 0.5:  # stream_options.include_usage: a usage-only final chunk
        usage = {"prompt_tokens": rng.randint(1, 90), "completion_tokens": rng.randint(0, 400)}
        chunks.append({**head, "choices": [], "usage": usage})
    return chunks


def stream_body(rng: random.Random) -> list[dict[str, Any]]:
    n = rng.randint(1, 7)
    kind = rng.random()
    if kind < 0.5:
        return [gemini_chunk(rng, last=i == n - 1) for i in range(n)]
    azure = kind < 0.75
    chunks = [c for i in range(n) for c in openai_chunks(rng, last=i == n - 1, azure=azure)]
    if azure:  # Azure sends the prompt's filter results in a chunk of their own, first
        prompt = [{"prompt_index": 0, "content_filter_results": azure_filters(rng)}]
        chunks.insert(
            0, {"object": "", "model": "", "choices": [], "prompt_filter_results": prompt}
        )
    return chunks


def envelope(i: int, body: Any) -> bytes:
    return orjson.dumps(
        {
            "request_id": f"s-{i}",
            "timestamp": "2025-03-01T00:00:00Z",
            "model": "m",
            "latency_ms": 120 + i,
            "response_body": body,
        }
    )
