"""Streams that get no verdict: said once in the log, not left to be noticed.

A model too quiet for a detector's minimums (8 calls a minute against a latency baseline of
500 calls over 48 one-minute windows) gets `insufficient_data` for every window. Each verdict
is stored with its reason and counted in `lookout_detections_total{verdict}`, yet an on-call
reading the pages sees only silence, which reads as healthy. One warning per (model, detector)
when its windows have gone without a verdict for `after` windows in a row, and again once
it has given verdicts for `after` windows in a row, or `renotify_after` windows (a day of
one-minute windows) after the last warning: a model whose baseline sits at its minimum (490
to 510 calls in 48 windows against 500) flips between a verdict and none every few windows,
and re-warning after each single verdict said the same thing 7 times in 50 hours; never
re-warning would hide a later week of silence behind one verdict every 45 minutes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from schemas.detection import Detection

#: an hour of one-minute windows
DEFAULT_AFTER_WINDOWS = 60
#: a day of one-minute windows
DEFAULT_RENOTIFY_WINDOWS = 24 * 60


@dataclass
class UnjudgedStreams:
    after: int = DEFAULT_AFTER_WINDOWS
    renotify_after: int = DEFAULT_RENOTIFY_WINDOWS
    #: windows in a row without a verdict, per stream
    _runs: dict[tuple[str, str], int] = field(default_factory=dict)
    #: streams warned about: [verdicts in a row since, windows since, verdicts since]
    _warned: dict[tuple[str, str], list[int]] = field(default_factory=dict)

    def observe(self, detections: Sequence[Detection]) -> list[str]:
        """The warnings these detections complete (usually none)."""
        said: list[str] = []
        for d in detections:
            key = (d.model, d.detector)
            judged = d.verdict != "insufficient_data"
            since = self._warned.get(key)
            if since is not None:
                since[0] = since[0] + 1 if judged else 0
                since[1] += 1
                since[2] += judged
                if since[0] >= self.after:  # judged for long: a new silence is news
                    del self._warned[key]
                elif since[2] and since[1] >= self.renotify_after:
                    # verdicts came and went for a day: the silence under way, or the next,
                    # is named again once it has lasted `after` windows from here (a silence
                    # that never broke is not)
                    del self._warned[key]
                    self._runs[key] = 0
            if judged:
                self._runs.pop(key, None)
                continue
            run = self._runs.get(key, 0) + 1
            self._runs[key] = run
            if run == self.after and key not in self._warned:
                self._warned[key] = [0, 0, 0]
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
