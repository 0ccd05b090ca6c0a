"""Decoding a poll of messages at once gives what decoding each message alone gives.

`decode_messages` builds the columns of many messages in one go (single-record Pub/Sub messages
were capped at ~9k/s decoded one by one); these tests pin that it still judges every message on
its own: same rows, same errors with the same line numbers, the embedding width rule per
message, and a decoder bug confined to the message that hit it.
"""

from __future__ import annotations

import random
from dataclasses import fields
from datetime import UTC, datetime
from itertools import islice
from typing import Any

import numpy as np
import orjson
import pytest

from schemas.batch import LogBatch
from schemas.decode.api import DecodeLimits, MessageBytes, decode_message, decode_messages
from schemas.decode.columns import build_batch
from schemas.decode.records import iter_items
from worker.sources.simulator import SimulationConfig, simulate_logs
from worker.sources.wire_encode import encode_mixed

T0 = "2026-01-05T06:00:00Z"


def assert_same_batch(a: LogBatch, b: LogBatch) -> None:
    assert len(a) == len(b)
    for f in fields(LogBatch):
        left, right = getattr(a, f.name), getattr(b, f.name)
        if f.name == "safety_scores":
            assert sorted(left) == sorted(right), f.name
            for key in left:
                np.testing.assert_array_equal(left[key], right[key], err_msg=key)
        elif left.dtype == object:
            assert list(left) == list(right), f.name
        else:
            np.testing.assert_array_equal(left, right, err_msg=f.name)


def record(i: int, **extra: object) -> bytes:
    base = {"request_id": f"r{i}", "timestamp": T0, "model": "m", "latency_ms": 10 + i}
    return orjson.dumps({**base, **extra})


def mixed_messages(n: int, seed: int) -> list[MessageBytes]:
    """Simulated records in six wire formats, some alone, some as NDJSON, some broken."""
    sim = SimulationConfig(
        start=datetime(2026, 1, 5, 6, tzinfo=UTC),
        hours=0.05,
        calls_per_minute=300,
        embedding_fraction=0.3,
    )
    lines = list(islice(encode_mixed(simulate_logs(sim), seed=seed), n))
    rng = random.Random(seed)
    out: list[MessageBytes] = []
    i = 0
    while i < len(lines):
        take = rng.choice([1, 1, 1, 3, 10])
        chunk = lines[i : i + take]
        i += take
        if rng.random() < 0.1:
            chunk = [
                *chunk,
                b'{"timestamp": "' + T0.encode() + b'", "model": "m", "latency_ms": -1}',
            ]
        if rng.random() < 0.05:
            chunk = [*chunk, b'{"truncated": ']
        out.append(MessageBytes(b"\n".join(chunk), None, rng.choice([1, 101])))
    return out


def test_a_poll_decodes_to_the_concatenation_of_its_messages_decoded_alone() -> None:
    messages = mixed_messages(600, seed=3)
    poll = decode_messages(messages)
    alone = [
        decode_message(m.data, format_hint=m.format_hint, first_line=m.first_line) for m in messages
    ]
    assert len(poll.batches) == 1
    assert_same_batch(poll.batches[0], LogBatch.concat([d.batch for d in alone]))
    assert [list(e) for e in poll.errors] == [list(d.errors) for d in alone]
    assert sum(len(e) for e in poll.errors) > 0, "the workload must contain bad records"
    expected_origins = np.concatenate(
        [np.full(len(d.batch), i, dtype=np.int64) for i, d in enumerate(alone)]
    )
    np.testing.assert_array_equal(poll.origins[0], expected_origins)
    np.testing.assert_array_equal(poll.lines[0], np.concatenate([d.lines for d in alone]))
    assert list(poll.record_counts(len(messages))) == [len(d.batch) for d in alone]


def test_embedding_widths_are_judged_per_message_and_split_into_batches() -> None:
    narrow = MessageBytes(b"\n".join(record(i, embedding=[0.1, 0.2]) for i in range(3)))
    wide = MessageBytes(b"\n".join(record(10 + i, embedding=[0.1, 0.2, 0.3]) for i in range(2)))
    odd_one = MessageBytes(
        b"\n".join([record(20, embedding=[0.1, 0.2]), record(21, embedding=[1.0, 2.0, 3.0])])
        + b"\n"
        + record(22, embedding=[0.5, 0.5])
    )
    plain = MessageBytes(record(30))
    poll = decode_messages([narrow, wide, odd_one, plain])
    assert [len(b) for b in poll.batches] == [6, 2]
    assert {b.embeddings.shape[1] for b in poll.batches} == {2, 3}
    assert poll.errors[:2] == ((), ())
    (error,) = poll.errors[2]
    assert error.line == 2 and error.field == "embedding"
    assert "like the other embeddings in this message" in error.reason
    assert list(poll.record_counts(4)) == [3, 2, 2, 1]
    # with a configured width every other width is an error, and one batch remains
    strict = decode_messages([narrow, wide], limits=DecodeLimits(expected_embedding_dim=2))
    assert [len(b) for b in strict.batches] == [3]
    assert [e.line for e in strict.errors[1]] == [1, 2]


def test_rows_of_drops_the_rows_of_messages_left_out() -> None:
    messages = [
        MessageBytes(b"\n".join(record(10 * m + i) for i in range(m + 1))) for m in range(4)
    ]
    poll = decode_messages(messages)
    (kept,) = poll.rows_of([0, 2])
    assert list(kept.request_id) == ["r0", "r20", "r21", "r22"]
    assert poll.rows_of([0, 1, 2, 3])[0] is poll.batches[0]
    assert poll.rows_of([]) == []


def test_a_decoder_bug_dead_letters_only_the_message_that_hit_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real = iter_items

    def failing(data: bytes, *args: Any) -> Any:
        if b"boom" in data:
            msg = "simulated bug"
            raise RuntimeError(msg)
        return real(data, *args)

    monkeypatch.setattr("schemas.decode.api.iter_items", failing)
    monkeypatch.setenv("LOOKOUT_DECODER", "python")  # the bug is in the Python decoder
    messages = [
        MessageBytes(record(1)),
        MessageBytes(record(2, model_version="boom"), first_line=7),
        MessageBytes(record(3)),
    ]
    poll = decode_messages(messages)
    assert list(poll.batches[0].request_id) == ["r1", "r3"]
    (error,) = poll.errors[1]
    assert error.error_type == "internal_error" and error.line == 7
    assert "RuntimeError: simulated bug" in error.reason
    assert error.raw == messages[1].data
    assert poll.errors[0] == poll.errors[2] == ()


def test_an_empty_poll_and_blank_messages_give_no_rows_and_no_errors() -> None:
    assert decode_messages([]).batches == ()
    poll = decode_messages([MessageBytes(b""), MessageBytes(b"\n  \n")])
    assert poll.batches == ()
    assert poll.errors == ((), ())


def test_a_column_building_bug_dead_letters_only_the_message_that_hit_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real = build_batch

    def failing(wires: list[Any], *args: Any) -> Any:
        if any(w.model_version == "boom" for w in wires):
            msg = "simulated bug"
            raise RuntimeError(msg)
        return real(wires, *args)

    monkeypatch.setattr("schemas.decode.api.build_batch", failing)
    monkeypatch.setenv("LOOKOUT_DECODER", "python")  # the bug is in the Python decoder
    messages = [
        MessageBytes(b"\n".join([record(1), record(2)])),
        MessageBytes(record(3, model_version="boom")),
        MessageBytes(record(4)),
    ]
    poll = decode_messages(messages)
    assert sorted(r for b in poll.batches for r in b.request_id) == ["r1", "r2", "r4"]
    assert list(poll.record_counts(3)) == [2, 0, 1]
    (error,) = poll.errors[1]
    assert error.error_type == "internal_error" and "simulated bug" in error.reason
    assert poll.errors[0] == poll.errors[2] == ()


def test_rows_of_keeps_each_embedding_width_batch() -> None:
    narrow = MessageBytes(record(1, embedding=[0.1, 0.2]))
    wide = MessageBytes(record(2, embedding=[0.1, 0.2, 0.3]))
    poll = decode_messages([narrow, wide, MessageBytes(record(3, embedding=[0.5, 0.5]))])
    assert [list(b.request_id) for b in poll.rows_of([1, 2])] == [["r3"], ["r2"]]
