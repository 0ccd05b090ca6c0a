"""The fuzzer's inputs through both decoders: the compiled path must agree with the reference.

The inputs are the decoder fuzzing's own (`tests.fuzz.test_decode_fuzz`): the known bad
lines, good lines truncated, flipped, nested past the depth limit or given a byte order mark,
canonical fields with any JSON value (400-digit integers, NaN), random JSON and random bytes,
between good lines, in single-record messages and in NDJSON messages, with and without a
configured embedding width. Columns, order and errors must be identical.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from schemas.decode.api import DecodeLimits, MessageBytes
from tests.decode_agreement import assert_agree
from tests.fuzz.corpus import KNOWN_BAD, LIMITS, good_lines
from tests.fuzz.stats import record
from tests.fuzz.test_decode_fuzz import bad_lines, examples, fuzz_settings

_ANY_WIDTH = DecodeLimits(max_depth=LIMITS.max_depth)


@pytest.mark.parametrize("name", sorted(KNOWN_BAD))
def test_each_known_bad_line_alone_and_among_good_lines(name: str) -> None:
    bad = KNOWN_BAD[name]
    good = list(good_lines())
    for limits in (LIMITS, _ANY_WIDTH):
        assert_agree([MessageBytes(bad)], limits)
        assert_agree([MessageBytes(b"\n".join([*good[:3], bad, *good[3:6]]))], limits)
        assert_agree([MessageBytes(g) for g in (*good[:2], bad, *good[2:4])], limits)


def test_fuzzed_lines_decode_the_same_on_both_paths() -> None:
    counts = [0, 0]

    @fuzz_settings()
    @given(
        lines=st.lists(st.one_of(bad_lines, st.sampled_from(good_lines())), min_size=1, max_size=8),
        split=st.booleans(),
        width=st.booleans(),
    )
    def check(lines: list[bytes], split: bool, width: bool) -> None:
        limits = LIMITS if width else _ANY_WIDTH
        if split:  # Pub/Sub: one record per message
            messages = [MessageBytes(line, None, 1) for line in lines]
        else:
            messages = [MessageBytes(b"\n".join(lines), None, 1)]
        assert_agree(messages, limits)
        counts[0] += 1
        counts[1] += len(lines)

    check()
    record("compiled decoder agrees with the reference", counts[0], counts[1])
    assert counts[0] >= examples()
