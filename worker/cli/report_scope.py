"""Which windows and models a report covers: `lookout report --since --until --model`.

A ten-day file of three models holds 42,355 window rows; a report of all of it is what an
analyst rarely wants and a browser draws slowly. The scope is applied in SQL, before anything
is read into memory. Times are UTC: a date is its midnight, a time without an offset is UTC
(the report prints every time in UTC, so a local reading would not match what it shows).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import pandas as pd

if TYPE_CHECKING:
    from worker.sinks.duckdb_sink import DuckDBSink

#: the forms a time may take, as the error message shows them
_EXAMPLES = "2026-01-06, 2026-01-06T12:00 or 2026-01-06T12:00:00Z"


class ScopeError(ValueError):
    """A --since, --until or --model value the report cannot use; one line, said as is."""


@dataclass(frozen=True)
class Scope:
    """Windows that start in [since, until) of the given models; None and () mean no limit."""

    since: pd.Timestamp | None = None
    until: pd.Timestamp | None = None
    models: tuple[str, ...] = ()

    @property
    def limited(self) -> bool:
        return self.since is not None or self.until is not None or bool(self.models)

    def where(self, time_column: str = "window_start") -> tuple[str, list[object]]:
        """A SQL condition (with `?` parameters) for rows in scope, by their `time_column`."""
        clauses = ["TRUE"]
        params: list[object] = []
        if self.since is not None:
            clauses.append(f"{time_column} >= ?")
            params.append(self.since.to_pydatetime())
        if self.until is not None:
            clauses.append(f"{time_column} < ?")
            params.append(self.until.to_pydatetime())
        if self.models:
            clauses.append(f"model IN ({', '.join('?' for _ in self.models)})")
            params.extend(self.models)
        return " AND ".join(clauses), params

    def overlaps(self, start: pd.Timestamp, end: pd.Timestamp | None) -> bool:
        """Does a span from `start` to `end` (None: still open) touch the scope's time range?
        An incident that began before --since and was still open in it is part of it."""
        if self.until is not None and start >= self.until:
            return False
        return self.since is None or end is None or end > self.since

    def describe(self) -> str:
        """The scope in words, for the top of the report: "windows that start from A to
        before B, of model M" (empty when there is none)."""
        times = []
        if self.since is not None:
            times.append(f"from {_utc_text(self.since)}")
        if self.until is not None:
            times.append(f"{'to ' if times else ''}before {_utc_text(self.until)}")
        said = f"windows that start {' '.join(times)}" if times else ""
        if self.models:
            models = ("model " if len(self.models) == 1 else "models ") + ", ".join(self.models)
            said = f"{said}, of {models}" if said else models
        return said


def scoped_frame(
    sink: DuckDBSink, sql: str, scope: Scope, time_column: str = "window_start"
) -> pd.DataFrame:
    """`sql` with `{where}` replaced by the scope's condition on `time_column`, read into a
    frame on the sink's own connection (which is not thread-safe: hence its lock)."""
    where, params = scope.where(time_column)
    with sink._lock:
        return sink._con.execute(sql.replace("{where}", where), params).df()


def _utc_text(stamp: pd.Timestamp) -> str:
    return str(stamp.strftime("%Y-%m-%d %H:%M UTC"))


def utc_time(option: str, text: str) -> pd.Timestamp:
    """`text` as a UTC time, or `ScopeError` naming the option and what it takes."""
    try:
        parsed = datetime.fromisoformat(text.strip())
    except ValueError:
        msg = f"{option} {text!r} is not a date or time; give e.g. {_EXAMPLES} (UTC)"
        raise ScopeError(msg) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return pd.Timestamp(parsed).tz_convert("UTC")


def scope_of(
    since: str | None = None, until: str | None = None, models: Sequence[str] | None = None
) -> Scope:
    """The scope the options ask for, or `ScopeError`: a time that does not parse, or a range
    that holds no time at all (which would silently report nothing)."""
    start = utc_time("--since", since) if since is not None else None
    end = utc_time("--until", until) if until is not None else None
    if start is not None and end is not None and start >= end:
        msg = f"--since {since} is not before --until {until}: no window is in that range"
        raise ScopeError(msg)
    names = tuple(dict.fromkeys(m.strip() for m in models or () if m.strip()))
    if models and not names:
        msg = "--model needs a model's name"
        raise ScopeError(msg)
    return Scope(start, end, names)


def unknown_models(scope: Scope, known: Sequence[str]) -> str | None:
    """Why --model names no model of the file (with the names it has), or None."""
    missing = [m for m in scope.models if m not in known]
    if not missing:
        return None
    have = ", ".join(sorted(known)) or "none"
    return f"--model {', '.join(missing)}: no such model in this file (it has: {have})"


def empty_scope(sink: DuckDBSink, scope: Scope) -> str | None:
    """Why a limited report is empty (no window in its range and models), naming what the
    file holds, or None: an empty report written without a word looked like a quiet day."""
    if not scope.limited:
        return None
    counted = scoped_frame(sink, "SELECT count(*) AS n FROM window_metrics WHERE {where}", scope)
    if int(counted["n"].iloc[0]):
        return None
    held = scoped_frame(
        sink,
        "SELECT min(window_start) AS first, max(window_start) AS last FROM window_metrics "
        "WHERE {where}",
        Scope(models=scope.models),
    )
    first, last = held["first"].iloc[0], held["last"].iloc[0]
    holds = (
        "no window at all"
        if pd.isna(first)
        else f"windows from {_utc_text(pd.Timestamp(first))} to {_utc_text(pd.Timestamp(last))}"
    )
    return f"no {scope.describe()}: the file holds {holds}; the report is empty"
