"""The shape every detector has: a mergeable accumulator, like Apache Beam's CombineFn.

Lifecycle: ``empty()`` → ``add(state, batch)`` for each batch a replica sees → ``merge`` of the
partial states of all replicas and checkpoints → ``evaluate(state, baseline, window)``.
``merge`` is associative and commutative and never mutates its arguments, so a window's state is
the same whether one process saw every event or twelve replicas each saw some over forty
checkpoints. ``to_row``/``from_row`` carry a state through the sink (JSON-serialisable values
only; ``from_row(to_row(s)) == s``).

A detector object is built from its frozen configuration and holds no other state: no I/O, no
clock, no globals.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, Protocol, TypeVar

from schemas.batch import LogBatch
from schemas.detection import Detection

StateT = TypeVar("StateT")


@dataclass(frozen=True)
class WindowRef:
    """Which (model, window) a state or detection belongs to."""

    model: str
    start: datetime
    end: datetime


@dataclass(frozen=True)
class Baseline(Generic[StateT]):
    """What a window is judged against.

    `history` holds the merged states of the windows just before this one for the same model,
    oldest first, contiguous: a window with no traffic appears as `empty()`. It holds at most
    the detector's `history_windows`. `reference` is the persisted reference state for detectors
    that keep one (embedding drift); None until one has been built.

    `recent` is empty unless an incident is open for this (model, detector): then `history` is
    the baseline frozen when the incident began (no window of the incident enters it) and
    `recent` holds the incident's windows before this one, oldest first. A detector uses them to
    judge whether the condition has *cleared* against the pre-incident level (see
    `detectors._sequential`), never as part of its baseline. `recent_onset` is the index in
    `recent` of the incident's first alerting window: the windows before it were pooled into
    that first alert (a small shift seen over several windows) and precede the page, so they
    tell the incident's level but are no evidence that it has ended.
    """

    history: tuple[StateT, ...] = ()
    reference: StateT | None = None
    recent: tuple[StateT, ...] = ()
    recent_onset: int = 0
    #: an incident is open for this (model, detector): what `recent` says for the detectors
    #: that keep no history (their `recent` is always empty)
    incident_open: bool = False
    #: every window before this one, oldest first, contiguous (empties for quiet gaps), up to
    #: `history_windows`: incidents' windows included, which `history` leaves out. For rates
    #: over time (an SLO's error budget burns in every window); empty when not kept
    timeline: tuple[StateT, ...] = ()

    @property
    def in_incident(self) -> bool:
        return bool(self.recent)

    def span(self, k: int) -> tuple[tuple[StateT, ...], tuple[StateT, ...]]:
        """The k − 1 windows pooled with the current one, and the baseline before them.

        Pooling the last k windows is how small sustained shifts are seen (see
        `detectors._sequential`); the windows pooled never count in their own baseline.
        """
        if k <= 1:
            return (), self.history
        return self.history[-(k - 1) :], self.history[: -(k - 1)]


class Detector(Protocol[StateT]):
    """A mergeable window aggregate and its verdict. See the module docstring."""

    #: stable name: the sink column, the metric label and part of the alert dedup key
    name: str
    #: how many past windows `evaluate` wants in `Baseline.history`
    history_windows: int

    def empty(self) -> StateT: ...

    def add(self, state: StateT, batch: LogBatch) -> StateT:
        """Fold a batch (already one model, one window) into a new state, vectorised."""
        ...

    def merge(self, a: StateT, b: StateT) -> StateT: ...

    def to_row(self, state: StateT) -> dict[str, Any]: ...

    def from_row(self, row: Mapping[str, Any]) -> StateT: ...

    def evaluate(
        self, state: StateT, baseline: Baseline[StateT], window: WindowRef
    ) -> Detection: ...

    def update_reference(self, reference: StateT | None, state: StateT) -> StateT | None:
        """The reference after a window closed; detectors without one return None."""
        ...


def window_detection(detector: str, window: WindowRef, **fields: Any) -> Detection:
    """A Detection of `detector` for `window`: the identifying fields filled in in one place."""
    return Detection(
        detector=detector,
        model=window.model,
        window_start=window.start,
        window_end=window.end,
        **fields,
    )
