"""The compiled sorted-array walks give exactly what the numpy code they replace gave.

`detectors/_sorted_walks.pyx` replaced four binary searches per value in the KS statistic and
a fancy-index scatter in the reservoir merge. Verdicts and stored samples must not change, so
the walks are compared bit for bit with the numpy versions (kept as the fallback of an
install without a compiler) on random inputs with ties, signed zeros, shared keys and every
row type the detectors store.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

from detectors import _ks
from detectors import reservoir as rs


def test_the_walks_are_built_where_the_suite_requires_them() -> None:
    """`make test` (CI=true) fails when the install could not compile the walks."""
    if os.environ.get("CI") == "true":
        assert _ks._compiled_walk() is not None
        assert rs._compiled_merge() is not None
    if _ks._compiled_walk() is None:
        pytest.skip("built without a compiler (LOOKOUT_PURE_PYTHON=1): numpy runs instead")


def _sorted(rng: np.random.Generator, n: int, ties: bool) -> np.ndarray:
    values = rng.normal(0.0, 1.0, n)
    if ties:  # rounded, as token counts and lengths are; signed zeros among them
        values = np.round(values * 2) * np.where(rng.random(n) < 0.5, -1.0, 1.0)
    return np.sort(values)


@pytest.mark.parametrize("ties", [False, True])
def test_ks_walk_gives_the_binary_searches_numbers(ties: bool) -> None:
    rng = np.random.default_rng(5 + ties)
    from detectors._sorted_walks import ks_extremes

    for n, m in [(1, 1), (1, 7), (3, 2), (50, 5000), (350, 5000), (1000, 2000), (7, 7)]:
        for shift in (0.0, 0.1, 2.0, -3.0):
            a, b = _sorted(rng, n, ties) + shift, _sorted(rng, m, ties)
            assert ks_extremes(a, b) == _ks.ks_extremes_numpy(a, b), (n, m, shift)
    same = np.array([0.0, -0.0, 1.0])  # -0.0 == 0.0: one tied value, as the searches see it
    both = np.sort(same)
    assert ks_extremes(both, both) == _ks.ks_extremes_numpy(both, both)


def _reservoir(rng: np.random.Generator, keys: np.ndarray, width: int, dtype: str) -> rs.Reservoir:
    keys = np.unique(keys.astype(np.uint64))
    rows = rng.normal(size=(len(keys), width)).astype(dtype)
    return rs.Reservoir(keys, rows, int(rng.integers(max(len(keys), 1), 2 * len(keys) + 2)))


@pytest.mark.parametrize(
    ("width", "dtype"), [(384, "float16"), (3, "float32"), (1, "<f8"), (0, "float32")]
)
def test_reservoir_merge_walk_gives_the_numpy_merge(width: int, dtype: str) -> None:
    rng = np.random.default_rng(width)
    for trial in range(60):
        pool = np.unique(rng.integers(0, 2**63 - 1, size=400, dtype=np.int64)).astype(np.uint64)
        pool = rng.permutation(pool)
        na, nb = (int(x) for x in rng.integers(0, 200, 2))
        a_keys = pool[:na]
        # a third of the trials share keys (a record in both): the general path, same result
        b_keys = (
            pool[na - nb // 4 : na - nb // 4 + nb]
            if trial % 3 == 0 and na
            else pool[200 : 200 + nb]
        )
        a, b = _reservoir(rng, a_keys, width, dtype), _reservoir(rng, b_keys, width, dtype)
        shared = np.intersect1d(a.keys, b.keys)
        if len(shared):  # the same record: the same row on both sides, as a redelivery gives
            b.rows[np.searchsorted(b.keys, shared)] = a.rows[np.searchsorted(a.keys, shared)]
        got = rs.merge(a, b)
        want = rs.merge_numpy(a, b, max(a.capacity, b.capacity)) if len(a) and len(b) else got
        assert got.capacity == want.capacity
        np.testing.assert_array_equal(got.keys, want.keys)
        assert got.rows.dtype == want.rows.dtype and got.rows.shape == want.rows.shape
        assert got.rows.tobytes() == want.rows.tobytes()
        assert got == rs.merge(b, a)
