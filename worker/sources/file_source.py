"""NDJSON from a file or stdin, as a finite `Source` for `lookout replay`.

Lines are handed out in chunks (one `SourceMessage` per chunk) so decoding stays vectorised.
A reader thread fills a small bounded queue, so `poll` honours its timeout on a pipe or stdin
that is open but quiet (records are checkpointed and SIGTERM is answered while waiting), and a
partial chunk is handed out after `flush_seconds` instead of waiting for a full one.
A file has no acknowledgement protocol: re-running a replay is made exact by request-id dedup
in the engine, not by remembering an offset. Bad records are reported through `on_invalid`
(the CLI prints one line each) and optionally appended to a dead-letter NDJSON file, so nothing
is silently dropped. A dead-letter file that cannot be written (a full disk) does not stop the
replay or cost the good records around the bad ones: a file cannot redeliver a nacked chunk, so
the chunk is still folded, its bad records stay on stderr with their line numbers, and `failure`
names the file, the reason and the lines it lacks (the CLI prints it and exits 1).

Memory is bounded whatever a line holds: a line longer than the record limit is cut just past
it (`BoundedLines`) and the rest of it skipped up to its newline, so a 2 GB line costs about
1 MB, is reported by the decoder as one record over `decode.max_record_bytes`, and the lines
after it are read as usual. Bytes are never decoded as text here: a line that is not UTF-8 is
the decoder's to report, as one bad record.

A gzip-compressed file (or pipe) is recognised by its first two bytes and inflated as it is read,
a bounded piece at a time, so `lookout replay logs.ndjson.gz` works and its line numbers are the
uncompressed file's. Compressed data that is corrupt or ends early stops the reading there, with
`failure` saying so (the records before it are counted).
"""

from __future__ import annotations

import contextlib
import itertools
import os
import queue
import select
import sys
import threading
import time
import zlib
from collections.abc import Callable, Iterator, Sequence
from io import BufferedIOBase
from pathlib import Path
from typing import BinaryIO

import numpy as np
import numpy.typing as npt
import orjson

from schemas.errors import DecodeError
from worker.source import SourceMessage

#: the default record limit (`decode.max_record_bytes`): a line is cut one byte past it
DEFAULT_MAX_RECORD_BYTES = 1_048_576
#: bytes asked of the operating system per read
READ_BYTES = 1 << 20
#: a message also ends once it holds this many bytes: 2,000 lines carrying embeddings are 9 MB,
#: and a replay holds several messages at once (the queue, a poll, the poll taken ahead, the
#: slice decoding); 2 MB messages took the peak RSS of a 6-hour replay from 420 to 320 MB
MESSAGE_BYTES = 2 << 20
#: the byte every line ends with
NEWLINE = 10
#: how every gzip member begins (RFC 1952)
GZIP_MAGIC = b"\x1f\x8b"
#: line numbers named when bad records could not be dead-lettered (then "and N more")
NAMED_LINES = 10


class Inflater:
    """Gzip bytes → the bytes they hold, at most `READ_BYTES` out per piece, so a highly
    compressed read cannot balloon in memory; concatenated members (`cat a.gz b.gz`) are read
    one after another, as gunzip reads them."""

    def __init__(self) -> None:
        self._z = zlib.decompressobj(wbits=31)
        self._in_member = False

    def feed(self, data: bytes) -> Iterator[bytes]:
        """Inflated pieces of `data`; raises zlib.error on data that is not gzip."""
        while True:
            if data:
                self._in_member = True
            piece = self._z.decompress(data, READ_BYTES)
            if piece:
                yield piece
            if self._z.eof:
                data, self._in_member = self._z.unused_data, False
                self._z = zlib.decompressobj(wbits=31)
                if not data:
                    return
            else:
                data = self._z.unconsumed_tail
                if not data and len(piece) < READ_BYTES:
                    return

    @property
    def complete(self) -> bool:
        """Whether the input so far ends at the end of a member (False: truncated)."""
        return not self._in_member


class BoundedLines:
    """A byte stream → its complete lines (each with its `\n`), none longer than `cap` bytes.

    A longer line is cut to its first `cap` bytes and the rest of it is skipped up to the next
    newline without being kept, so what is held never exceeds `cap` plus one read. `cut` counts
    the lines cut so far.

    `feed_bytes` hands the complete lines back as one bytes object: the file reader works on
    those without a Python object per line. Per line it cost a third of a second of CPU per
    two replayed hours, on a thread that held the GIL while the engine waited for it.
    """

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.cut = 0
        self._rest = b""
        self._skipping = False

    def feed(self, data: bytes) -> list[bytes]:
        """The lines completed by `data`, in order."""
        return split_lines(self.feed_bytes(data))

    def feed_bytes(self, data: bytes) -> bytes:
        """The lines completed by `data`, in order, as one run of bytes ending with `\n`
        (empty when `data` completes none)."""
        head = b""
        if self._skipping:
            newline = data.find(b"\n")
            if newline < 0:
                return b""  # still inside the long line: nothing kept
            head = self._rest + b"\n"
            self._rest, self._skipping = b"", False
            data = data[newline + 1 :]
        last = data.rfind(b"\n")
        if last < 0:
            self._rest += data
            done = head
        else:
            done = head + self._capped(self._rest + memoryview(data)[: last + 1])
            self._rest = data[last + 1 :]
        if len(self._rest) > self.cap:
            self._rest, self._skipping = self._rest[: self.cap], True
            self.cut += 1
        return done

    def _capped(self, region: bytes) -> bytes:
        """`region` (whole lines) with every line longer than `cap` cut to it. Looks for a
        newline within each `cap` + 1 bytes, so a region without a long line costs one
        backward search per `cap` bytes, not one step per line."""
        cap, start, kept = self.cap, 0, 0
        parts: list[bytes] = []
        while len(region) - start > cap:
            newline = region.rfind(b"\n", start, start + cap + 1)
            if newline >= 0:
                start = newline + 1
                continue
            parts.append(region[kept : start + cap])  # the lines before, and the kept part
            parts.append(b"\n")
            self.cut += 1
            start = kept = region.index(b"\n", start) + 1
        if not parts:
            return region
        parts.append(region[kept:])
        return b"".join(parts)

    @property
    def held(self) -> int:
        """Bytes kept between calls (the start of a line not yet ended)."""
        return len(self._rest)

    def finish(self) -> bytes:
        """What is left after the last newline (a last line without one), possibly empty."""
        rest, self._rest, self._skipping = self._rest, b"", False
        return rest


def split_lines(run: bytes) -> list[bytes]:
    """A run of whole lines (ending with `\n`, or empty) → its lines, each with its `\n`."""
    if not run:
        return []
    return [line + b"\n" for line in run[:-1].split(b"\n")]


def bounded_lines(stream: BufferedIOBase, cap: int) -> Iterator[bytes]:
    """The lines of a binary stream, each cut to at most `cap` bytes (see `BoundedLines`).

    Reads what is available (`read1`), so lines of a pipe come out as they arrive.
    """
    lines = BoundedLines(cap)
    while data := stream.read1(READ_BYTES):
        yield from lines.feed(data)
    if last := lines.finish():
        yield last


#: `line_ends` of nothing
NO_LINE_ENDS: npt.NDArray[np.int64] = np.zeros(0, dtype=np.int64)


def line_ends(run: bytes) -> npt.NDArray[np.int64]:
    """Where each line of `run` (whole lines) ends, just past its `\n`. numpy finds them
    without holding the GIL, which the engine's thread is waiting for; `bytes.count` held it
    for a millisecond per message, twice."""
    return np.flatnonzero(np.frombuffer(run, dtype=np.uint8) == NEWLINE) + 1


def next_message_size(ends: npt.NDArray[np.int64], max_lines: int, max_bytes: int) -> int:
    """How many lines make the next message, given where they end (`line_ends`): the count
    `next_message_lines` gives, from the line ends instead of a step per line."""
    if int(ends[-1]) >= max_bytes:
        reaching = int(np.searchsorted(ends, max_bytes, side="left")) + 1
        return min(reaching, max_lines)
    return min(len(ends), max_lines)


def next_message_lines(lines: list[bytes], max_lines: int, max_bytes: int) -> int:
    """How many of `lines` make the next message: `max_lines`, or fewer once they reach
    `max_bytes` (always at least one)."""
    size = 0
    for count, line in enumerate(itertools.islice(lines, max_lines), 1):
        size += len(line)
        if size >= max_bytes:
            return count
    return min(len(lines), max_lines)


class FileSource:
    def __init__(
        self,
        path: Path | None,
        *,
        lines_per_message: int = 2000,
        format_hint: str | None = None,
        on_invalid: Callable[[DecodeError], None] | None = None,
        dead_letter_path: Path | None = None,
        flush_seconds: float = 1.0,
        max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES,
    ) -> None:
        self.name = f"file:{path}" if path is not None else "file:<stdin>"
        self._path = path
        self._lines_per_message = lines_per_message
        self._attributes = {"format": format_hint} if format_hint else {}
        self._on_invalid = on_invalid
        self._dead_letter_path = dead_letter_path
        self._stream: BinaryIO = path.open("rb") if path is not None else sys.stdin.buffer
        self._flush_seconds = flush_seconds
        # one byte past the limit: the decoder then sees a record over it and says so
        self._line_cap = max_record_bytes + 1
        self._queue: queue.Queue[SourceMessage | None] = queue.Queue(maxsize=4)
        self._exhausted = False
        self._stopped = threading.Event()
        self.invalid_records = 0
        #: why reading stopped before the end of the input (corrupt gzip data), else None
        self._read_failure: str | None = None
        #: why the dead-letter file could not be written (the last reason), else None
        self._dead_letter_error: str | None = None
        #: line numbers of the bad records the dead-letter file does not hold
        self._not_dead_lettered: list[int] = []
        self._reader = threading.Thread(target=self._read, name="lookout-file-reader", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        """Reader thread: chunks of whole lines into the queue, then None at the end of input.

        Reads the descriptor with `select`, so a quiet pipe still hands out what it has after
        `flush_seconds` and a stop is noticed within 0.2 s.
        """
        fd = self._stream.fileno()
        #: whole lines read and not yet handed out, and where each of them ends
        self._pending = bytearray()
        self._pending_ends = NO_LINE_ENDS
        self._first = 1
        self._oldest = 0.0
        lines = BoundedLines(self._line_cap)
        head: bytes | None = b""  # the first bytes, until there are enough to tell gzip from text
        inflater: Inflater | None = None
        while not self._stopped.is_set():
            readable, _, _ = select.select([fd], [], [], 0.2)
            if readable:
                data = os.read(fd, READ_BYTES)
                if not data:
                    break
                if head is not None:
                    head += data
                    if len(head) < len(GZIP_MAGIC) and GZIP_MAGIC.startswith(head):
                        continue
                    data, head = head, None
                    inflater = Inflater() if data.startswith(GZIP_MAGIC) else None
                try:
                    pieces = inflater.feed(data) if inflater is not None else (data,)
                    for piece in pieces:
                        if not self._take(lines.feed_bytes(piece)):
                            return
                except zlib.error as error:
                    self._read_failure = self._gzip_failure(f"is corrupt ({error})")
                    break
            if not self._take(b""):
                return
        if self._stopped.is_set():
            return
        if head:
            lines.feed(head)
        if inflater is not None and not inflater.complete and self._read_failure is None:
            self._read_failure = self._gzip_failure("ends early (a truncated file?)")
        if rest := lines.finish():
            self._pending += rest
        if self._pending and not self._put(self._message(bytes(self._pending), self._first)):
            return
        self._put(None)

    def _take(self, complete: bytes) -> bool:
        """Queue `complete` (whole lines) a full chunk at a time (a partial one after
        `flush_seconds`); False if the source was stopped meanwhile."""
        if complete and not self._pending:
            self._oldest = time.monotonic()
        if complete:
            ends = line_ends(complete) + len(self._pending)
            self._pending_ends = np.concatenate([self._pending_ends, ends])
            self._pending += complete
        size = self._lines_per_message
        while len(self._pending_ends) >= size or len(self._pending) >= MESSAGE_BYTES:
            count = next_message_size(self._pending_ends, size, MESSAGE_BYTES)
            end = int(self._pending_ends[count - 1])
            chunk = bytes(memoryview(self._pending)[:end])
            del self._pending[:end]
            self._pending_ends = self._pending_ends[count:] - end
            if not self._put(self._message(chunk, self._first)):
                return False
            self._first += count
            self._oldest = time.monotonic()
        if self._pending and time.monotonic() - self._oldest >= self._flush_seconds:
            if not self._put(self._message(bytes(self._pending), self._first)):
                return False
            self._first += len(self._pending_ends)
            self._pending, self._pending_ends = bytearray(), NO_LINE_ENDS
        return True

    def _gzip_failure(self, what: str) -> str:
        where = self._path if self._path is not None else "<stdin>"
        read = self._first - 1 + len(self._pending_ends)
        return f"{where}: the gzip data {what} after line {read}; the lines before it were read"

    def _put(self, item: SourceMessage | None) -> bool:
        while not self._stopped.is_set():
            try:
                self._queue.put(item, timeout=0.2)
            except queue.Full:
                continue
            return True
        return False

    def _message(self, data: bytes, first_line: int) -> SourceMessage:
        return SourceMessage(
            message_id=f"{self.name}:{first_line}",
            data=data,
            ack_id=str(first_line),
            attributes=self._attributes,
            first_line=first_line,
        )

    def poll(self, max_messages: int, timeout_seconds: float) -> Sequence[SourceMessage]:
        out: list[SourceMessage] = []
        if self._stopped.is_set() or self._exhausted:
            return out
        wait = timeout_seconds
        while len(out) < max_messages:
            try:
                item = self._queue.get(timeout=wait) if wait > 0 else self._queue.get_nowait()
            except queue.Empty:
                break
            if item is None:
                self._exhausted = True
                break
            out.append(item)
            wait = 0.0  # only the first message is waited for
        return out

    @property
    def exhausted(self) -> bool:
        return self._exhausted or self._stopped.is_set()

    @property
    def failure(self) -> str | None:
        """What went wrong that the caller must report and exit non-zero for, else None:
        reading stopped early (corrupt gzip data), and/or bad records the dead-letter file
        could not take (one sentence each, joined, so it stays one line)."""
        problems = [p for p in (self._read_failure, self._dead_letter_failure()) if p]
        return "; ".join(problems) or None

    def _dead_letter_failure(self) -> str | None:
        if self._dead_letter_error is None:
            return None
        lines = self._not_dead_lettered
        named = ", ".join(map(str, lines[:NAMED_LINES]))
        if len(lines) > NAMED_LINES:
            named += f" and {len(lines) - NAMED_LINES} more"
        return (
            f"cannot write the dead-letter file {self._dead_letter_path}: "
            f"{self._dead_letter_error}; {len(lines)} bad record(s) are not in it "
            f"(line(s) {named}, reported above)"
        )

    def dead_letter(self, message: SourceMessage, errors: Sequence[DecodeError]) -> bool:
        """Report each bad record, append them to the dead-letter file, and say True.

        True even when the file cannot be written: the runner nacks a message whose bad records
        are not dead-lettered and folds none of it, which suits Pub/Sub (it redelivers) but a
        file never hands a chunk out again, so its good records would be lost while the run
        looked clean. The bad ones are on stderr already (`on_invalid`, with line numbers) and
        `failure` names the lines the file lacks, for the CLI to print and exit 1."""
        self.invalid_records += len(errors)
        if self._on_invalid is not None:
            for error in errors:
                self._on_invalid(error)
        if self._dead_letter_path is not None and errors:
            try:
                self._append_dead_letters(self._dead_letter_path, errors)
            except OSError as error:
                self._dead_letter_error = error.strerror or str(error)
                self._not_dead_lettered.extend(e.line for e in errors)
        return True

    def _append_dead_letters(self, path: Path, errors: Sequence[DecodeError]) -> None:
        """Append one JSON line per bad record, in one write. A write that fails part-way (a
        disk filling up) is cut back to where the file ended, so the file never ends in half
        an entry that the next successful append would glue a record to."""
        body = b"".join(
            orjson.dumps(
                {
                    "line": error.line,
                    "field": error.field,
                    "error": error.error_type,
                    "error_detail": error.describe(),
                    "source": self.name,
                    "raw": error.raw.decode("utf-8", errors="replace"),
                }
            )
            + b"\n"
            for error in errors
        )
        with path.open("ab", buffering=0) as out:
            start = out.tell()
            try:
                written = 0
                while written < len(body):
                    taken = out.write(body[written:])
                    if not taken:
                        msg = "the file took no more bytes"
                        raise OSError(msg)
                    written += taken
            except OSError:
                if path.is_file():
                    # the reason the write failed is the one worth reporting, not this one's
                    with contextlib.suppress(OSError):
                        out.truncate(start)
                raise

    def ack(self, ack_ids: Sequence[str]) -> None:
        """Nothing to do: a file is re-readable, and replay dedups by request id."""

    def nack(self, ack_ids: Sequence[str]) -> None:
        """Nothing to do: see `ack`."""

    def stop(self) -> None:
        self._stopped.set()

    def close(self) -> None:
        """Stop the reader and wait for it (it notices within 0.2 s) before the file is closed
        under it: closing first made its `select` fail on a closed descriptor."""
        self._stopped.set()
        self._reader.join(timeout=5.0)
        if self._path is not None:
            self._stream.close()

    def ready(self) -> bool:
        return True
