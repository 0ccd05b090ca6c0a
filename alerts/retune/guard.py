"""Who may start a tuning run, and when: the persisted memory of requests already made.

One row per request (action, model, dedup key, incident start, event time) in SQLite beside
the receivers' outbox, so a restart mid-incident does not ask twice and a cooldown outlives
the process. Times are event time (window ends), like the alert state: replays decide alike.
"""

from __future__ import annotations

import sqlite3
import threading
from datetime import datetime
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Literal

from schemas.retune_config import RetuneAction

Decision = Literal["go", "not_sustained", "other_detector", "already_requested", "cooldown"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS retune_requests (
    action TEXT NOT NULL,
    model TEXT NOT NULL,
    dedup_key TEXT NOT NULL,
    incident_start TEXT NOT NULL,
    at TEXT NOT NULL
);
"""


def log_name(action: RetuneAction) -> str:
    """The name `action`'s requests are kept under: a dry run's apart from real ones, so
    turning `dry_run` off does not find the model in a cooldown no real request started."""
    return f"{action.name}#dry_run" if action.dry_run else action.name


class RetuneLog:
    def __init__(self, path: Path | str) -> None:
        if str(path) != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._con = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._con.executescript(_SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._con.close()

    def decide(
        self,
        action: RetuneAction,
        *,
        model: str,
        detector: str,
        dedup_key: str,
        incident_start: datetime,
        alert_windows: int,
        at: datetime,
    ) -> Decision:
        if action.detectors is not None and not any(
            fnmatchcase(detector, p) for p in action.detectors
        ):
            return "other_detector"
        if alert_windows < action.consecutive_windows:
            return "not_sustained"
        with self._lock:
            same = self._con.execute(
                "SELECT 1 FROM retune_requests WHERE action = ? AND dedup_key = ? "
                "AND incident_start = ?",
                (log_name(action), dedup_key, incident_start.isoformat()),
            ).fetchone()
            if same is not None:
                return "already_requested"
            (last,) = self._con.execute(
                "SELECT max(at) FROM retune_requests WHERE action = ? AND model = ?",
                (log_name(action), model),
            ).fetchone()
        if last is not None and at < datetime.fromisoformat(last) + action.cooldown:
            return "cooldown"
        return "go"

    def record(
        self, action: str, *, model: str, dedup_key: str, incident_start: datetime, at: datetime
    ) -> None:
        with self._lock:
            self._con.execute(
                "INSERT INTO retune_requests VALUES (?,?,?,?,?)",
                (action, model, dedup_key, incident_start.isoformat(), at.isoformat()),
            )

    def forget(self, action: str, *, dedup_key: str, incident_start: datetime) -> None:
        """A request that failed (the API refused, the export found nothing) started no run:
        strike it, so neither the incident nor the cooldown counts it as made."""
        with self._lock:
            self._con.execute(
                "DELETE FROM retune_requests WHERE action = ? AND dedup_key = ? "
                "AND incident_start = ?",
                (action, dedup_key, incident_start.isoformat()),
            )
