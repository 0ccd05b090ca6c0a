"""Streams that get no verdict: said once in the log, not left to be noticed.

A model too quiet for a detector's minimums (8 calls a minute against a latency baseline of
500 calls over 48 one-minute windows) gets `insufficient_data` for every window. Each verdict
is stored with its reason and counted in `lookout_detections_total{verdict}`, yet an on-call
reading the pages sees only silence, which reads as healthy. One warning per (model, detector)
once its windows have gone without a verdict for an hour (`after` windows), and at most one a
day per stream after that, and only if some verdict came in between: a silence that goes on is
named once. A model whose baseline sits at its minimum (490 to 510 calls in 48 windows against
500) flips between a verdict and none every few windows; re-warning after every verdict said
the same thing 7 times in 50 hours, and re-arming only after an hour of verdicts in a row hid a
later week of silence behind one verdict every 45 windows.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from schemas.detection import Detection

#: how long a stream goes without a verdict before it is named
AFTER_SECONDS = 3600
#: how long after a warning the same stream may be named again
RENOTIFY_SECONDS = 86_400
#: however long the windows, not before this many (the first windows of a start have no
#: baseline yet, and at one-hour windows an hour is one of them)
MIN_AFTER_WINDOWS = 12


@dataclass
class UnjudgedStreams:
    after: int = AFTER_SECONDS // 60
    renotify_after: int = RENOTIFY_SECONDS // 60
    #: windows in a row without a verdict, per stream
    _runs: dict[tuple[str, str], int] = field(default_factory=dict)
    #: streams warned about: [windows since the warning, verdicts since]
    _warned: dict[tuple[str, str], list[int]] = field(default_factory=dict)

    @classmethod
    def for_windows(cls, window_seconds: int) -> UnjudgedStreams:
        """An hour and a day in windows of this length (an hour at least 12 windows)."""
        after = max(math.ceil(AFTER_SECONDS / window_seconds), MIN_AFTER_WINDOWS)
        return cls(after, max(math.ceil(RENOTIFY_SECONDS / window_seconds), after))

    def observe(self, detections: Sequence[Detection]) -> list[str]:
        """The warnings these detections complete (usually none)."""
        said: list[str] = []
        for d in detections:
            key = (d.model, d.detector)
            judged = d.verdict != "insufficient_data"
            since = self._warned.get(key)
            if since is not None:
                since[0] += 1
                since[1] += judged
                if since[1] and since[0] >= self.renotify_after:
                    del self._warned[key]  # a day on, and verdicts came: a silence is news
            if judged:
                self._runs.pop(key, None)
                continue
            run = self._runs.get(key, 0) + 1
            self._runs[key] = run
            if run >= self.after and key not in self._warned:
                self._warned[key] = [0, 0]
                said.append(
                    f"{d.model} {d.detector}: no verdict for {run} windows in a row, so no "
                    f"alert can come from it (latest: {d.reason.rstrip('.')}); {_advice(d)}"
                )
        return said


def _advice(d: Detection) -> str:
    """What would change it: a window holding none of what the detector reads (a model that
    sends no embeddings) is not too quiet, and no minimum would help."""
    if d.sample_size == 0:
        return (
            f"its windows hold none of what it reads: if {d.model} never sends it, leave "
            f"{d.detector} out of detectors.enabled"
        )
    return (
        f"to judge a model this quiet, lower the minimums under detectors.{d.detector} or "
        "lengthen engine.window_seconds"
    )
