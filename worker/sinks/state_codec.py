"""Detector states as compact bytes, shared by the DuckDB and BigQuery sinks.

A detector's `to_row` is JSON-safe: its arrays (reservoir samples, feature sums) are base64
strings of little-endian bytes, and the embedding sample is most of a window row. Stored as
JSON, the demo's three hours took 151 MB of states. Here every canonical base64 string becomes
the raw bytes it spells (a MessagePack extension), the rest is MessagePack, and the whole is
compressed. Decoding gives back the very same strings, so the encoding is lossless: the
engine merges exactly what it merged before, and a sink's reads equal the memory sink's.

Compression (measured on a 30-minute replay's 108 states, 15.1 MB of MessagePack): zlib level
1 gave 73% of the size in 0.37–0.9 s, a third of a checkpoint; levels 3 and 6 were no smaller
and 2–10× slower. The arrays are mostly float32 samples whose sign and exponent bytes repeat,
so their bytes are stored transposed (every value's first byte, then every second byte, ...:
the "shuffle" of HDF5 and Blosc), and the whole is Zstandard level 1 (through pyarrow, already
a dependency): 67% of the size in 19–43 ms. A blob is a tag byte, the MessagePack length and
the Zstandard frame. What earlier releases wrote still reads: zlib blobs (they start with
0x78) and JSON (text, or bytes starting with `{`/`[`).
"""

from __future__ import annotations

import base64
import binascii
import struct
import zlib
from collections.abc import Mapping
from typing import Any

import msgspec
import numpy as np
import orjson
import pyarrow as pa

from schemas.base64_text import Base64Text

#: MessagePack extension code of "bytes that were a base64 string"
_B64 = 1
#: the same, its bytes transposed in groups of 4 (`_shuffle`)
_B64_SHUFFLED = 2
#: shorter strings are kept as they are: converting them saves nothing
_MIN_B64 = 32
#: the width of the transposition: float32, the type of nearly every stored sample
_SHUFFLE_WIDTH = 4

#: first byte of a blob in the current format; zlib blobs start with 0x78, JSON with { or [
_TAG_ZSTD = b"\x01"
_LENGTH = struct.Struct("<I")
_ZSTD = pa.Codec("zstd", compression_level=1)


def _shuffle(raw: bytes) -> bytes:
    """Byte k of every value together, for k = 0..3: like bytes compress well side by side."""
    return np.frombuffer(raw, np.uint8).reshape(-1, _SHUFFLE_WIDTH).T.tobytes()


def _unshuffle(data: memoryview) -> bytes:
    return np.frombuffer(data, np.uint8).reshape(_SHUFFLE_WIDTH, -1).T.tobytes()


#: values MessagePack takes as they are; checked by exact type, before any call
_PLAIN: frozenset[type] = frozenset({int, float, bool, type(None)})


def _pack(value: Any) -> Any:
    """`value` with every canonical base64 string as raw bytes (an extension).

    Most of a state is numbers (a latency histogram is a dict of hundreds of counts): those
    are passed over by their exact type, without a call each. The isinstance chain below made
    a third of a checkpoint's CPU when every count went through it."""
    kind = type(value)
    if kind is dict:
        return {k: v if type(v) in _PLAIN else _pack(v) for k, v in value.items()}
    if kind is list or kind is tuple:
        return [v if type(v) in _PLAIN else _pack(v) for v in value]
    if isinstance(value, Base64Text):  # canonical by construction: no need to decode the text
        return _bytes_ext(value.raw) if len(value) >= _MIN_B64 else str(value)
    if isinstance(value, str):
        if len(value) >= _MIN_B64 and len(value) % 4 == 0:
            try:
                raw = base64.b64decode(value, validate=True)
            except binascii.Error:
                return value
            # canonical (an exact round trip) iff its last group is: strict decoding took only
            # alphabet characters with padding at the end, and full groups are a bijection
            last = len(raw) - (len(value) // 4 - 1) * 3
            if base64.b64encode(raw[len(raw) - last :]).decode("ascii") == value[-4:]:
                return _bytes_ext(raw)
        return value
    if isinstance(value, Mapping):
        return {k: _pack(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_pack(v) for v in value]
    if value is None or isinstance(value, int | float):
        return value
    # states are JSON-safe rows: anything else (a set, an object) is a detector's bug
    msg = f"a detector state holds a {type(value).__name__}, which is not JSON-safe"
    raise TypeError(msg)


def _bytes_ext(raw: bytes) -> msgspec.msgpack.Ext:
    if len(raw) % _SHUFFLE_WIDTH == 0:
        return msgspec.msgpack.Ext(_B64_SHUFFLED, _shuffle(raw))
    return msgspec.msgpack.Ext(_B64, raw)


def _unpack_ext(code: int, data: memoryview) -> Any:
    """The base64 text the bytes were; a `Base64Text`, so `from_row` need not decode it."""
    if code == _B64_SHUFFLED:
        return Base64Text(_unshuffle(data))
    if code != _B64:
        msg = f"stored detector state has an unknown extension type {code}"
        raise ValueError(msg)
    return Base64Text(bytes(data))


_DECODER = msgspec.msgpack.Decoder(ext_hook=_unpack_ext)


def encode_states(states: Mapping[str, Any]) -> bytes:
    """Detector states (or one detector's state) as compressed MessagePack."""
    packed = msgspec.msgpack.encode(_pack(states))
    return b"".join((_TAG_ZSTD, _LENGTH.pack(len(packed)), _ZSTD.compress(packed, asbytes=True)))


def decode_states(blob: bytes | str) -> Any:
    """Inverse of `encode_states`; what earlier releases wrote (zlib, JSON) also reads."""
    if isinstance(blob, str):
        return orjson.loads(blob)
    head = blob[:1]
    if head == _TAG_ZSTD:
        (size,) = _LENGTH.unpack_from(blob, 1)
        frame = memoryview(blob)[1 + _LENGTH.size :]
        return _DECODER.decode(_ZSTD.decompress(frame, decompressed_size=size, asbytes=True))
    if head in (b"{", b"["):  # JSON bytes, from before the compact encoding
        return orjson.loads(blob)
    return _DECODER.decode(zlib.decompress(blob))  # zlib, from before Zstandard
