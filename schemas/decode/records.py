"""A message's bytes → records in input order, each a `Wire` row or a `DecodeError`.

This is the part both decode paths share (the columnar hot path and the pydantic slow path), so
the two accept and reject the same records by construction: splitting into records, one msgspec
decode per record, telling the format, reading provider bodies and filling in what an envelope
or LogEntry leaves out.
"""

from __future__ import annotations

from collections.abc import Iterator

import msgspec

from schemas.decode.bodies import PROVIDER_KINDS, BodyError, interpret
from schemas.decode.finish import canonical_finish_reason, response_block_reason
from schemas.decode.guards import (
    BOM,
    deep_line_candidates,
    too_deep,
    too_deep_reason,
    too_large_reason,
    utf8_reason,
)
from schemas.decode.otlp import otlp_records
from schemas.decode.reasons import msgspec_error, with_other_bad_fields
from schemas.decode.wire import (
    ARRAY_DECODER,
    DOCUMENT_DECODER,
    WIRE_DECODER,
    Wire,
)
from schemas.errors import DecodeError
from schemas.prediction_log import deterministic_request_id

#: the accepted format hints; the provider names mean "an envelope with that body"
FORMATS: tuple[str, ...] = ("native", "envelope", "logentry", "otlp", *PROVIDER_KINDS)

Item = tuple[int, bytes, Wire | DecodeError]


def _without_terminator(line: bytes) -> bytes:
    """A line as it was sent, minus the `\r` of a `\r\n` terminator (not part of the record)."""
    return line[:-1] if line[-1:] == b"\r" else line


def split_records(
    data: bytes, first_line: int, max_depth: int
) -> Iterator[tuple[int, bytes, bytes, bool]]:
    """(line, raw, record, maybe_deep) of each record: one JSON document, or NDJSON with blank
    lines skipped.

    `raw` is the record's original bytes (what a dead-letter topic must get back), `record`
    the same stripped of surrounding whitespace: it is what is parsed and what a missing
    request id is hashed from, so an id does not change when a sender pads a line differently.
    `maybe_deep` is False when the record cannot nest deeper than `max_depth` (see
    `deep_line_candidates`), so only the others are checked exactly before parsing.
    A body spanning several lines is first tried as one (pretty-printed) document; only if that
    does not parse is it read as NDJSON. Nothing here may raise on what a line holds: a first
    line too deep for the parser is left to the per-record check, which reports it.
    """
    lines = data.split(b"\n")
    if len(lines) > 1:
        start = next((i for i, line in enumerate(lines) if line.strip()), None)
        if start is None:
            return
        head = lines[start].strip()
        pretty = head in (b"{", b"[")
        if head[:1] in (b"{", b"[") and not too_deep(data if pretty else head, max_depth):
            try:
                DOCUMENT_DECODER.decode(data)  # surrounding whitespace is fine: no copy
            except Exception:
                # a pretty-printed document that is broken is one bad record, unless a later
                # line is a document of its own: then it was a bad line of NDJSON, which must
                # not take the lines after it along
                if pretty and not _has_documents(lines[start + 1 :], max_depth):
                    yield first_line + start, _document_raw(lines, start), data.strip(), True
                    return
            else:
                yield first_line + start, _document_raw(lines, start), data.strip(), True
                return
        elif pretty and not _has_documents(lines[start + 1 :], max_depth):
            # a pretty-printed document too deep to parse: one record, reported so
            yield first_line + start, _document_raw(lines, start), data.strip(), True
            return
    candidates = deep_line_candidates(data, lines, max_depth)
    if b"\r" in data:
        for i, line in enumerate(lines):
            record = line.strip()
            if record:
                deep = candidates is not None and bool(candidates[i])
                yield first_line + i, _without_terminator(line), record, deep
        return
    # the common case, written for speed: no `\r`, so a line is its record's raw bytes
    if candidates is None:
        for i, line in enumerate(lines, first_line):
            record = line.strip()
            if record:
                yield i, line, record, False
        return
    for i, (line, deep) in enumerate(zip(lines, candidates.tolist(), strict=True), first_line):
        record = line.strip()
        if record:
            yield i, line, record, deep


def _has_documents(lines: list[bytes], max_depth: int) -> bool:
    """Does any line hold a whole JSON object or array by itself? Asked only of a message
    that looked like one pretty-printed document and could not be parsed as one."""
    for line in lines:
        text = line.strip()
        if text[:1] not in (b"{", b"[") or len(text) < 2:
            continue
        if too_deep(text, max_depth):  # cannot be parsed safely: judged by its ends
            if text[-1:] in (b"}", b"]"):
                return True
            continue
        try:
            DOCUMENT_DECODER.decode(text)
        except Exception:
            continue
        return True
    return False


def _document_raw(lines: list[bytes], start: int) -> bytes:
    return _without_terminator(b"\n".join(lines[start:]).removesuffix(b"\n"))


def iter_items(
    data: bytes, format_hint: str | None, first_line: int, max_bytes: int, max_depth: int
) -> Iterator[Item]:
    """Every record of a message in input order (an OTLP document may give several), lazily.

    Lazily, so the hot path sorts records from errors as they come, with no list in between.
    Whatever one record does to the parser or to the code after it ends as a `DecodeError` for
    that record alone (`_record_error`): the loop never stops on one line.
    """
    if format_hint is not None and format_hint not in FORMATS:
        reason = f"unknown format {format_hint!r}, expected one of {', '.join(FORMATS)}"
        for line, raw, _record, _deep in split_records(data, first_line, max_depth):
            yield line, raw, DecodeError(line, reason, raw, None, "unknown_format")
        return
    decode = WIRE_DECODER.decode
    for line, raw, record, maybe_deep in split_records(data, first_line, max_depth):
        out: Wire | DecodeError | list[Item]
        try:
            if len(record) > max_bytes:
                reason = too_large_reason(len(record), max_bytes)
                out = DecodeError(line, reason, raw, None, "too_large")
            elif maybe_deep and too_deep(record, max_depth):
                out = DecodeError(line, too_deep_reason(max_depth), raw, None, "too_deep")
            elif record[:1] == b"[":
                out = _array_items(record, raw, line, format_hint, max_depth)
            elif format_hint is None:
                # the common case inlined (one envelope or native record per line, no hint)
                wire = decode(record)
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
                    out = _complete(wire, record, raw, line, None, "", max_depth)
                else:
                    out = _records_of(wire, record, raw, line, None, max_depth)
            else:
                out = _decode_one(record, raw, line, format_hint, max_depth)
        except Exception as e:
            out = _record_error(e, record, raw, line, format_hint, max_depth)
        if isinstance(out, list):
            yield from out
        else:
            yield line, raw, out


def _record_error(
    e: Exception, record: bytes, raw: bytes, line: int, hint: str | None, max_depth: int
) -> DecodeError | list[Item]:
    """What a record that raised becomes: a readable error, or its records without a BOM."""
    if isinstance(e, msgspec.DecodeError):
        if record.startswith(BOM):  # RFC 8259 lets a parser ignore it: read what follows
            try:
                return _decode_one(record[len(BOM) :], raw, line, hint, max_depth)
            except Exception as again:
                return _record_error(again, record[len(BOM) :], raw, line, hint, max_depth)
        first = msgspec_error(e, line, raw, record)
        if isinstance(e, msgspec.ValidationError):
            return with_other_bad_fields(first, record, WIRE_DECODER)
        return first
    if isinstance(e, UnicodeDecodeError):
        return DecodeError(line, utf8_reason(record), raw, None, "invalid_utf8")
    if isinstance(e, RecursionError):  # below the depth limit, yet too deep for this stack
        return DecodeError(line, too_deep_reason(max_depth), raw, None, "too_deep")
    # a bug of ours must still cost only this record: it is reported with the exception
    reason = f"internal decoder error ({type(e).__name__}: {e})"
    return DecodeError(line, reason, raw, None, "internal_error")


def _array_items(
    record: bytes, raw: bytes, line: int, hint: str | None, max_depth: int
) -> DecodeError | list[Item]:
    """A line holding a JSON array of records: each object its own record.

    An array that holds anything but objects (`[1,2,3]`) is not a list of records: it is one
    bad line, reported once, not once per element.
    """
    elements = [bytes(element) for element in ARRAY_DECODER.decode(record)]
    if not elements:
        return DecodeError(line, "an empty array holds no record", raw, None, "invalid_record")
    for i, element in enumerate(elements):
        if element[:1] != b"{":
            kind = _kind_of(element)
            reason = f"an array on one line must hold records (JSON objects), got {kind} at [{i}]"
            return DecodeError(line, reason, raw, None, "invalid_record")
    out: list[Item] = []
    for element in elements:
        try:
            out.extend(_decode_one(element, element, line, hint, max_depth))
        except Exception as e:
            error = _record_error(e, element, element, line, hint, max_depth)
            out.extend(error if isinstance(error, list) else [(line, element, error)])
    return out


def _kind_of(value: bytes) -> str:
    first = value[:1]
    if first == b'"':
        return "a string"
    if first in (b"t", b"f"):
        return "true or false"
    if first == b"n":
        return "null"
    if first == b"[":
        return "an array"
    return "a number"


def decode_items(
    data: bytes, format_hint: str | None, first_line: int, max_bytes: int, max_depth: int
) -> list[Item]:
    """`iter_items` as a list (the slow path wants random access to every record)."""
    return list(iter_items(data, format_hint, first_line, max_bytes, max_depth))


def _decode_one(
    record: bytes, raw: bytes, line: int, hint: str | None, max_depth: int
) -> list[Item]:
    """One JSON document → its record(s); `record` is parsed and hashed, `raw` is reported.

    Raises what the parser raises; the caller turns it into this record's error.
    """
    wire = WIRE_DECODER.decode(record)
    return _records_of(wire, record, raw, line, hint, max_depth)


def _records_of(
    wire: Wire, record: bytes, raw: bytes, line: int, hint: str | None, max_depth: int
) -> list[Item]:
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
        return [(line, raw, _complete(payload, record, raw, line, kind, "jsonPayload.", max_depth))]
    return [(line, raw, _complete(wire, record, raw, line, kind, "", max_depth))]


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
    wire: Wire,
    record: bytes,
    raw: bytes,
    line: int,
    kind: str | None,
    prefix: str,
    max_depth: int,
) -> Wire | DecodeError:
    """Fill what the body says and the envelope did not; check the fields every record needs."""
    if wire.response_body is not None:
        try:
            facts = interpret(wire.response_body, kind, max_depth)
        except BodyError as e:
            return DecodeError(line, e.reason, raw, prefix + e.field)
        # the envelope's own values win, but for a block: a body that was blocked is a block
        # whatever `blocked: false` a logging wrapper wrote by default (as any blocked answer
        # of several blocks the call). Written out field by field, as this runs per record,
        # and the body's value is looked at first: most are None (no block, no error)
        if facts.model_version is not None and wire.model_version is None:
            wire.model_version = facts.model_version
        if facts.input_tokens is not None and wire.input_tokens is None:
            wire.input_tokens = facts.input_tokens
        if facts.output_tokens is not None and wire.output_tokens is None:
            wire.output_tokens = facts.output_tokens
        if not wire.blocked:
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
        # an envelope or a native record may carry a provider's word too (`STOP`); a blocking
        # one (`SAFETY`, `content_filter`) is a block, as it is in a body or a span
        if not wire.blocked:
            block = response_block_reason(wire.finish_reason)
            if block is not None:
                wire.blocked = True
                wire.block_stage = wire.block_stage or "response"
                wire.block_reason = wire.block_reason or block
        wire.finish_reason = canonical_finish_reason(wire.finish_reason)
    return wire
