"""Base64 text that remembers the bytes it spells.

Detector rows are JSON-safe, so their arrays (reservoir samples, feature sums) travel as base64
strings; the state codec then turns each back into bytes to store them compactly. On a replay
that round trip decoded about 20 MB of base64 per 30 simulated minutes (60 ms, a fifth of every
checkpoint). A `Base64Text` is an ordinary `str` (equal to, and serialised as, the same text)
that also carries its bytes, so the codec takes them instead of decoding the text again.
"""

from __future__ import annotations

import base64
from typing import Any


class Base64Text(str):
    """The base64 (standard alphabet, padded) text of `raw`, with `raw` kept beside it."""

    raw: bytes

    def __new__(cls, raw: bytes) -> Base64Text:
        text = super().__new__(cls, base64.b64encode(raw).decode("ascii"))
        text.raw = raw
        return text

    def __reduce__(self) -> tuple[Any, ...]:
        # str's own pickling would pass the text, not the bytes, to __new__
        return (Base64Text, (self.raw,))


def base64_bytes(text: str) -> bytes:
    """The bytes a base64 string spells; free when it is a `Base64Text`."""
    if isinstance(text, Base64Text):
        return text.raw
    return base64.b64decode(text)
