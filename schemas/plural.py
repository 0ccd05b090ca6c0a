"""Counts in what people read (summaries, reasons, resolve notices), with the noun in the
number it takes.

Why: "1 windows evaluated" at the end of a short replay read as careless to a newcomer, and
summaries and pages are what people paste into tickets.
"""

from __future__ import annotations


def counted(count: int, noun: str, nouns: str | None = None, *, grouped: bool = False) -> str:
    """`1 window`, `3 windows` (`nouns` for an irregular plural; `grouped`: 1,234)."""
    number = f"{count:,}" if grouped else str(count)
    return f"{number} {noun if count == 1 else nouns or noun + 's'}"
