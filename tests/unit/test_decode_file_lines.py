"""Reading lines for the decoder: an endless line costs a bounded amount of memory.

A 2 GB line must not be read into memory to be refused: the reader keeps its first
`max_record_bytes + 1` bytes (so the decoder reports it as over the limit), skips the rest up
to the next newline, and goes on with the lines after it.
"""

from __future__ import annotations

import io
from pathlib import Path

from schemas.decode.api import DecodeLimits, decode_message
from worker.sources.file_source import BoundedLines, FileSource, bounded_lines
from worker.testing import drain


def test_a_long_line_is_cut_past_the_cap_and_the_rest_skipped_to_its_newline() -> None:
    lines = BoundedLines(cap=10)
    out = lines.feed(b"short\n" + b"x" * 25)
    assert out == [b"short\n"]
    assert lines.feed(b"y" * 1000) == []  # still inside the long line: nothing kept
    assert lines.feed(b"zz\nnext\nlast") == [b"x" * 10 + b"\n", b"next\n"]
    assert lines.finish() == b"last"
    assert lines.cut == 1


def test_a_long_line_inside_one_read_is_cut_too() -> None:
    lines = BoundedLines(cap=4)
    assert lines.feed(b"a\n123456789\nb\n") == [b"a\n", b"1234\n", b"b\n"]
    assert lines.cut == 1


def test_memory_held_stays_under_the_cap_plus_one_read_whatever_the_line() -> None:
    chunk = b"x" * (1 << 20)
    lines = BoundedLines(cap=1000)
    for _ in range(64):  # a 64 MB line arriving 1 MB at a time
        assert lines.feed(chunk) == []
        assert lines.held <= 1000
    assert lines.feed(b"\nok\n") == [b"x" * 1000 + b"\n", b"ok\n"]


def test_bounded_lines_of_a_stream_give_the_decoder_one_error_per_long_line() -> None:
    good = b'{"timestamp":"2025-01-01T00:00:00Z","model":"m"}'
    data = b"\n".join([good, b'{"prompt":"' + b"x" * 5000 + b'"}', good])
    limits = DecodeLimits(max_record_bytes=1000)
    lines = list(bounded_lines(io.BufferedReader(io.BytesIO(data)), limits.max_record_bytes + 1))
    assert [len(line) for line in lines] == [len(good) + 1, 1002, len(good)]
    decoded = decode_message(b"".join(lines), limits=limits)
    assert len(decoded.batch) == 2
    (error,) = decoded.errors
    assert (error.line, error.error_type) == (2, "too_large")
    assert (
        error.reason == "record is larger than the limit of 1,000 bytes (decode.max_record_bytes)"
    )


def test_file_source_hands_out_a_3mb_line_as_its_first_megabyte(tmp_path: Path) -> None:
    path = tmp_path / "big.ndjson"
    path.write_bytes(b"a\n" + b"x" * 3_000_000 + b"\nb\n")
    source = FileSource(path, lines_per_message=10, flush_seconds=0.05, max_record_bytes=1000)
    messages = drain(source)
    data = b"".join(m.data for m in messages)
    assert data == b"a\n" + b"x" * 1001 + b"\nb\n"
