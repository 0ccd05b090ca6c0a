"""Bad input as data: decoding returns these instead of raising past its boundary."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DecodeError:
    """One record that could not be decoded, with enough to dead-letter and report it.

    `line` is 1-based within the message or file; `field` is a dotted path into the record
    ("response_body.candidates[0].safetyRatings") or None when the record as a whole is bad.
    `raw` is the original bytes of that record, so nothing is lost when it is dead-lettered.
    """

    line: int
    reason: str
    raw: bytes
    field: str | None = None
    error_type: str = "invalid_record"

    def describe(self) -> str:
        """One readable line: `line 12: field latency_ms: must be >= 0 (got -3)`."""
        where = f"line {self.line}"
        if self.field:
            where += f": field {self.field}"
        return f"{where}: {self.reason}"
