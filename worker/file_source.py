"""NDJSON from a file or stdin, as a finite `Source` for `lookout replay`.

Lines are handed out in chunks (one `SourceMessage` per chunk) so decoding stays vectorised.
A file has no acknowledgement protocol: re-running a replay is made exact by request-id dedup
in the engine, not by remembering an offset. Bad records are reported through `on_invalid`
(the CLI prints one line each) and optionally appended to a dead-letter NDJSON file, so nothing
is silently dropped.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator, Sequence
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
    ) -> None:
        self.name = f"file:{path}" if path is not None else "file:<stdin>"
        self._path = path
        self._lines_per_message = lines_per_message
        self._attributes = {"format": format_hint} if format_hint else {}
        self._on_invalid = on_invalid
        self._dead_letter_path = dead_letter_path
        self._stream: BinaryIO = path.open("rb") if path is not None else sys.stdin.buffer
        self._chunks = self._read_chunks()
        self._exhausted = False
        self._stopped = False
        self._next_line = 1
        self.invalid_records = 0

    def _read_chunks(self) -> Iterator[SourceMessage]:
        chunk: list[bytes] = []
        first = 1
        number = 0
        for number, line in enumerate(self._stream, start=1):
            chunk.append(line)
            if len(chunk) >= self._lines_per_message:
                yield self._message(chunk, first)
                chunk = []
                first = number + 1
        if chunk:
            yield self._message(chunk, first)

    def _message(self, lines: list[bytes], first_line: int) -> SourceMessage:
        return SourceMessage(
            message_id=f"{self.name}:{first_line}",
            data=b"".join(lines),
            ack_id=str(first_line),
            attributes=self._attributes,
            first_line=first_line,
        )

    def poll(self, max_messages: int, timeout_seconds: float) -> Sequence[SourceMessage]:
        if self._stopped or self._exhausted:
            return []
        out: list[SourceMessage] = []
        for message in self._chunks:
            out.append(message)
            if len(out) >= max_messages:
                break
        else:
            self._exhausted = True
        return out

    @property
    def exhausted(self) -> bool:
        return self._exhausted or self._stopped

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
        self._stopped = True

    def close(self) -> None:
        if self._path is not None:
            self._stream.close()

    def ready(self) -> bool:
        return True
