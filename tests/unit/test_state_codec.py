"""Stored detector states: compact, and read back as exactly what was written."""

from __future__ import annotations

import orjson
import pytest

from tests.sink_cases import batch, rows_of, states_of
from worker.sinks.state_codec import decode_states, encode_states


def test_states_read_back_identical_and_at_most_two_thirds_of_their_json() -> None:
    rows = rows_of(states_of(batch("r", 200)))
    blob = encode_states(rows)
    assert decode_states(blob) == rows
    assert len(blob) <= 2 * len(orjson.dumps(rows)) / 3


def test_strings_that_only_look_like_base64_come_back_unchanged() -> None:
    row = {"a": "A" * 31 + "=", "b": "not base64 at all, but forty characters!", "c": "QUJD" * 10}
    row["d"] = "QUJD" * 9 + "QQ=="  # canonical; "QR==" would decode to the same bytes
    row["e"] = "QUJD" * 9 + "QR=="
    assert decode_states(encode_states(row)) == row


def test_json_from_files_of_the_previous_release_still_decodes() -> None:
    rows = {"latency": {"count": 3, "sum": [1.5, None]}}
    assert decode_states(orjson.dumps(rows).decode()) == rows
    assert decode_states(orjson.dumps(rows)) == rows


def test_a_state_that_is_not_json_safe_is_refused() -> None:
    with pytest.raises(TypeError, match="set"):
        encode_states({"tokens": {"calls": {1, 2}}})
