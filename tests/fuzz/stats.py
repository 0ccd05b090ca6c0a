"""What the fuzz properties ran: property name → (inputs, lines), for the terminal summary."""

from __future__ import annotations

FUZZ_STATS: dict[str, tuple[int, int]] = {}


def record(name: str, inputs: int, lines: int) -> None:
    FUZZ_STATS[name] = (inputs, lines)
