"""NDJSON from a file or stdin, as a finite `Source` for `lookout replay`.

Lines are handed out in chunks (one `SourceMessage` per chunk) so decoding stays vectorised.
A reader thread fills a small bounded queue, so `poll` honours its timeout on a pipe or stdin
that is open but quiet (records are checkpointed and SIGTERM is answered while waiting), and a
partial chunk is handed out after `flush_seconds` instead of waiting for a full one.
A file has no acknowledgement protocol: re-running a replay is made exact by request-id dedup
in the engine, not by remembering an offset. Bad records are reported through `on_invalid`
(the CLI prints one line each) and optionally appended to a dead-letter NDJSON file, so nothing
is silently dropped.
"""

from __future__ import annotations

import os
import queue
import select
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import BinaryIO

import orjson

from schemas.errors import DecodeError
from worker.source import SourceMessage


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
    ) -> None:
        self.name = f"file:{path}" if path is not None else "file:<stdin>"
        self._path = path
        self._lines_per_message = lines_per_message
        self._attributes = {"format": format_hint} if format_hint else {}
        self._on_invalid = on_invalid
        self._dead_letter_path = dead_letter_path
        self._stream: BinaryIO = path.open("rb") if path is not None else sys.stdin.buffer
        self._flush_seconds = flush_seconds
        self._queue: queue.Queue[SourceMessage | None] = queue.Queue(maxsize=4)
        self._exhausted = False
        self._stopped = threading.Event()
        self.invalid_records = 0
        self._reader = threading.Thread(target=self._read, name="lookout-file-reader", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        """Reader thread: chunks of whole lines into the queue, then None at the end of input.

        Reads the descriptor with `select`, so a quiet pipe still hands out what it has after
        `flush_seconds` and a stop is noticed within 0.2 s.
        """
        fd = self._stream.fileno()
        pending: list[bytes] = []
        rest = b""
        first = 1
        oldest = 0.0
        while not self._stopped.is_set():
            readable, _, _ = select.select([fd], [], [], 0.2)
            if readable:
                data = os.read(fd, 1 << 20)
                if not data:
                    break
                lines = (rest + data).split(b"\n")
                rest = lines.pop()
                if lines and not pending:
                    oldest = time.monotonic()
                pending.extend(line + b"\n" for line in lines)
            while len(pending) >= self._lines_per_message:
                chunk, pending = (
                    pending[: self._lines_per_message],
                    pending[self._lines_per_message :],
                )
                if not self._put(self._message(chunk, first)):
                    return
                first += len(chunk)
                oldest = time.monotonic()
            if pending and time.monotonic() - oldest >= self._flush_seconds:
                if not self._put(self._message(pending, first)):
                    return
                first += len(pending)
                pending = []
        if self._stopped.is_set():
            return
        if rest:
            pending.append(rest)
        if pending and not self._put(self._message(pending, first)):
            return
        self._put(None)

    def _put(self, item: SourceMessage | None) -> bool:
        while not self._stopped.is_set():
            try:
                self._queue.put(item, timeout=0.2)
            except queue.Full:
                continue
            return True
        return False

    def _message(self, lines: list[bytes], first_line: int) -> SourceMessage:
        return SourceMessage(
            message_id=f"{self.name}:{first_line}",
            data=b"".join(lines),
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

    def dead_letter(self, message: SourceMessage, errors: Sequence[DecodeError]) -> bool:
        self.invalid_records += len(errors)
        if self._on_invalid is not None:
            for error in errors:
                self._on_invalid(error)
        if self._dead_letter_path is not None:
            with self._dead_letter_path.open("ab") as out:
                for error in errors:
                    entry = {
                        "line": error.line,
                        "field": error.field,
                        "error": error.error_type,
                        "error_detail": error.describe(),
                        "source": self.name,
                        "raw": error.raw.decode("utf-8", errors="replace"),
                    }
                    out.write(orjson.dumps(entry) + b"\n")
        return True

    def ack(self, ack_ids: Sequence[str]) -> None:
        """Nothing to do: a file is re-readable, and replay dedups by request id."""

    def nack(self, ack_ids: Sequence[str]) -> None:
        """Nothing to do: see `ack`."""

    def stop(self) -> None:
        self._stopped.set()

    def close(self) -> None:
        if self._path is not None:
            self._stream.close()

    def ready(self) -> bool:
        return True
