"""PredictionLog → one JSON line in a wire format Lookout decodes, for replay and publishing.

Real traffic arrives mixed: Gemini responses in a gateway envelope, the same wrapped in a Cloud
Logging `LogEntry`, Vertex AI PaLM predict responses, OpenAI chat completions, OpenTelemetry
GenAI spans. Rendering the simulator's records in those shapes makes a replay exercise every
decoder. Each encoder writes what the real API writes and nothing it cannot carry: OTLP spans
have no embedding or safety scores, PaLM has no finish reason, OpenAI has no citations or
scores, and a block is expressed the way that provider expresses it.
"""

from __future__ import annotations

import hashlib
from bisect import bisect_right
from collections.abc import Callable, Iterable, Iterator, Mapping
from itertools import accumulate
from typing import Any

import orjson

from schemas.prediction_log import PredictionLog, canonical_json

FORMATS = ("native", "gemini", "palm", "openai", "logentry", "otlp")

#: formats a call of each model family plausibly arrives in, when no weights are given
FAMILY_WEIGHTS: Mapping[str, Mapping[str, float]] = {
    "gemini": {"gemini": 0.5, "logentry": 0.25, "otlp": 0.1, "native": 0.15},
    "palm": {"palm": 0.7, "otlp": 0.1, "native": 0.2},
    "openai": {"openai": 0.7, "otlp": 0.15, "native": 0.15},
    "other": {"native": 0.6, "otlp": 0.4},
}

_GEMINI_CATEGORY = {
    "hate_speech": "HARM_CATEGORY_HATE_SPEECH",
    "dangerous_content": "HARM_CATEGORY_DANGEROUS_CONTENT",
    "harassment": "HARM_CATEGORY_HARASSMENT",
    "sexually_explicit": "HARM_CATEGORY_SEXUALLY_EXPLICIT",
}
_GEMINI_FINISH = {"stop": "STOP", "length": "MAX_TOKENS", "safety": "SAFETY"}
_OPENAI_FINISH = {"stop": "stop", "length": "length", "safety": "content_filter"}
#: PaLM's rated categories (title case, as Vertex AI writes them) and the confidence attributes
#: that follow each; the remaining attributes are topics, low for synthetic traffic
_PALM_RATED = {
    "hate_speech": ("Hate Speech", "Derogatory"),
    "harassment": ("Harassment", "Insult"),
    "sexually_explicit": ("Sexually Explicit", "Sexual"),
    "dangerous_content": ("Dangerous Content", "Violent"),
}
_PALM_TOPICS = ("Toxic", "Profanity", "Death, Harm & Tragedy", "Firearms & Weapons", "Health")


def family(model: str) -> str:
    """Which provider family a model name belongs to (decides default formats)."""
    name = model.lower()
    if name.startswith("gemini"):
        return "gemini"
    if "bison" in name or name.startswith(("palm", "text-unicorn")):
        return "palm"
    if name.startswith(("gpt", "o1", "o3", "o4")):
        return "openai"
    return "other"


def _rfc3339(log: PredictionLog) -> str:
    return log.timestamp.isoformat().replace("+00:00", "Z")


def _probability(score: float) -> str:
    """Gemini's band for a probability score (bands as the decoders read them back)."""
    if score >= 0.75:
        return "HIGH"
    if score >= 0.5:
        return "MEDIUM"
    return "LOW" if score >= 0.25 else "NEGLIGIBLE"


def _culprit(log: PredictionLog) -> str | None:
    return max(log.safety_scores, key=log.safety_scores.__getitem__) if log.blocked else None


def _citations(log: PredictionLog, url_key: str) -> list[dict[str, Any]]:
    length = len(log.response or "") or 100
    return [
        {"startIndex": 0, "endIndex": length, url_key: f"https://example.com/source/{i}"}
        for i in range(log.citation_count or 0)
    ]


def _envelope(log: PredictionLog, body: dict[str, Any]) -> dict[str, Any]:
    """A gateway's record of one call: call metadata plus the provider's response as returned."""
    out: dict[str, Any] = {
        "request_id": log.request_id,
        "timestamp": _rfc3339(log),
        "model": log.model,
        "model_version": log.model_version,
        "latency_ms": log.latency_ms,
        "time_to_first_token_ms": log.time_to_first_token_ms,
        "endpoint": log.endpoint,
        "tenant": log.tenant,
        "labels": log.labels,
        "prompt": log.prompt,
        "embedding": log.embedding,
        "response_body": body,
    }
    return {k: v for k, v in out.items() if v is not None}


def _error_body(log: PredictionLog) -> dict[str, Any]:
    return {"error": {"code": 500, "message": log.error, "status": "INTERNAL"}}


def gemini_body(log: PredictionLog) -> dict[str, Any]:
    """A Vertex AI `generateContent` response (REST JSON, camelCase)."""
    if log.error is not None:
        return _error_body(log)
    culprit = _culprit(log)
    ratings = [
        {
            "category": _GEMINI_CATEGORY.get(name, "HARM_CATEGORY_" + name.upper()),
            "probability": _probability(score),
            "probabilityScore": score,
            **({"blocked": True} if name == culprit else {}),
        }
        for name, score in log.safety_scores.items()
    ]
    counts = {"promptTokenCount": log.input_tokens, "candidatesTokenCount": log.output_tokens}
    usage = {k: v for k, v in counts.items() if v is not None}
    usage["totalTokenCount"] = sum(usage.values())
    body: dict[str, Any] = {"modelVersion": log.model_version or log.model, "usageMetadata": usage}
    if log.block_stage == "prompt":
        feedback = {"blockReason": log.block_reason or "SAFETY", "safetyRatings": ratings}
        return {"promptFeedback": feedback, **body}
    candidate: dict[str, Any] = {"index": 0}
    if log.response is not None and log.block_stage != "response":
        candidate["content"] = {"role": "model", "parts": [{"text": log.response}]}
    if log.block_stage == "response":
        candidate["finishReason"] = log.block_reason or "SAFETY"
    elif log.finish_reason is not None:
        candidate["finishReason"] = _GEMINI_FINISH.get(log.finish_reason, log.finish_reason.upper())
    candidate["safetyRatings"] = ratings
    if log.citation_count:
        candidate["citationMetadata"] = {"citations": _citations(log, "uri")}
    return {"candidates": [candidate], **body}


def palm_body(log: PredictionLog) -> dict[str, Any]:
    """A Vertex AI PaLM (text-bison) `predict` response."""
    if log.error is not None:
        return _error_body(log)
    categories: list[str] = []
    scores: list[float] = []
    ratings: list[dict[str, Any]] = []
    for name, score in log.safety_scores.items():
        rated, attribute = _PALM_RATED.get(name, (name.replace("_", " ").title(), None))
        band = _probability(score)
        ratings.append({"category": rated, "probabilityScore": score, "severity": band})
        if attribute is not None:
            categories.append(attribute)
            scores.append(round(score, 1))  # confidence scores come rounded to one decimal
    categories += _PALM_TOPICS
    scores += [0.1] * len(_PALM_TOPICS)
    prediction: dict[str, Any] = {
        "safetyAttributes": {
            "blocked": log.blocked,
            "categories": categories,
            "scores": scores,
            "safetyRatings": ratings,
        },
    }
    if log.response is not None and not log.blocked:
        prediction["content"] = log.response
    if log.citation_count:
        prediction["citationMetadata"] = {"citations": _citations(log, "url")}
    tokens: dict[str, Any] = {}
    if log.input_tokens is not None:
        tokens["inputTokenCount"] = {"totalTokens": log.input_tokens}
    if log.output_tokens is not None:
        tokens["outputTokenCount"] = {"totalTokens": log.output_tokens}
    return {"predictions": [prediction], "metadata": {"tokenMetadata": tokens}}


def openai_body(log: PredictionLog) -> dict[str, Any]:
    """An OpenAI chat completion; a prompt block is Azure OpenAI's `content_filter` error."""
    if log.error is not None:
        return _error_body(log)
    if log.block_stage == "prompt":
        return {"error": {
            "code": "content_filter", "status": 400, "param": "prompt",
            "message": "The prompt was filtered due to triggering the content management policy.",
        }}  # fmt: skip
    finish = "content_filter" if log.block_stage == "response" else log.finish_reason
    content = None if log.blocked else log.response
    usage = {"prompt_tokens": log.input_tokens, "completion_tokens": log.output_tokens}
    if log.input_tokens is not None and log.output_tokens is not None:
        usage["total_tokens"] = log.input_tokens + log.output_tokens
    return {
        "id": "chatcmpl-" + _hex(log.request_id, 24),
        "object": "chat.completion",
        "created": int(log.timestamp.timestamp()),
        "model": log.model_version or log.model,
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": content, "refusal": None},
            "logprobs": None,
            "finish_reason": _OPENAI_FINISH.get(finish, finish) if finish else None,
        }],
        "usage": {k: v for k, v in usage.items() if v is not None},
    }  # fmt: skip


def log_entry(log: PredictionLog) -> dict[str, Any]:
    """A Cloud Logging `LogEntry` as a log sink exports it, the Gemini envelope as payload."""
    return {
        "insertId": _hex(log.request_id, 16),
        "logName": "projects/lookout-demo/logs/llm-gateway",
        "resource": {
            "type": "aiplatform.googleapis.com/Endpoint",
            "labels": {"location": "us-central1", "resource_container": "lookout-demo"},
        },
        "timestamp": _rfc3339(log),
        "receiveTimestamp": _rfc3339(log),
        "severity": "ERROR" if log.error else "INFO",
        "labels": log.labels,
        "jsonPayload": _envelope(log, gemini_body(log)),
    }


def _attr(key: str, value: str | int | list[str]) -> dict[str, Any]:
    if isinstance(value, list):
        return {
            "key": key,
            "value": {"arrayValue": {"values": [{"stringValue": v} for v in value]}},
        }
    if isinstance(value, int):  # proto3 JSON writes int64 as a decimal string
        return {"key": key, "value": {"intValue": str(value)}}
    return {"key": key, "value": {"stringValue": value}}


def otlp_export(log: PredictionLog) -> dict[str, Any]:
    """An OTLP/JSON trace export with one GenAI client span (semantic conventions `gen_ai.*`)."""
    start = round(log.timestamp.timestamp() * 1_000_000) * 1000
    end = start + round((log.latency_ms or 0.0) * 1_000_000)
    provider = {"gemini": "gcp.vertex_ai", "palm": "gcp.vertex_ai", "openai": "openai"}
    attributes = [
        _attr("gen_ai.operation.name", "chat"),
        _attr("gen_ai.provider.name", provider.get(family(log.model), "unknown")),
        _attr("gen_ai.request.model", log.model),
        _attr("gen_ai.response.model", log.model_version or log.model),
        _attr("gen_ai.response.id", log.request_id),
    ]
    if log.input_tokens is not None:
        attributes.append(_attr("gen_ai.usage.input_tokens", log.input_tokens))
    if log.output_tokens is not None:
        attributes.append(_attr("gen_ai.usage.output_tokens", log.output_tokens))
    if log.finish_reason is not None:
        attributes.append(_attr("gen_ai.response.finish_reasons", [log.finish_reason]))
    status: dict[str, Any] = {}
    if log.error is not None:
        attributes.append(_attr("error.type", log.error))
        status = {"code": 2, "message": log.error}
    span = {
        "traceId": _hex("trace:" + log.request_id, 32),
        "spanId": _hex("span:" + log.request_id, 16),
        "name": f"chat {log.model}",
        "kind": 3,  # SPAN_KIND_CLIENT
        "startTimeUnixNano": str(start),
        "endTimeUnixNano": str(end),
        "attributes": attributes,
        "status": status,
    }
    resource = {"attributes": [_attr("service.name", "llm-gateway")]}
    scope = {"name": "lookout.simulator", "version": "0.1.0"}
    return {
        "resourceSpans": [{"resource": resource, "scopeSpans": [{"scope": scope, "spans": [span]}]}]
    }


def _hex(text: str, digits: int) -> str:
    return hashlib.blake2b(text.encode(), digest_size=digits // 2).hexdigest()


_ENCODERS: Mapping[str, Callable[[PredictionLog], dict[str, Any]]] = {
    "gemini": lambda log: _envelope(log, gemini_body(log)),
    "palm": lambda log: _envelope(log, palm_body(log)),
    "openai": lambda log: _envelope(log, openai_body(log)),
    "logentry": log_entry,
    "otlp": otlp_export,
}


def encode(log: PredictionLog, fmt: str) -> bytes:
    """One JSON document (no trailing newline) of `log` in wire format `fmt`."""
    if fmt == "native":
        return canonical_json(log)
    encoder = _ENCODERS.get(fmt)
    if encoder is None:
        msg = f"unknown wire format {fmt!r}; expected one of {', '.join(FORMATS)}"
        raise ValueError(msg)
    return orjson.dumps(encoder(log))


def _cumulative(weights: Mapping[str, float]) -> tuple[list[str], list[float]]:
    bad = [f for f in weights if f not in FORMATS]
    if bad or any(not w >= 0 for w in weights.values()) or not sum(weights.values()) > 0:
        msg = (
            f"bad format weights {dict(weights)}: keys must be among {', '.join(FORMATS)}, "
            "values ≥ 0 with a positive sum"
        )
        raise ValueError(msg)
    names = [f for f, w in weights.items() if w > 0]
    totals = list(accumulate(weights[f] for f in names))
    return names, [t / totals[-1] for t in totals]


def encode_mixed(
    logs: Iterable[PredictionLog], *, seed: int, weights: Mapping[str, float] | None = None
) -> Iterator[bytes]:
    """Each record in a format drawn from `weights` (default: plausible for its model family).

    The draw hashes the seed with the request id, so a record's format does not depend on its
    position in the stream: the same record always comes out the same way for the same seed.
    By default a prompt-blocked call is never an OTLP span: a span has no way to say so (the
    GenAI conventions carry only finish reasons, a response's), so those records decoded as
    unblocked and a simulated safety spike came out about 5% weaker than asked for; it is
    written natively instead. Explicit `weights` are taken as given.
    """
    fixed = None if weights is None else _cumulative(weights)
    by_family = {name: _cumulative(w) for name, w in FAMILY_WEIGHTS.items()}
    for log in logs:
        names, cumulative = fixed or by_family[family(log.model)]
        digest = hashlib.blake2b(f"{seed}:{log.request_id}".encode(), digest_size=8).digest()
        u = int.from_bytes(digest, "big") / 2**64
        fmt = names[min(bisect_right(cumulative, u), len(names) - 1)]
        if fixed is None and fmt == "otlp" and log.block_stage == "prompt":
            fmt = "native"
        yield encode(log, fmt)
