"""Streams that get no verdict: said once in the log, not left to be noticed.

A model too quiet for a detector's minimums (8 calls a minute against a latency baseline of
500 calls over 48 one-minute windows) gets `insufficient_data` for every window. Each verdict
is stored with its reason and counted in `lookout_detections_total{verdict}`, yet an on-call
reading the pages sees only silence, which reads as healthy. One warning per (model, detector)
when its windows have gone without a verdict for `after` windows in a row, and again only
after it has given verdicts for `after` windows in a row: a model whose baseline sits at its
minimum (490 to 510 calls in 48 windows against 500) flips between a verdict and none every
few windows, and re-warning after each single verdict said the same thing 7 times in 50 hours.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from schemas.detection import Detection

#: an hour of one-minute windows
DEFAULT_AFTER_WINDOWS = 60


@dataclass
class UnjudgedStreams:
    after: int = DEFAULT_AFTER_WINDOWS
    #: windows in a row without a verdict, per stream
    _runs: dict[tuple[str, str], int] = field(default_factory=dict)
    #: streams warned about, with the verdicts in a row they have given since
    _warned: dict[tuple[str, str], int] = field(default_factory=dict)

    def observe(self, detections: Sequence[Detection]) -> list[str]:
        """The warnings these detections complete (usually none)."""
        said: list[str] = []
        for d in detections:
            key = (d.model, d.detector)
            if d.verdict != "insufficient_data":
                self._runs.pop(key, None)
                if key in self._warned:
                    self._warned[key] += 1
                    if self._warned[key] >= self.after:  # judged for long: a new silence is news
                        del self._warned[key]
                continue
            if key in self._warned:
                self._warned[key] = 0
            run = self._runs.get(key, 0) + 1
            self._runs[key] = run
            if run == self.after and key not in self._warned:
                self._warned[key] = 0
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
