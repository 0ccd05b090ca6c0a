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
