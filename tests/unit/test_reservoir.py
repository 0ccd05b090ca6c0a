"""The mergeable sample: merged in any order, a window's sample comes out the same."""

from __future__ import annotations

import numpy as np
import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from detectors import reservoir as rs

SEED = 11


def _sample(ids: list[str], capacity: int) -> rs.Reservoir:
    """A reservoir of rows whose single value is derived from the id (as a record would be)."""
    keys = rs.hash_ids(np.array(ids, dtype=object), SEED)
    rows = np.array([[float(len(i)), float(hash(i) % 97)] for i in ids], dtype=np.float32)
    return rs.add(rs.Reservoir.empty(capacity, 2, np.float32), keys, rows.reshape(len(ids), 2))


ids_lists = st.lists(st.text(min_size=1, max_size=8), max_size=40)
capacities = st.integers(min_value=1, max_value=12)


@settings(max_examples=60, deadline=None)
@given(ids_lists, ids_lists, ids_lists, capacities)
def test_merge_is_associative_and_commutative(a, b, c, k):
    ra, rb, rc = _sample(a, k), _sample(b, k), _sample(c, k)
    assert rs.merge(ra, rb) == rs.merge(rb, ra)
    assert rs.merge(rs.merge(ra, rb), rc) == rs.merge(ra, rs.merge(rb, rc))


@settings(max_examples=60, deadline=None)
@given(ids_lists, ids_lists, capacities)
def test_merge_equals_the_sample_of_the_union_and_stays_bounded(a, b, k):
    merged = rs.merge(_sample(a, k), _sample(b, k))
    assert merged == _sample(a + b, k)
    assert len(merged) == min(k, len(set(a + b)))


def test_a_redelivered_record_is_kept_once():
    once = _sample(["r1", "r2", "r3"], 10)
    twice = rs.merge(once, _sample(["r2", "r3"], 10))
    assert twice == once
    assert len(twice) == 3


def test_sample_is_uniform_over_records():
    """Each of 2,000 ids lands in a 200-row sample with probability 0.1, whatever its name."""
    ids = np.array([f"req-{i}" for i in range(2_000)], dtype=object)
    hits = np.zeros(len(ids))
    for seed in range(200):
        keys = rs.hash_ids(ids, seed)
        res = rs.bottom_k(keys, np.arange(len(ids), dtype=np.int64)[:, None], 200)
        hits[res.rows[:, 0]] += 1
    # first and second halves of the id space are sampled alike; no id is always or never kept
    assert abs(hits[:1000].mean() - hits[1000:].mean()) < 1.0
    assert hits.min() > 0 and hits.max() < 60


def test_row_round_trips_through_json_with_nan():
    keys = rs.hash_ids(np.array(["a", "b"], dtype=object), SEED)
    rows = np.array([[1.5, np.nan], [np.nan, 3.0]], dtype=np.float32)
    res = rs.add(rs.Reservoir.empty(5, 2, np.float32), keys, rows)
    back = rs.from_row(orjson.loads(orjson.dumps(rs.to_row(res))))
    assert back == res
    assert np.isnan(back.rows).sum() == 2


def test_a_reused_request_id_keeps_the_same_row_whatever_the_merge_order():
    keys = rs.hash_ids(np.array(["same"], dtype=object), SEED)
    empty = rs.Reservoir.empty(3, 1, np.float32)
    low = rs.add(empty, keys, np.array([[1.0]], dtype=np.float32))
    high = rs.add(empty, keys, np.array([[2.0]], dtype=np.float32))
    assert rs.merge(low, high) == rs.merge(high, low) == low


def _hashed_as_before(ids: np.ndarray, seed: int) -> rs.KeyArray:
    """The keys as they were always computed: every id made a str, then SipHash."""
    import pandas as pd

    as_str = pd.Series(ids, dtype=object).astype(str).to_numpy(dtype=object)
    return pd.util.hash_array(as_str, hash_key=f"{seed:016d}"[-16:], categorize=False).astype(
        np.uint64
    )


def test_keys_are_those_stored_samples_were_built_with() -> None:
    """Samples written before by any writer must merge with new ones: the same id, the same key,
    whatever the ids are (text, numbers, None) and however the column was hashed (whole,
    remembered, or a few rows of it)."""
    ids = np.array([f"sim7-gemini-{i}" for i in range(500)] + ["", "ü", "𝄞"], dtype=object)
    odd = np.array(["a", None, 3, 2.5, "b"], dtype=object)
    for column in (ids, odd):
        assert np.array_equal(rs.hash_ids(column, SEED), _hashed_as_before(column, SEED))
        assert np.array_equal(rs.hash_ids(column, SEED + 1), _hashed_as_before(column, SEED + 1))
    rows = np.array([3, 0, 499, 501], dtype=np.int64)
    fresh = np.array(list(ids), dtype=object)  # never hashed: its rows are hashed alone
    assert np.array_equal(rs.hash_rows(fresh, rows, SEED), _hashed_as_before(ids[rows], SEED))
    assert np.array_equal(rs.hash_rows(ids, rows, SEED), _hashed_as_before(ids[rows], SEED))
    part = ids[100:200]
    rs.remember_keys(part, SEED, rs.hash_ids(ids, SEED)[100:200])
    assert np.array_equal(rs.hash_ids(part, SEED), _hashed_as_before(ids[100:200], SEED))


def test_a_new_column_at_a_freed_columns_address_is_hashed_afresh() -> None:
    for i in range(300):  # columns come and go; each gets its own keys, never a stale entry
        column = np.array([f"id-{i}-{j}" for j in range(5)], dtype=object)
        assert np.array_equal(rs.hash_ids(column, SEED), _hashed_as_before(column, SEED))
        del column


@settings(max_examples=60, deadline=None)
@given(st.lists(ids_lists, min_size=1, max_size=6), capacities)
def test_adding_batch_by_batch_gives_the_sample_of_them_all(batches, k):
    """`add` skips the rows keyed above a full reservoir's largest key before sorting or
    converting them; a window folded poll by poll must still hold the bottom k of all of it."""
    one_by_one = rs.Reservoir.empty(k, 2, np.float32)
    for ids in batches:
        keys = rs.hash_ids(np.array(ids, dtype=object), SEED)
        rows = np.array([[float(len(i)), float(hash(i) % 97)] for i in ids], dtype=np.float32)
        one_by_one = rs.add(one_by_one, keys, rows.reshape(len(ids), 2))
    assert one_by_one == _sample([i for ids in batches for i in ids], k)


def test_one_id_delivered_many_times_does_not_push_another_out_of_the_sample() -> None:
    """Found by the batch-by-batch property above: with more than 4 × capacity rows the sort
    is cut to the 4 × capacity smallest keys first, and eight copies of one id filled that cut,
    so a second id with a larger key never reached a two-row sample it belonged in."""
    ids = ["0"] + ["00"] * 8
    keys = rs.hash_ids(np.array(ids, dtype=object), SEED)
    assert len(set(keys.tolist())) == 2
    sample = _sample(ids, 2)
    assert sorted(sample.keys.tolist()) == sorted(set(keys.tolist()))
    for copies in (4, 9, 40):  # around and past the cut, any order of the rows
        shuffled = ["00"] * copies + ["0"] + ["00"] * copies
        assert len(_sample(shuffled, 2)) == 2
