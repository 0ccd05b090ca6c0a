"""Provider response bodies (PaLM, Gemini, OpenAI/Azure, errors, streams) → canonical facts.

A stream (a JSON array of chunks, a list of parsed SSE events, or an SSE string) becomes one
record: text concatenated in order, the last finish reason, the last usage present (Gemini and
OpenAI both report cumulative usage), and the maximum safety score per category.

Several choices/candidates (OpenAI `n`, Gemini `candidateCount`, several PaLM predictions) are
still one call, so still one record: latency and usage belong to the call. The record describes
the primary answer (index 0: its text, finish reason, citations), while a block of *any* answer
marks the call blocked and safety scores are the maximum over all answers — a monitor should
not miss a blocked second answer because the first was fine.

Tokens: output tokens include Gemini's `thoughtsTokenCount`, as OpenAI's `completion_tokens`
includes reasoning tokens, so both mean "output billed"; input tokens include the prompts of
Gemini's tools (`toolUsePromptTokenCount`: Search grounding, code execution), which its
`totalTokenCount` counts and which are billed as input. Proto3 JSON omits zero counts, so a
Gemini usage block that has a prompt or total count reads a missing count as 0.

Finish reasons come out in one canonical lowercase vocabulary and `block_reason` as the
provider's upper-case word (the table is in `schemas.decode.finish`); every Azure/OpenAI filter
block says `CONTENT_FILTER`, PaLM's `blocked` says `SAFETY`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NoReturn

import msgspec

from schemas.decode.finish import finish_facts
from schemas.decode.guards import malformed_reason, too_deep, too_deep_reason
from schemas.decode.safety import (
    CATEGORY_CACHE,
    SEVERITY_SCORES,
    VERTEX_BLOCK_REASON,
    VERTEX_FINISH_REASON,
    band_score,
    enum_name,
    normalise_category,
)
from schemas.decode.wire import (
    BODY_DECODER,
    MAX_EXACT_INT,
    Body,
    ErrorInfo,
    FilterResults,
    PalmSafetyAttributes,
    SafetyRating,
)
from schemas.prediction_log import BlockStage

PROVIDER_KINDS = ("gemini", "palm", "openai")
#: `block_reason` of every Azure/OpenAI content-filter block, prompt or response stage; which
#: categories tripped it shows in `safety_scores`
CONTENT_FILTER = "CONTENT_FILTER"


class BodyError(Exception):
    """A body that cannot become a record; `field` is a path below the record."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(reason)
        self.field = field
        self.reason = reason


def fail(field: str, reason: str) -> NoReturn:
    raise BodyError(field, reason)


@dataclass(slots=True)
class BodyFacts:
    """What a response body says about the call; None = the body does not say."""

    model_version: str | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    blocked: bool = False
    block_stage: BlockStage | None = None
    block_reason: str | None = None
    safety_scores: dict[str, float] = field(default_factory=dict)
    finish_reason: str | None = None
    citation_count: int | None = None
    response: str | None = None
    error: str | None = None


def body_kind(body: Body) -> str | None:
    """Which provider shape a body (or chunk) has, or "error", or None if none fits."""
    if body.predictions is not None:
        return "palm"
    if (
        body.candidates is not None
        or body.promptFeedback is not None
        or body.usageMetadata is not None
        or body.modelVersion is not None
    ):
        return "gemini"
    if (
        body.choices is not None
        or body.prompt_filter_results is not None
        or (body.object or "").startswith("chat.completion")
    ):
        return "openai"
    if body.error is not None:
        return "error"
    return None


def interpret(
    body: Body | list[Body] | str, expected_kind: str | None, max_depth: int
) -> BodyFacts:
    """The facts of one call's response body; raises BodyError when it has no known shape.

    `max_depth` bounds the JSON inside a server-sent-events string, which the record's own
    depth check cannot see.
    """
    if isinstance(body, Body):  # the common case, one document: no stream bookkeeping
        kind = body_kind(body)
        if kind == "error" and body.error is not None:
            return error_facts(body.error)
        if kind is not None and (expected_kind is None or kind == expected_kind):
            if kind == "palm":
                return palm_facts(body)
            return gemini_facts([body]) if kind == "gemini" else openai_facts([body])
        chunks = [body]  # not a known shape, or not the expected one: reported below
    elif isinstance(body, str):
        chunks = parse_sse(body, max_depth)
    else:
        chunks = body
    if not chunks:
        fail("response_body", "a stream must hold at least one chunk, got []")
    chunk_kinds = [body_kind(c) for c in chunks]
    kinds = set(chunk_kinds)
    for i, (chunk, chunk_kind) in enumerate(zip(chunks, chunk_kinds, strict=True)):
        if chunk_kind == "error" and chunk.error is not None:
            return error_facts(chunk.error)
        if chunk_kind is None:
            where = "response_body" if len(chunks) == 1 else f"response_body[{i}]"
            fail(
                where,
                "unrecognised response shape: expected a PaLM predict, Gemini generateContent, "
                'OpenAI chat completion or {"error": ...} body',
            )
    if len(kinds) > 1:
        fail("response_body", f"stream mixes response shapes {sorted(map(str, kinds))}")
    (kind,) = kinds
    if expected_kind is not None and kind != expected_kind:
        fail("response_body", f"format {expected_kind} expected, got a {kind} body")
    if kind == "gemini":
        return gemini_facts(chunks)
    if kind == "openai":
        return openai_facts(chunks)
    if len(chunks) > 1:
        fail("response_body", "a PaLM predict response is one document, not a stream")
    return palm_facts(chunks[0])


def parse_sse(text: str, max_depth: int) -> list[Body]:
    """Server-sent events: `data:` lines of one event are joined; `[DONE]` and others skipped."""
    chunks: list[Body] = []
    data: list[str] = []

    def flush() -> None:
        payload = "\n".join(data).strip()
        data.clear()
        if not payload or payload == "[DONE]":
            return
        where = f"response_body (SSE event {len(chunks) + 1})"
        encoded = payload.encode()
        if too_deep(encoded, max_depth):
            fail(where, too_deep_reason(max_depth))
        try:
            chunks.append(BODY_DECODER.decode(encoded))
        except msgspec.ValidationError as e:
            raise BodyError(where, str(e)) from e
        except msgspec.DecodeError as e:
            raise BodyError(where, malformed_reason(str(e), encoded)) from e

    for line in text.splitlines():
        if not line.strip():
            flush()
        elif line.startswith("data:"):
            data.append(line[5:].removeprefix(" "))
    flush()
    if not chunks:
        fail(
            "response_body",
            "a string body must be server-sent events (`data: {...}` lines), found no events",
        )
    return chunks


def _add_ratings(scores: dict[str, float], ratings: list[SafetyRating] | None) -> None:
    """Ratings into scores, the highest per category; on every record, so lookups are inlined."""
    if not ratings:
        return
    # the common case (every rating scored, each category once and not yet in `scores`, names
    # seen before): one dict built in C, no per-rating max to take
    try:
        fresh = {CATEGORY_CACHE[r.category]: r.probabilityScore for r in ratings}  # type: ignore[index]
    except KeyError:
        pass
    else:
        if (
            len(fresh) == len(ratings)
            and None not in fresh.values()
            and scores.keys().isdisjoint(fresh)
        ):
            scores.update(fresh)  # type: ignore[arg-type]
            return
    for r in ratings:
        raw = r.category
        if raw is None:
            continue
        score = r.probabilityScore
        if score is None:
            score = band_score(r.probability)
            if score is None:
                continue
        category = CATEGORY_CACHE.get(raw) or normalise_category(raw)
        old = scores.get(category)
        if old is None or score > old:
            scores[category] = score


def gemini_facts(chunks: list[Body]) -> BodyFacts:
    facts = BodyFacts()
    texts: list[str] = []
    saw_candidate = False
    citations = 0
    prompt_block: str | None = None
    response_block: str | None = None
    for chunk in chunks:
        facts.model_version = facts.model_version or chunk.modelVersion
        feedback = chunk.promptFeedback
        if feedback is not None:
            if feedback.blockReason is not None:
                name = enum_name(feedback.blockReason, VERTEX_BLOCK_REASON, "BLOCK_REASON")
                prompt_block = name.upper()
            _add_ratings(facts.safety_scores, feedback.safetyRatings)
        usage = chunk.usageMetadata
        if usage is not None and (
            usage.promptTokenCount is not None or usage.totalTokenCount is not None
        ):
            facts.input_tokens = (usage.promptTokenCount or 0) + (
                usage.toolUsePromptTokenCount or 0
            )
            facts.output_tokens = (usage.candidatesTokenCount or 0) + (
                usage.thoughtsTokenCount or 0
            )
        for candidate in chunk.candidates or ():
            primary = not candidate.index
            saw_candidate = saw_candidate or primary
            reason = candidate.finishReason
            if reason is not None:
                if type(reason) is not str:
                    reason = enum_name(reason, VERTEX_FINISH_REASON, "FINISH_REASON")
                canonical, block = finish_facts(reason)
                if primary:
                    facts.finish_reason = canonical
                response_block = response_block or block
            _add_ratings(facts.safety_scores, candidate.safetyRatings)
            if not primary:
                continue
            meta = candidate.citationMetadata
            if meta is not None:
                citations += len(meta.citations or ()) + len(meta.citationSources or ())
            if candidate.content is not None:
                parts = candidate.content.parts or ()
                texts.extend(p.text for p in parts if p.text is not None and not p.thought)
    if saw_candidate:
        facts.citation_count = citations
        facts.response = "".join(texts) if texts else None
    if prompt_block is not None:
        facts.blocked, facts.block_stage, facts.block_reason = True, "prompt", prompt_block
    elif response_block is not None:
        facts.blocked, facts.block_stage, facts.block_reason = True, "response", response_block
    return facts


def _add_filters(scores: dict[str, float], results: FilterResults | None) -> list[str]:
    """Azure content-filter results into scores; returns the categories that were filtered.

    Streams repeat these in every chunk, so this is written for speed: dict lookups first.
    """
    filtered: list[str] = []
    if not results:
        return filtered
    for name, result in results.items():
        if isinstance(result, list):
            continue
        category = CATEGORY_CACHE.get(name) or normalise_category(name)
        score: float | None = None
        if result.severity is not None:
            score = SEVERITY_SCORES.get(result.severity)
            if score is None:
                score = band_score(result.severity)
        elif result.detected is not None:
            score = 1.0 if result.detected else 0.0
        if score is not None:
            old = scores.get(category)
            if old is None or score > old:
                scores[category] = score
        if result.filtered:
            filtered.append(category)
    return filtered


def openai_facts(chunks: list[Body]) -> BodyFacts:
    facts = BodyFacts()
    texts: list[str] = []
    citations: int | None = None
    prompt_filtered: list[str] = []
    response_filtered: list[str] = []
    response_block = False
    for chunk in chunks:
        facts.model_version = facts.model_version or chunk.model or None
        for pf in chunk.prompt_filter_results or ():
            prompt_filtered += _add_filters(facts.safety_scores, pf.content_filter_results)
        if chunk.usage is not None:
            facts.input_tokens = chunk.usage.prompt_tokens
            facts.output_tokens = chunk.usage.completion_tokens
        for choice in chunk.choices or ():
            primary = not choice.index
            if choice.finish_reason is not None:
                canonical, block = finish_facts(choice.finish_reason)
                if primary:
                    facts.finish_reason = canonical
                response_block = response_block or block is not None
            response_filtered += _add_filters(facts.safety_scores, choice.content_filter_results)
            if not primary:
                continue
            message = choice.message
            if message is not None:
                if message.content is not None:
                    texts.append(message.content)
                if message.annotations is not None:
                    citations = (citations or 0) + sum(
                        a.type == "url_citation" for a in message.annotations
                    )
            if choice.delta is not None and choice.delta.content is not None:
                texts.append(choice.delta.content)
    facts.citation_count = citations
    facts.response = "".join(texts) if texts else None
    if prompt_filtered:
        facts.blocked, facts.block_stage, facts.block_reason = True, "prompt", CONTENT_FILTER
    elif response_block or response_filtered:
        facts.blocked, facts.block_stage, facts.block_reason = True, "response", CONTENT_FILTER
    return facts


def _whole(value: float | None, which: str) -> int | None:
    if value is None:
        return None
    path = f"response_body.metadata.tokenMetadata.{which}.totalTokens"
    if not float(value).is_integer():
        fail(path, f"must be a whole number of tokens, got {value!r}")
    if value > MAX_EXACT_INT:
        fail(path, f"must be at most {MAX_EXACT_INT:,} tokens, got {value!r}")
    return int(value)


#: PaLM category lists as sent → their normalised names, or None when two names coincide (then
#: the highest score must win, category by category); bounded, PaLM sends few distinct lists
_PALM_NAMES: dict[tuple[str, ...], tuple[str, ...] | None] = {}


def _palm_names(categories: list[str]) -> tuple[str, ...] | None:
    key = tuple(categories)
    try:
        return _PALM_NAMES[key]
    except KeyError:
        names = tuple(CATEGORY_CACHE.get(c) or normalise_category(c) for c in key)
        out = names if len(set(names)) == len(names) else None
        if len(_PALM_NAMES) < 256:
            _PALM_NAMES[key] = out
        return out


def palm_facts(body: Body) -> BodyFacts:
    facts = BodyFacts()
    for i, prediction in enumerate(body.predictions or ()):
        attrs = prediction.safetyAttributes
        attr_list: list[PalmSafetyAttributes] = (
            attrs if isinstance(attrs, list) else [] if attrs is None else [attrs]
        )
        for a in attr_list:
            categories, scores = a.categories or [], a.scores or []
            if len(categories) != len(scores):
                fail(
                    f"response_body.predictions[{i}].safetyAttributes",
                    f"categories and scores must pair up, got {len(categories)} categories "
                    f"and {len(scores)} scores",
                )
            out = facts.safety_scores
            names = _palm_names(categories)
            if names is not None and not out:  # the common case: a dict built in C
                out.update(zip(names, scores, strict=True))
            else:
                for raw, score in zip(categories, scores, strict=True):
                    category = CATEGORY_CACHE.get(raw) or normalise_category(raw)
                    old = out.get(category)
                    if old is None or score > old:
                        out[category] = score
            _add_ratings(out, a.safetyRatings)
            if a.blocked:
                facts.blocked, facts.block_stage, facts.block_reason = True, "response", "SAFETY"
        if i == 0:
            facts.response = prediction.content
            if facts.response is None and prediction.candidates:
                facts.response = prediction.candidates[0].content  # chat-bison
            meta = prediction.citationMetadata
            facts.citation_count = (
                0 if meta is None else len(meta.citations or ()) + len(meta.citationSources or ())
            )
    tokens = body.metadata.tokenMetadata if body.metadata is not None else None
    if tokens is not None:
        if tokens.inputTokenCount is not None:
            facts.input_tokens = _whole(tokens.inputTokenCount.totalTokens, "inputTokenCount")
        if tokens.outputTokenCount is not None:
            facts.output_tokens = _whole(tokens.outputTokenCount.totalTokens, "outputTokenCount")
    return facts


def error_facts(error: ErrorInfo) -> BodyFacts:
    """A failed call, or Azure's prompt filter, which answers HTTP 400 coded `content_filter`.

    The prompt filter is a block at the prompt stage, not an error: the service worked and
    refused, just as Gemini's `promptFeedback.blockReason` does with HTTP 200. Counting it as an
    error would make the same refusal an error on Azure and a block on Gemini, and page the
    on-call for a policy decision. The HTTP error carries no usage, so tokens stay unknown.
    """
    if error.code == "content_filter":
        facts = BodyFacts(blocked=True, block_stage="prompt", block_reason=CONTENT_FILTER)
        inner = error.innererror.content_filter_result if error.innererror is not None else None
        _add_filters(facts.safety_scores, inner)
        return facts
    head = " ".join(str(p) for p in (error.code, error.status or error.type) if p not in (None, ""))
    message = error.message or "no message"
    return BodyFacts(error=f"{head}: {message}" if head else message)
