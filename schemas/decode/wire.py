"""msgspec shapes of every wire format, naming only the fields Lookout reads.

One `msgspec` decode per record into these structs is the hot path: msgspec skips unknown fields
without building them, and checks types and bounds in C while it parses, naming the field path
in its error. The canonical fields of `Wire` are derived at import time from
`PredictionLog.model_fields`, so the pydantic model stays the one definition of each field and
its bounds; only the wire-specific fields (envelope body, LogEntry, OTLP) are written here.

`Wire` is deliberately a loose union of shapes: which of its fields are present tells the format
(`resourceSpans` → OTLP, `jsonPayload` → LogEntry, `response_body` → envelope, else native).
"""

from __future__ import annotations

import datetime as dt
import types
from typing import TYPE_CHECKING, Annotated, Any, Literal, Union, get_args, get_origin

import annotated_types
import msgspec
from msgspec import Meta, Raw, Struct
from pydantic.fields import FieldInfo

from schemas.prediction_log import PredictionLog

# ---------------------------------------------------------------- provider response bodies

#: the largest integer a float64 column holds exactly: counts beyond it are not counts, and a
#: 400-digit one would overflow the conversion to columns (one record must not break a message)
MAX_EXACT_INT = 2**53
#: embeddings become float32: a larger magnitude would turn into infinity (checked on the
#: columns, a whole message at once: a bound on every float cost ~11% of parsing an embedding)
FLOAT32_MAX = 3.4028234663852886e38

NonNegInt = Annotated[int, Meta(ge=0, le=MAX_EXACT_INT)]
NonNegFloat = Annotated[float, Meta(ge=0)]


class SafetyRating(Struct, gc=False):
    """Gemini `safetyRatings[]` and PaLM `safetyAttributes.safetyRatings[]` (ints: enum codes)."""

    category: str | int | None = None
    probability: str | int | None = None
    probabilityScore: float | None = None
    blocked: bool | None = None


class CitationMetadata(Struct, gc=False):
    """Vertex names the list `citations`, the Gemini API `citationSources`; only counted."""

    citations: list[Raw] | None = None
    citationSources: list[Raw] | None = None


class Part(Struct, gc=False):
    text: str | None = None
    thought: bool | None = None


class Content(Struct, gc=False):
    parts: list[Part] | None = None


class Candidate(Struct, gc=False):
    index: int | None = None
    content: Content | None = None
    finishReason: str | int | None = None
    safetyRatings: list[SafetyRating] | None = None
    citationMetadata: CitationMetadata | None = None


class PromptFeedback(Struct, gc=False):
    blockReason: str | int | None = None
    safetyRatings: list[SafetyRating] | None = None


class GeminiUsage(Struct, gc=False):
    promptTokenCount: NonNegInt | None = None
    candidatesTokenCount: NonNegInt | None = None
    thoughtsTokenCount: NonNegInt | None = None
    toolUsePromptTokenCount: NonNegInt | None = None
    totalTokenCount: NonNegInt | None = None


class PalmSafetyAttributes(Struct, gc=False):
    categories: list[str] | None = None
    scores: list[float] | None = None
    blocked: bool | None = None
    safetyRatings: list[SafetyRating] | None = None


class PalmChatCandidate(Struct, gc=False):
    """A chat-bison reply: `author` and `content`."""

    author: str | None = None
    content: str | None = None


class PalmPrediction(Struct, gc=False):
    content: str | None = None
    #: chat-bison's replies (text-bison gives `content` itself)
    candidates: list[PalmChatCandidate] | None = None
    safetyAttributes: PalmSafetyAttributes | list[PalmSafetyAttributes] | None = None
    citationMetadata: CitationMetadata | None = None


class PalmTokenCount(Struct, gc=False):
    # floats: the Vertex SDK hands these over as protobuf Struct numbers (448.0)
    totalTokens: NonNegFloat | None = None


class PalmTokenMetadata(Struct, gc=False):
    inputTokenCount: PalmTokenCount | None = None
    outputTokenCount: PalmTokenCount | None = None


class PalmMetadata(Struct, gc=False):
    tokenMetadata: PalmTokenMetadata | None = None


class FilterResult(Struct, gc=False):
    """One Azure content-filter category: `severity` for harm classes, `detected` for others."""

    filtered: bool | None = None
    severity: str | None = None
    detected: bool | None = None


# some Azure API versions send `custom_blocklists` as a list; it carries no score
FilterResults = dict[str, FilterResult | list[Raw]]


class Annotation(Struct, gc=False):
    type: str | None = None


class Message(Struct, gc=False):
    content: str | None = None
    annotations: list[Annotation] | None = None


class Delta(Struct, gc=False):
    content: str | None = None


class Choice(Struct, gc=False):
    index: int | None = None
    message: Message | None = None
    delta: Delta | None = None
    finish_reason: str | None = None
    content_filter_results: FilterResults | None = None


class PromptFilter(Struct, gc=False):
    content_filter_results: FilterResults | None = None


class OpenAIUsage(Struct, gc=False):
    prompt_tokens: NonNegInt | None = None
    completion_tokens: NonNegInt | None = None


class InnerError(Struct, gc=False):
    content_filter_result: FilterResults | None = None


class ErrorInfo(Struct, gc=False):
    code: int | str | None = None
    message: str | None = None
    status: str | int | None = None
    type: str | None = None
    innererror: InnerError | None = None


class Body(Struct, gc=False):
    """Any provider response (or one stream chunk); which fields are set tells the provider."""

    # Vertex AI PaLM predict
    predictions: list[PalmPrediction] | None = None
    metadata: PalmMetadata | None = None
    # Gemini generateContent
    candidates: list[Candidate] | None = None
    promptFeedback: PromptFeedback | None = None
    usageMetadata: GeminiUsage | None = None
    modelVersion: str | None = None
    # OpenAI / Azure OpenAI chat completions
    choices: list[Choice] | None = None
    usage: OpenAIUsage | None = None
    model: str | None = None
    object: str | None = None
    prompt_filter_results: list[PromptFilter] | None = None
    # a failed call
    error: ErrorInfo | None = None


# ---------------------------------------------------------------- OTLP JSON traces


class ArrayValue(Struct, gc=False):
    values: list[AnyValue] | None = None


class AnyValue(Struct, gc=False):
    stringValue: str | None = None
    # proto3 JSON writes int64 as a string; exporters differ, so accept both
    intValue: Annotated[int, Meta(ge=-(2**63), le=2**63 - 1)] | str | None = None
    doubleValue: float | None = None
    boolValue: bool | None = None
    arrayValue: ArrayValue | None = None


class KeyValue(Struct, gc=False):
    key: str
    value: AnyValue | None = None


class SpanStatus(Struct, gc=False):
    code: int | str | None = None
    message: str | None = None


class Span(Struct, gc=False):
    traceId: str = ""
    spanId: str = ""
    startTimeUnixNano: int | str | None = None
    endTimeUnixNano: int | str | None = None
    attributes: list[KeyValue] | None = None
    status: SpanStatus | None = None


class ScopeSpans(Struct, gc=False):
    spans: list[Span] | None = None


class ResourceSpans(Struct, gc=False):
    scopeSpans: list[ScopeSpans] | None = None


# ---------------------------------------------------------------- the record


class WireBase(Struct, kw_only=True, gc=False):
    """Fields that are not canonical: envelope body, LogEntry wrapper, OTLP, bare responses."""

    response_body: Body | list[Body] | str | None = None
    jsonPayload: Wire | None = None
    insertId: str | None = None
    resourceSpans: list[ResourceSpans] | None = None
    # present only on a bare provider response (no envelope): recognised, then rejected.
    # Lists of Raw, not `Raw | None`: msgspec reads that union as "null only"
    candidates: list[Raw] | None = None
    choices: list[Raw] | None = None
    predictions: list[Raw] | None = None


def _meta_of(constraints: list[Any]) -> Meta | None:
    """pydantic/annotated-types bounds → the msgspec Meta that checks the same while parsing."""
    kwargs: dict[str, Any] = {}
    for c in constraints:
        if isinstance(c, FieldInfo):
            sub = _meta_of(list(c.metadata))
            if sub is not None:
                kwargs.update(
                    {
                        k: getattr(sub, k)
                        for k in ("ge", "le", "min_length", "max_length")
                        if getattr(sub, k) is not None
                    }
                )
        elif isinstance(c, annotated_types.Ge):
            kwargs["ge"] = c.ge
        elif isinstance(c, annotated_types.Le):
            kwargs["le"] = c.le
        elif isinstance(c, annotated_types.MinLen):
            kwargs["min_length"] = c.min_length
        elif isinstance(c, annotated_types.MaxLen):
            kwargs["max_length"] = c.max_length
    return Meta(**kwargs) if kwargs else None


def _wire_type(annotation: Any, constraints: list[Any]) -> Any:
    """Translate one pydantic annotation into the msgspec type with the same bounds."""
    origin = get_origin(annotation)
    if origin is Annotated:
        base, *extra = get_args(annotation)
        return _wire_type(base, [*constraints, *extra])
    if origin in (Union, types.UnionType):
        return Union[tuple(_wire_type(a, constraints) for a in get_args(annotation))]  # noqa: UP007
    if origin in (list, dict):
        return origin[tuple(_wire_type(a, []) for a in get_args(annotation))]
    if annotation is int and not any(isinstance(c, annotated_types.Le) for c in constraints):
        constraints = [*constraints, annotated_types.Le(MAX_EXACT_INT)]
    meta = _meta_of(constraints)
    return annotation if meta is None else Annotated[annotation, meta]


#: canonical field names, in PredictionLog's order
CANONICAL_FIELDS: tuple[str, ...] = tuple(PredictionLog.model_fields)

if TYPE_CHECKING:

    class Wire(WireBase, kw_only=True, gc=False):
        """Static view of the derived struct below, for the type checker only."""

        request_id: str | None = None
        timestamp: dt.datetime | None = None
        model: str | None = None
        model_version: str | None = None
        endpoint: str | None = None
        tenant: str | None = None
        labels: dict[str, str] | None = None
        latency_ms: float | None = None
        time_to_first_token_ms: float | None = None
        input_tokens: int | None = None
        output_tokens: int | None = None
        blocked: bool | None = None
        block_stage: Literal["prompt", "response"] | None = None
        block_reason: str | None = None
        safety_scores: dict[str, float] | None = None
        finish_reason: str | None = None
        citation_count: int | None = None
        prompt: str | None = None
        response: str | None = None
        embedding: list[float] | None = None
        error: str | None = None

else:
    # every canonical field is optional on the wire (None = absent): required-ness and
    # defaults are applied after the format is known, since an envelope's body supplies some
    Wire = msgspec.defstruct(
        "Wire",
        [
            (
                name,
                _wire_type(f.annotation, list(f.metadata)) | None,
                None,
            )
            for name, f in PredictionLog.model_fields.items()
        ],
        bases=(WireBase,),
        kw_only=True,
        gc=False,
        module=__name__,
    )

WIRE_DECODER = msgspec.json.Decoder(Wire)
BODY_DECODER = msgspec.json.Decoder(Body)
DOCUMENT_DECODER = msgspec.json.Decoder(Raw)
ARRAY_DECODER = msgspec.json.Decoder(list[Raw])
