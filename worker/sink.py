"""Where window states, detections and alerts become durable: the engine's sink contract.

A checkpoint is written atomically: either every partial row, request id, detection, alert and
alert-state row in it is durable, or none is and the engine retries (its messages stay un-acked).
Partial rows are deltas: each holds only what one writer folded since its previous checkpoint, so
any number of writers and restarts merge to the same window state (detectors' merge is
associative and commutative). DuckDB (embedded default) and BigQuery implement this.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol, overload

import orjson

from schemas.detection import Alert, AlertChangeKey, Detection

#: one detector's state as its `to_row` returned it
DetectorRow = Mapping[str, Any]


@dataclass(frozen=True)
class SliceRow:
    """The analysts' share of a partial row: what it holds for one (model_version, tenant).

    Only the detectors the analyst columns read (`analyst_columns.SLICE_DETECTORS`) are kept
    per slice; detection runs per model on the partial row's whole `states`.
    """

    model_version: str | None
    tenant: str | None
    records: int
    late_records: int
    states: Mapping[str, DetectorRow]
    extras: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class PartialRow:
    """What one writer folded into one (model, window) since its previous checkpoint."""

    model: str
    window_start: int
    window_end: int
    records: int
    late_records: int
    states: Mapping[str, DetectorRow]
    #: derived numbers for analysts only (e.g. cost_usd from the price table)
    extras: Mapping[str, float] = field(default_factory=dict)
    #: the same records split by (model_version, tenant), sorted; () = one slice without either
    slices: Sequence[SliceRow] = ()


@dataclass(frozen=True)
class QuarantinedRecord:
    """A record whose event time was too far from the stream's to fold (a broken clock)."""

    model: str
    request_id: str
    event_time: float
    reason: str
    #: its line in the input, where the runner knows it (a file or stdin): `lookout replay`
    #: names it, as it names every bad line
    line: int | None = None


@dataclass(frozen=True)
class BaselineAccept:
    """A person (or `accept_after`) accepted an incident's new level as the baseline.

    `incident_started_at` names the incident (the open incident of (model, detector) that began
    then), so an acceptance never carries over to a later incident, and applying it twice (a
    restart, a second evaluator) changes nothing.
    """

    model: str
    detector: str
    incident_started_at: datetime
    accepted_at: datetime
    accepted_by: str = ""


#: one window's request ids: (model, window_start, ids)
RequestIdGroup = tuple[str, int, Sequence[str]]


class RequestIdRows(Sequence[tuple[str, int, str]]):
    """A checkpoint's (model, window_start, request_id) rows, held window by window.

    A checkpoint carries one row per record folded (150,000 in a busy one); a Python tuple per
    row, then transposing them back into columns, cost a fifth of 100-record Pub/Sub ingest. The
    engine hands over each window's id list as it is; a sink that wants columns reads `groups`
    (`request_id_groups`), and any other reads rows as before."""

    def __init__(self, groups: Iterable[RequestIdGroup]) -> None:
        self.groups: list[RequestIdGroup] = [g for g in groups if len(g[2])]
        self._size = sum(len(ids) for _, _, ids in self.groups)

    def __len__(self) -> int:
        return self._size

    def __iter__(self) -> Iterator[tuple[str, int, str]]:
        for model, start, ids in self.groups:
            for request_id in ids:
                yield model, start, request_id

    @overload
    def __getitem__(self, index: int) -> tuple[str, int, str]: ...

    @overload
    def __getitem__(self, index: slice) -> Sequence[tuple[str, int, str]]: ...

    def __getitem__(
        self, index: int | slice
    ) -> tuple[str, int, str] | Sequence[tuple[str, int, str]]:
        return list(self)[index]  # rows one by one are for tests; sinks iterate or use groups


def request_id_groups(rows: Sequence[tuple[str, int, str]]) -> list[RequestIdGroup]:
    """Rows as runs of one window: the engine's groups as they are, or consecutive rows of the
    same (model, window_start) gathered."""
    if isinstance(rows, RequestIdRows):
        return rows.groups
    groups: list[RequestIdGroup] = []
    ids: list[str] = []
    for model, start, request_id in rows:
        if not groups or groups[-1][:2] != (model, start):
            ids = []
            groups.append((model, start, ids))
        ids.append(request_id)
    return groups


@dataclass(frozen=True)
class Checkpoint:
    writer_id: str
    sequence: int
    partials: Sequence[PartialRow] = ()
    #: (model, window_start, request_id) of every record folded into `partials`
    request_ids: Sequence[tuple[str, int, str]] = ()
    detections: Sequence[Detection] = ()
    alerts: Sequence[Alert] = ()
    #: the alert tracker's full state, replacing what the sink held
    alert_state: Sequence[Mapping[str, Any]] | None = None
    #: (model, detector) → reference state row, upserted
    references: Mapping[tuple[str, str], DetectorRow] = field(default_factory=dict)
    #: records not folded because of their event time, kept with the reason
    quarantined: Sequence[QuarantinedRecord] = ()
    #: the writer's event-time frontier once `partials` are durable (what an evaluator waits
    #: for in split mode); None until the writer has one
    frontier: float | None = None
    #: baseline acceptances to record (`lookout baseline accept`), appended
    baseline_accepts: Sequence[BaselineAccept] = ()
    #: the earliest window start a restarted evaluator would re-read (an open incident's
    #: frozen baseline included): retention keeps it whatever its age. Not stored; None from
    #: a writer that does not evaluate
    keep_windows_from: int | None = None

    @property
    def empty(self) -> bool:
        return not (
            self.baseline_accepts
            or self.partials
            or self.request_ids
            or self.detections
            or self.alerts
            or self.alert_state is not None
            or self.references
            or self.quarantined
            or self.frontier is not None
        )


def checkpoint_digest(checkpoint: Checkpoint) -> str:
    """A fingerprint of everything a checkpoint holds. A sink that sees the same (writer,
    sequence, digest) twice stores it once: a replayed write never double-counts, while a
    restarted writer that reuses a writer id and sequence (different content) is not lost.

    Hashed piece by piece (each window row, each window's request ids), every piece
    length-prefixed so no two checkpoints hash the same pieces: serialised whole, a checkpoint
    of 30 judged windows was one 35 MB buffer, the largest allocation of a replay."""
    digest = hashlib.sha256()

    def piece(value: Any) -> None:
        # `repr` for anything JSON cannot hold: the digest never fails; storing it may, in its
        # place. orjson reads dataclasses itself, several times faster than `asdict`
        raw = orjson.dumps(
            value, default=repr, option=orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_SORT_KEYS
        )
        digest.update(len(raw).to_bytes(8, "little"))
        digest.update(raw)

    groups = request_id_groups(checkpoint.request_ids)
    piece([checkpoint.writer_id, checkpoint.sequence, len(checkpoint.partials), len(groups)])
    for partial in checkpoint.partials:
        piece(partial)
    for model, start, ids in groups:
        piece([model, start, ids])
    piece(
        {
            "detections": [d.model_dump() for d in checkpoint.detections],
            "alerts": [a.model_dump() for a in checkpoint.alerts],
            "alert_state": checkpoint.alert_state,
            "references": [[list(k), v] for k, v in sorted(checkpoint.references.items())],
            "quarantined": list(checkpoint.quarantined),
            "frontier": checkpoint.frontier,
            "baseline_accepts": list(checkpoint.baseline_accepts),
        }
    )
    return digest.hexdigest()[:32]


@dataclass(frozen=True)
class StoredWindow:
    """Everything the sink already holds for one (model, window), from any writer."""

    partial_states: Sequence[Mapping[str, DetectorRow]]
    request_ids: frozenset[str]
    records: int
    evaluated: bool
    #: records per model_version (None: records that named none), from the slice rows
    versions: Mapping[str | None, int] = field(default_factory=dict)


def add_version_records(
    versions: dict[str | None, int], version: Any, records: Any
) -> dict[str | None, int]:
    """`versions` with one slice row's records added (a row from a sink: NULL is None)."""
    key = None if version is None else str(version)
    versions[key] = versions.get(key, 0) + int(records)
    return versions


def windows_one_by_one(
    load_window: Callable[[str, int], StoredWindow], windows: Sequence[tuple[str, int]]
) -> dict[tuple[str, int], StoredWindow]:
    """`Sink.load_windows` for a sink whose reads are cheap one at a time (a local file)."""
    return {key: load_window(*key) for key in dict.fromkeys(windows)}


class Sink(Protocol):
    name: str

    def write_checkpoint(self, checkpoint: Checkpoint) -> None:
        """Make the whole checkpoint durable, atomically; raise on failure."""
        ...

    def newest_window_start(self, model: str) -> int | None:
        """The newest window start with any partial row for `model` (skip lookups past it)."""
        ...

    def load_window(self, model: str, window_start: int) -> StoredWindow: ...

    def load_windows(
        self, windows: Sequence[tuple[str, int]]
    ) -> Mapping[tuple[str, int], StoredWindow]:
        """`load_window` for several windows in one read (an entry for each, empty where
        nothing is stored): a poll's windows are opened together."""
        ...

    def load_recent_windows(
        self, model: str, since: int, until: int
    ) -> Mapping[int, Sequence[Mapping[str, DetectorRow]]]:
        """Partial states of windows with since <= start < until, for baselines after a restart."""
        ...

    def stored_records(self, windows: Sequence[tuple[str, int]]) -> Mapping[tuple[str, int], int]:
        """Records every writer has stored for each (model, window start): a cheap read of a
        typed column (an ingest writer sizes its share of the window's sample by it)."""
        ...

    def judged_windows(self, windows: Sequence[tuple[str, int]]) -> frozenset[tuple[str, int]]:
        """Which of `windows` have a detection: an ingest replica asks before each checkpoint,
        so records it folds into a window the evaluator judged are written as late."""
        ...

    def models(self) -> Sequence[str]: ...

    def unevaluated_windows(
        self, limit: int, *, since: int | None = None
    ) -> Sequence[tuple[str, int]]:
        """(model, window start) of stored windows without any detection, oldest first: an
        evaluator behind by more than `limit` windows judges its backlog in order (newest first,
        the tracker took the older windows for replays and an incident in them never paged).
        With `since`, only windows starting then or later: the evaluator asks every few
        seconds, and on BigQuery a read of every partition each time is billed each time."""
        ...

    def load_alert_state(self) -> Sequence[Mapping[str, Any]]: ...

    def stored_alerts(self, alerts: Sequence[Alert]) -> frozenset[AlertChangeKey]:
        """Which of `alerts` the `alerts` table holds (by `Alert.change_key`): after a crash,
        the evaluator that follows pages for the ones a checkpoint stored and never handed on."""
        ...

    def load_frontier(
        self, active_within: float = 60.0, *, excluding: str | None = None
    ) -> float | None:
        """The slowest event-time frontier among the writers that reported (with a durable
        checkpoint) within `active_within` seconds of the newest report. The slowest, because a
        window is complete only when every replica still folding has passed it; among recent
        reporters, because a replica with nothing to fold stops reporting. `excluding` leaves
        one writer's own row out (a replica asking whether another is behind it)."""
        ...

    def any_writer_progress(self) -> bool:
        """Whether any writer ever reported its progress here (an evaluator's readiness: a
        sink no ingest replica ever wrote to is the wrong one, or they are not running)."""
        ...

    def newest_frontier(self, *, excluding: str) -> float | None:
        """The furthest event-time frontier any other writer reported (within the last day):
        no evaluator's watermark is past it, so no window after it can have been judged. An
        ingest replica the evaluator left out for a while asks once it is back."""
        ...

    def writer_frontier(self, writer_id: str) -> float | None:
        """The last frontier `writer_id` reported, None if it never did: a replica restarted
        under its predecessor's id reports no further than it during the restart hold."""
        ...

    def load_references(self) -> Mapping[tuple[str, str], DetectorRow]: ...

    def load_baseline_accepts(self) -> Sequence[BaselineAccept]:
        """Every recorded baseline acceptance, oldest first."""
        ...

    def writable(self) -> bool:
        """For /readyz: a cheap check that the sink accepts writes."""
        ...

    def close(self) -> None: ...
