"""The report's data-quality and coverage section: what the verdicts rest on, per model.

A report that shows only verdicts hides the windows that got none: in a two-day replay the
embedding-drift detector judged 0 of 8,640 windows (no model sent embeddings) and safety left
3,082 unjudged (too few calls), yet nothing in the report said so, and a reader took "no
alerts" for "nothing wrong". So each model gets its records, late and quarantined counts,
and per detector how many windows it judged, how many it could not, and why (the detections'
own `reason`, the most common kind with its latest wording).

Quarantined records are counted per model over the whole file, whatever --since/--until say:
a record is quarantined because its event time is far from the stream's (a clock in 2099 or
1970), so that time falls in no window a range selects, and a report of the hours the stream
ran said "0 quarantined" for a file with some. The line says when the count is the file's.
"""

from __future__ import annotations

import html
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import duckdb
import pandas as pd

from worker.cli.report_scope import Scope, scoped_frame

if TYPE_CHECKING:
    from worker.sinks.duckdb_sink import DuckDBSink

log = logging.getLogger("lookout.report")

#: numbers in a reason ("4 calls in the window (minimum 100)") differ from window to window;
#: reasons are grouped with them masked, so "too few calls" is one reason, not thousands (and
#: with "1 call" and "4 calls" one noun)
_NUMBER = r"[0-9][0-9,.]*"
_PLURAL = r"\b(call|window)s\b"

_DETECTOR_COVERAGE = f"""
WITH d AS (
    SELECT model, detector, verdict, window_start, reason,
        regexp_replace(regexp_replace(reason, '{_NUMBER}', '#', 'g'), '{_PLURAL}', '\\1', 'g')
            AS kind
    FROM detections WHERE {{where}}
),
counts AS (
    SELECT model, detector, count(*) AS windows,
        count(*) FILTER (WHERE verdict <> 'insufficient_data') AS judged
    FROM d GROUP BY model, detector
),
why AS (
    SELECT model, detector, count(*) AS n, arg_max(reason, window_start) AS example
    FROM d WHERE verdict = 'insufficient_data' GROUP BY model, detector, kind
    QUALIFY row_number() OVER (PARTITION BY model, detector ORDER BY count(*) DESC, kind) = 1
)
SELECT c.model, c.detector, c.windows, c.judged, w.n AS top_reason_windows,
    w.example AS top_reason
FROM counts c LEFT JOIN why w USING (model, detector)
ORDER BY c.model, c.detector
"""

_QUARANTINED = f"""
WITH q AS (
    SELECT model, reason, event_time_unix,
        regexp_replace(regexp_replace(reason, '{_NUMBER}', '#', 'g'), '{_PLURAL}', '\\1', 'g')
            AS kind
    FROM {{table}} WHERE {{where}}
)
SELECT model, sum(n)::BIGINT AS quarantined, arg_max(example, n) AS top_reason
FROM (
    SELECT model, kind, count(*) AS n, arg_max(reason, event_time_unix) AS example
    FROM q GROUP BY model, kind
) GROUP BY model
"""


@dataclass(frozen=True)
class ModelQuality:
    """One model's counts: what the section prints for it."""

    model: str
    windows: int
    records: int
    late_records: int
    #: None: the file has no readable quarantine table (an older release wrote it)
    quarantined: int | None
    quarantine_reason: str
    #: (detector, windows, judged, windows of the top reason, top reason) per detector
    detectors: tuple[tuple[str, int, int, int, str], ...]
    #: the report is limited to a time range, which `quarantined` is not (see the module)
    quarantined_any_time: bool = False


def _esc(value: object) -> str:
    return html.escape(str(value))


def detector_coverage(sink: DuckDBSink, scope: Scope) -> pd.DataFrame:
    """Per (model, detector): windows, windows judged, and the commonest reason not to."""
    return scoped_frame(sink, _DETECTOR_COVERAGE, scope)


def _quarantine_table(sink: DuckDBSink) -> str | None:
    """Where the file keeps quarantined records, or None. The read-only view of a file
    (`duckdb_read_only`) names only the tables every release wrote; this one came later, so
    it is looked up in whichever database holds it (the attached file, or the sink's own)."""
    with sink._lock:
        found = sink._con.execute(
            "SELECT database_name FROM duckdb_tables() "
            "WHERE schema_name = 'main' AND table_name = 'quarantined_records' "
            "ORDER BY database_name = 'lookout_file' DESC LIMIT 1"
        ).fetchall()
    if not found:
        return None
    database = str(found[0][0]).replace('"', '""')
    return f'"{database}".main.quarantined_records'


def quarantined(sink: DuckDBSink, scope: Scope) -> pd.DataFrame | None:
    """Per model of the scope: records quarantined, and the commonest reason; None when the
    file holds no quarantine table it can read. Not limited to the scope's time range: the
    event time a record was quarantined for places it in no window of any range (see the
    module), and no other time of the record is the stream's."""
    table = _quarantine_table(sink)
    if table is None:
        return None
    sql = _QUARANTINED.replace("{table}", table)
    try:
        return scoped_frame(sink, sql, Scope(models=scope.models))
    except duckdb.Error as error:  # an older release's columns: say so rather than fail
        log.warning("report: cannot read quarantined_records: %s", str(error).splitlines()[0])
        return None


def model_quality(
    merged: pd.DataFrame,
    coverage: pd.DataFrame,
    held: pd.DataFrame | None,
    order: Sequence[str],
    *,
    time_limited: bool = False,
) -> list[ModelQuality]:
    """The per-model counts, from the report's model totals (`merged`: windows, records,
    late_records), `detector_coverage` and `quarantined` (`held`). Detectors are listed in
    `order` (the panels'), any other after them. `time_limited`: the report covers a time
    range, so its line must say the quarantine count is not limited to it."""
    quarantine = {} if held is None else {str(r["model"]): r for r in _records(held)}
    out = []
    for m in _records(merged):
        name = str(m["model"])
        mine = [r for r in _records(coverage) if r["model"] == name]
        rank = {d: i for i, d in enumerate(order)}
        mine.sort(key=lambda r: (rank.get(str(r["detector"]), len(rank)), str(r["detector"])))
        q = quarantine.get(name)
        out.append(
            ModelQuality(
                model=name,
                windows=_int(m.get("windows")),
                records=_int(m.get("records")),
                late_records=_int(m.get("late_records")),
                quarantined=None if held is None else _int(q["quarantined"] if q else 0),
                quarantine_reason=str(q["top_reason"]) if q else "",
                detectors=tuple(
                    (
                        str(r["detector"]),
                        _int(r["windows"]),
                        _int(r["judged"]),
                        _int(r["top_reason_windows"]),
                        "" if _missing(r["top_reason"]) else str(r["top_reason"]),
                    )
                    for r in mine
                ),
                quarantined_any_time=time_limited,
            )
        )
    return out


def coverage_section(models: Iterable[ModelQuality]) -> str:
    """The section's HTML: a line of counts and a table of detectors per model."""
    parts = [
        "<h2>Data quality and coverage</h2>",
        "<p class='note'>What the verdicts rest on. <b>Late</b> records were folded into a "
        "window after it was judged, so its verdict did not see them; <b>quarantined</b> "
        "records were not folded at all (their event time was too far from the stream's). "
        "Records that did not decode and duplicates (request ids a window had already counted) "
        "are not stored in this file: <code>lookout replay</code> prints their counts, "
        "<code>lookout run</code> exports them as metrics. A detector judges a window once it "
        "has its minimum sample and a baseline or reference; until then its verdict is "
        "<i>insufficient_data</i> and it cannot alert.</p>",
    ]
    shown = False
    for quality in models:
        shown = True
        parts.append(f"<h3>{_esc(quality.model)}</h3>")
        parts.append(f"<p class='quality'>{_counts_line(quality)}</p>")
        parts.append(_detector_table(quality))
    if not shown:
        parts.append("<p>No records in what this report covers.</p>")
    return "".join(parts)


def _counts_line(q: ModelQuality) -> str:
    if q.quarantined is None:
        held = "quarantined records: not recorded in this file"
    else:
        notes: list[str] = []
        if q.quarantined_any_time:
            notes.append(
                "in the whole file, not limited by --since/--until: their event time, which "
                "was too far from the stream's, places them in no window"
            )
        if q.quarantined:
            notes.append(f"most often: {_esc(q.quarantine_reason)}")
        held = f"<b>{q.quarantined:,}</b> quarantined" + (f" ({'; '.join(notes)})" if notes else "")
    late = f"<b>{q.late_records:,}</b> late" + (
        f" ({q.late_records / q.records:.2%} of records)" if q.late_records and q.records else ""
    )
    return f"<b>{q.records:,}</b> records in <b>{q.windows:,}</b> windows · {late} · {held}"


def _detector_table(q: ModelQuality) -> str:
    if not q.detectors:
        return "<p>No detector judged or skipped a window of this model.</p>"
    rows = []
    for detector, windows, judged, top_n, top in q.detectors:
        share = f" ({judged / windows:.0%})" if windows else ""
        cell = f"{judged:,} of {windows:,}{share}"
        if judged == 0:
            cell = f"<b>0 of {windows:,}: never judged</b>"
        why = f"{_esc(top)} <span class='note'>({top_n:,} windows)</span>" if top else ""
        rows.append(
            "<tr>"
            f"<td>{_esc(detector)}</td><td class='num'>{cell}</td>"
            f"<td class='num'>{windows - judged:,}</td><td>{why}</td>"
            "</tr>"
        )
    head = (
        "<tr><th>detector</th><th>windows judged (ok or alert)</th>"
        "<th>not judged (insufficient_data)</th>"
        "<th>most common reason not judged (its latest wording)</th></tr>"
    )
    return f"<table class='coverage'>{head}{''.join(rows)}</table>"


def _records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    return [{str(k): v for k, v in row.items()} for row in frame.to_dict("records")]


def _missing(value: object) -> bool:
    return value is None or (isinstance(value, float) and pd.isna(value))


def _int(value: object) -> int:
    return 0 if _missing(value) else int(value)  # type: ignore[call-overload]
