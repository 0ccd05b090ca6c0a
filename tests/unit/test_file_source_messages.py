"""A file is handed out in messages of at most `lines_per_message` lines and about
`MESSAGE_BYTES`: lines carrying embeddings (4-5 KB each) made 9 MB messages, and a replay holds
several at once, which took a 6-hour replay's peak RSS past 400 MB. Line numbers in errors must
stay those of the file whatever the cut."""

from __future__ import annotations

from pathlib import Path

from worker.source import SourceMessage
from worker.sources.file_source import MESSAGE_BYTES, FileSource
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
