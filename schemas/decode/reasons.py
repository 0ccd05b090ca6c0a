"""msgspec's errors → one readable reason each: the field, what was expected, what was found.

"Expected `int` >= 0, got `str` - at `$.input_tokens`" becomes field `input_tokens`, reason
`must be a non-negative integer, got "12"`; a syntax error becomes `not valid JSON: ...`
(see `schemas.decode.guards.malformed_reason`).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import msgspec
import orjson

from schemas.decode.guards import KIND_WORDS, malformed_reason
from schemas.errors import DecodeError

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
_TOP_KEY = re.compile(r"[^.\[]+")


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


def msgspec_error(e: msgspec.DecodeError, line: int, raw: bytes, record: bytes) -> DecodeError:
    """msgspec's error → one readable reason: what was expected and what was found, once."""
    message = str(e)
    if not isinstance(e, msgspec.ValidationError):
        return DecodeError(line, malformed_reason(message, record), raw, None, "malformed_json")
    text, _, at = message.partition(" - at `")
    path = at.rstrip("`")
    field = path.removeprefix("$").removeprefix(".").replace("[...]", "") or None
    m = _EXPECTED.match(text)
    if m and field is None and m["type"] == "object":
        kind = KIND_WORDS.get(m["got"] or "", "something else")
        reason = f"a record must be a JSON object, got {kind}"
    elif m:
        reason = f"must be {_expected_words(m)}"
    elif text.startswith("Invalid RFC3339"):
        # which part is missing is not said by msgspec: name every part (`06:00Z` has a zone)
        reason = (
            "must be an RFC 3339 timestamp: a date, a time with seconds and a timezone, "
            "like 2026-01-05T06:00:00Z"
        )
    elif text.startswith("Number out of range"):
        reason = "must be a finite number"
    else:
        reason = text
    if field is None and m and m["got"] in ("null", "bool", "object", "array"):
        return DecodeError(line, reason, raw, None)  # the kind says it all
    found, value = (
        _value_at(record, path.removeprefix("$")) if path or field is None else (False, None)
    )
    if found:
        shown = orjson.dumps(value).decode()
        shown = shown[:80] + "…" if len(shown) > 80 else shown
        reason += f", got {shown}" if field is not None else f" ({shown})"
    return DecodeError(line, reason, raw, field)


#: other bad fields named beside the first, at most (then "and N more")
MORE_FIELDS_NAMED = 5


def with_other_bad_fields(
    first: DecodeError, record: bytes, decoder: msgspec.json.Decoder[Any]
) -> DecodeError:
    """`first` (the field msgspec stopped at) with every other field of the record that fails
    on its own, in the record's order, in the same one line.

    msgspec stops at the first bad field, so a logger with three wrong fields took three
    replays to fix, one line each time. Each field is decoded alone as a record of one field
    by the same decoder (every field of the record type is optional), so its reason is the one
    it would get first; a LogEntry's fields are looked for inside its `jsonPayload`. Only
    records that failed are looked at again, and this is an extra: anything it cannot read
    (a value orjson will not write back, 255 levels deep) leaves `first` as it was, never the
    record's own error turned into an internal one."""
    if first.field is None:
        return first
    try:
        named = _other_bad_fields(first, record, decoder)
    except Exception:
        return first
    if not named:
        return first
    if len(named) > MORE_FIELDS_NAMED:
        named = [*named[:MORE_FIELDS_NAMED], f"and {len(named) - MORE_FIELDS_NAMED} more fields"]
    reason = "; ".join([first.reason, *named])
    return DecodeError(first.line, reason, first.raw, first.field, first.error_type)


def _other_bad_fields(
    first: DecodeError, record: bytes, decoder: msgspec.json.Decoder[Any]
) -> list[str]:
    fields = orjson.loads(record)
    if not isinstance(fields, dict) or first.field is None:
        return []
    path = first.field.split(".")
    wrap: Callable[[dict[str, Any]], dict[str, Any]] = lambda one: one  # noqa: E731
    if path[0] == "jsonPayload" and len(path) > 1 and isinstance(fields.get("jsonPayload"), dict):
        # a LogEntry: its record is the payload; the wrapper's own fields are looked at too
        outer = {k: v for k, v in fields.items() if k != "jsonPayload"}
        fields, path = {**outer, **fields["jsonPayload"]}, path[1:]
        inner = set(fields) - set(outer)
        wrap = lambda one: {"jsonPayload": one} if set(one) <= inner else one  # noqa: E731
    top = _TOP_KEY.match(path[0])
    named: list[str] = []
    for name, value in fields.items():
        if top is not None and name == top.group(0):
            continue
        alone = orjson.dumps(wrap({name: value}))
        try:
            decoder.decode(alone)
        except msgspec.ValidationError as e:
            error = msgspec_error(e, first.line, first.raw, alone)
            named.append(f"field {error.field}: {error.reason}" if error.field else error.reason)
        except msgspec.DecodeError:
            continue
    return named
