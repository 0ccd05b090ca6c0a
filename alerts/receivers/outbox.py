"""The persisted outbox: notifications waiting for a receiver, and each group's state.

SQLite (stdlib) in one file next to the sink, so a restart mid-incident neither loses an
undelivered page nor sends a delivered one again, and repeat schedules survive. Bounded per
receiver: past `limit`, the oldest notification is dropped (and counted by the caller).
Only alerts are stored — never a rendered request, so no secret reaches the disk.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from alerts.receivers.senders import Notification
from schemas.detection import Alert

_SCHEMA = """
CREATE TABLE IF NOT EXISTS notifications (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    receiver TEXT NOT NULL,
    body BLOB NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    first_at REAL NOT NULL,
    next_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS notifications_receiver ON notifications (receiver, id);
CREATE TABLE IF NOT EXISTS handoffs (
    fingerprint TEXT PRIMARY KEY,
    alert BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS queued (
    receiver TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    PRIMARY KEY (receiver, fingerprint)
);
CREATE INDEX IF NOT EXISTS queued_fingerprint ON queued (fingerprint);
CREATE TABLE IF NOT EXISTS groups (
    receiver TEXT NOT NULL,
    group_key TEXT NOT NULL,
    state BLOB NOT NULL,
    PRIMARY KEY (receiver, group_key)
);
"""


#: fingerprints per `IN (...)` query: under SQLite's smallest variable limit (999)
_QUERY_CHUNK = 500


@dataclass(frozen=True)
class Entry:
    id: int
    notification: Notification
    attempts: int
    first_at: float
    next_at: float


def overflow(queued: Sequence[tuple[int, Notification]], excess: int) -> list[int]:
    """Which of a receiver's queued notifications (id order) a full outbox drops: at least
    `excess`, repeats ("still firing") first, then the oldest; and then every resolve left
    whose page was among them, so what is kept never holds a resolve alone (dropping the
    oldest kept the resolve of a page it dropped: PagerDuty got a resolve for an incident it
    never saw)."""
    repeats = [i for i, n in queued if n.repeat]
    changes = [i for i, n in queued if not n.repeat]
    dropped = set((repeats + changes)[:excess])
    lost: set[str] = set()
    for i, notification in queued:
        if notification.repeat:
            continue
        if i in dropped:
            lost.update(a.dedup_key for a in notification.alerts if a.status == "firing")
            continue
        if all(a.status != "firing" and a.dedup_key in lost for a in notification.alerts):
            dropped.add(i)
        lost.difference_update(a.dedup_key for a in notification.alerts if a.status == "firing")
    return sorted(dropped)


def pending_key(alert: Alert) -> str:
    """Where a change waits in `GroupState.pending`: a firing and a later resolve of the same
    alert wait apart, so a group flushed after both sends the page and then its resolve.
    Keyed by the alert alone, the resolve replaced the page it followed: on a fast replay, or
    an incident that fired and cleared between two flushes, PagerDuty got a resolve for an
    incident it never saw, and nobody was paged."""
    return alert.dedup_key if alert.status == "firing" else f"{alert.dedup_key}/{alert.status}"


@dataclass
class GroupState:
    """One receiver's group: firing alerts it knows of, changes not yet sent, and when."""

    active: dict[str, Alert] = field(default_factory=dict)
    pending: dict[str, Alert] = field(default_factory=dict)
    pending_since: float | None = None
    last_sent_at: float | None = None

    def to_json(self) -> bytes:
        def dump(alerts: dict[str, Alert]) -> list[dict[str, Any]]:
            return [a.model_dump(mode="json") for a in alerts.values()]

        return orjson.dumps(
            {
                "active": dump(self.active),
                "pending": dump(self.pending),
                "pending_since": self.pending_since,
                "last_sent_at": self.last_sent_at,
            }
        )

    @classmethod
    def from_json(cls, data: bytes) -> GroupState:
        raw = orjson.loads(data)

        def load(items: list[dict[str, Any]]) -> dict[str, Alert]:
            alerts = (Alert.model_validate(a) for a in items)
            return {a.dedup_key: a for a in alerts}

        pending = {pending_key(a): a for a in (Alert.model_validate(p) for p in raw["pending"])}
        return cls(load(raw["active"]), pending, raw["pending_since"], raw["last_sent_at"])


class Outbox:
    """Thread-safe (one connection behind a lock; every call is one short transaction)."""

    def __init__(self, path: Path | str) -> None:
        self._path = Path(path)
        if str(path) != ":memory:":
            self._path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._con = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._con.execute("PRAGMA journal_mode=WAL")
        self._con.executescript(_SCHEMA)
        # marks of alerts no longer noted (struck by a run that then failed to clear them)
        self._con.execute(
            "DELETE FROM queued WHERE fingerprint NOT IN (SELECT fingerprint FROM handoffs)"
        )

    def close(self) -> None:
        with self._lock:
            self._con.close()

    # -- notifications ---------------------------------------------------------------------

    def flush(
        self,
        notifications: list[Notification],
        group: tuple[str, str, GroupState | None],
        *,
        now: float,
        limit: int,
    ) -> int:
        """Append `notifications` and save the group's new state in ONE transaction (a crash
        cannot both keep the change pending and queue it). Returns how many of the oldest
        were dropped to stay within `limit`."""
        receiver, group_key, state = group
        with self._lock:
            self._con.execute("BEGIN IMMEDIATE")
            try:
                for n in notifications:
                    self._con.execute(
                        "INSERT INTO notifications (receiver, body, first_at, next_at) "
                        "VALUES (?,?,?,?)",
                        (n.receiver, n.to_json(), now, now),
                    )
                self._save_group(receiver, group_key, state)
                (count,) = self._con.execute(
                    "SELECT count(*) FROM notifications WHERE receiver = ?", (receiver,)
                ).fetchone()
                excess = max(0, int(count) - limit)
                dropped: list[int] = []
                if excess:
                    queued = self._con.execute(
                        "SELECT id, body FROM notifications WHERE receiver = ? ORDER BY id",
                        (receiver,),
                    ).fetchall()
                    dropped = overflow(
                        [(int(i), Notification.from_json(body)) for i, body in queued], excess
                    )
                    self._con.executemany(
                        "DELETE FROM notifications WHERE id = ?", [(i,) for i in dropped]
                    )
                self._con.execute("COMMIT")
            except BaseException:
                self._con.execute("ROLLBACK")
                raise
        return len(dropped)

    def head(self, receiver: str) -> Entry | None:
        """The oldest notification for `receiver` (delivered in order: a resolve never
        overtakes its trigger)."""
        with self._lock:
            row = self._con.execute(
                "SELECT id, body, attempts, first_at, next_at FROM notifications "
                "WHERE receiver = ? ORDER BY id LIMIT 1",
                (receiver,),
            ).fetchone()
        if row is None:
            return None
        return Entry(row[0], Notification.from_json(row[1]), row[2], row[3], row[4])

    def done(self, entry_id: int) -> None:
        with self._lock:
            self._con.execute("DELETE FROM notifications WHERE id = ?", (entry_id,))

    def retry_at(self, entry_id: int, *, attempts: int, next_at: float) -> None:
        with self._lock:
            self._con.execute(
                "UPDATE notifications SET attempts = ?, next_at = ? WHERE id = ?",
                (attempts, next_at, entry_id),
            )

    def retry_now(self, now: float) -> int:
        """Make every notification waiting out a backoff due at `now`; returns how many.

        A start is when an operator expects a retry: after fixing a receiver and restarting,
        the wait a failed attempt set before the restart (up to `backoff_max`) held the
        notifications back, and the run's end said the receiver had stopped taking them."""
        with self._lock:
            cursor = self._con.execute(
                "UPDATE notifications SET next_at = ? WHERE next_at > ?", (now, now)
            )
        return cursor.rowcount

    def forget_receivers_except(self, names: frozenset[str]) -> int:
        """Drop what waits for receivers no longer configured; returns how many."""
        marks = ",".join("?" * len(names)) or "''"
        with self._lock:
            cursor = self._con.execute(
                f"DELETE FROM notifications WHERE receiver NOT IN ({marks})", tuple(names)
            )
        return max(cursor.rowcount, 0)

    def depth(self, receiver: str) -> int:
        with self._lock:
            (count,) = self._con.execute(
                "SELECT count(*) FROM notifications WHERE receiver = ?", (receiver,)
            ).fetchone()
        return int(count)

    # -- the hand-off from the sink ----------------------------------------------------------

    def prepare_handoff(self, alerts: Sequence[Alert]) -> None:
        """Note alerts a checkpoint is about to store, before the sink write: pages go out only
        once the write landed, and a process killed between the two would otherwise leave an
        alert in the `alerts` table that no receiver ever gets."""
        rows = [(a.fingerprint, a.model_dump_json()) for a in alerts]
        with self._lock:
            self._con.execute("BEGIN IMMEDIATE")
            try:
                self._con.executemany(
                    "INSERT OR REPLACE INTO handoffs (fingerprint, alert) VALUES (?,?)", rows
                )
                self._con.execute("COMMIT")
            except BaseException:
                self._con.execute("ROLLBACK")
                raise

    def handed_off(self, alerts: Sequence[Alert]) -> None:
        """These are with the receivers now (queued here, or given up on with an error)."""
        keys = [(a.fingerprint,) for a in alerts]
        with self._lock:
            self._con.execute("BEGIN IMMEDIATE")
            try:
                self._con.executemany("DELETE FROM handoffs WHERE fingerprint = ?", keys)
                self._con.executemany("DELETE FROM queued WHERE fingerprint = ?", keys)
                self._con.execute("COMMIT")
            except BaseException:
                self._con.execute("ROLLBACK")
                raise

    def queued_for(self, receiver: str, fingerprints: Sequence[str]) -> set[str]:
        """Which of these noted alerts `receiver` already took (`save_submitted`): a process
        killed after queueing an alert and before striking it off the journal sends it again
        from the next start, and each receiver that had it is skipped."""
        taken: set[str] = set()
        with self._lock:
            for start in range(0, len(fingerprints), _QUERY_CHUNK):
                chunk = fingerprints[start : start + _QUERY_CHUNK]
                marks = ",".join("?" * len(chunk))
                rows = self._con.execute(
                    "SELECT fingerprint FROM queued "
                    f"WHERE receiver = ? AND fingerprint IN ({marks})",
                    (receiver, *chunk),
                ).fetchall()
                taken.update(row[0] for row in rows)
        return taken

    def pending_handoffs(self) -> list[Alert]:
        """Prepared and never handed off, in the order they were prepared."""
        with self._lock:
            rows = self._con.execute("SELECT alert FROM handoffs ORDER BY rowid").fetchall()
        return [Alert.model_validate_json(row[0]) for row in rows]

    # -- groups ----------------------------------------------------------------------------

    def groups(self) -> dict[tuple[str, str], GroupState]:
        with self._lock:
            rows = self._con.execute("SELECT receiver, group_key, state FROM groups").fetchall()
        return {(r, g): GroupState.from_json(s) for r, g, s in rows}

    def save_group(self, receiver: str, group_key: str, state: GroupState | None) -> None:
        with self._lock:
            self._save_group(receiver, group_key, state)

    def save_submitted(
        self, receiver: str, groups: Sequence[tuple[str, GroupState]], fingerprints: Sequence[str]
    ) -> None:
        """Save groups that took new alerts and mark those alerts (the ones the hand-off
        journal notes) as queued for `receiver`, in ONE transaction: see `queued_for`."""
        with self._lock:
            self._con.execute("BEGIN IMMEDIATE")
            try:
                for group_key, state in groups:
                    self._save_group(receiver, group_key, state)
                self._con.executemany(
                    "INSERT OR IGNORE INTO queued (receiver, fingerprint) SELECT ?, ? "
                    "WHERE EXISTS (SELECT 1 FROM handoffs WHERE fingerprint = ?)",
                    [(receiver, f, f) for f in fingerprints],
                )
                self._con.execute("COMMIT")
            except BaseException:
                self._con.execute("ROLLBACK")
                raise

    def _save_group(self, receiver: str, group_key: str, state: GroupState | None) -> None:
        if state is None:
            self._con.execute(
                "DELETE FROM groups WHERE receiver = ? AND group_key = ?", (receiver, group_key)
            )
        else:
            self._con.execute(
                "INSERT OR REPLACE INTO groups (receiver, group_key, state) VALUES (?,?,?)",
                (receiver, group_key, state.to_json()),
            )
