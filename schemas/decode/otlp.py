"""OpenTelemetry GenAI spans (OTLP JSON traces) → canonical records.

One OTLP document may carry many spans; each span with GenAI semantic-convention attributes
(`gen_ai.*`) is one call. Spans without any `gen_ai.` attribute (HTTP, database, the app's own
spans) are skipped silently: a collector exports whole traces, and those spans are not errors.
Finish reasons are the provider's words, so they are normalised by the same table as response
bodies (`schemas.decode.finish`); a blocking one sets `block_reason` to its upper-case word.

A span has no bytes of its own in the document, so a span without `gen_ai.response.id` gets a
request id derived from its trace and span ids, which are just as stable across redeliveries.
"""

from __future__ import annotations

from datetime import UTC, datetime

from schemas.decode.bodies import BodyError, fail
from schemas.decode.finish import canonical_finish_reason, response_block_reason
from schemas.decode.wire import AnyValue, Span, Wire, WireBase
from schemas.prediction_log import deterministic_request_id

AttrValue = str | int | float | bool | list["AttrValue"] | None


def _value(v: AnyValue | None) -> AttrValue:
    if v is None:
        return None
    if v.stringValue is not None:
        return v.stringValue
    if v.intValue is not None:
        return int(v.intValue) if isinstance(v.intValue, str) else v.intValue
    if v.doubleValue is not None:
        return v.doubleValue
    if v.boolValue is not None:
        return v.boolValue
    if v.arrayValue is not None:
        return [_value(x) for x in v.arrayValue.values or ()]
    return None


def _nanos(value: int | str | None, path: str) -> int:
    if value is None:
        fail(path, "required for a GenAI span, got nothing")
    try:
        return int(value)
    except ValueError as e:
        reason = f"must be an integer of nanoseconds, got {value!r}"
        raise BodyError(path, reason) from e


def _int_attr(attrs: dict[str, AttrValue], keys: tuple[str, ...], path: str) -> int | None:
    for key in keys:
        value = attrs.get(key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int | float) or value != int(value):
            fail(f"{path}.{key}", f"must be a whole number, got {value!r}")
        return int(value)
    return None


def _str_attr(attrs: dict[str, AttrValue], key: str) -> str | None:
    value = attrs.get(key)
    return value if isinstance(value, str) and value else None


def span_record(span: Span, path: str) -> Wire | None:
    """The record of one span, or None when it is not a GenAI span."""
    attrs: dict[str, AttrValue] = {}
    for kv in span.attributes or ():
        v = kv.value  # most attributes are strings: no call for those
        attrs[kv.key] = v.stringValue if v is not None and v.stringValue is not None else _value(v)
    if not any(k.startswith("gen_ai.") for k in attrs):
        return None
    attr_path = f"{path}.attributes"
    model = _str_attr(attrs, "gen_ai.request.model") or _str_attr(attrs, "gen_ai.response.model")
    if model is None:
        fail(attr_path, "a GenAI span needs gen_ai.request.model or gen_ai.response.model")
    start = _nanos(span.startTimeUnixNano, f"{path}.startTimeUnixNano")
    end = _nanos(span.endTimeUnixNano, f"{path}.endTimeUnixNano")
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
        timestamp=datetime.fromtimestamp(start // 1_000_000_000, tz=UTC).replace(
            microsecond=(start % 1_000_000_000) // 1000
        ),
        model=model,
        model_version=_str_attr(attrs, "gen_ai.response.model"),
        latency_ms=(end - start) / 1e6,
        input_tokens=_int_attr(
            attrs, ("gen_ai.usage.input_tokens", "gen_ai.usage.prompt_tokens"), attr_path
        ),
        output_tokens=_int_attr(
            attrs, ("gen_ai.usage.output_tokens", "gen_ai.usage.completion_tokens"), attr_path
        ),
        blocked=blocked_by is not None,
        block_stage="response" if blocked_by is not None else None,
        block_reason=blocked_by,
        finish_reason=canonical_finish_reason(finish[0]) if finish else None,
        error=error,
    )
    return record


def otlp_records(doc: WireBase) -> list[tuple[Wire | BodyError, str]]:
    """Every GenAI span of a document, in order, each a record or the reason it is bad."""
    out: list[tuple[Wire | BodyError, str]] = []
    for r, resource in enumerate(doc.resourceSpans or ()):
        for s, scope in enumerate(resource.scopeSpans or ()):
            for k, span in enumerate(scope.spans or ()):
                path = f"resourceSpans[{r}].scopeSpans[{s}].spans[{k}]"
                try:
                    record = span_record(span, path)
                except BodyError as e:
                    out.append((e, path))
                    continue
                if record is not None:
                    out.append((record, path))
    return out
