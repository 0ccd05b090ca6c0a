"""What a record may do to the parser, checked before it is parsed, and readable reasons.

A record can hurt a decoder in ways a type check never sees: nested 50,000 levels deep it
exhausts the recursion of a C parser (a `RecursionError`, or on a thread with a small stack a
crash), and bytes that are not UTF-8 make it raise `UnicodeDecodeError`. Each of these must
become one `DecodeError` for that record, with a reason a person can act on, and never reach
its neighbours. So depth is bounded by an explicit setting (`decode.max_depth`), checked here
before the record is parsed, and every reason says the step, what was found and what was
expected, once.

The depth check is written for the common case: a record with no more than `max_depth`
opening brackets cannot nest deeper than that. A message's lines are gated together in one
vectorised pass over its bytes (`deep_line_candidates`); only a line with more brackets than
the limit is scanned exactly (`too_deep`: strings removed, then the running depth). Counting
brackets line by line with `bytes.count` measured about 11% of the whole decode; the exact scan
of every line far more.
"""

from __future__ import annotations

import re

import numpy as np
import numpy.typing as npt

#: a UTF-8 byte order mark: RFC 8259 lets a parser ignore it, and Windows tools write one
BOM = b"\xef\xbb\xbf"

_NOT_STRUCTURE = bytes(b for b in range(256) if b not in b'[]{}"')
_OPEN_CURLY, _OPEN_SQUARE, _CLOSE_CURLY, _CLOSE_SQUARE, _QUOTE = b'{[}]"'
#: below this many bytes a message is gated by two counts; above, in one vectorised pass
_VECTOR_GATE_BYTES = 16_384


def nesting_depth(text: bytes) -> int:
    """The deepest nesting of objects and arrays in JSON text (brackets in strings ignored).

    Escaped backslashes and quotes are dropped first, so every quote left opens or closes a
    string; then only brackets and quotes are kept (in C), and a bracket counts when an even
    number of quotes precede it. On text that is not valid JSON the answer is an estimate;
    the parser reports such text.
    """
    if b"\\" in text:
        text = text.replace(b"\\\\", b"").replace(b'\\"', b"")
    codes = np.frombuffer(text.translate(None, _NOT_STRUCTURE), dtype=np.uint8)
    if not len(codes):
        return 0
    outside = (np.cumsum(codes == _QUOTE) & 1) == 0
    opens = (codes == _OPEN_CURLY) | (codes == _OPEN_SQUARE)
    closes = (codes == _CLOSE_CURLY) | (codes == _CLOSE_SQUARE)
    steps = (opens & outside).astype(np.int32) - (closes & outside)
    return int(np.cumsum(steps).max())


def too_deep(text: bytes, max_depth: int) -> bool:
    """True when `text` nests deeper than `max_depth`; cheap unless it has many brackets."""
    return text.count(b"{") + text.count(b"[") > max_depth and nesting_depth(text) > max_depth


def deep_line_candidates(
    data: bytes, lines: list[bytes], max_depth: int
) -> npt.NDArray[np.bool_] | None:
    """Per line of `data` (`lines` is `data.split(b"\\n")`): may it nest deeper than allowed?

    A line cannot nest deeper than it has opening brackets, so only lines with more than
    `max_depth` of them need the exact `too_deep`; None when no line can. A large message is
    gated in one vectorised pass, openers counted per 64-byte block (a line's count may take in
    a neighbour's openers from the two blocks it shares, never miss its own): counting line by
    line cost about a tenth of the whole decode.
    """
    if len(data) < _VECTOR_GATE_BYTES:
        if data.count(b"{") + data.count(b"[") <= max_depth:
            return None
        return np.ones(len(lines), dtype=bool)
    per_block = _openers_per_block(np.frombuffer(data, dtype=np.uint8))
    cumulative = np.zeros(len(per_block) + 1, dtype=np.int64)
    np.cumsum(per_block, out=cumulative[1:])
    if cumulative[-1] <= max_depth:
        return None
    lengths = np.fromiter(map(len, lines), dtype=np.int64, count=len(lines))
    ends = np.cumsum(lengths + 1) - 1
    bound = cumulative[(ends + 63) // 64] - cumulative[(ends - lengths) // 64]
    flagged = bound > max_depth
    return flagged if flagged.any() else None


#: bytes masked at a time: a multiple of 64, small enough to stay in cache (measured 40% faster
#: than masking a 2 MB message in one go, which allocates and faults in two 2 MB temporaries)
_CHUNK = 1 << 17


def _openers_per_block(codes: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
    """Opening brackets in each 64-byte block of `codes` (the last block may be partial)."""
    mask_bytes = np.empty(min(_CHUNK, len(codes)), dtype=np.uint8)
    mask = np.empty(len(mask_bytes), dtype=bool)
    counts = []
    for start in range(0, len(codes), _CHUNK):
        part = codes[start : start + _CHUNK]
        n = len(part)
        # `{` (0x7B) and `[` (0x5B) differ only in bit 0x20, and no other byte masks to 0x5B
        np.bitwise_and(part, 0xDF, out=mask_bytes[:n])
        np.equal(mask_bytes[:n], _OPEN_SQUARE, out=mask[:n])
        packed = np.packbits(mask[:n])  # bit i is byte i's opener flag
        padding = -len(packed) % 8
        if padding:
            packed = np.concatenate((packed, np.zeros(padding, dtype=np.uint8)))
        counts.append(np.bitwise_count(packed.view(np.uint64)))
    return np.concatenate(counts)


def too_deep_reason(max_depth: int) -> str:
    return f"nested deeper than {max_depth} levels (the limit is decode.max_depth)"


def too_large_reason(size: int, max_bytes: int) -> str:
    """A record over the size limit. The file reader cuts an endless line just past the limit,
    so a record of exactly `max_bytes + 1` bytes may be longer: its size is not claimed."""
    reason = f"record is larger than the limit of {max_bytes:,} bytes (decode.max_record_bytes)"
    return reason + (f": {size:,} bytes" if size > max_bytes + 1 else "")


def utf8_reason(text: bytes) -> str:
    """Where the first byte that is not UTF-8 is, in the record as sent."""
    try:
        text.decode("utf-8")
    except UnicodeDecodeError as e:
        return (
            f"not UTF-8 text: byte 0x{text[e.start]:02x} at offset {e.start} is {e.reason} "
            "(JSON must be UTF-8)"
        )
    return "not UTF-8 text (JSON must be UTF-8)"


_MALFORMED = re.compile(r"JSON is malformed: (?P<what>.+) \(byte (?P<at>\d+)\)$")
_NOT_JSON_NUMBERS = (b"NaN", b"-NaN", b"Infinity", b"-Infinity", b"inf", b"-inf", b"nan")


def malformed_reason(message: str, text: bytes) -> str:
    """msgspec's syntax error → `not valid JSON: <what> at byte N (<what is there>)`."""
    if message.startswith("Input data was truncated"):
        return "not valid JSON: the text ends inside a value (truncated?)"
    m = _MALFORMED.match(message)
    if m is None:
        return f"not valid JSON: {message}"
    at = int(m["at"])
    what = m["what"]
    rest = text[at : at + 9]
    for word in _NOT_JSON_NUMBERS:
        if rest.startswith(word):
            shown = word.decode()
            return (
                f"not valid JSON: {shown} at byte {at} is not a JSON number "
                "(send a finite number, or null for a missing value)"
            )
    if what == "trailing characters":
        return f"not valid JSON: more text after the end of the record (byte {at})"
    return f"not valid JSON: {what} at byte {at}, found {_shown(rest)}"


def _shown(rest: bytes) -> str:
    if not rest:
        return "the end of the text"
    head = rest[:1]
    return (
        repr(head.decode())
        if head.isascii() and head.decode().isprintable()
        else f"0x{rest[0]:02x}"
    )


#: msgspec's names of JSON kinds → words
KIND_WORDS = {
    "int": "a number",
    "float": "a number",
    "str": "a string",
    "array": "an array",
    "object": "an object",
    "bool": "true or false",
    "null": "null",
}
