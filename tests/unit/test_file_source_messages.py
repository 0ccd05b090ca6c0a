"""A file is handed out in messages of at most `lines_per_message` lines and about
`MESSAGE_BYTES`: lines carrying embeddings (4-5 KB each) made 9 MB messages, and a replay holds
several at once, which took a 6-hour replay's peak RSS past 400 MB. Line numbers in errors must
stay those of the file whatever the cut."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from worker.source import SourceMessage
from worker.sources.file_source import (
    MESSAGE_BYTES,
    BoundedLines,
    FileSource,
    line_ends,
    next_message_lines,
    next_message_size,
    split_lines,
)
from worker.testing import drain


def read_all(path: Path, lines_per_message: int) -> list[SourceMessage]:
    return drain(FileSource(path, lines_per_message=lines_per_message, flush_seconds=0.05))


def test_long_lines_are_cut_into_messages_of_about_the_byte_limit(tmp_path: Path) -> None:
    line = b'{"pad": "' + b"x" * 4_500 + b'"}\n'
    count = 2_000
    path = tmp_path / "wide.ndjson"
    path.write_bytes(line * count)

    messages = read_all(path, lines_per_message=2_000)

    assert b"".join(m.data for m in messages) == line * count  # nothing lost or reordered
    assert max(len(m.data) for m in messages) < MESSAGE_BYTES + len(line)
    assert len(messages) > 1
    # each message starts at the file line its first record is on
    starts = [m.first_line for m in messages]
    expected = [1]
    for m in messages[:-1]:
        expected.append(expected[-1] + m.data.count(b"\n"))
    assert starts == expected


def test_short_lines_still_fill_a_message_by_line_count(tmp_path: Path) -> None:
    path = tmp_path / "narrow.ndjson"
    path.write_bytes(b'{"a": 1}\n' * 5_000)

    messages = read_all(path, lines_per_message=2_000)

    assert [m.data.count(b"\n") for m in messages] == [2_000, 2_000, 1_000]
    assert [m.first_line for m in messages] == [1, 2_001, 4_001]


def test_the_byte_cut_is_the_cut_line_by_line() -> None:
    """The reader cuts messages by searching the bytes; the cut must be the one a walk over
    the lines makes (the end-to-end tests derive line numbers from the latter)."""
    rng = np.random.default_rng(3)
    for _ in range(300):
        lines = [b"x" * int(n) + b"\n" for n in rng.integers(0, 900, int(rng.integers(1, 60)))]
        run = b"".join(lines)
        max_lines, max_bytes = int(rng.integers(1, 40)), int(rng.integers(1, 8_000))
        if len(lines) < max_lines and len(run) < max_bytes:
            continue  # the reader cuts only once a message is full
        count = next_message_lines(lines, max_lines, max_bytes)
        assert next_message_size(line_ends(run), max_lines, max_bytes) == count


def test_lines_cut_to_the_cap_are_the_same_however_the_reads_fall() -> None:
    """A file read in pieces of any size gives the same capped lines, a long line cut once."""
    rng = np.random.default_rng(4)
    cap = 50
    for _ in range(200):
        widths = rng.integers(0, 3 * cap, int(rng.integers(1, 30)))
        tail = int(rng.integers(0, 80))  # a last line without its newline
        data = b"".join(b"y" * int(n) + b"\n" for n in widths) + b"z" * tail
        want = [b"y" * min(int(n), cap) + b"\n" for n in widths]
        lines = BoundedLines(cap)
        got: list[bytes] = []
        at = 0
        while at < len(data):
            step = int(rng.integers(1, 400))
            got.extend(split_lines(lines.feed_bytes(data[at : at + step])))
            at += step
        assert got == want
        assert lines.finish() == b"z" * min(tail, cap)
        assert lines.cut == int((widths > cap).sum()) + (tail > cap)
