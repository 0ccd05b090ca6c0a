"""Who may start a tuning run, and when: the persisted memory of requests made.

One row per request (action, model, dedup key, incident start, event time, outcome) in SQLite
beside the receivers' outbox, so a restart mid-incident does not ask twice and a cooldown
outlives the process. Times are event time (window ends), like the alert state: replays
decide alike.

A row is `pending` from the decision until the action answers, then `sent` or `failed`. Only
a sent request is made: it alone ends its incident's requests and starts the model's cooldown.
A pending one holds back further requests for its model (no second tuning job while the first
is being asked for) without starting a cooldown; a failed one holds back nothing. The rows were
written as made before the action ran and struck when it failed, so a request still running —
windows are judged faster than an action runs in a replay, or a hung endpoint — looked made:
later windows were "already requested", another incident was "held back by its cooldown", and a
request abandoned at shutdown stayed made for good.
"""

from __future__ import annotations

import sqlite3
import threading
from dataclasses import dataclass
from datetime import datetime
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any, Literal

import orjson

from schemas.retune_config import RetuneAction

Decision = Literal[
    "go", "not_sustained", "other_detector", "already_requested", "in_flight", "cooldown"
]
Outcome = Literal["pending", "sent", "failed"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS retune_requests (
    action TEXT NOT NULL,
    model TEXT NOT NULL,
    dedup_key TEXT NOT NULL,
    incident_start TEXT NOT NULL,
    at TEXT NOT NULL,
    outcome TEXT NOT NULL DEFAULT 'pending'
);
"""


#: the result of a request its process never saw answered (killed, or stopped mid-call)
STOPPED_UNANSWERED = "no answer before its process stopped; asked again at the next start"


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
        self._upgrade()
        # a request still pending from an earlier process got no answer there (killed while
        # it ran): not made, so its incident's next alerting window asks again (a Vertex AI
        # job or Kubeflow run it did create answers that retry as already started)
        self._con.execute(
            "UPDATE retune_requests SET outcome = 'failed', result = ? WHERE outcome = 'pending'",
            (STOPPED_UNANSWERED,),
        )

    def _upgrade(self) -> None:
        """A log from before outcomes were kept: its rows are requests that were not struck,
        so they count as sent. One from before requests were kept: its failed rows cannot be
        asked again (no request to send)."""
        columns = {row[1] for row in self._con.execute("PRAGMA table_info(retune_requests)")}
        if "outcome" not in columns:
            self._con.execute(
                "ALTER TABLE retune_requests ADD COLUMN outcome TEXT NOT NULL DEFAULT 'sent'"
            )
        if "request" not in columns:
            self._con.execute("ALTER TABLE retune_requests ADD COLUMN request TEXT")
        if "result" not in columns:
            self._con.execute("ALTER TABLE retune_requests ADD COLUMN result TEXT")

    def failed(self) -> list[tuple[str, str]]:
        """(action as logged, request JSON) of each request whose last attempt failed and that
        no later request of its model and action superseded (one sent since), oldest first:
        what a new process asks again, since an incident that ended gets no alerting window
        to ask in (an ML engineer's trial: two requests stayed `failed` for good)."""
        with self._lock:
            rows = self._con.execute(
                "SELECT f.action, f.request FROM retune_requests AS f "
                "WHERE f.outcome = 'failed' AND f.request IS NOT NULL AND NOT EXISTS ("
                "  SELECT 1 FROM retune_requests AS s WHERE s.action = f.action "
                "  AND s.model = f.model AND s.outcome = 'sent' AND s.at >= f.at) "
                "ORDER BY f.at"
            ).fetchall()
        return [(str(action), str(request)) for action, request in rows]

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
        name = log_name(action)
        with self._lock:
            sent = self._con.execute(
                "SELECT 1 FROM retune_requests WHERE action = ? AND dedup_key = ? "
                "AND incident_start = ? AND outcome = 'sent'",
                (name, dedup_key, incident_start.isoformat()),
            ).fetchone()
            pending = self._con.execute(
                "SELECT 1 FROM retune_requests WHERE action = ? AND model = ? "
                "AND outcome = 'pending'",
                (name, model),
            ).fetchone()
            (last,) = self._con.execute(
                "SELECT max(at) FROM retune_requests WHERE action = ? AND model = ? "
                "AND outcome = 'sent'",
                (name, model),
            ).fetchone()
        if sent is not None:
            return "already_requested"
        if pending is not None:
            return "in_flight"
        if last is not None and at < datetime.fromisoformat(last) + action.cooldown:
            return "cooldown"
        return "go"

    def record(
        self,
        action: str,
        *,
        model: str,
        dedup_key: str,
        incident_start: datetime,
        at: datetime,
        request: str | None = None,
    ) -> None:
        """A request decided on and not yet answered (`pending`), with the request itself
        (JSON) so that a later process can ask again; an earlier failed attempt for the same
        incident gives way to it."""
        with self._lock:
            self._con.execute(
                "DELETE FROM retune_requests WHERE action = ? AND dedup_key = ? "
                "AND incident_start = ?",
                (action, dedup_key, incident_start.isoformat()),
            )
            self._con.execute(
                "INSERT INTO retune_requests (action, model, dedup_key, incident_start, at, "
                "outcome, request) VALUES (?,?,?,?,?,'pending',?)",
                (action, model, dedup_key, incident_start.isoformat(), at.isoformat(), request),
            )

    def settle(
        self,
        action: str,
        *,
        dedup_key: str,
        incident_start: datetime,
        outcome: Outcome,
        result: str | None = None,
    ) -> None:
        """The action answered: `sent` (the run exists), or `failed` (nothing started, or the
        request was given up at shutdown): a failed one blocks neither its incident's next
        alerting window nor another incident of the model. `result` is what it answered (the
        run it started, or why it failed), for `lookout retune list`."""
        with self._lock:
            self._con.execute(
                "UPDATE retune_requests SET outcome = ?, result = ? WHERE action = ? "
                "AND dedup_key = ? AND incident_start = ?",
                (outcome, result, action, dedup_key, incident_start.isoformat()),
            )

    def outcome(self, action: str, *, dedup_key: str, incident_start: datetime) -> Outcome | None:
        """What became of the incident's request (None: none was made)."""
        with self._lock:
            row = self._con.execute(
                "SELECT outcome FROM retune_requests WHERE action = ? AND dedup_key = ? "
                "AND incident_start = ?",
                (action, dedup_key, incident_start.isoformat()),
            ).fetchone()
        return None if row is None else row[0]


@dataclass(frozen=True)
class RetuneEntry:
    """One request as `lookout retune list` shows it; `request` is None in a log written before
    requests were kept."""

    asked_at: str
    action: str
    dry_run: bool
    model: str
    incident_start: str
    outcome: str
    result: str | None
    request: dict[str, Any] | None


def read_history(path: Path, *, model: str | None = None) -> list[RetuneEntry]:
    """Every request in the log at `path`, oldest first (event time), read-only: a running
    worker keeps writing it. A file without the table (no retune asked yet) has none."""
    con = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=5)
    try:
        columns = {row[1] for row in con.execute("PRAGMA table_info(retune_requests)")}
        if not columns:
            return []
        request = "request" if "request" in columns else "NULL"
        result = "result" if "result" in columns else "NULL"
        outcome = "outcome" if "outcome" in columns else "'sent'"
        rows = con.execute(
            f"SELECT at, action, model, incident_start, {outcome}, {result}, {request} "
            "FROM retune_requests WHERE ? IS NULL OR model = ? ORDER BY at, rowid",
            (model, model),
        ).fetchall()
    finally:
        con.close()
    entries = []
    for at, action, row_model, start, row_outcome, row_result, text in rows:
        try:
            parsed = orjson.loads(text) if text else None
        except orjson.JSONDecodeError:
            parsed = None
        entries.append(
            RetuneEntry(
                asked_at=str(at),
                action=str(action).removesuffix("#dry_run"),
                dry_run=str(action).endswith("#dry_run"),
                model=str(row_model),
                incident_start=str(start),
                outcome=str(row_outcome),
                result=None if row_result is None else str(row_result),
                request=parsed if isinstance(parsed, dict) else None,
            )
        )
    return entries
