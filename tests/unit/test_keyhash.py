"""The compiled request-id hash gives pandas' keys exactly (stored reservoir keys depend on it).

Reservoir samples keep the keys of their request ids in the sink; a key that changed between
releases would make a restarted worker merge samples under different keys. pandas stays the
reference (`LOOKOUT_KEYHASH=pandas`, or a build without compiled parts).
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from detectors.reservoir import _compiled_siphash, _hash
from tests.gil import pace_beside


def pandas_keys(ids: list[object], seed: int) -> np.ndarray:
    as_str = pd.Series(np.asarray(ids, dtype=object), dtype=object).astype(str)
    key = f"{seed:016d}"[-16:]
    return pd.util.hash_array(as_str.to_numpy(dtype=object), hash_key=key, categorize=False)


IDS: list[object] = [
    "",
    "a",
    "1234567",
    "12345678",
    "123456789",
    "req-0f8fad5b-d9cb-469f-a165-70867728950e",
    "ünïcödé-キー-🔑",
    "x" * 1000,
    None,
    float("nan"),
    12345,
]


def test_the_compiled_hash_was_built() -> None:
    assert _compiled_siphash() is not None


@pytest.mark.parametrize("seed", [0, 7, 42, 2**40 + 3])
def test_keys_equal_pandas_for_every_kind_of_id(seed: int) -> None:
    rng = np.random.default_rng(seed)
    random_ids = [
        "".join(map(chr, rng.integers(32, 0x2FFF, rng.integers(0, 60)))) for _ in range(500)
    ]
    ids = IDS + random_ids
    got = _hash(np.asarray(ids, dtype=object), seed)
    np.testing.assert_array_equal(got, pandas_keys(ids, seed))


def test_a_replay_start_needs_no_pandas() -> None:
    probe = (
        "import sys, numpy as np\n"
        "from detectors.reservoir import hash_ids\n"
        "hash_ids(np.asarray(['a', 'b'], dtype=object), 3)\n"
        "print('pandas' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == "False", done.stderr


def test_a_lone_surrogate_gets_a_key_where_pandas_raised() -> None:
    keys = _hash(np.asarray(["lone \ud800 surrogate", "ok"], dtype=object), 7)
    assert keys[0] != keys[1]


def test_a_strided_view_a_list_and_bytes_hash_as_their_values() -> None:
    """The hash reads each item through a typed view of the column: a slice with a step, a
    plain list and bytes ids must give the keys of the same values hashed one by one."""
    ids = np.asarray([f"id-{i}" for i in range(101)], dtype=object)
    every_third = ids[::3]
    np.testing.assert_array_equal(_hash(every_third, 5), _hash(every_third.copy(), 5))
    from detectors._keyhash import siphash_strings

    key = b"0000000000000005"
    as_list = siphash_strings(list(ids[:10]), key)
    np.testing.assert_array_equal(as_list, siphash_strings(ids[:10], key))
    np.testing.assert_array_equal(siphash_strings([b"id-1"], key), siphash_strings(["id-1"], key))


def test_hashing_lets_another_thread_run() -> None:
    """The decode thread hashes a poll's ids while the engine folds the last one: the hashing
    must not hold the GIL, or the fold waits for it."""
    siphash = _compiled_siphash()
    assert siphash is not None
    ids = np.asarray(["x" * 4000 + str(i) for i in range(20_000)], dtype=object)
    siphash(ids, b"0" * 16)  # every str's UTF-8 is its own buffer: the rest is hashing
    _, paced = pace_beside(lambda: siphash(ids, b"0" * 16))
    # holding the GIL, the hash let the counter run about 2% of its pace (only where the
    # interpreter forced a switch); released, the counter keeps most of it
    assert paced.during > 0.1 * paced.alone, paced
