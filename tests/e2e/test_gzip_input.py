"""Gzip-compressed logs read as the logs they hold: `lookout replay logs.ndjson.gz` and
`lookout decode` on it count what the uncompressed file counts, and a bad record is reported with
its line number in the uncompressed file. Before, every line was "not valid JSON", with no hint.
Compressed data that ends early is one line naming the file, and exit 1.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from tests.e2e.conftest import assert_no_traceback, lookout, total_calls

#: the line made bad in the stream, counted in the uncompressed file
BAD_LINE = 7


@pytest.fixture
def plain(tmp_path: Path) -> Path:
    """A small simulated stream with line BAD_LINE truncated."""
    made = lookout(
        "simulate", "--out", "logs.ndjson", "--hours", "0.02", "--seed", "5", cwd=tmp_path
    )
    assert made.returncode == 0, made.describe()
    path = tmp_path / "logs.ndjson"
    lines = path.read_bytes().splitlines(keepends=True)
    lines[BAD_LINE - 1] = lines[BAD_LINE - 1][:40] + b"\n"
    path.write_bytes(b"".join(lines))
    return path


def compressed(plain: Path, members: int = 1) -> Path:
    """`plain` gzip-compressed, in `members` concatenated members (`cat a.gz b.gz`)."""
    lines = plain.read_bytes().splitlines(keepends=True)
    step = -(-len(lines) // members)
    parts = [b"".join(lines[i : i + step]) for i in range(0, len(lines), step)]
    path = plain.with_name(plain.name + ".gz")
    path.write_bytes(b"".join(gzip.compress(part) for part in parts))
    return path


@pytest.mark.parametrize("members", [1, 3])
def test_replay_reads_a_gzip_file_as_the_file_it_holds(plain: Path, members: int) -> None:
    packed = compressed(plain, members)
    want = lookout("replay", plain, "--db", "plain.duckdb", cwd=plain.parent)
    got = lookout("replay", packed, "--db", "packed.duckdb", cwd=plain.parent)
    assert_no_traceback(got)
    assert got.returncode == want.returncode == 1, got.describe()  # the one bad record
    bad = [line for line in got.stderr.splitlines() if "not valid JSON" in line]
    assert bad == [
        line.replace(str(plain), str(packed))
        for line in want.stderr.splitlines()
        if "not valid JSON" in line
    ], got.describe()
    assert len(bad) == 1 and f": line {BAD_LINE}: " in bad[0], got.describe()
    assert total_calls(plain.parent / "packed.duckdb") == total_calls(plain.parent / "plain.duckdb")


def test_decode_reads_a_gzip_file_as_the_file_it_holds(plain: Path) -> None:
    packed = compressed(plain)
    want = lookout("decode", plain, cwd=plain.parent)
    got = lookout("decode", packed, cwd=plain.parent)
    assert_no_traceback(got)
    assert got.returncode == want.returncode == 1, got.describe()
    assert got.stdout == want.stdout and got.stdout.count("\n") > 10
    assert got.stderr == want.stderr.replace(str(plain), str(packed)), got.describe()


def test_a_truncated_gzip_file_is_one_line_naming_it(plain: Path) -> None:
    packed = compressed(plain)
    packed.write_bytes(packed.read_bytes()[: packed.stat().st_size // 2])
    result = lookout("replay", packed, "--db", "x.duckdb", cwd=plain.parent)
    assert_no_traceback(result)
    assert result.returncode == 1, result.describe()
    said = [line for line in result.stderr.splitlines() if "gzip data ends early" in line]
    assert len(said) == 1 and said[0].startswith(f"{packed}: "), result.describe()
    decoded = lookout("decode", packed, cwd=plain.parent)
    assert_no_traceback(decoded)
    assert decoded.returncode == 1, decoded.describe()
    assert f"{packed}: the gzip data is corrupt or ends early" in decoded.stderr
