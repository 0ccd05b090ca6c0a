"""Records folded after their window was judged: said in the log, not only in a counter.

A late record still lands in its window's counts (`records`, `late_records`), but the verdict
was given without it. When a burst comes in behind the watermark (ingest fell behind, or a
producer sends minutes late), a soak trial saw 9% of ten minutes of traffic arrive late, two
windows judged on 30-70% of their calls, and not a log line: only `lookout_records_late_total`
and a column said so. One WARNING a minute at most names how many, and the windows that took
the most.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime

from schemas.plural import counted

#: at most one line this often (seconds of the engine's clock)
EVERY_SECONDS = 60.0
#: windows named in a line
NAMED_WINDOWS = 3


@dataclass
class LateRecords:
    lateness_seconds: float
    every_seconds: float = EVERY_SECONDS
    _pending: Counter[tuple[str, int]] = field(default_factory=Counter)
    _said_at: float | None = None

    def note(self, model: str, window_start: int, records: int) -> None:
        self._pending[(model, window_start)] += records

    def due(self, now: float, *, final: bool = False) -> str | None:
        """The line to log now, if any: what came late since the last line (`final`: at the
        end of a run, whatever the time since)."""
        if not self._pending:
            return None
        if not final and self._said_at is not None and now - self._said_at < self.every_seconds:
            return None
        self._said_at = now
        total = sum(self._pending.values())
        worst = self._pending.most_common(NAMED_WINDOWS)
        named = ", ".join(
            f"{model} {datetime.fromtimestamp(start, UTC):%Y-%m-%d %H:%M}Z ({n})"
            for (model, start), n in worst
        )
        more = len(self._pending) - len(worst)
        self._pending.clear()
        return (
            f"{counted(total, 'record')} arrived after their window was judged: {named}"
            + (f" and {counted(more, 'other window')}" if more > 0 else "")
            + "; they count in the windows' records and late_records, not in the verdicts "
            "already given. Ingest fell behind, or producers send late: if it recurs, raise "
            f"engine.allowed_lateness_seconds ({self.lateness_seconds:g} s)"
        )
