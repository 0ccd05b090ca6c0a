"""The compiled fast path decodes exactly as the Python reference: same columns, same errors.

`decode_messages` takes the compiled path (Cython over yyjson) for the lines it fully
understands and hands every other line to `reference_decode_messages`. Both are fed every
fixture, long simulated streams in every wire format, hand-made edge lines and fuzzed lines,
and must give bit-identical columns (floats compared by their bits), the same request ids,
rows in the same order from the same messages and lines, and the same `DecodeError`s.
"""

from __future__ import annotations

import json
import os
import random
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas.decode import compiled
from schemas.decode.api import DecodeLimits, MessageBytes
from tests.decode_agreement import assert_agree
from tests.gil import pace_beside
from worker.sources.simulator import SimulationConfig, simulate_logs
from worker.sources.wire_encode import FORMATS, encode, encode_mixed

FIXTURES = Path(__file__).parents[1] / "fixtures"
START = datetime(2025, 3, 1, tzinfo=UTC)


def test_compiled_decoder_is_built() -> None:
    """`make test` (CI=true) fails when the install could not compile the fast path."""
    if os.environ.get("CI") == "true" or compiled.compiled_module() is not None:
        assert compiled.compiled_module() is not None, "schemas.decode._fastdecode not built"
        assert compiled.enabled()


def chunks(lines: list[bytes], size: int, sep: bytes = b"\n") -> list[MessageBytes]:
    return [
        MessageBytes(sep.join(lines[i : i + size]) + sep, None, 1 + i)
        for i in range(0, len(lines), size)
    ]


def simulated(n: int, embedding_fraction: float, seed: int = 3) -> list[bytes]:
    config = SimulationConfig(
        start=START,
        hours=n / (3 * 700 * 60) * 1.3 + 0.01,
        embedding_fraction=embedding_fraction,
        seed=seed,
        with_text=True,
    )
    out = []
    for line in encode_mixed(simulate_logs(config), seed=seed):
        out.append(line)
        if len(out) == n:
            break
    return out


# ---------------------------------------------------------------- fixtures and streams


def test_wire_fixtures_each_and_together() -> None:
    paths = sorted((FIXTURES / "wire").iterdir())
    messages = [MessageBytes(p.read_bytes(), None, 1) for p in paths]
    for message in messages:
        assert_agree([message])
    assert_agree(messages)


def test_recorded_payload_corpus() -> None:
    lines = (FIXTURES / "payloads" / "responses.ndjson").read_bytes().splitlines()
    assert_agree(chunks(lines, 50))
    wrapped = []
    for line in lines:
        entry = orjson.loads(line)
        envelope = {"timestamp": "2025-01-01T00:00:00Z", "model": "m", "latency_ms": 3}
        wrapped.append(orjson.dumps({**envelope, "response_body": entry["response_body"]}))
    assert_agree(chunks(wrapped, 37))


@pytest.mark.parametrize("fraction", [0.0, 0.2, 1.0])
def test_long_mixed_stream(fraction: float) -> None:
    lines = simulated(6000, fraction)
    poll = assert_agree(chunks(lines, 1000))
    assert sum(len(b) for b in poll.batches) == len(lines)
    # the fast path really ran: its scan read the native lines itself
    module = compiled.compiled_module()
    assert module is not None
    columns, _others, _left = module.scan([b"\n".join(lines)], [1], [True], 1 << 20, 64, -1)
    assert len(columns["origin"]) > len(lines) // 10


@pytest.mark.parametrize("fmt", FORMATS)
def test_each_wire_format_in_small_and_single_record_messages(fmt: str) -> None:
    config = SimulationConfig(start=START, hours=0.02, seed=11, with_text=True)
    lines = [encode(log, fmt) for log in simulate_logs(config)][:1500]
    assert_agree(chunks(lines, 1, sep=b""))  # Pub/Sub: one record per message, no newline
    assert_agree(chunks(lines, 7))
    assert_agree(chunks(lines, 500, sep=b"\r\n"), DecodeLimits(expected_embedding_dim=384))


def test_many_safety_categories_and_spellings_in_one_poll() -> None:
    """The compiled scan remembers the first 32 category spellings of a poll by their bytes;
    past them, and where one word is a native key on one line and a provider's category on
    another, the columns still equal the reference's."""
    config = SimulationConfig(start=START, hours=0.01, seed=5, with_text=True)
    logs = list(simulate_logs(config))[:120]
    lines = [encode(log, FORMATS[i % 3]) for i, log in enumerate(logs)]  # native, Gemini, PaLM
    for i in range(80):
        scores = {
            f"category_{(i * 7 + k) % 45}": round(0.01 * ((i + k) % 100), 2) for k in range(4)
        }
        scores["HARM_CATEGORY_HATE_SPEECH"] = 0.5  # a provider's spelling, as a native key
        lines.insert(
            i * 2,
            orjson.dumps({"timestamp": START.isoformat(), "model": "m", "safety_scores": scores}),
        )
    poll = assert_agree(chunks(lines, len(lines)))
    categories = set().union(*(b.safety_scores for b in poll.batches))
    assert len(categories) > 45, sorted(categories)


def _with_body(body: str) -> bytes:
    return b"{" + T.encode() + b', "model": "m", "response_body": ' + body.encode() + b"}"


_RATING = '{"category": "HARM_CATEGORY_HARASSMENT", "probabilityScore": 0.8}'
_ANSWER = '{"content": {"parts": [{"text": "hi"}]}, "finishReason": "SAFETY"}'
#: blocked prompts: the shapes the compiled scan reads, and the neighbours it leaves to Python
BLOCKED_PROMPTS = [
    f'{{"promptFeedback": {{"blockReason": "SAFETY", "safetyRatings": [{_RATING}]}}}}',
    '{"promptFeedback": {"blockReason": "PROHIBITED_CONTENT"}, "candidates": []}',
    '{"promptFeedback": {"blockReason": "OTHER"}, "candidates": null, "modelVersion": "v2"}',
    f'{{"promptFeedback": {{"blockReason": "OTHER"}}, "candidates": [{_ANSWER}]}}',
    '{"promptFeedback": {"blockReason": "BLOCKLIST", "blockReasonMessage": "x"}, '
    '"usageMetadata": {"promptTokenCount": 12, "totalTokenCount": 12}}',
    '{"promptFeedback": {"blockReason": "\u0053AFETY"}}',
    '{"promptFeedback": {"blockReason": "safety"}}',
    '{"promptFeedback": {"blockReason": "Safety "}}',
    '{"promptFeedback": {"blockReason": ""}}',
    '{"promptFeedback": {"blockReason": 2}}',
    '{"promptFeedback": {"blockReason": null}}',
    f'{{"promptFeedback": {{"safetyRatings": [{_RATING}]}}, "candidates": [{_ANSWER}]}}',
    '{"promptFeedback": null, "candidates": []}',
    '{"promptFeedback": {"blockReason": "SAFETY"}, "choices": []}',
    '{"promptFeedback": [], "candidates": []}',
    '{"error": {"code": "content_filter", "status": 400, "param": "prompt", "message": "m"}}',
    '{"error": {"code": "content_filter", "innererror": null, "type": null}}',
    '{"error": {"code": "content_filter", "innererror": {"code": "ResponsibleAIPolicyViolation", '
    '"content_filter_result": {"hate": {"filtered": true, "severity": "high"}}}}}',
    '{"error": {"code": "content_filter", "status": [400]}}',
    '{"error": {"code": "rate_limit", "status": 429, "message": "slow down"}}',
    '{"error": {"code": 400, "message": "bad"}}',
    '{"error": {"code": "content_filter"}, "object": "error"}',
    '{"error": null}',
]
#: Azure filter results naming one category twice (the second time through an escape): the
#: reference reads them as a dict, where the last value wins
REPEATED_FILTERS = [
    '{"choices": [{"message": {"content": "x"}, "finish_reason": "stop", '
    f'"content_filter_results": {{"\\u0073elf harm": {first}, "self harm": {second}}}}}]}}'
    for first, second in [
        ('{"filtered": false, "severity": "high"}', '{"filtered": false, "severity": "safe"}'),
        ('{"filtered": true, "severity": "high"}', '{"filtered": false, "severity": "low"}'),
        ('{"filtered": false, "severity": "high"}', "[]"),
    ]
]


def test_a_repeated_azure_filter_category_reads_as_the_reference_does() -> None:
    lines = [_with_body(body) for body in REPEATED_FILTERS]
    assert b"\\u0073elf" in lines[0]
    assert_agree(chunks(lines, 1))
    assert_agree(chunks(lines, len(lines)))


def test_blocked_prompts_gemini_and_azure() -> None:
    lines = [_with_body(body) for body in BLOCKED_PROMPTS]
    poll = assert_agree(chunks(lines, len(lines)))
    assert_agree(chunks(lines, 1))
    blocked = next(b for b in poll.batches if len(b))
    assert "prompt" in set(blocked.block_stage.tolist())
    fast = _fast_rows(lines[0])
    assert fast["block_stage"].tolist() == ["prompt", "prompt"]
    assert fast["block_reason"].tolist() == ["SAFETY", "SAFETY"]
    assert _fast_rows(lines[15])["block_reason"].tolist() == ["CONTENT_FILTER"] * 2
    assert len(_fast_rows(lines[6])["origin"]) == 0  # lower case: the reference upper-cases it
    # blocked prompt and answer: the prompt's block wins, the answer's finish reason is kept
    both = _fast_rows(lines[3])
    assert (both["block_reason"][0], both["finish_reason"][0]) == ("OTHER", "safety")


# ---------------------------------------------------------------- edges and fuzz

T = '"timestamp": "2024-05-06T07:08:09.123456Z"'
EDGES = [
    b"{" + T.encode() + b', "model": "m", "latency_ms": 0}',
    b"{" + T.encode() + b', "model": "m", "latency_ms": -0.0}',
    b"{" + T.encode() + b', "model": "m", "latency_ms": -0}',
    b"{" + T.encode() + b', "model": "m", "latency_ms": 1e308}',
    b"{" + T.encode() + b', "model": "m", "latency_ms": 1e400}',
    b"{" + T.encode() + b', "model": "m", "input_tokens": 9007199254740993}',
    b"{" + T.encode() + b', "model": "m", "input_tokens": 18446744073709551616}',
    b"{" + T.encode() + b', "model": "m", "input_tokens": 3.0}',
    b"{" + T.encode() + b', "model": "m", "model": "n"}',
    b"{" + T.encode() + b', "model": "m", "safety_scores": {"a": 0.5, "a": 0.7}}',
    b"{" + T.encode() + b', "model": "m", "safety_scores": {"a": 1, "b": 0}}',
    b"{" + T.encode() + b', "model": "m", "embedding": [1, -2, 0.5, 1e-50, -0.0]}',
    b"{" + T.encode() + b', "model": "m", "embedding": [1, null]}',
    b"{" + T.encode() + b', "model": "m", "embedding": [-0.0, -0e3, 0.0, -1e-50, 1]}',
    b"{" + T.encode() + b', "model": "m", "embedding": [-0, 1]}',
    b"{" + T.encode() + b', "model": "m", "request_id": "\\ud800"}',
    b"{" + T.encode() + b', "model": "m\\u00e9\\ud83d\\ude00", "response": "\\u0000\\n\xc3\xa9"}',
    b"{" + T.encode() + b', "model": "m", "finish_reason": " Max_Tokens "}',
    b"{" + T.encode() + b', "model": "m", "response_body": null}',
    b"{" + T.encode() + b', "model": "m", "insertId": "x"}',
    b'{"timestamp": "2024-02-30T00:00:00Z", "model": "m"}',
    b'{"timestamp": "2024-02-29T23:59:59.5+05:30", "model": "m"}',
    b'{"timestamp": "2024-02-29T23:59:59-00:00", "model": "m"}',
    b'{"timestamp": "2024-02-29 23:59:59Z", "model": "m"}',
    b'{"timestamp": "2024-02-29T23:59:59.1234567Z", "model": "m"}',
    b'{"timestamp": "2024-02-29T23:59:59", "model": "m"}',
    b'{"timestamp": "1969-12-31T23:59:59Z", "model": "m"}',
    b'{"model": "m"}',
    b'{"timestamp": "2024-02-29T23:59:59Z"}',
    b'{"timestamp": "2024-02-29T23:59:59Z", "model": "m", "labels": {"a": "b", "c": 1}}',
    b'{"timestamp": "2024-02-29T23:59:59Z", "model": "m", "block_stage": "prompt", "blocked": 1}',
    b'{"timestamp": "2024-02-29T23:59:59Z", "model": "", "request_id": null}',
    b'  {"timestamp": "2024-02-29T23:59:59Z", "model": "m"}\x0c ',
    b'{"timestamp": "2024-02-29T23:59:59Z", "model": "m", "embedding": [1, 2]}',
    b'{"timestamp": "2024-02-29T23:59:59Z", "model": "m", "embedding": [1, 2, 3]}',
    b'{"timestamp": "2024-02-29T23:59:59Z", "model": "m", "embedding": []}',
    b"[{" + T.encode() + b', "model": "m"}]',
    # tenant and endpoint: strings, null, other types, twice, inside envelopes and LogEntry
    b"{" + T.encode() + b', "model": "m", "tenant": "acme", "endpoint": "eu-1"}',
    b"{" + T.encode() + b', "model": "m", "tenant": null, "endpoint": ""}',
    b"{" + T.encode() + b', "model": "m", "tenant": 7}',
    b"{" + T.encode() + b', "model": "m", "endpoint": ["a"]}',
    b"{" + T.encode() + b', "model": "m", "tenant": "a", "tenant": "b"}',
    b"{" + T.encode() + b', "model": "m", "tenant": "\\u00e9\\ud83d\\ude00"}',
    b"{" + T.encode() + b', "model": "m", "tenant": "t", "response_body": '
    b'{"candidates": [{"content": {"parts": [{"text": "hi"}]}, "finishReason": "STOP"}]}}',
    b'{"insertId": "i1", "timestamp": "2024-02-29T23:59:59Z", "jsonPayload": {'
    + T.encode()
    + b', "model": "m", "tenant": "t", "endpoint": "e"}}',
    # issue 9's rules: each goes to the reference, which refuses or reads it
    b"{" + T.encode() + b', "model": "m", "x": ' + b"[" * 64 + b"]" * 64 + b"}",
    b"{" + T.encode() + b', "model": "m", "x": ' + b"[" * 65 + b"]" * 65 + b"}",
    b"{" + T.encode() + b', "model": "m", "x": "' + b"[" * 80 + b'"}',
    b"{" + T.encode() + b', "model": "m", "x": {"y": ' + b'{"a":' * 70 + b"1" + b"}" * 71 + b"}",
    b"{" + T.encode() + b', "model": "m", "input_tokens": 9007199254740992}',
    b"{" + T.encode() + b', "model": "m", "citation_count": 9007199254740993}',
    b"{" + T.encode() + b', "model": "m", "latency_ms": 9007199254740993}',
    b"{" + T.encode() + b', "model": "m", "embedding": [9007199254740993, 1]}',
    b"{" + T.encode() + b', "model": "m", "embedding": [-9007199254740993, 1]}',
    b"{" + T.encode() + b', "model": "m", "embedding": [3.5e38, 1]}',
    b"{" + T.encode() + b', "model": "m", "embedding": [1e39, 1]}',
    b"{" + T.encode() + b', "model": "m", "embedding": [-1e39, 1]}',
    b"\xef\xbb\xbf{" + T.encode() + b', "model": "m"}',
    b'{"model": \xef\xbb\xbf"m", ' + T.encode() + b"}",
    b"{" + T.encode() + b', "model": "m", "x": 1, "x": [2]}',
    b"{" + T.encode() + b', "model": "m", "labels": {"a": "b", "a": "c"}}',
    b"{" + T.encode() + b', "timestamp": "2024-05-06T07:08:10Z", "model": "m"}',
    b"{" + T.encode() + b', "model": "m", "x": "\xff\xfe"}',
    b"{" + T.encode() + b', "model": "m", "model_version": "\xc3"}',
    b"{" + T.encode() + b', "model": "m", "x": "\\ud800"}',
    b'{"timestamp": "9999-12-31T23:59:59Z", "model": "m"}',
    b'{"timestamp": "9999-12-31T23:59:59-01:00", "model": "m"}',
    b'{"timestamp": "0001-01-01T00:00:00+01:00", "model": "m"}',
    b"[1, 2, 3]",
    b"[]",
    b"[{" + T.encode() + b', "model": "m"}, 1]',
    b"42",
    b"null",
    b"{",
    b"}",
    b"not json",
    b"",
    b'"just a string"',
]


def test_edge_lines_alone_in_pairs_and_all_together() -> None:
    for line in EDGES:
        assert_agree([MessageBytes(line)])
        assert_agree([MessageBytes(line + b"\n\n")])
    for a in EDGES:
        assert_agree([MessageBytes(a + b"\n" + b + b"\n", None, 5) for b in EDGES])
    assert_agree([MessageBytes(b"\n".join(EDGES))])
    assert_agree([MessageBytes(b"\n".join(EDGES))], DecodeLimits(expected_embedding_dim=2))
    assert_agree([MessageBytes(b"\n".join(EDGES), "native")])
    assert_agree([MessageBytes(b"\n".join(EDGES))], DecodeLimits(max_record_bytes=60))
    assert_agree([MessageBytes(b"\n".join(EDGES))], DecodeLimits(max_depth=2))
    assert_agree([MessageBytes(line, None, 3) for line in EDGES], DecodeLimits(max_depth=3))


def test_a_pretty_printed_document_is_read_as_one() -> None:
    record = {"timestamp": "2024-01-01T00:00:00Z", "model": "m", "latency_ms": 4}
    inner = orjson.dumps(record)
    assert_agree([MessageBytes(orjson.dumps([record, record], option=orjson.OPT_INDENT_2))])
    assert_agree([MessageBytes(b'{"x":\n' + inner + b"\n}")])
    assert_agree([MessageBytes(b"[\n" + inner + b"\n]")])


_values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**65), 2**65),
    st.floats(allow_nan=False, allow_infinity=False),
    st.floats(0, 1),
    st.text(max_size=6),
    st.sampled_from(["prompt", "response", "STOP", "2024-01-01T00:00:00Z", ""]),
    st.lists(st.floats(-2, 2, width=32), max_size=4),
    st.dictionaries(st.sampled_from(["a", "b", "hate"]), st.floats(-0.5, 1.5), max_size=3),
)
_fields = st.sampled_from(
    [
        "request_id", "timestamp", "model", "model_version", "endpoint", "labels",
        "latency_ms", "time_to_first_token_ms", "input_tokens", "output_tokens", "blocked",
        "block_stage", "block_reason", "safety_scores", "finish_reason", "citation_count",
        "response", "embedding", "error", "extra", "response_body", "choices",
    ]
)  # fmt: skip
_timestamps = st.datetimes(
    min_value=datetime(1960, 1, 1),  # noqa: DTZ001 (hypothesis wants naive bounds)
    max_value=datetime(2200, 1, 1),  # noqa: DTZ001
    timezones=st.just(UTC),
).map(lambda d: d.isoformat().replace("+00:00", "Z"))


@st.composite
def fuzzed_line(draw: st.DrawFn) -> bytes:
    record: dict[str, object] = {
        "timestamp": draw(_timestamps),
        "model": draw(st.text(min_size=1, max_size=5)),
    }
    for _ in range(draw(st.integers(0, 5))):
        record[draw(_fields)] = draw(_values)
    if draw(st.booleans()):
        width = draw(st.integers(1, 3))
        record["embedding"] = [draw(st.floats(-1e6, 1e6)) for _ in range(width)]
    ascii_only = draw(st.booleans())
    line = json.dumps(record, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")
    if draw(st.integers(0, 9)) == 0:  # break it somewhere
        cut = draw(st.integers(0, len(line)))
        line = line[:cut] + draw(st.sampled_from([b"", b",", b"\xff", b"}", b" "])) + line[cut:]
    return draw(st.sampled_from([b"", b" ", b"\t"])) + line + draw(st.sampled_from([b"", b"\r"]))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(st.lists(fuzzed_line(), min_size=0, max_size=8), min_size=1, max_size=4),
    st.sampled_from([None, 2, 3]),
)
def test_fuzzed_messages(messages: list[list[bytes]], dim: int | None) -> None:
    polls = [MessageBytes(b"\n".join(lines), None, 1 + 10 * i) for i, lines in enumerate(messages)]
    assert_agree(polls, DecodeLimits(expected_embedding_dim=dim))


def test_random_interleavings_of_good_and_bad_lines() -> None:
    rng = random.Random(5)
    good = simulated(400, 0.5, seed=9)
    bad = [line for line in EDGES if line]
    lines = [rng.choice(bad) if rng.random() < 0.2 else rng.choice(good) for _ in range(3000)]
    assert_agree(chunks(lines, 250))
    assert_agree(chunks(lines, 250), DecodeLimits(expected_embedding_dim=384))


def _paths(value: object, prefix: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
    """Every place inside a JSON value (dict keys and list positions)."""
    out: list[tuple[object, ...]] = [prefix]
    if isinstance(value, dict):
        for key, inner in value.items():
            out += _paths(inner, (*prefix, key))
    elif isinstance(value, list):
        for i, inner in enumerate(value):
            out += _paths(inner, (*prefix, i))
    return out


def _mutated(record: dict[str, object], path: tuple[object, ...], new: object) -> object:
    if not path:
        return new
    out: object = orjson.loads(orjson.dumps(record))
    target: object = out
    for step in path[:-1]:
        target = target[step]  # type: ignore[index]
    target[path[-1]] = new  # type: ignore[index]
    return out


_TEMPLATES = simulated(300, 0.05, seed=21)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_mutated_records_of_every_format(data: st.DataObject) -> None:
    """A simulated record of any wire format with one value somewhere replaced."""
    lines = []
    for _ in range(data.draw(st.integers(1, 4))):
        record = orjson.loads(data.draw(st.sampled_from(_TEMPLATES)))
        path = data.draw(st.sampled_from(_paths(record)))
        new = data.draw(_values)
        lines.append(json.dumps(_mutated(record, path, new)).encode())
    lines += data.draw(st.lists(st.sampled_from(_TEMPLATES), max_size=3))
    assert_agree([MessageBytes(b"\n".join(lines), None, 3)])


@pytest.mark.parametrize(
    "total", [2.0**53, 2.0**53 + 2, 1e300, 12.5, 7.0, 2**53, 2**53 + 1, 2**64 + 5]
)
@pytest.mark.parametrize("which", ["inputTokenCount", "outputTokenCount"])
def test_palm_token_counts_at_and_beyond_two_to_the_53(total: float, which: str) -> None:
    """Found by the mutation test above: a PaLM `totalTokens` written as a float past 2**53
    (9007199254740994.0) was a count in C and "must be at most 9,007,199,254,740,992 tokens"
    in the reference."""
    record = next(
        orjson.loads(t)
        for t in _TEMPLATES
        if isinstance(orjson.loads(t).get("response_body"), dict)
        and "metadata" in orjson.loads(t)["response_body"]
    )
    path = ("response_body", "metadata", "tokenMetadata", which, "totalTokens")
    line = json.dumps(_mutated(record, path, total)).encode()
    assert_agree([MessageBytes(line, None, 3)])


def test_otlp_span_variants() -> None:
    config = SimulationConfig(start=START, hours=0.01, seed=4)
    line = encode(next(iter(simulate_logs(config))), "otlp").decode()
    start = line.split('"startTimeUnixNano":"')[1].split('"')[0]
    variants = [
        line,
        line.replace(f'"startTimeUnixNano":"{start}"', f'"startTimeUnixNano":{start}'),
        line.replace(f'"startTimeUnixNano":"{start}"', '"startTimeUnixNano":"+1"'),
        line.replace('"status":{}', '"status":{"code":2,"message":"boom"}'),
        line.replace('"status":{}', '"status":5'),
        line.replace('"intValue":"', '"intValue":"-'),
        line.replace('{"stringValue":"stop"}', '{"stringValue":"SAFETY"},{"stringValue":"x"}'),
        line.replace('{"stringValue":"stop"}', ""),
        line.replace('"gen_ai.response.id"', '"gen_ai.request.model"'),
        line.replace('"gen_ai.', '"genai.'),
        line.replace('"spans":[', '"spans":[{"traceId":"a","spanId":"b"},'),
        line.replace('"resourceSpans":', '"model":"m","resourceSpans":'),
    ]
    messages = [MessageBytes(v.encode(), None, 1) for v in variants]
    assert_agree(messages)
    assert_agree([MessageBytes("\n".join(variants).encode())])


def _fast_rows(line: bytes) -> dict[str, Any]:
    """The columns the compiled scan itself read from a line twice (none: it handed it over)."""
    module = compiled.compiled_module()
    assert module is not None
    limits = DecodeLimits()
    columns, _others, _left = module.scan(
        [line + b"\n" + line], [1], [True], limits.max_record_bytes, limits.max_depth, -1
    )
    return dict(columns)


def test_tenant_and_endpoint_are_read_in_c() -> None:
    line = b"{" + T.encode() + b', "model": "m", "tenant": "acme", "endpoint": "eu-1"}'
    columns = _fast_rows(line)
    assert list(columns["tenant"]) == ["acme", "acme"]
    assert list(columns["endpoint"]) == ["eu-1", "eu-1"]


@pytest.mark.parametrize(
    "line",
    [
        b"{" + T.encode() + b', "model": "m", "x": ' + b"[" * 65 + b"]" * 65 + b"}",
        b"{" + T.encode() + b', "model": "m", "input_tokens": 9007199254740993}',
        b"{" + T.encode() + b', "model": "m", "embedding": [1e39]}',
        b"\xef\xbb\xbf{" + T.encode() + b', "model": "m"}',
        b"{" + T.encode() + b', "model": "m", "model": "n"}',
        b"{" + T.encode() + b', "model": "m", "tenant": "a", "tenant": "b"}',
        b"{" + T.encode() + b', "model": "m", "x": "\xff"}',
        b'{"timestamp": "9999-12-31T23:59:59Z", "model": "m"}',
        b"[1, 2, 3]",
    ],
)
def test_suspect_lines_are_handed_to_the_reference(line: bytes) -> None:
    """Issue 9's cases never become fast rows: the reference refuses or reads them."""
    assert len(_fast_rows(line)["origin"]) == 0
    assert_agree([MessageBytes(line)])


def test_the_scan_lets_another_thread_run() -> None:
    """The parse runs without the GIL, so a second thread (the fold) keeps working meanwhile."""
    module = compiled.compiled_module()
    assert module is not None
    line = b'{"request_id": "r", ' + T.encode() + b', "model": "m", "embedding": [0.5, 1.5]}'
    data = b"\n".join([line] * 200_000)
    (columns, _others, _left), paced = pace_beside(
        lambda: module.scan([data], [1], [True], 1 << 20, 64, -1)
    )
    assert len(columns["origin"]) == 200_000
    # holding the GIL through the parse, the other thread would get a switch or two (a few ms)
    assert paced.seconds > 0.05
    assert paced.during > 0.25 * paced.alone, paced
