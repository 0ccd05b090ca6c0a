"""Fuzzing the decoders with hypothesis: bad lines never cost their neighbours anything.

Inputs are seeded with the recorded provider payloads, the wire fixtures, the simulator's six
wire formats and the known bad cases (see `tests.fuzz.corpus`), then mutated: truncated, bytes
flipped or inserted, nested past the depth limit, canonical fields given any JSON value
(NaN, infinities and 400-digit integers included), random JSON and random bytes.

`make test` runs a short pass (LOOKOUT_FUZZ_EXAMPLES inputs per property, 1,000 by default);
before a release run a long one, e.g. `LOOKOUT_FUZZ_EXAMPLES=200000 .venv/bin/pytest
tests/fuzz -p no:cacheprovider` (README, "Fuzzing the decoders"). The terminal summary says
how many inputs each property ran.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas.decode.guards import deep_line_candidates, nesting_depth, too_deep
from schemas.prediction_log import PredictionLog
from tests.fuzz.corpus import GOOD_RECORD, KNOWN_BAD, LIMITS, good_lines
from tests.fuzz.isolation import assert_every_line_accounted, assert_isolated
from tests.fuzz.stats import record

DEFAULT_EXAMPLES = 1000


def examples() -> int:
    return int(os.environ.get("LOOKOUT_FUZZ_EXAMPLES", DEFAULT_EXAMPLES))


def fuzz_settings() -> settings:
    return settings(
        max_examples=examples(),
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**400), max_value=10**400)
    | st.floats()
    | st.text(max_size=12),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=10,
)


def _dumps(value: object) -> bytes:
    # the standard library writes NaN, Infinity and integers of any size, as careless producers do
    return json.dumps(value).encode()


canonical_field_gone_wrong = st.builds(
    lambda key, value: _dumps(GOOD_RECORD | {key: value}),
    st.sampled_from(sorted(PredictionLog.model_fields)),
    json_values,
)


@st.composite
def mutated_good_line(draw: st.DrawFn) -> bytes:
    line = draw(st.sampled_from(good_lines()))
    i = draw(st.integers(0, len(line)))
    how = draw(st.sampled_from(["truncate", "replace", "insert", "delete", "nest", "bom"]))
    if how == "truncate":
        return line[:i]
    if how == "replace":
        return line[:i] + draw(st.binary(min_size=1, max_size=4)) + line[i + 1 :]
    if how == "insert":
        return line[:i] + draw(st.binary(min_size=1, max_size=8)) + line[i:]
    if how == "delete":
        return line[:i] + line[i + draw(st.integers(1, 16)) :]
    if how == "bom":
        return b"\xef\xbb\xbf" + line
    depth = draw(st.integers(60, 70))  # around the default limit of 64
    return line[:-1] + b',"zz":' + b"[" * depth + b"]" * depth + b"}"


bad_lines = st.one_of(
    st.sampled_from(list(KNOWN_BAD.values())),
    mutated_good_line(),
    canonical_field_gone_wrong,
    json_values.map(_dumps),
    st.binary(max_size=64),
).map(lambda line: line.replace(b"\n", b" "))


def run_counted(name: str, check: Callable[..., int], **strategies: st.SearchStrategy[Any]) -> None:
    """Run `check` on generated inputs, check it ran as many as asked, and report the count.

    `check` returns how many lines its input had.
    """
    counts = [0, 0]

    @fuzz_settings()
    @given(**strategies)
    def counted(**kwargs: Any) -> None:
        lines = check(**kwargs)
        counts[0] += 1
        counts[1] += lines

    counted()
    record(name, counts[0], counts[1])
    assert counts[0] >= examples(), f"{name} ran {counts[0]} inputs, asked for {examples()}"


def test_a_bad_line_between_good_lines_changes_nothing_in_their_decoding() -> None:
    def check(good: list[bytes], bad: bytes, data: st.DataObject) -> int:
        at = data.draw(st.integers(1, len(good) - 1))
        assert_isolated(good, bad, at, LIMITS)
        return len(good) + 1

    run_counted(
        "a bad line between good lines changes nothing (both decode paths)",
        check,
        good=st.lists(st.sampled_from(good_lines()), min_size=2, max_size=5),
        bad=bad_lines,
        data=st.data(),
    )


def test_every_line_is_records_or_an_error_and_nothing_raises() -> None:
    def check(lines: list[bytes]) -> int:
        assert_every_line_accounted(lines, LIMITS)
        return len(lines)

    run_counted(
        "every line is records or a DecodeError with a reason (both decode paths)",
        check,
        lines=st.lists(st.one_of(st.sampled_from(good_lines()), bad_lines), min_size=1, max_size=8),
    )


def _reference_depth(value: object) -> int:
    if isinstance(value, list):
        return 1 + max(map(_reference_depth, value), default=0)
    if isinstance(value, dict):
        return 1 + max(map(_reference_depth, value.values()), default=0)
    return 0


def test_the_depth_scan_agrees_with_the_parsed_structure() -> None:
    """The byte scan that guards the parser sees the nesting a parser sees, strings ignored
    (brackets, quotes and backslashes in strings included)."""
    strings = st.text(alphabet=st.sampled_from('[]{}"\\ab'), max_size=6)
    values = st.recursive(
        st.none() | st.integers() | strings,
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(strings, inner, max_size=3),
        max_leaves=20,
    )

    def check(value: object, limit: int) -> int:
        text = json.dumps(value).encode()
        depth = _reference_depth(value)
        assert nesting_depth(text) == depth
        assert too_deep(text, limit) == (depth > limit)
        return 1

    run_counted(
        "depth scan equals the parsed nesting", check, value=values, limit=st.integers(1, 8)
    )


def test_the_message_gate_never_misses_a_line_with_too_many_brackets() -> None:
    """The vectorised gate may flag a line that is fine (it is then scanned exactly), never
    pass one that has more opening brackets than the limit."""
    bracket_lines = st.builds(
        lambda line, n, at: line[:at] + b"[" * n + line[at:],
        st.sampled_from(good_lines()),
        st.integers(0, 200),
        st.integers(0, 50),
    )

    def check(lines: list[bytes], limit: int) -> int:
        while sum(map(len, lines)) < 20_000:  # large enough for the vectorised pass
            lines = lines + lines
        data = b"\n".join(lines)
        flagged = deep_line_candidates(data, data.split(b"\n"), limit)
        for i, line in enumerate(lines):
            if line.count(b"{") + line.count(b"[") > limit:
                assert flagged is not None and flagged[i], (i, limit)
        return len(lines)

    run_counted(
        "message gate flags every line with more brackets than the limit",
        check,
        lines=st.lists(
            st.one_of(st.sampled_from(good_lines()), bracket_lines), min_size=1, max_size=6
        ),
        limit=st.integers(2, 256),
    )
