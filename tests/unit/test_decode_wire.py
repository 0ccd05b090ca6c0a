"""Fixtures written from the public API docs: PaLM, LogEntry, OTLP, native, bad NDJSON lines."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import orjson
import pytest

from schemas.decode import FORMATS, DecodeLimits, decode_message, decode_records
from schemas.prediction_log import PredictionLog, deterministic_request_id

WIRE = Path(__file__).parents[1] / "fixtures" / "wire"


def one(name: str, **kwargs: object) -> PredictionLog:
    (record,) = decode_records((WIRE / name).read_bytes(), **kwargs)  # type: ignore[arg-type]
    assert isinstance(record, PredictionLog), record
    return record


def test_palm_predict_response_gives_scores_citations_and_tokens() -> None:
    r = one("palm_predict.json", format_hint="palm")
    assert (r.input_tokens, r.output_tokens, r.citation_count) == (8, 21, 1)
    assert r.safety_scores["violent"] == 0.8 and r.safety_scores["dangerous_content"] == 0.1
    assert not r.blocked
    blocked = one("palm_predict_blocked.json")
    assert (blocked.blocked, blocked.block_stage, blocked.input_tokens) == (True, "response", 11)
    assert blocked.timestamp.isoformat() == "2024-03-01T11:00:01+00:00"


def test_logentry_supplies_timestamp_insert_id_and_labels_the_payload_lacks() -> None:
    r = one("logentry_envelope.json", format_hint="logentry")
    assert r.request_id == "1x8q9kzf2abcd"
    assert r.labels == {"team": "search"}
    assert r.timestamp.isoformat().startswith("2024-06-01T10:00:00.12345")
    assert (r.safety_scores, r.model_version) == ({"harassment": 0.75}, "gemini-1.5-flash-002")
    native = one("logentry_native.json")
    assert native.request_id == "native-entry-7"
    assert native.labels == {"route": "faq"}  # the payload's own labels win
    assert native.timestamp.isoformat() == "2024-06-01T10:00:05+00:00"


def test_otlp_document_gives_one_record_per_genai_span_and_skips_others() -> None:
    message = decode_message((WIRE / "otlp_spans.json").read_bytes(), first_line=40)
    assert not message.errors
    assert list(message.batch.model) == ["gpt-4o-mini", "gemini-1.5-pro"]
    assert list(message.lines) == [40, 40]
    assert list(message.batch.latency_ms) == [1250.0, 500.0]
    assert list(message.batch.input_tokens) == [12, 30]
    assert message.batch.request_id[0] == "chatcmpl-abc123"
    assert list(message.batch.blocked) == [False, True]
    assert list(message.batch.finish_reason) == ["stop", "safety"]
    assert list(message.batch.block_reason) == [None, "CONTENT_FILTER"]
    assert message.batch.error[1] == "response blocked"  # the span's own status says ERROR
    assert message.batch.timestamp[0] == 1717236000.0


def test_native_record_round_trips_every_field() -> None:
    raw = (WIRE / "native.json").read_bytes()
    r = one("native.json", format_hint="native")
    assert r.model_dump(mode="json") | {"timestamp": None} == orjson.loads(raw) | {
        "timestamp": None
    }
    batch = decode_message(raw).batch
    assert batch.embeddings.shape == (1, 4) and batch.embeddings.dtype == np.float32
    assert batch.safety_scores["hate_speech"][0] == 0.8


def test_bad_ndjson_lines_are_reported_with_line_field_and_raw_bytes() -> None:
    data = (WIRE / "ndjson_bad_lines.ndjson").read_bytes()
    message = decode_message(data, first_line=100)
    assert list(message.lines) == [100, 108]
    described = {e.line: e.describe() for e in message.errors}
    assert described[101] == "line 101: field latency_ms: must be a non-negative number, got -3"
    # the step and what was found, said once (it used to read "malformed JSON: JSON is malformed")
    assert described[102] == "line 102: not valid JSON: the text ends inside a value (truncated?)"
    assert described[105] == "line 105: field model: required, got nothing"
    assert "must have 3 dimensions" in described[106]
    assert "timezone" in described[109]
    assert described[110] == 'line 110: field input_tokens: must be an integer, got "12"'
    assert "candidatesTokenCount" in described[111]
    assert "whole number of tokens, got 12.5" in described[113]
    lines = data.split(b"\n")
    for e in message.errors:
        assert e.raw == lines[e.line - 100]  # the original bytes, for the dead-letter topic
    assert len(message.errors) == 11


def test_dead_letter_raw_keeps_surrounding_whitespace() -> None:
    # the first line of the second message is a good record, so only the last line is dead
    good = b'{"request_id":"r","timestamp":"2024-01-01T00:00:00Z","model":"m"}'
    for data in (b'{"a": "x ', good + b'\n{"a": "x \t\n'):
        errors = decode_message(data, limits=DecodeLimits()).errors
        assert [e.raw for e in errors] == [data.split(b"\n")[-2 if data.endswith(b"\n") else -1]]
    # only the line terminator is not part of the record, `\r\n` included
    errors = decode_message(good + b"\r\n {\r\n").errors
    assert [(e.line, e.raw) for e in errors] == [(2, b" {")]


def test_missing_request_id_is_derived_from_the_record_bytes() -> None:
    line = b'{"timestamp": "2024-01-01T00:00:00Z", "model": "m"}'
    assert decode_message(line).batch.request_id[0] == deterministic_request_id(line)


def test_pretty_printed_document_is_one_record_and_broken_one_is_one_error() -> None:
    record = {"timestamp": "2024-01-01T00:00:00Z", "model": "m", "latency_ms": 3}
    pretty = b"\n" + orjson.dumps(record, option=orjson.OPT_INDENT_2) + b"\n"
    message = decode_message(pretty)
    assert len(message.batch) == 1 and list(message.lines) == [2]
    broken = decode_message(pretty.replace(b'"m"', b'"m'))
    assert len(broken.errors) == 1 and broken.errors[0].error_type == "malformed_json"


def test_limits_reject_oversized_records_and_wrong_embedding_dimensions() -> None:
    big = orjson.dumps({"timestamp": "2024-01-01T00:00:00Z", "model": "m", "prompt": "x" * 500})
    small = DecodeLimits(max_record_bytes=200, expected_embedding_dim=3)
    (err,) = decode_message(big, limits=small).errors
    assert err.error_type == "too_large" and err.raw == big
    emb = b'{"timestamp": "2024-01-01T00:00:00Z", "model": "m", "embedding": [1, 2]}'
    (err,) = decode_message(emb, limits=small).errors
    assert err.field == "embedding" and "must have 3 dimensions" in err.reason


@pytest.mark.parametrize(
    ("hint", "error_type"), [("protobuf", "unknown_format"), ("otlp", "wrong_format")]
)
def test_unknown_or_mismatched_format_hint_is_an_error_not_an_exception(
    hint: str, error_type: str
) -> None:
    (err,) = decode_message((WIRE / "native.json").read_bytes(), format_hint=hint).errors
    assert err.error_type == error_type
    assert "protobuf" not in FORMATS


def test_provider_hint_rejects_a_body_of_another_provider() -> None:
    (err,) = decode_message((WIRE / "palm_predict.json").read_bytes(), format_hint="openai").errors
    assert err.field == "response_body" and "openai" in err.reason


def test_sse_string_body_and_azure_filters() -> None:
    sse = one("openai_sse_string.json")
    assert (sse.response, sse.finish_reason, sse.input_tokens) == ("Hello world", "length", 9)
    # the prompt filter's HTTP 400 is a block, not a service failure (as Gemini's promptFeedback)
    denied = one("azure_prompt_filtered_error.json")
    assert (denied.blocked, denied.block_stage, denied.block_reason) == (
        True,
        "prompt",
        "CONTENT_FILTER",
    )
    assert denied.safety_scores["violence"] == 0.75 and denied.safety_scores["jailbreak"] == 1.0
    assert (denied.error, denied.input_tokens, denied.finish_reason) == (None, None, None)
    cf = one("azure_content_filter_finish.json")
    assert (cf.blocked, cf.block_stage, cf.safety_scores["violence"]) == (True, "response", 0.5)
    assert (cf.block_reason, cf.finish_reason, cf.error) == ("CONTENT_FILTER", "safety", None)


@pytest.mark.parametrize(
    "body",
    [b"[]", b'"no events here"', b'[{"candidates": []}, {"choices": []}]'],
)
def test_unusable_stream_bodies_are_rejected_with_a_reason(body: bytes) -> None:
    data = b'{"timestamp": "2024-01-01T00:00:00Z", "model": "m", "response_body": ' + body + b"}"
    (err,) = decode_message(data).errors
    assert err.field == "response_body" and err.reason


@pytest.mark.parametrize("key", ["candidates", "choices", "predictions"])
def test_bare_provider_response_is_named_as_such(key: str) -> None:
    (err,) = decode_message(b'{"%s": [{"index": 0}]}' % key.encode()).errors
    assert err.error_type == "unknown_format" and "bare provider response" in err.reason


@pytest.mark.parametrize(("attribute", "rating"), [(0.2, 0.9), (0.9, 0.2)])
def test_a_category_scored_twice_keeps_its_highest_score(attribute: float, rating: float) -> None:
    attrs = {
        "categories": ["Harassment", "Toxic"],
        "scores": [attribute, 0.1],
        "safetyRatings": [
            {"category": "Harassment", "probabilityScore": rating},
            {"category": "HARM_CATEGORY_HARASSMENT", "probabilityScore": 0.5},
        ],
    }
    body = {"predictions": [{"safetyAttributes": attrs}]}
    data = orjson.dumps({"timestamp": "2024-01-01T00:00:00Z", "model": "m", "response_body": body})
    (record,) = decode_records(data)
    assert isinstance(record, PredictionLog)
    assert record.safety_scores == {"harassment": 0.9, "toxic": 0.1}
    assert decode_message(data).batch.safety_scores["harassment"][0] == 0.9
