"""Every way a record can hurt the parser costs that record alone, on both decode paths.

Measured before these tests (issue 9): a 50,000-deep line raised RecursionError and an invalid
UTF-8 line UnicodeDecodeError inside the decoder, so a whole message (49 good records beside
the bad line) or a whole 2,000-line chunk of a replayed file was lost as one `internal_error`.
Each test puts the bad line between good lines of every wire format and checks the good lines
decode exactly as they do without it (`tests.fuzz.isolation`), and that the one error says
the step, what was found and what was expected, once.
"""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import numpy as np
import orjson
import pytest

from schemas.config import DecodeConfig
from schemas.config_loading import load_config
from schemas.decode.api import (
    DecodeLimits,
    MessageBytes,
    decode_message,
    decode_messages,
    decode_records,
)
from schemas.decode.columns import build_batch
from schemas.decode.guards import nesting_depth, too_deep
from schemas.errors import DecodeError
from schemas.prediction_log import PredictionLog
from tests.fuzz.corpus import GOOD_RECORD, KNOWN_BAD, LIMITS, good_lines
from tests.fuzz.isolation import assert_every_line_accounted, assert_isolated


def neighbours() -> list[bytes]:
    """Good lines of several formats, with and without embeddings."""
    lines = good_lines()
    return [lines[0], lines[len(lines) // 3], lines[len(lines) // 2], lines[-1], lines[-2]]


def only_error(bad: bytes, limits: DecodeLimits = LIMITS) -> DecodeError:
    """The one error `bad` gets between good lines, after checking isolation on both paths."""
    good = neighbours()
    (error,) = assert_isolated(good, bad, 2, limits)
    assert error.line == 3 and error.raw == bad
    return error


@pytest.mark.parametrize("name", sorted(KNOWN_BAD))
def test_each_known_bad_line_is_one_error_and_costs_its_neighbours_nothing(name: str) -> None:
    error = only_error(KNOWN_BAD[name])
    assert error.reason.strip()
    assert error.error_type != "internal_error", error.describe()


def test_a_line_nested_50000_deep_is_refused_before_parsing_with_the_setting_named() -> None:
    for bad in (KNOWN_BAD["deep_object"], KNOWN_BAD["deep_array"]):
        error = only_error(bad)
        assert error.error_type == "too_deep"
        assert error.reason == "nested deeper than 64 levels (the limit is decode.max_depth)"
        assert "recursion" not in error.reason.lower()


def test_the_depth_limit_is_exact_and_ignores_brackets_in_strings() -> None:
    def nested(depth: int) -> bytes:  # the record itself is level 1
        inner = b"[" * (depth - 1) + b"]" * (depth - 1)
        return orjson.dumps(GOOD_RECORD)[:-1] + b',"extra":' + inner + b"}"

    assert len(decode_message(nested(64), limits=LIMITS).batch) == 1
    (error,) = decode_message(nested(65), limits=LIMITS).errors
    assert error.error_type == "too_deep"
    tight = DecodeLimits(max_depth=3)
    assert decode_message(nested(4), limits=tight).errors[0].error_type == "too_deep"
    in_a_string = orjson.dumps(GOOD_RECORD | {"prompt": "[[[[{{{{" * 100 + '\\"]]'})
    assert len(decode_message(in_a_string, limits=tight).batch) == 1
    assert nesting_depth(b'{"a":"\\\\","b":[["]"]]}') == 3
    assert not too_deep(b'["[[[[[[[[[["]', 2)


def test_an_invalid_utf8_line_says_where_the_bad_byte_is() -> None:
    error = only_error(KNOWN_BAD["invalid_utf8"])
    assert error.error_type == "invalid_utf8"
    offset = KNOWN_BAD["invalid_utf8"].index(b"\xff")
    assert error.reason == (
        f"not UTF-8 text: byte 0xff at offset {offset} is invalid start byte (JSON must be UTF-8)"
    )


def test_an_oversized_line_is_one_error_naming_the_setting_and_its_size() -> None:
    bad = KNOWN_BAD["oversized"]
    error = only_error(bad)
    assert error.error_type == "too_large"
    assert error.reason == (
        "record is larger than the limit of 1,048,576 bytes (decode.max_record_bytes): "
        f"{len(bad):,} bytes"
    )


def test_an_array_of_non_records_is_one_error_counted_once() -> None:
    """`[1,2,3]` used to give three identical errors and count as three invalid records."""
    error = only_error(b"[1,2,3]")
    assert error.reason == (
        "an array on one line must hold records (JSON objects), got a number at [0]"
    )
    assert only_error(b"[]").reason == "an empty array holds no record"
    records = decode_message(b"[" + orjson.dumps(GOOD_RECORD) + b"," + b'"x"]').errors
    assert len(records) == 1 and "got a string at [1]" in records[0].reason


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        (b"42", "a record must be a JSON object, got a number (42)"),
        (b'"hi"', 'a record must be a JSON object, got a string ("hi")'),
        (b"null", "a record must be a JSON object, got null"),
        (b"true", "a record must be a JSON object, got true or false"),
    ],
)
def test_a_line_that_is_not_an_object_says_what_it_is(bad: bytes, reason: str) -> None:
    assert only_error(bad).reason == reason


def test_reasons_say_the_step_and_what_was_found_once() -> None:
    """It used to read "malformed JSON: JSON is malformed: invalid character (byte 62)"."""
    nan = only_error(KNOWN_BAD["nan"])
    assert nan.error_type == "malformed_json"
    assert nan.reason.startswith("not valid JSON: NaN at byte ")
    assert nan.reason.count("JSON") == 2 and "malformed" not in nan.reason  # "JSON number"
    truncated = only_error(KNOWN_BAD["truncated"])
    assert truncated.reason == "not valid JSON: the text ends inside a value (truncated?)"
    trailing = only_error(orjson.dumps(GOOD_RECORD) + b" x")
    assert trailing.reason.startswith("not valid JSON: more text after the end of the record")


def test_a_record_with_several_bad_fields_names_each_in_its_one_line() -> None:
    """msgspec stops at the first bad field: a logger with three wrong fields took three runs
    to fix. The one error keeps the first field (the dead-letter's `field`) and names every
    other bad field of the record, in its order, with the reason each gets alone."""
    record = {
        **GOOD_RECORD,
        "latency_ms": "fast",
        "output_tokens": -3,
        "model": "m",
        "input_tokens": "x",
        "blocked": "no",
    }
    error = only_error(orjson.dumps(record))
    assert error.field == "latency_ms"
    assert error.describe() == (
        'line 3: field latency_ms: must be a number, got "fast"; '
        "field output_tokens: must be a non-negative integer, got -3; "
        'field input_tokens: must be an integer, got "x"; '
        'field blocked: must be true or false, got "no"'
    )


def test_a_logentry_names_every_bad_field_of_its_payload() -> None:
    entry = {
        "timestamp": "2025-01-01T00:00:00Z",
        "jsonPayload": {**GOOD_RECORD, "latency_ms": "fast", "input_tokens": "x"},
    }
    error = only_error(orjson.dumps(entry))
    assert error.describe() == (
        'line 3: field jsonPayload.latency_ms: must be a number, got "fast"; '
        'field jsonPayload.input_tokens: must be an integer, got "x"'
    )


def test_naming_the_other_fields_never_turns_a_bad_record_into_an_internal_error() -> None:
    """orjson will not write back a value nested 255 deep, which `decode.max_depth` 256
    allows: the extra step failed, and the record became an internal error that cost its
    whole message (a review's replay lost 479 good records without a word)."""
    deep = b"[" * 254 + b"1" + b"]" * 254
    bad = b'{"model":"m","latency_ms":"fast","extra":' + deep + b"}"
    error = only_error(bad, replace(LIMITS, max_depth=256))
    assert error.error_type != "internal_error", error.describe()
    assert error.describe() == 'line 3: field latency_ms: must be a number, got "fast"'


def test_a_record_with_many_bad_fields_stays_one_readable_line() -> None:
    record = {**GOOD_RECORD, **{name: [1] for name in _SCALAR_FIELDS}, "blocked": 1}
    error = only_error(orjson.dumps(record))
    assert error.field == _SCALAR_FIELDS[0]
    assert "\n" not in error.describe()
    named = [part.split(":")[0] for part in error.reason.split("; ")[1:]]
    assert named == [f"field {name}" for name in _SCALAR_FIELDS[1:6]] + ["and 1 more fields"]


_SCALAR_FIELDS = (
    "latency_ms",
    "time_to_first_token_ms",
    "input_tokens",
    "output_tokens",
    "citation_count",
    "tenant",
)


@pytest.mark.parametrize(
    ("name", "field", "reason"),
    [
        ("huge_int", "input_tokens", "must be an integer <= 9007199254740992"),
        ("int_beyond_float", "output_tokens", "must be an integer <= 9007199254740992, got 1e+20"),
        ("overflow_to_inf", "latency_ms", "must be a finite number"),
        ("string_latency", "latency_ms", 'must be a number, got "812ms"'),
        (
            "embedding_beyond_float32",
            "embedding",
            "must hold numbers within the float32 range (±3.4e38), [0] is beyond it",
        ),
        ("embedding_wrong_dimension", "embedding", "must have 8 dimensions (expected), got 9"),
    ],
)
def test_numbers_out_of_range_are_refused_by_field(name: str, field: str, reason: str) -> None:
    error = only_error(KNOWN_BAD[name])
    assert (error.field, error.reason) == (field, reason)


def test_a_body_or_span_with_numbers_out_of_range_costs_only_its_record() -> None:
    gemini = json.dumps(
        GOOD_RECORD | {"response_body": {"usageMetadata": {"promptTokenCount": 10**30}}}
    ).encode()
    assert only_error(gemini).field == "response_body.usageMetadata.promptTokenCount"
    assert "startTimeUnixNano" in (only_error(KNOWN_BAD["otlp_time_overflow"]).field or "")
    assert "intValue must be an integer" in only_error(KNOWN_BAD["otlp_int_not_a_number"]).reason
    sse = only_error(KNOWN_BAD["sse_too_deep"])
    assert (sse.field, sse.reason) == (
        "response_body (SSE event 1)",
        "nested deeper than 64 levels (the limit is decode.max_depth)",
    )


def test_duplicate_keys_take_the_last_value_on_both_paths() -> None:
    line = b'{"timestamp":"2025-01-01T00:00:00Z","model":"first","model":"last"}'
    assert list(decode_message(line).batch.model) == ["last"]
    (record,) = decode_records(line)
    assert isinstance(record, PredictionLog) and record.model == "last"
    assert_isolated(neighbours(), line, 1, LIMITS)


def test_a_byte_order_mark_is_ignored_and_the_id_is_that_of_the_line_without_it() -> None:
    plain = b'{"timestamp":"2025-01-01T00:00:00Z","model":"m"}'
    with_bom = b"\xef\xbb\xbf" + plain
    assert list(decode_message(with_bom).batch.request_id) == list(
        decode_message(plain).batch.request_id
    )
    (record,) = decode_records(with_bom)
    assert isinstance(record, PredictionLog)


def test_crlf_and_blank_lines_change_nothing() -> None:
    good = neighbours()
    plain = decode_message(b"\n".join(good), limits=LIMITS)
    messy = decode_message(b"\r\n\r\n".join(good) + b"\r\n \r\n", limits=LIMITS)
    assert not messy.errors
    assert list(messy.batch.request_id) == list(plain.batch.request_id)
    assert_every_line_accounted([*good, b"", b"  \r"], LIMITS)


def test_a_lone_brace_line_does_not_swallow_the_lines_after_it() -> None:
    """A message whose first line is `{` looks like a pretty-printed document; when it does not
    parse and a later line is a document of its own, it was NDJSON with one bad line."""
    good = neighbours()
    decoded = decode_message(b"\n".join([b"{", *good]), limits=LIMITS)
    assert len(decoded.batch) == len(decode_message(b"\n".join(good), limits=LIMITS).batch)
    assert [e.line for e in decoded.errors] == [1]
    pretty_but_broken = b'{\n  "model": "m",\n  "timestamp": \n}'
    assert len(decode_message(pretty_but_broken).errors) == 1


def test_a_record_that_breaks_column_building_costs_only_itself(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # the reference's own isolation (the compiled path has its own: the reference redoes a poll)
    monkeypatch.setenv("LOOKOUT_DECODER", "python")
    real = build_batch

    def failing(wires: list[Any], *args: Any) -> Any:
        if any(w.model == "boom" for w in wires):
            msg = "simulated bug"
            raise RuntimeError(msg)
        return real(wires, *args)

    monkeypatch.setattr("schemas.decode.api.build_batch", failing)
    good = [orjson.dumps(GOOD_RECORD | {"request_id": f"r{i}"}) for i in range(3)]
    boom = orjson.dumps(GOOD_RECORD | {"request_id": "boom", "model": "boom"})
    poll = decode_messages([MessageBytes(b"\n".join([good[0], boom, good[1], good[2]]))])
    assert list(poll.batches[0].request_id) == ["r0", "r1", "r2"]
    (error,) = poll.errors[0]
    assert (error.line, error.error_type, error.raw) == (2, "internal_error", boom)


def test_limits_are_settings_with_bounds() -> None:
    assert DecodeConfig().max_depth == 64
    assert DecodeConfig(max_depth=200).max_depth == 200
    with pytest.raises(ValueError, match="max_depth"):
        DecodeConfig(max_depth=100_000)  # the parser must stay inside Python's recursion


def test_the_depth_limit_comes_from_the_environment_too(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOOKOUT_DECODE__MAX_DEPTH", "16")
    assert load_config(None).decode.max_depth == 16


def test_a_message_with_one_bad_line_of_each_kind_keeps_every_good_record() -> None:
    """The Pub/Sub case of issue 9: 49 good records beside one bad line, for every bad kind."""
    good = [orjson.dumps(GOOD_RECORD | {"request_id": f"g{i}"}) for i in range(49)]
    for name, bad in KNOWN_BAD.items():
        message = MessageBytes(b"\n".join([*good[:20], bad, *good[20:]]))
        poll = decode_messages([message], limits=LIMITS)
        assert sum(len(b) for b in poll.batches) == 49, name
        assert [e.line for e in poll.errors[0]] == [21], name
    assert np.all(poll.batches[0].latency_ms == 12.5)
