"""Arrow columns of an insert, built from numpy buffers instead of `pa.array`.

The first `pa.array` call of a process imports pandas (pyarrow asks pandas whether the value
is one of its objects, whatever the value is): 0.2 s of every short `lookout replay`, a fifth of
its start-up, for a library the replay never uses. The sink writes six column types; each is
built here from its values' buffers (validity bitmap, offsets, data), which gives the very
arrays `pa.array` gives (`tests/unit/test_arrow_columns.py` compares them). A value of a kind
not handled here (a naive datetime, a histogram row that is null, ...) falls back to `pa.array`:
slower to start, never wrong.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
#: offsets of `string`/`binary`/`list` columns are 32-bit: longer columns go to `pa.array`
_MAX_OFFSET = 2**31 - 1


class _Unhandled(Exception):
    """A value this module does not build; the caller falls back to `pa.array`."""


def arrow_column(values: Sequence[Any], arrow_type: pa.DataType) -> pa.Array:
    """`pa.array(values, arrow_type)`, without importing pandas for the common types."""
    builder = _builder(arrow_type)
    if builder is not None:
        try:
            return builder(values, arrow_type)
        except _Unhandled:
            pass
    return pa.array(list(values), arrow_type)


def timestamps_from_seconds(seconds: npt.NDArray[np.int64]) -> pa.Array:
    """Epoch seconds as a UTC microsecond timestamp column (no nulls)."""
    micros = np.ascontiguousarray(seconds, dtype=np.int64) * 1_000_000
    return pa.Array.from_buffers(
        pa.timestamp("us", tz="UTC"), len(micros), [None, pa.py_buffer(micros)]
    )


def _builder(arrow_type: pa.DataType) -> Callable[[Sequence[Any], pa.DataType], pa.Array] | None:
    if arrow_type == pa.int64():
        return _ints
    if arrow_type == pa.float64():
        return _floats
    if arrow_type == pa.string() or arrow_type == pa.binary():
        return _variable
    if pa.types.is_timestamp(arrow_type) and arrow_type.unit == "us" and arrow_type.tz == "UTC":
        return _timestamps
    if _is_histogram(arrow_type):
        return _histograms
    return None


def _validity(values: Sequence[Any]) -> tuple[pa.Buffer | None, int]:
    present = np.fromiter((v is not None for v in values), dtype=bool, count=len(values))
    nulls = len(values) - int(present.sum())
    if not nulls:
        return None, 0
    return pa.py_buffer(np.packbits(present, bitorder="little")), nulls


def _fixed(
    values: Sequence[Any], arrow_type: pa.DataType, dtype: type, convert: Callable[[Any], Any]
) -> pa.Array:
    validity, nulls = _validity(values)
    data: npt.NDArray[Any] = np.fromiter(
        (0 if v is None else convert(v) for v in values), dtype=dtype, count=len(values)
    )
    return pa.Array.from_buffers(
        arrow_type, len(values), [validity, pa.py_buffer(data)], null_count=nulls
    )


def _int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise _Unhandled
    return int(value)


def _float(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, float | int | np.floating | np.integer):
        raise _Unhandled
    return float(value)


def _micros(value: Any) -> int:
    if not isinstance(value, datetime) or value.tzinfo is None:
        raise _Unhandled
    return (value - _EPOCH) // _MICROSECOND


def _ints(values: Sequence[Any], arrow_type: pa.DataType) -> pa.Array:
    return _fixed(values, arrow_type, np.int64, _int)


def _floats(values: Sequence[Any], arrow_type: pa.DataType) -> pa.Array:
    return _fixed(values, arrow_type, np.float64, _float)


def _timestamps(values: Sequence[Any], arrow_type: pa.DataType) -> pa.Array:
    return _fixed(values, arrow_type, np.int64, _micros)


def _variable(values: Sequence[Any], arrow_type: pa.DataType) -> pa.Array:
    """`string` (str values, UTF-8) or `binary` (bytes values): offsets and one data buffer."""
    text = arrow_type == pa.string()
    if text:
        ascii_column = _ascii_strings(values, arrow_type)
        if ascii_column is not None:
            return ascii_column
    encoded: list[bytes] = []
    for v in values:
        if v is None:
            encoded.append(b"")
        elif text and isinstance(v, str):
            try:
                encoded.append(v.encode("utf-8"))
            except UnicodeEncodeError as error:  # a lone surrogate: `pa.array` reports it
                raise _Unhandled from error
        elif not text and isinstance(v, bytes):
            encoded.append(v)
        else:
            raise _Unhandled
    return _with_offsets(values, arrow_type, encoded)


def _ascii_strings(values: Sequence[Any], arrow_type: pa.DataType) -> pa.Array | None:
    """Strings without None whose text is ASCII (request ids, model names), in three C-speed
    steps instead of one encode per value: for ASCII, characters are bytes."""
    try:
        joined = "".join(values)  # TypeError on a None or a non-string
        data = joined.encode("ascii")
    except (TypeError, UnicodeEncodeError):
        return None
    lengths = np.fromiter(map(len, values), dtype=np.int64, count=len(values))
    offsets = np.zeros(len(values) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    if offsets[-1] > _MAX_OFFSET:
        return None
    buffers = [None, pa.py_buffer(offsets.astype(np.int32)), pa.py_buffer(data)]
    return pa.Array.from_buffers(arrow_type, len(values), buffers, null_count=0)


def _with_offsets(values: Sequence[Any], arrow_type: pa.DataType, parts: list[bytes]) -> pa.Array:
    lengths = np.fromiter(map(len, parts), dtype=np.int64, count=len(parts))
    offsets = np.zeros(len(parts) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    if offsets[-1] > _MAX_OFFSET:
        raise _Unhandled
    validity, nulls = _validity(values)
    buffers = [validity, pa.py_buffer(offsets.astype(np.int32)), pa.py_buffer(b"".join(parts))]
    return pa.Array.from_buffers(arrow_type, len(values), buffers, null_count=nulls)


def _is_histogram(arrow_type: pa.DataType) -> bool:
    if not pa.types.is_list(arrow_type) or not pa.types.is_struct(arrow_type.value_type):
        return False
    struct = arrow_type.value_type
    return [struct.field(i).name for i in range(struct.num_fields)] == ["bucket", "count"] and all(
        struct.field(i).type == pa.int64() for i in range(2)
    )


def _histograms(values: Sequence[Any], arrow_type: pa.DataType) -> pa.Array:
    """list<struct<bucket int64, count int64>> from rows of {"bucket": k, "count": n}."""
    if any(row is None for row in values):
        raise _Unhandled
    try:
        pairs = [(int(p["bucket"]), int(p["count"])) for row in values for p in row]
    except (TypeError, KeyError, ValueError) as error:
        raise _Unhandled from error
    if any(set(p) != {"bucket", "count"} for row in values for p in row):
        raise _Unhandled
    flat = np.array(pairs, dtype=np.int64).reshape(-1, 2)
    lengths = np.fromiter(map(len, values), dtype=np.int64, count=len(values))
    offsets = np.zeros(len(values) + 1, dtype=np.int32)
    np.cumsum(lengths, out=offsets[1:])
    struct_type = arrow_type.value_type
    children = [
        pa.Array.from_buffers(pa.int64(), len(flat), [None, pa.py_buffer(flat[:, i].copy())])
        for i in range(2)
    ]
    entries = pa.StructArray.from_arrays(children, fields=[struct_type.field(i) for i in range(2)])
    return pa.ListArray.from_arrays(
        pa.Array.from_buffers(pa.int32(), len(offsets), [None, pa.py_buffer(offsets)]),
        entries,
        type=arrow_type,
    )
