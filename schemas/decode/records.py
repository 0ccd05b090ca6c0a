"""A message's bytes → records in input order, each a `Wire` row or a `DecodeError`.

This is the part both decode paths share (the columnar hot path and the pydantic slow path), so
the two accept and reject the same records by construction: splitting into records, one msgspec
decode per record, telling the format, reading provider bodies and filling in what an envelope
or LogEntry leaves out.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import msgspec
import orjson

from schemas.decode.bodies import PROVIDER_KINDS, BodyError, interpret
from schemas.decode.finish import canonical_finish_reason
from schemas.decode.otlp import otlp_records
from schemas.decode.wire import ARRAY_DECODER, DOCUMENT_DECODER, WIRE_DECODER, Wire
from schemas.errors import DecodeError
from schemas.prediction_log import deterministic_request_id

#: the accepted format hints; the provider names mean "an envelope with that body"
FORMATS: tuple[str, ...] = ("native", "envelope", "logentry", "otlp", *PROVIDER_KINDS)

Item = tuple[int, bytes, Wire | DecodeError]


def _without_terminator(line: bytes) -> bytes:
    """A line as it was sent, minus the `\r` of a `\r\n` terminator (not part of the record)."""
    return line[:-1] if line[-1:] == b"\r" else line


def split_records(data: bytes, first_line: int) -> Iterator[tuple[int, bytes, bytes]]:
    """(line, raw, record) of each record: one JSON document, or NDJSON with blank lines skipped.

    `raw` is the record's original bytes (what a dead-letter topic must get back), `record`
    the same stripped of surrounding whitespace: it is what is parsed and what a missing
    request id is hashed from, so an id does not change when a sender pads a line differently.
    A body spanning several lines is first tried as one (pretty-printed) document; only if that
    does not parse is it read as NDJSON.
    """
    lines = data.split(b"\n")
    if len(lines) > 1:
        start = next((i for i, line in enumerate(lines) if line.strip()), None)
        if start is None:
            return
        head = lines[start].strip()
        if head[:1] in (b"{", b"["):
            try:
                DOCUMENT_DECODER.decode(data)  # surrounding whitespace is fine: no copy
            except msgspec.DecodeError:
                if head in (b"{", b"["):  # a pretty-printed document that is broken
                    yield first_line + start, _document_raw(lines, start), data.strip()
                    return
            else:
                yield first_line + start, _document_raw(lines, start), data.strip()
                return
    if b"\r" in data:
        for i, line in enumerate(lines):
            record = line.strip()
            if record:
                yield first_line + i, _without_terminator(line), record
        return
    # the common case, written for speed: no `\r`, so a line is its record's raw bytes
    for i, line in enumerate(lines, first_line):
        record = line.strip()
        if record:
            yield i, line, record


def _document_raw(lines: list[bytes], start: int) -> bytes:
    return _without_terminator(b"\n".join(lines[start:]).removesuffix(b"\n"))


def iter_items(
    data: bytes, format_hint: str | None, first_line: int, max_bytes: int
) -> Iterator[Item]:
    """Every record of a message in input order (an OTLP document may give several), lazily.

    Lazily, so the hot path sorts records from errors as they come, with no list in between.
    """
    if format_hint is not None and format_hint not in FORMATS:
        reason = f"unknown format {format_hint!r}, expected one of {', '.join(FORMATS)}"
        for line, raw, _record in split_records(data, first_line):
            yield line, raw, DecodeError(line, reason, raw, None, "unknown_format")
        return
    decode = WIRE_DECODER.decode
    for line, raw, record in split_records(data, first_line):
        if len(record) > max_bytes:
            reason = f"record is {len(record)} bytes, over the limit of {max_bytes} bytes"
            yield line, raw, DecodeError(line, reason, raw, None, "too_large")
        elif record[:1] == b"[":
            try:
                elements = ARRAY_DECODER.decode(record)
            except msgspec.DecodeError as e:
                yield line, raw, _msgspec_error(e, line, raw)
                continue
            for element in elements:
                one = bytes(element)
                yield from _decode_one(one, one, line, format_hint)
        elif format_hint is None:
            # the common case inlined (one envelope or native record per line, no hint)
            try:
                wire = decode(record)
            except msgspec.DecodeError as e:
                yield line, raw, _msgspec_error(e, line, raw)
                continue
            if (
                wire.resourceSpans is None
                and wire.jsonPayload is None
                and (
                    wire.response_body is not None
                    or (
                        wire.candidates is None
                        and wire.choices is None
                        and wire.predictions is None
                    )
                )
            ):
                yield line, raw, _complete(wire, record, raw, line, None, "")
                continue
            yield from _records_of(wire, record, raw, line, None)
        else:
            yield from _decode_one(record, raw, line, format_hint)


def decode_items(
    data: bytes, format_hint: str | None, first_line: int, max_bytes: int
) -> list[Item]:
    """`iter_items` as a list (the slow path wants random access to every record)."""
    return list(iter_items(data, format_hint, first_line, max_bytes))


def _decode_one(record: bytes, raw: bytes, line: int, hint: str | None) -> list[Item]:
    """One JSON document → its record(s); `record` is parsed and hashed, `raw` is reported."""
    try:
        wire = WIRE_DECODER.decode(record)
    except msgspec.DecodeError as e:
        return [(line, raw, _msgspec_error(e, line, raw))]
    return _records_of(wire, record, raw, line, hint)


def _records_of(wire: Wire, record: bytes, raw: bytes, line: int, hint: str | None) -> list[Item]:
    """The record(s) of one decoded document, whatever its format."""
    fmt = _format_of(wire)
    if hint is not None and fmt != ("envelope" if hint in PROVIDER_KINDS else hint):
        reason = f"format {hint} expected, but the record looks like {fmt}"
        return [(line, raw, DecodeError(line, reason, raw, None, "wrong_format"))]
    kind = hint if hint in PROVIDER_KINDS else None
    if fmt == "otlp":
        out: list[Item] = []
        for span in otlp_records(wire):
            if isinstance(span, BodyError):
                out.append((line, raw, DecodeError(line, span.reason, raw, span.field)))
            else:
                out.append((line, raw, span))
        return out
    if fmt == "bare_response":
        reason = (
            "a bare provider response: wrap it in an envelope "
            "{timestamp, model, latency_ms, response_body}"
        )
        return [(line, raw, DecodeError(line, reason, raw, None, "unknown_format"))]
    if fmt == "logentry":
        entry, payload = wire, wire.jsonPayload
        assert payload is not None
        inner = _format_of(payload)
        if inner not in ("native", "envelope"):
            reason = f"a LogEntry jsonPayload must be a native record or an envelope, got {inner}"
            return [(line, raw, DecodeError(line, reason, raw, "jsonPayload", "unknown_format"))]
        if payload.timestamp is None:
            payload.timestamp = entry.timestamp
        if payload.request_id is None:
            payload.request_id = entry.insertId or None
        if payload.labels is None:
            payload.labels = entry.labels
        return [(line, raw, _complete(payload, record, raw, line, kind, "jsonPayload."))]
    return [(line, raw, _complete(wire, record, raw, line, kind, ""))]


def _format_of(wire: Wire) -> str:
    if wire.resourceSpans is not None:
        return "otlp"
    if wire.jsonPayload is not None:
        return "logentry"
    if wire.response_body is not None:
        return "envelope"
    if wire.candidates is not None or wire.choices is not None or wire.predictions is not None:
        return "bare_response"
    return "native"


def _complete(
    wire: Wire, record: bytes, raw: bytes, line: int, kind: str | None, prefix: str
) -> Wire | DecodeError:
    """Fill what the body says and the envelope did not; check the fields every record needs."""
    if wire.response_body is not None:
        try:
            facts = interpret(wire.response_body, kind)
        except BodyError as e:
            return DecodeError(line, e.reason, raw, prefix + e.field)
        # the envelope's own values win; written out field by field, as this runs per record,
        # and the body's value is looked at first: most are None (no block, no error)
        if facts.model_version is not None and wire.model_version is None:
            wire.model_version = facts.model_version
        if facts.input_tokens is not None and wire.input_tokens is None:
            wire.input_tokens = facts.input_tokens
        if facts.output_tokens is not None and wire.output_tokens is None:
            wire.output_tokens = facts.output_tokens
        if wire.blocked is None:
            wire.blocked = facts.blocked
        if facts.block_stage is not None and wire.block_stage is None:
            wire.block_stage = facts.block_stage
        if facts.block_reason is not None and wire.block_reason is None:
            wire.block_reason = facts.block_reason
        if wire.safety_scores is None:
            wire.safety_scores = facts.safety_scores
        if facts.finish_reason is not None and wire.finish_reason is None:
            wire.finish_reason = facts.finish_reason
        if facts.citation_count is not None and wire.citation_count is None:
            wire.citation_count = facts.citation_count
        if facts.response is not None and wire.response is None:
            wire.response = facts.response
        if facts.error is not None and wire.error is None:
            wire.error = facts.error
        wire.response_body = None
    if wire.timestamp is None and wire.model is None and wire.request_id is None and not prefix:
        reason = "no field of a known format (native, envelope, logentry, otlp) was found"
        return DecodeError(line, reason, raw, None, "unknown_format")
    if wire.timestamp is None:
        return DecodeError(line, "required, got nothing", raw, prefix + "timestamp")
    if wire.timestamp.tzinfo is None:
        reason = f"must carry a timezone (e.g. a trailing 'Z'), got '{wire.timestamp.isoformat()}'"
        return DecodeError(line, reason, raw, prefix + "timestamp")
    if wire.model is None:
        return DecodeError(line, "required, got nothing", raw, prefix + "model")
    if wire.request_id is None:
        wire.request_id = deterministic_request_id(record)
    if wire.finish_reason is not None:
        # an envelope or a native record may carry a provider's word too (`STOP`)
        wire.finish_reason = canonical_finish_reason(wire.finish_reason)
    return wire


# ---------------------------------------------------------------- readable msgspec errors

_EXPECTED = re.compile(
    r"Expected `(?P<type>[^`]+)`(?: (?P<op>>=|<=|>|<) (?P<bound>\S+))?"
    r"(?: of length (?P<lop>>=|<=) (?P<len>\d+))?(?:, got `(?P<got>[^`]+)`)?"
)
_TYPE_WORDS = {
    "str": "a string",
    "float": "a number",
    "int": "an integer",
    "bool": "true or false",
    "object": "an object",
    "array": "an array",
    "datetime": "an RFC 3339 timestamp",
}
_PATH_TOKEN = re.compile(r"\.([^.\[]+)|\[(\d+|\.\.\.)\]")


def _expected_words(m: re.Match[str]) -> str:
    names = [t for t in m["type"].split(" | ") if t != "null"]
    words = " or ".join(_TYPE_WORDS.get(t, t) for t in names)
    if m["op"] == ">=" and float(m["bound"]) == 0:
        words = words.replace("a number", "a non-negative number").replace(
            "an integer", "a non-negative integer"
        )
    elif m["op"]:
        words += f" {m['op']} {m['bound']}"
    if m["lop"] == ">=" and m["len"] == "1":
        words = "a non-empty string"
    elif m["lop"]:
        words += f" of at most {m['len']} characters" if m["lop"] == "<=" else ""
    return words


def _value_at(raw: bytes, path: str) -> tuple[bool, Any]:
    try:
        value: Any = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return False, None
    for key, index in _PATH_TOKEN.findall(path):
        if key and isinstance(value, dict) and key in value:
            value = value[key]
        elif index.isdigit() and isinstance(value, list) and int(index) < len(value):
            value = value[int(index)]
        else:
            return False, None
    return True, value


def _msgspec_error(e: msgspec.DecodeError, line: int, raw: bytes) -> DecodeError:
    message = str(e)
    if not isinstance(e, msgspec.ValidationError):
        return DecodeError(line, f"malformed JSON: {message}", raw, None, "malformed_json")
    text, _, at = message.partition(" - at `")
    path = at.rstrip("`")
    field = path.removeprefix("$").removeprefix(".").replace("[...]", "") or None
    m = _EXPECTED.match(text)
    if m:
        reason = f"must be {_expected_words(m)}"
    elif text.startswith("Invalid RFC3339"):
        reason = "must be an RFC 3339 timestamp with a timezone"
    elif text.startswith("Number out of range"):
        reason = "must be a finite number"
    else:
        reason = text
    found, value = _value_at(raw, path.removeprefix("$")) if path else (False, None)
    if found:
        shown = orjson.dumps(value).decode()
        reason += f", got {shown[:80] + '…' if len(shown) > 80 else shown}"
    return DecodeError(line, reason, raw, field)
