"""A bounded, mergeable uniform sample of rows: bottom-k by a hash of the request id.

Every row gets a 64-bit key hashed from its `request_id`; the sample is the k rows with the
smallest keys (a "bottom-k sketch": Cohen & Kaplan, "Summarizing data using bottom-k
sketches", PODC 2007). Because the keys look uniformly random, that is a uniform sample
without replacement, and the bottom k of a union is the bottom k of the union of bottom-k's,
so `merge` is exact, associative and commutative. The same record always gets the same key, so
a redelivered record is kept once rather than biasing the sample.

Rows are kept sorted by key: two samples of the same rows are then equal element for
element, whatever order they were built in. Rows sharing a key (a redelivered record, a reused
request id, or a 64-bit hash collision) are kept once: the lexicographically smallest row.
"""

from __future__ import annotations

import functools
import os
import threading
import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from schemas.base64_text import Base64Text, base64_bytes

KeyArray = npt.NDArray[np.uint64]


def hash_ids(request_ids: npt.NDArray[np.object_], seed: int) -> KeyArray:
    """64-bit keys of request ids, vectorised (SipHash keyed by the seed, stable across runs).

    A column hashed before (or given its keys with `remember_keys`) is not hashed again: a
    fold hashes a poll's ids once, and the detectors of every window reuse those keys.
    """
    known = _MEMO.get(request_ids, seed)
    if known is not None:
        return known
    keys = _hash(request_ids, seed)
    _MEMO.put(request_ids, seed, keys)
    return keys


def hash_rows(
    request_ids: npt.NDArray[np.object_], rows: npt.NDArray[np.int64], seed: int
) -> KeyArray:
    """`hash_ids(request_ids[rows], seed)`, from the column's keys when it was hashed before."""
    known = _MEMO.get(request_ids, seed)
    if known is not None:
        return known[rows]
    return _hash(request_ids[rows], seed)


def remember_keys(request_ids: npt.NDArray[np.object_], seed: int, keys: KeyArray) -> None:
    """`keys` are `hash_ids(request_ids, seed)` (e.g. a slice of a larger column's keys)."""
    _MEMO.put(request_ids, seed, keys)


def _hash(request_ids: npt.NDArray[np.object_], seed: int) -> KeyArray:
    hash_key = f"{seed:016d}"[-16:]
    ids = np.asarray(request_ids, dtype=object)
    siphash = _compiled_siphash()
    if siphash is not None:
        # every id as str (None -> "None", NaN -> "nan", as pandas' astype(str) does)
        return _mix(siphash(ids, hash_key.encode()))
    import pandas as pd  # only without the compiled hash: a quarter second of start-up

    if len(ids) and not pd.isna(ids).any():
        # pandas hashes str objects as they are and turns other objects into str itself: the
        # same keys as the str conversion below, without a Series and a copy per call
        return pd.util.hash_array(ids, hash_key=hash_key, categorize=False).astype(np.uint64)
    as_str = pd.Series(ids, dtype=object).astype(str).to_numpy(dtype=object)
    return pd.util.hash_array(as_str, hash_key=hash_key, categorize=False).astype(np.uint64)


def _mix(keys: KeyArray) -> KeyArray:
    """pandas' final bit mixing of its SipHash values (`_hash_ndarray`), so keys stay equal."""
    keys ^= keys >> np.uint64(30)
    keys *= np.uint64(0xBF58476D1CE4E5B9)
    keys ^= keys >> np.uint64(27)
    keys *= np.uint64(0x94D049BB133111EB)
    keys ^= keys >> np.uint64(31)
    return keys


@functools.cache
def _compiled_siphash() -> Callable[[npt.NDArray[np.object_], bytes], KeyArray] | None:
    """The compiled SipHash (`detectors/_keyhash.pyx`), or None when it was not built."""
    if os.environ.get("LOOKOUT_KEYHASH") == "pandas":
        return None
    try:
        from detectors._keyhash import siphash_strings
    except ImportError:
        return None
    return siphash_strings


class _KeyMemo:
    """Keys of the request-id columns hashed most recently, by column identity and seed.

    Request-id columns are never written in place, so a column that is still alive still has
    the keys it was hashed to; an entry goes when its column is freed (or after `size` newer
    ones), so the memo holds no column alive and stays small.

    The decode thread puts while the engine's thread gets and columns are freed on either:
    one re-entrant lock (a column freed while the lock is held calls `forget` on that thread).
    """

    def __init__(self, size: int = 256) -> None:
        self._size = size
        self._entries: dict[tuple[int, int], tuple[weakref.ref[Any], KeyArray]] = {}
        self._lock = threading.RLock()

    def get(self, ids: npt.NDArray[np.object_], seed: int) -> KeyArray | None:
        with self._lock:
            entry = self._entries.get((id(ids), seed))
        if entry is None or entry[0]() is not ids:
            return None
        return entry[1]

    def put(self, ids: npt.NDArray[np.object_], seed: int, keys: KeyArray) -> None:
        if not isinstance(ids, np.ndarray) or len(keys) != len(ids):
            return
        key = (id(ids), seed)
        entries = self._entries

        lock = self._lock

        def forget(ref: weakref.ref[Any]) -> None:
            with lock:
                entry = entries.get(key)
                if entry is not None and entry[0] is ref:
                    del entries[key]

        with lock:
            entries.pop(key, None)
            while len(entries) >= self._size:
                entries.pop(next(iter(entries)), None)
            entries[key] = (weakref.ref(ids, forget), keys)


_MEMO = _KeyMemo()


@dataclass(frozen=True, eq=False)
class Reservoir:
    """Up to `capacity` rows with the smallest keys, sorted by key. Never mutated."""

    keys: KeyArray
    rows: npt.NDArray[Any]  # (len(keys), width), one dtype for all rows
    capacity: int

    def __post_init__(self) -> None:
        if len(self.keys) != len(self.rows):
            msg = f"Reservoir has {len(self.keys)} keys but {len(self.rows)} rows"
            raise ValueError(msg)
        if len(self.keys) > self.capacity:
            msg = f"Reservoir holds {len(self.keys)} rows, over its capacity {self.capacity}"
            raise ValueError(msg)

    def __len__(self) -> int:
        return len(self.keys)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Reservoir):
            return NotImplemented
        return (
            self.capacity == other.capacity
            and self.rows.dtype == other.rows.dtype
            and self.rows.shape == other.rows.shape
            and np.array_equal(self.keys, other.keys)
            and np.array_equal(self.rows, other.rows, equal_nan=self.rows.dtype.kind == "f")
        )

    __hash__ = None  # type: ignore[assignment]

    @classmethod
    def empty(cls, capacity: int, width: int, dtype: npt.DTypeLike) -> Reservoir:
        return cls(np.zeros(0, np.uint64), np.zeros((0, width), dtype=dtype), capacity)

    def emptied(self) -> Reservoir:
        """An empty reservoir of the same shape (capacity, width, dtype)."""
        return Reservoir.empty(self.capacity, self.width, self.rows.dtype)

    @property
    def width(self) -> int:
        return int(self.rows.shape[1])

    def with_capacity(self, capacity: int) -> Reservoir:
        """The same sample allowed to hold `capacity` rows (trimmed if it holds more)."""
        return Reservoir(self.keys[:capacity], self.rows[:capacity], capacity)


def bottom_k(keys: KeyArray, rows: npt.NDArray[Any], capacity: int) -> Reservoir:
    """The reservoir of a set of keyed rows: unique keys, the `capacity` smallest, sorted."""
    if len(keys) > 4 * capacity:  # cut the sort down to the candidates first
        cut = np.argpartition(keys, 4 * capacity)[: 4 * capacity]
        unique_keys, first = np.unique(keys[cut], return_index=True)
        if len(unique_keys) == len(cut):
            return Reservoir(unique_keys[:capacity], rows[cut[first[:capacity]]], capacity)
        # a key repeated among the candidates (one id delivered many times) can push smaller
        # distinct keys out of the cut: then every row is a candidate
    # a stable sort and a look at neighbours: what `np.unique(keys, return_index=True)` does
    # for distinct keys, without its overhead (most of an add to a window's sample)
    order = np.argsort(keys, kind="stable")
    sorted_keys = keys[order]
    if len(keys) < 2 or bool((sorted_keys[1:] != sorted_keys[:-1]).all()):
        take = order[:capacity]
        return Reservoir(sorted_keys[:capacity], rows[take], capacity)
    # A key seen twice is one record delivered twice, normally with identical rows. Should the
    # rows differ (a reused request id), keep the lexicographically smallest, so the result
    # does not depend on the order partial samples were merged in.
    columns = rows.reshape(len(rows), -1)
    order = np.lexsort((*(columns[:, j] for j in range(columns.shape[1] - 1, -1, -1)), keys))
    sorted_keys = keys[order]
    first_of_key = np.concatenate([[True], sorted_keys[1:] != sorted_keys[:-1]])
    take = order[first_of_key][:capacity]
    return Reservoir(keys[take], rows[take], capacity)


def merge(a: Reservoir, b: Reservoir) -> Reservoir:
    """The reservoir of the union; capacity is the larger of the two."""
    if a.width != b.width or a.rows.dtype != b.rows.dtype:
        msg = (
            f"cannot merge reservoirs of rows {a.width}×{a.rows.dtype} and {b.width}×{b.rows.dtype}"
        )
        raise ValueError(msg)
    capacity = max(a.capacity, b.capacity)
    if not len(b) and len(a) <= capacity:
        return Reservoir(a.keys, a.rows, capacity)
    if not len(a) and len(b) <= capacity:
        return Reservoir(b.keys, b.rows, capacity)
    walk = _compiled_merge()
    if walk is not None:
        merged = _merge_walked(walk, a, b, capacity)
        if merged is not None:
            return merged
        return bottom_k(
            np.concatenate([a.keys, b.keys]), np.concatenate([a.rows, b.rows]), capacity
        )
    return merge_numpy(a, b, capacity)


def merge_numpy(a: Reservoir, b: Reservoir, capacity: int) -> Reservoir:
    """`merge` without the compiled walk: the fallback, and its test's reference."""
    # both key runs are sorted and unique: where each row of one lands in the union is its
    # index plus how many keys of the other are smaller
    in_b = np.searchsorted(b.keys, a.keys)
    shared = in_b < len(b)
    if not bool((b.keys[in_b[shared]] == a.keys[shared]).any()):
        # no record in both: the bottom k is the first k in key order, as `bottom_k` finds it,
        # each row copied once to its place (a third of an evaluation's reservoir time went
        # to the general path, and half of the rest to sorting and masked copies)
        size = min(len(a) + len(b), capacity)
        to_a = np.arange(len(a)) + in_b
        to_b = np.arange(len(b)) + np.searchsorted(a.keys, b.keys)
        keys = np.empty(size, dtype=a.keys.dtype)
        rows = np.empty((size, a.width), dtype=a.rows.dtype)
        for source, to in ((a, to_a), (b, to_b)):
            fits = int(np.searchsorted(to, size))  # `to` increases: the rows that fit lead
            keys[to[:fits]] = source.keys[:fits]
            rows[to[:fits]] = source.rows[:fits]
        return Reservoir(keys, rows, capacity)
    keys = np.concatenate([a.keys, b.keys])
    return bottom_k(keys, np.concatenate([a.rows, b.rows]), capacity)


def _merge_walked(
    walk: Callable[..., int], a: Reservoir, b: Reservoir, capacity: int
) -> Reservoir | None:
    """The bottom `capacity` of two disjoint reservoirs by one merge walk (rows copied as
    bytes); None when a key is in both."""
    size = min(len(a) + len(b), capacity)
    keys = np.empty(size, dtype=np.uint64)
    rows = np.empty((size, a.width), dtype=a.rows.dtype)
    written = walk(
        np.ascontiguousarray(a.keys, np.uint64),
        _row_bytes(a.rows),
        np.ascontiguousarray(b.keys, np.uint64),
        _row_bytes(b.rows),
        keys,
        _row_bytes(rows),
    )
    return None if written < 0 else Reservoir(keys, rows, capacity)


def _row_bytes(rows: npt.NDArray[Any]) -> npt.NDArray[np.uint8]:
    """Each row as its bytes (a view when `rows` is C-contiguous, which it nearly always is)."""
    flat = np.ascontiguousarray(rows)
    return flat.view(np.uint8).reshape(len(flat), flat.shape[1] * flat.itemsize)


@functools.cache
def _compiled_merge() -> Callable[..., int] | None:
    """The merge walk of `detectors/_sorted_walks.pyx`, or None when it was not built."""
    try:
        from detectors._sorted_walks import merge_disjoint
    except ImportError:
        return None
    return merge_disjoint


def still_competing(
    sample: Reservoir, others: Sequence[Reservoir], *, population: int = 0, slack: float = 1.5
) -> Reservoir:
    """The rows of `sample` that can still be in the bottom k of its union with `others`.

    Exact part: once the others together hold `capacity` rows, a row keyed at or above their
    largest key loses to every one of them (an equal key is the same record, kept once).
    Expected part: keys are uniform, so among `population` rows (a lower bound of the window's
    total, over every writer) the k-th smallest key is near k/population of the key range;
    rows above `slack` times that are dropped too. Fewer than k rows fall below that bound with
    negligible probability (at k = 100 it is over 4 standard deviations away; it only shrinks
    the sample, which stays uniform). This is how several writers of one window write about one
    sample between them rather than one each.
    """
    if not len(sample):
        return sample
    bound = np.uint64(np.iinfo(np.uint64).max)
    if others:
        union = functools.reduce(merge, others)
        if len(union) >= sample.capacity:
            bound = union.keys[-1]
    if population > slack * sample.capacity:
        share = slack * sample.capacity / population
        bound = min(bound, np.uint64(share * float(np.iinfo(np.uint64).max)))
    n = int(np.searchsorted(sample.keys, bound, side="left"))
    if n == len(sample):
        return sample
    return Reservoir(sample.keys[:n], sample.rows[:n], sample.capacity)


def add(
    reservoir: Reservoir,
    keys: KeyArray,
    rows: npt.NDArray[Any],
    transform: Callable[[npt.NDArray[Any]], npt.NDArray[Any]] | None = None,
) -> Reservoir:
    """`reservoir` with new keyed rows folded in; `transform` maps only the rows kept.

    Once the reservoir is full, a row keyed above its largest key cannot enter: such rows are
    dropped before any sort or conversion (most of a busy window's rows, whose sample filled
    in its first seconds)."""
    rows = np.asarray(rows)
    if len(reservoir) >= reservoir.capacity and len(reservoir):
        may_enter = keys <= reservoir.keys[-1]
        if not may_enter.all():
            keys, rows = keys[may_enter], rows[may_enter]
    fresh = bottom_k(keys, rows, reservoir.capacity)
    kept = fresh.rows if transform is None else transform(fresh.rows)
    converted = Reservoir(fresh.keys, kept.astype(reservoir.rows.dtype), fresh.capacity)
    return merge(reservoir, converted)


def to_row(reservoir: Reservoir) -> dict[str, Any]:
    """JSON-safe form: keys and rows as base64 of little-endian bytes (NaN survives)."""
    return {
        "capacity": reservoir.capacity,
        "width": reservoir.width,
        "dtype": reservoir.rows.dtype.str.lstrip("<>|="),
        "keys": Base64Text(reservoir.keys.astype("<u8").tobytes()),
        "rows": Base64Text(reservoir.rows.astype(reservoir.rows.dtype.newbyteorder("<")).tobytes()),
    }


def from_row(row: Mapping[str, Any]) -> Reservoir:
    """Inverse of `to_row`."""
    dtype = np.dtype("<" + str(row["dtype"]))
    width = int(row["width"])
    keys = np.frombuffer(base64_bytes(row["keys"]), dtype="<u8").astype(np.uint64)
    flat = np.frombuffer(base64_bytes(row["rows"]), dtype=dtype)
    rows = flat.astype(dtype.newbyteorder("=")).reshape(len(keys), width)
    return Reservoir(keys, rows, int(row["capacity"]))
