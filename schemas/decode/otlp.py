"""OpenTelemetry GenAI spans (OTLP JSON traces) → canonical records.

One OTLP document may carry many spans; each span with GenAI semantic-convention attributes
(`gen_ai.*`) is one call. Spans without any `gen_ai.` attribute (HTTP, database, the app's own
spans) are skipped silently: a collector exports whole traces, and those spans are not errors.
So are GenAI spans that are not a model call (`gen_ai.operation.name` `invoke_agent`,
`create_agent`, `execute_tool`): an agent's span carries its model and the usage of the calls
under it, which are spans of their own, so counting it would count every call and token twice,
and a tool's span has no model at all.
Finish reasons are the provider's words, so they are normalised by the same table as response
bodies (`schemas.decode.finish`); a blocking one sets `block_reason` to its upper-case word.

A span has no bytes of its own in the document, so a span without `gen_ai.response.id` gets a
request id derived from its trace and span ids, which are just as stable across redeliveries.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from schemas.decode.bodies import BodyError, fail
from schemas.decode.finish import canonical_finish_reason, response_block_reason
from schemas.decode.wire import MAX_EXACT_INT, AnyValue, Span, Wire, WireBase
from schemas.prediction_log import deterministic_request_id

AttrValue = str | int | float | bool | list["AttrValue"] | None


def _value(v: AnyValue | None) -> AttrValue:
    if v is None:
        return None
    if v.stringValue is not None:
        return v.stringValue
    if v.intValue is not None:
        if not isinstance(v.intValue, str):
            return v.intValue
        try:  # proto3 JSON's int64-as-string; a 5,000-digit one is refused by `int` too
            return int(v.intValue)
        except ValueError as e:
            fail("attributes", f"intValue must be an integer, got {v.intValue[:40]!r}")
            raise AssertionError from e  # unreachable: `fail` raises
    if v.doubleValue is not None:
        return v.doubleValue
    if v.boolValue is not None:
        return v.boolValue
    if v.arrayValue is not None:
        return [_value(x) for x in v.arrayValue.values or ()]
    return None


#: OTLP times are fixed64 nanoseconds; one past year 9999 cannot become a timestamp
_MAX_NANOS = 253_402_300_799 * 10**9


def _nanos(value: int | str | None, field: str) -> int:
    if value is None:
        fail(field, "required for a GenAI span, got nothing")
    if type(value) is not int:
        try:
            value = int(value)
        except ValueError as e:
            reason = f"must be an integer of nanoseconds, got {str(value)[:40]!r}"
            raise BodyError(field, reason) from e
    if not 0 <= value <= _MAX_NANOS:
        shown = str(value) if len(str(value)) <= 24 else f"{str(value)[:20]}…"
        fail(field, f"must be nanoseconds since 1970 before year 10000, got {shown}")
    return value


def _int_attr(attrs: dict[str, AttrValue], keys: tuple[str, ...]) -> int | None:
    for key in keys:
        value = attrs.get(key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int | float):
            fail(f"attributes.{key}", f"must be a whole number, got {value!r}")
        if not -MAX_EXACT_INT <= value <= MAX_EXACT_INT:
            shown = str(value) if len(str(value)) <= 24 else f"{str(value)[:20]}…"
            fail(f"attributes.{key}", f"must be at most {MAX_EXACT_INT:,}, got {shown}")
        if value != int(value):
            fail(f"attributes.{key}", f"must be a whole number, got {value!r}")
        return int(value)
    return None


def _str_attr(attrs: dict[str, AttrValue], key: str) -> str | None:
    value = attrs.get(key)
    return value if isinstance(value, str) and value else None


#: GenAI operations that are not one model call (the semantic conventions' well-known names)
NOT_MODEL_CALLS = frozenset({"invoke_agent", "create_agent", "execute_tool"})

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_INPUT_KEYS = ("gen_ai.usage.input_tokens", "gen_ai.usage.prompt_tokens")
_OUTPUT_KEYS = ("gen_ai.usage.output_tokens", "gen_ai.usage.completion_tokens")


def span_record(span: Span) -> Wire | None:
    """The record of one span, or None when it is not a GenAI span.

    Runs once per span on the hot path, so a `BodyError` names its field below the span only
    (`otlp_records` puts the span's path in front) and no path string is built unless needed.
    """
    attrs: dict[str, AttrValue] = {}
    for kv in span.attributes or ():
        v = kv.value  # most attributes are strings: no call for those
        attrs[kv.key] = v.stringValue if v is not None and v.stringValue is not None else _value(v)
    if "gen_ai.request.model" not in attrs and not any(k.startswith("gen_ai.") for k in attrs):
        return None
    operation = attrs.get("gen_ai.operation.name")
    if isinstance(operation, str) and operation in NOT_MODEL_CALLS:
        return None
    model = _str_attr(attrs, "gen_ai.request.model") or _str_attr(attrs, "gen_ai.response.model")
    if model is None:
        fail("attributes", "a GenAI span needs gen_ai.request.model or gen_ai.response.model")
    start = _nanos(span.startTimeUnixNano, "startTimeUnixNano")
    end = _nanos(span.endTimeUnixNano, "endTimeUnixNano")
    reasons = attrs.get("gen_ai.response.finish_reasons")
    if isinstance(reasons, str):
        reasons = [reasons]
    finish = [r for r in reasons or () if isinstance(r, str)] if isinstance(reasons, list) else []
    # a span lists one finish reason per choice: a block of any choice blocks the call
    blocked_by = next((b for b in map(response_block_reason, finish) if b is not None), None)
    error = None
    if span.status is not None and span.status.code in (2, "STATUS_CODE_ERROR"):
        error = span.status.message or _str_attr(attrs, "error.type") or "span status ERROR"
    request_id = _str_attr(attrs, "gen_ai.response.id") or deterministic_request_id(
        f"otlp:{span.traceId}:{span.spanId}".encode()
    )
    record = Wire(
        request_id=request_id,
        # integer arithmetic: exact to the microsecond, as `fromtimestamp` of whole seconds is
        timestamp=_EPOCH + timedelta(microseconds=start // 1000),
        model=model,
        model_version=_str_attr(attrs, "gen_ai.response.model"),
        latency_ms=(end - start) / 1e6,
        input_tokens=_int_attr(attrs, _INPUT_KEYS),
        output_tokens=_int_attr(attrs, _OUTPUT_KEYS),
        blocked=blocked_by is not None,
        block_stage="response" if blocked_by is not None else None,
        block_reason=blocked_by,
        finish_reason=canonical_finish_reason(finish[0]) if finish else None,
        error=error,
    )
    return record


def otlp_records(doc: WireBase) -> list[Wire | BodyError]:
    """Every GenAI span of a document, in order, each a record or the reason it is bad.

    A `BodyError`'s field is the whole path from the document (`resourceSpans[0]...`).
    """
    out: list[Wire | BodyError] = []
    for r, resource in enumerate(doc.resourceSpans or ()):
        for s, scope in enumerate(resource.scopeSpans or ()):
            for k, span in enumerate(scope.spans or ()):
                try:
                    record = span_record(span)
                except BodyError as e:
                    path = f"resourceSpans[{r}].scopeSpans[{s}].spans[{k}].{e.field}"
                    out.append(BodyError(path, e.reason))
                    continue
                if record is not None:
                    out.append(record)
    return out
