"""The sink's Arrow columns are the very arrays `pa.array` builds, without importing pandas."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from worker.sinks.arrow_columns import arrow_column, timestamps_from_seconds

HISTOGRAM = pa.list_(pa.struct([("bucket", pa.int64()), ("count", pa.int64())]))
T0 = datetime(2026, 12, 5, 1, 2, 3, 456789, tzinfo=UTC)

CASES: list[tuple[pa.DataType, list[Any]]] = [
    (pa.int64(), [1, None, -(2**62), 0, np.int64(7)]),
    (pa.int64(), []),
    (pa.float64(), [1.5, None, float("nan"), float("inf"), 3, np.float32(0.25)]),
    (pa.string(), ["ab", None, "", "déf ✓ 日本", "x" * 1000]),
    (pa.string(), [None, None]),
    (pa.string(), ["r-1", "", "req-00022", "model/a b"]),  # ASCII, no null: the joined path
    (pa.string(), ["ascii", "then ünïcode"]),
    (pa.binary(), [b"\x00\xff", None, b"", bytes(range(256))]),
    (
        pa.timestamp("us", tz="UTC"),
        [
            T0,
            None,
            T0.astimezone(timezone(timedelta(hours=-5))),
            datetime(1969, 12, 31, tzinfo=UTC),
        ],
    ),
    (
        HISTOGRAM,
        [[{"bucket": 3, "count": 2}, {"bucket": 9, "count": 1}], [], [{"bucket": 0, "count": 5}]],
    ),
    (HISTOGRAM, [[]]),
    # not built here: these fall back to pa.array and still give its result
    (pa.string(), ["ok", "\ud800 lone surrogate"]),
    (HISTOGRAM, [None, [{"bucket": 1, "count": 1}]]),
    (pa.timestamp("us", tz="UTC"), [datetime(2026, 1, 1)]),  # noqa: DTZ001 (naive: the point)
]


@pytest.mark.parametrize(("arrow_type", "values"), CASES)
def test_columns_equal_what_pa_array_builds(arrow_type: pa.DataType, values: list[Any]) -> None:
    try:
        expected = pa.array(values, arrow_type)
    except (pa.ArrowException, UnicodeEncodeError) as error:
        with pytest.raises(type(error)):
            arrow_column(values, arrow_type)
        return
    built = arrow_column(values, arrow_type)
    built.validate(full=True)
    assert built.type == expected.type
    assert built.is_null().equals(expected.is_null())
    if pa.types.is_floating(arrow_type):  # NaN is never `equals` to itself
        ours, theirs = (np.asarray(a.fill_null(0.0)) for a in (built, expected))
        assert np.array_equal(ours, theirs, equal_nan=True)
    else:
        assert built.equals(expected), (built, expected)


def test_a_nan_stays_a_nan_and_a_none_a_null() -> None:
    """DuckDB must store NaN as NaN and a missing value as NULL (pandas would merge them)."""
    built = arrow_column([float("nan"), None], pa.float64())
    assert built.null_count == 1
    assert np.isnan(built[0].as_py())


def test_timestamps_from_seconds() -> None:
    seconds = np.array([0, 1_764_896_523, -60], dtype=np.int64)
    expected = pa.array(seconds * 1_000_000, pa.timestamp("us", tz="UTC"))
    assert timestamps_from_seconds(seconds).equals(expected)


def test_building_the_sinks_columns_does_not_import_pandas() -> None:
    probe = (
        "import sys; from tests.unit.test_arrow_columns import CASES; "
        "from worker.sinks.arrow_columns import arrow_column; "
        "[arrow_column(v, t) for t, v in CASES[:9]]; print('pandas' in sys.modules)"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=True
    )
    assert done.stdout.strip() == "False", done.stderr
