"""One open (model, window) in a worker: what is durable, what is not yet, and which ids it saw.

`durable` is the merged state of every row the sink held when the window was opened plus every
checkpoint this worker has written since; `delta` is what was folded after the last successful
checkpoint. A failed checkpoint leaves the delta in place, so the next attempt writes it all.

Detectors that keep a raw sample (`split_sample`) would otherwise write up to a sample's worth of
rows in every checkpoint's partial row, i.e. nearly every embedding. Their sample parts are held
here (`held`) and written once, in the first checkpoint after the window closes on this worker
(or at shutdown); counts and statistics are written at every checkpoint as usual.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import numpy.typing as npt

from detectors import reservoir as rs

try:
    from detectors._keyhash import KeySet
except ImportError:  # built without a compiler (LOOKOUT_PURE_PYTHON=1)
    KeySet = None  # type: ignore[assignment,misc]
from detectors.base import Detector
from schemas.batch import LogBatch
from schemas.drift_config import EmbeddingDriftConfig
from worker.analyst_columns import SLICE_DETECTORS
from worker.sink import PartialRow, SliceRow

#: (model_version, tenant): the slice of a window analysts group by
SliceKey = tuple[str | None, str | None]
KeyArray = npt.NDArray[np.uint64]

#: the seed request ids are hashed with for deduplication: the drift detectors' default, so
#: one hash of a poll's ids serves deduplication and their samples alike
ID_SEED: int = EmbeddingDriftConfig.model_fields["seed"].default


class SeenIds:
    """The request ids a window saw, as 64-bit hashes: a batch's membership is one pass in C
    or a few vectorised searches, not a Python set lookup per record. Two different ids
    sharing a 64-bit hash would count as one (about 10⁻⁸ for a million ids in one window): the
    price of deduplicating without keeping every id as a Python string.

    The keys live in the compiled hash set (`detectors._keyhash.KeySet`) when it was built,
    else in sorted runs (`SortedKeyRuns`); both give the same answers, which the tests check.
    """

    def __init__(self) -> None:
        self._keys: KeySet | SortedKeyRuns = _new_key_store()

    def __len__(self) -> int:
        return len(self._keys)

    def update(self, request_ids: Iterable[str]) -> None:
        """Remember ids (e.g. what the sink stored for the window)."""
        ids = np.fromiter(request_ids, dtype=object)
        if len(ids):
            self.add_keys(rs.hash_ids(ids, ID_SEED))

    def add_keys(self, keys: KeyArray) -> None:
        """Remember keys, in any order, repeated or known already."""
        self._keys.remember_new(np.ascontiguousarray(keys, dtype=np.uint64))

    def remember_new(self, keys: KeyArray) -> npt.NDArray[np.bool_] | None:
        """Remember a batch's keys; per row, whether it is new (not seen before, and the first
        row of its key in the batch), or None when every row is (the common case)."""
        return self._keys.remember_new(np.ascontiguousarray(keys, dtype=np.uint64))

    def contains(self, keys: KeyArray) -> npt.NDArray[np.bool_]:
        """Per key, whether it was seen."""
        return self._keys.contains(np.ascontiguousarray(keys, dtype=np.uint64))


def _new_key_store() -> KeySet | SortedKeyRuns:
    return SortedKeyRuns() if KeySet is None else KeySet()


#: runs of keys smaller than this are merged at once (see `SortedKeyRuns`)
MERGE_BELOW = 65_536


class SortedKeyRuns:
    """Keys in a few sorted, disjoint runs: `SeenIds` without the compiled hash set.

    New keys become a run of their own, merged into the run before it while that one holds at
    most `MERGE_BELOW` keys or four times the new run's: a window of up to 64k ids stays one
    array, and a larger one has at most log4(n / 64k) + 2 runs, each key copied a few times
    in all. One sorted array took an insert of the whole window per fold: 0.56 ms a poll into
    a window of 1.2M ids against 0.32-0.37 ms in runs (best of 3, polls of 1,000), 114 against
    55 µs a poll of 100 into 300k; re-sorting it (`np.union1d`, before that) cost 2.9 s per
    100k-record poll into a window of 3M.
    """

    def __init__(self) -> None:
        self._runs: list[KeyArray] = []
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def remember_new(self, keys: KeyArray) -> npt.NDArray[np.bool_] | None:
        ordered = np.sort(keys)
        repeats = len(ordered) > 1 and bool((ordered[1:] == ordered[:-1]).any())
        if not repeats and not (self._count and self.contains(ordered).any()):
            self._push(ordered)
            return None
        fresh = _first_occurrences(keys)
        if self._count:
            fresh &= ~self.contains(keys)
        self._push(np.sort(keys[fresh]))
        return fresh

    def _push(self, new: KeyArray) -> None:
        """Add sorted keys, none of them known, as a run; merge runs to keep them few."""
        if not len(new):
            return
        self._count += len(new)
        run = new.astype(np.uint64, copy=False)
        runs = self._runs
        while runs and len(runs[-1]) <= max(4 * len(run), MERGE_BELOW):
            older = runs.pop()
            if len(older) < len(run):
                older, run = run, older
            run = np.insert(older, np.searchsorted(older, run), run)
        runs.append(run)

    def contains(self, keys: KeyArray) -> npt.NDArray[np.bool_]:
        found = np.zeros(len(keys), dtype=bool)
        for run in self._runs:
            at = np.searchsorted(run, keys)
            at[at == len(run)] = 0
            found |= run[at] == keys
        return found


@dataclass
class SliceDelta:
    """What a window folded for one (model_version, tenant) since its last checkpoint."""

    states: dict[str, Any]
    records: int = 0
    late_records: int = 0


def slices_of(batch: LogBatch) -> list[tuple[SliceKey, LogBatch]]:
    """The batch split by (model_version, tenant); the whole batch when it has one slice
    (nearly always within one poll of one model), so the common case costs no copy."""
    versions, tenants = batch.model_version, batch.tenant
    if (versions == versions[0]).all() and (tenants == tenants[0]).all():
        return [((versions[0], tenants[0]), batch)]
    import pandas as pd  # only for batches with several slices: a quarter second to import

    # factorize codes only: its uniques would turn None into NaN
    version_codes, _ = pd.factorize(versions, use_na_sentinel=False)
    tenant_codes, tenant_names = pd.factorize(tenants, use_na_sentinel=False)
    codes = version_codes * len(tenant_names) + tenant_codes
    order = np.argsort(codes, kind="stable")
    groups = np.split(order, np.flatnonzero(np.diff(codes[order])) + 1)
    # the slice detectors read no embedding: leave them out of the copies
    slim = replace(batch, embeddings=batch.embeddings[:0], embedding_rows=batch.embedding_rows[:0])
    return [((versions[g[0]], tenants[g[0]]), slim.take(g)) for g in groups]


@dataclass
class OpenWindow:
    model: str
    start: int
    end: int
    durable: dict[str, Any]
    delta: dict[str, Any]
    seen_ids: SeenIds = field(default_factory=SeenIds)
    durable_records: int = 0
    delta_records: int = 0
    delta_late: int = 0
    delta_ids: list[str] = field(default_factory=list)
    evaluated: bool = False
    #: the watermark passed the end here (or the worker is stopping): write held samples
    closed: bool = False
    held: dict[str, Any] = field(default_factory=dict)
    holding: bool = False
    slices: dict[SliceKey, SliceDelta] = field(default_factory=dict)
    #: held samples were checked against what other writers stored (see `trim_held`)
    trimmed: bool = False
    #: records per model_version in the whole window (stored and folded here): which version
    #: an alert on the window is about
    versions: dict[str | None, int] = field(default_factory=dict)

    @classmethod
    def fresh(
        cls, model: str, start: int, end: int, detectors: Mapping[str, Detector[Any]]
    ) -> OpenWindow:
        return cls(
            model=model,
            start=start,
            end=end,
            durable={name: d.empty() for name, d in detectors.items()},
            delta={name: d.empty() for name, d in detectors.items()},
        )

    @property
    def dirty(self) -> bool:
        return self.delta_records > 0 or (self.closed and self.holding)

    def fold(self, batch: LogBatch, detectors: Mapping[str, Detector[Any]]) -> tuple[int, int]:
        """Add the rows not seen before; returns (added, duplicates)."""
        keys = rs.hash_ids(batch.request_id, ID_SEED)
        fresh = self.seen_ids.remember_new(keys)
        added = len(keys) if fresh is None else int(fresh.sum())
        duplicates = len(keys) - added
        if added == 0:
            return 0, duplicates
        if fresh is not None and duplicates:
            batch = batch.take(fresh)
            rs.remember_keys(batch.request_id, ID_SEED, keys[fresh])
        self.delta_ids.extend(batch.request_id.tolist())
        before = dict(self.delta)
        for name, detector in detectors.items():
            self.delta[name] = detector.add(self.delta[name], batch)
        self.delta_records += added
        if self.evaluated:
            self.delta_late += added
        self._fold_slices(batch, detectors, before)
        return added, duplicates

    def count_delta_late(self) -> int:
        """Count what was folded since the last checkpoint as late (the window turned out to
        be judged already); returns how many records that adds."""
        added = self.delta_records - self.delta_late
        self.delta_late = self.delta_records
        for delta in self.slices.values():
            delta.late_records = delta.records
        return added

    def _fold_slices(
        self,
        batch: LogBatch,
        detectors: Mapping[str, Detector[Any]],
        before: Mapping[str, Any],
    ) -> None:
        """Fold into the (model_version, tenant) slices. While a window's delta has one slice
        (nearly always), that slice's states are the window's own: states are never mutated, so
        they are shared (`before` holds the window's states before this batch) instead of
        adding the same rows twice."""
        names = [n for n in SLICE_DETECTORS if n in detectors]
        parts = slices_of(batch)
        for key, part in parts:
            delta = self.slices.get(key)
            if delta is None:
                first = not self.slices and self.delta_records == len(batch)
                states = {n: before[n] if first else detectors[n].empty() for n in names}
                delta = self.slices[key] = SliceDelta(states)
            for name in names:
                if len(parts) == 1 and delta.states[name] is before[name]:
                    delta.states[name] = self.delta[name]
                else:
                    delta.states[name] = detectors[name].add(delta.states[name], part)
            delta.records += len(part)
            if self.evaluated:
                delta.late_records += len(part)
            version = key[0]
            self.versions[version] = self.versions.get(version, 0) + len(part)

    def _slice_rows(self, detectors: Mapping[str, Detector[Any]]) -> list[SliceRow]:
        rows = []
        for (version, tenant), delta in sorted(self.slices.items(), key=_slice_order):
            extras: dict[str, float] = {}
            for name, state in delta.states.items():
                derive = getattr(detectors[name], "analyst_values", None)
                if derive is not None:
                    extras.update(derive(state, self.model))
            rows.append(
                SliceRow(
                    model_version=version,
                    tenant=tenant,
                    records=delta.records,
                    late_records=delta.late_records,
                    states={n: detectors[n].to_row(st) for n, st in delta.states.items()},
                    extras=extras,
                )
            )
        return rows

    def current(self, detectors: Mapping[str, Detector[Any]]) -> dict[str, Any]:
        """Everything known about the window: durable merged with the pending delta."""
        if not self.dirty:
            return dict(self.durable)
        return {n: d.merge(self.durable[n], self.delta[n]) for n, d in detectors.items()}

    def _written_state(self, name: str, detector: Detector[Any]) -> Any:
        split = getattr(detector, "split_sample", None)
        if split is None:
            return self.delta[name]
        if self.closed:
            held = self.held.get(name)
            return self.delta[name] if held is None else detector.merge(held, self.delta[name])
        body, _ = split(self.delta[name])
        return body

    def trim_held(self, stored_records: int, detectors: Mapping[str, Detector[Any]]) -> None:
        """Drop held and pending sample rows that cannot make the window's sample
        (`trim_sample`), given `stored_records`, what every writer has stored for this window
        (this one's committed records included): what is merged later is unchanged with
        overwhelming probability, what is written shrinks to about one sample across writers."""
        self.trimmed = True
        known = self.durable_records + self.delta_records
        population = max(stored_records, self.durable_records) + self.delta_records
        if known == 0:
            return
        scale = population / known
        current = self.current(detectors)
        for name, detector in detectors.items():
            trim = getattr(detector, "trim_sample", None)
            if trim is None:
                continue
            if name in self.held:
                self.held[name] = trim(self.held[name], current[name], scale)
            self.delta[name] = trim(self.delta[name], current[name], scale)

    def partial_row(self, detectors: Mapping[str, Detector[Any]]) -> PartialRow:
        extras: dict[str, float] = {}
        for name, detector in detectors.items():
            derive = getattr(detector, "analyst_values", None)
            if derive is not None:
                extras.update(derive(self.delta[name], self.model))
        return PartialRow(
            extras=extras,
            model=self.model,
            window_start=self.start,
            window_end=self.end,
            records=self.delta_records,
            late_records=self.delta_late,
            states={n: d.to_row(self._written_state(n, d)) for n, d in detectors.items()},
            slices=self._slice_rows(detectors),
        )

    def committed(self, detectors: Mapping[str, Detector[Any]]) -> CommitUndo:
        """The delta is (being made) durable: move it into `durable` and start a new delta.

        Returns what the window held before, for `uncommit` should the write fail: the engine
        commits a checkpoint's windows when it hands the checkpoint to the writer, so folding
        goes on into a fresh delta while the write runs."""
        undo = CommitUndo(
            durable=self.durable,
            durable_records=self.durable_records,
            delta=self.delta,
            delta_records=self.delta_records,
            delta_late=self.delta_late,
            delta_ids=self.delta_ids,
            slices=self.slices,
            held=dict(self.held),
            holding=self.holding,
        )
        for name, detector in detectors.items():
            split = getattr(detector, "split_sample", None)
            if split is None:
                continue
            if self.closed:
                self.held.pop(name, None)
            elif self.delta_records:
                _, sample = split(self.delta[name])
                held = self.held.get(name)
                self.held[name] = sample if held is None else detector.merge(held, sample)
                self.holding = True
        if self.closed:
            self.holding = False
        self.durable = self.current(detectors)
        self.durable_records += self.delta_records
        self.delta = {n: d.empty() for n, d in detectors.items()}
        self.delta_records = 0
        self.delta_late = 0
        self.delta_ids = []
        self.slices = {}
        return undo

    def uncommit(self, undo: CommitUndo, detectors: Mapping[str, Detector[Any]]) -> None:
        """The write `committed` was for failed: put the window back as it was, with what was
        folded meanwhile added to the restored delta, so the next checkpoint writes it all."""
        self.durable, self.durable_records = undo.durable, undo.durable_records
        self.held, self.holding = undo.held, undo.holding
        if self.delta_records:
            self.delta = {n: d.merge(undo.delta[n], self.delta[n]) for n, d in detectors.items()}
        else:
            self.delta = undo.delta
        self.delta_records += undo.delta_records
        self.delta_late += undo.delta_late
        self.delta_ids = undo.delta_ids + self.delta_ids
        slices = dict(undo.slices)
        for key, since in self.slices.items():
            before = slices.get(key)
            if before is None:
                slices[key] = since
                continue
            slices[key] = SliceDelta(
                {n: detectors[n].merge(before.states[n], st) for n, st in since.states.items()},
                before.records + since.records,
                before.late_records + since.late_records,
            )
        self.slices = slices


@dataclass(frozen=True)
class CommitUndo:
    """What an `OpenWindow` held before `committed`: its states are never mutated in place,
    so keeping the references is enough."""

    durable: dict[str, Any]
    durable_records: int
    delta: dict[str, Any]
    delta_records: int
    delta_late: int
    delta_ids: list[str]
    slices: dict[SliceKey, SliceDelta]
    held: dict[str, Any]
    holding: bool


def _first_occurrences(keys: KeyArray) -> npt.NDArray[np.bool_]:
    """True at the first row of each key (a record repeated within a batch counts once).

    Most batches repeat nothing: a plain sort shows it at a fourteenth of the cost of the
    stable argsort `np.unique(return_index=True)` needs (1 vs 14.5 ms for 150k keys)."""
    ordered = np.sort(keys)
    if not (ordered[1:] == ordered[:-1]).any():
        return np.ones(len(keys), dtype=bool)
    first = np.zeros(len(keys), dtype=bool)
    first[np.unique(keys, return_index=True)[1]] = True
    return first


def _slice_order(item: tuple[SliceKey, SliceDelta]) -> tuple[str, str, str, str]:
    """None before any name, so the order is total and stable across retries."""
    (version, tenant), _ = item
    return (
        "" if version is None else "1",
        version or "",
        "" if tenant is None else "1",
        tenant or "",
    )


#: a version that carries at least this share of a window's records names the window alone
DOMINANT_VERSION_SHARE = 0.9


def describe_versions(versions: Mapping[str | None, int]) -> str | None:
    """The model version(s) a window's calls named, as its incident keeps them: the version
    alone when it carries 90% of them, else the largest three by calls (a rollout in
    progress: `v2, v1`). Names only, no shares: an incident keeps what its first window said,
    and Alertmanager takes it as a label. None when no call named one."""
    named = {v: n for v, n in versions.items() if v is not None and n > 0}
    total = sum(n for n in versions.values() if n > 0)
    if not named or total == 0:
        return None
    ranked = sorted(named.items(), key=lambda item: (-item[1], item[0]))
    top, count = ranked[0]
    if count >= DOMINANT_VERSION_SHARE * total:
        return top
    return ", ".join(v for v, _ in ranked[:3])
