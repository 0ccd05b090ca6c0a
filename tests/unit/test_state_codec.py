"""Stored detector states: compact, and read back as exactly what was written."""

from __future__ import annotations

import base64
import binascii
import pickle
import zlib
from typing import Any

import msgspec
import numpy as np
import orjson
import pytest

from detectors.embedding_drift import EmbeddingDriftDetector
from detectors.synthetic_embeddings import TopicWorld, embedding_batch
from schemas.base64_text import Base64Text, base64_bytes
from schemas.drift_config import EmbeddingDriftConfig
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


#: `encode_states` of the release before Zstandard (zlib, unshuffled extensions) of ZLIB_ROWS
ZLIB_BLOB = bytes.fromhex(
    "78016b5e9e9358929a975cd9b43439bf34af847949466671c96446a6031b52528b938b320b4af28be2538a32"
    "d34a1a971527e616e4a4362dc94ead2c3e6ec0c8000530061394cf0ca559a0342b945e52945f0ed3d7a3b7cb"
    "b647cfcaeee5a26e3b20db4e7fd70b209bdb7ed70b257ba0b87d6c49a0bdfeae0c7b068606fb2579f925a94b"
    "0243bd5c0012133365"
)
ZLIB_ROWS = {
    "latency": {"count": 3, "hist": [1, 2, None]},
    "descriptor_drift": {
        "sample": {
            "keys": "AAAAAAAAAAABAAAAAAAAAAIAAAAAAAAAAwAAAAAAAAAEAAAAAAAAAAUAAAAAAAAA",
            "rows": "AAAAAIwuuj2MLjo+6aKLPowuuj4vuug+6aILP7roIj+MLjo/XXRRPy+6aD8AAIA/",
        }
    },
    "note": "QUJD",
}


def test_zlib_blobs_of_the_previous_release_still_decode() -> None:
    assert decode_states(ZLIB_BLOB) == ZLIB_ROWS
    assert encode_states(ZLIB_ROWS) != ZLIB_BLOB  # written anew in the current format
    assert decode_states(encode_states(ZLIB_ROWS)) == ZLIB_ROWS


def test_float_samples_take_less_room_than_zlib_did() -> None:
    """The shuffled Zstandard blob of a real embedding sample beats zlib level 1 on it."""
    detector = EmbeddingDriftDetector(EmbeddingDriftConfig())
    sample = TopicWorld.build().sample(1_000, np.random.default_rng(0))
    rows = {
        "embedding_drift": detector.to_row(detector.add(detector.empty(), embedding_batch(sample)))
    }
    blob = encode_states(rows)
    assert decode_states(blob) == rows
    old = zlib.compress(msgspec.msgpack.encode(_old_pack(rows)), 1)
    assert len(blob) < len(old)


def _old_pack(value: Any) -> Any:
    """The previous release's packing: canonical base64 strings as unshuffled extension 1."""
    if isinstance(value, str) and len(value) >= 32 and len(value) % 4 == 0:
        try:
            raw = base64.b64decode(value, validate=True)
        except binascii.Error:
            return value
        if base64.b64encode(raw).decode("ascii") == value:
            return msgspec.msgpack.Ext(1, raw)
        return value
    if isinstance(value, dict):
        return {k: _old_pack(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_old_pack(v) for v in value]
    return value


def test_states_from_base64_text_store_the_same_bytes_without_decoding_the_text() -> None:
    """Detectors hand over their arrays as `Base64Text` (the text, and the bytes it spells);
    the stored blob is the very one a plain string gives, and it reads back equal."""
    sample = Base64Text(np.arange(1000, dtype="<f4").tobytes())
    odd = Base64Text(b"abcde" * 10)  # a length that is not a multiple of the shuffle width
    short = Base64Text(b"ab")  # too short to be worth converting: kept as text
    states = {"d": {"rows": sample, "odd": odd, "short": short, "n": 3}}
    plain = orjson.loads(orjson.dumps(states))
    assert type(plain["d"]["rows"]) is str
    assert encode_states(states) == encode_states(plain)
    back = decode_states(encode_states(states))
    assert back == plain
    assert base64_bytes(back["d"]["rows"]) == sample.raw
    assert pickle.loads(pickle.dumps(sample)).raw == sample.raw
