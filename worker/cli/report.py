"""An HTML report of a run: what an SRE or ML engineer looks at instead of reading tables.

One self-contained file (plotly's script inline, no network): a summary first (what alerted,
each incident with its peak severity, worst value and what to do, then the worst window each
detector judged), the models, what the verdicts rest on (records, late and quarantined
records, windows each detector judged or could not, and why: report_coverage.py), a key to
the plots, one figure per model (see report_plots.py), every alert as an incident from the
window it fired in to the window it resolved in, sorted by event time, and for the windows
that drifted, evidently's embedding-drift verdict as a second opinion. `Scope` limits it to a
time range and some models (`lookout report --since --until --model`).

The summary ranks only windows a detector judged: ranked by value ÷ threshold over every
window, a 20-call latency window with verdict "ok" headed the table while a 62-minute
critical incident was not listed.
"""

from __future__ import annotations

import html
import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import pandas as pd

from schemas.alert_config import SEVERITY_RANK
from worker.cli.report_coverage import (
    coverage_section,
    detector_coverage,
    model_quality,
    quarantined,
)
from worker.cli.report_plots import PANELS, SEVERITY_FILL, Incident, model_figure
from worker.cli.report_scope import Scope, ScopeError, scoped_frame, unknown_models
from worker.sinks.duckdb_sink import DuckDBSink

log = logging.getLogger("lookout.report")

SecondOpinion = Callable[[DuckDBSink, str, pd.Timestamp], str | None]

_STYLE = """
body{font-family:system-ui,sans-serif;margin:2em;max-width:1200px;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em}
td,th{border:1px solid #ccc;padding:4px 8px;font-size:13px;text-align:left}
th{background:#f4f4f4} td.num{text-align:right}
.key span{display:inline-block;width:2.2em;height:.9em;vertical-align:middle;margin:0 .3em}
.note{color:#555;font-size:13px}
code{font-size:12px;background:#f4f4f4;padding:0 2px}
"""

#: how a detector's value reads in a table: (unit words, scale, digits)
_UNITS = {
    "safety": ("% blocked", 100.0, 2),
    "latency": ("ms p95", 1.0, 0),
    "tokens": ("output tokens/call", 1.0, 0),
    "embedding_drift": ("MMD²", 1.0, 4),
    "descriptor_drift": ("effect size", 1.0, 3),
}


def _esc(value: object) -> str:
    return html.escape(str(value))


def _when(value: object) -> str:
    if value is None or (isinstance(value, float) and pd.isna(value)) or value is pd.NaT:
        return ""
    stamp = pd.Timestamp(value)  # type: ignore[arg-type]
    return str(stamp.tz_convert("UTC").strftime("%Y-%m-%d %H:%M UTC"))


#: conditions whose value is not the detector's usual statistic
_CONDITION_UNITS = {"slo_burn_rate": ("× error-budget burn rate", 1.0, 2)}


def _amount(detector: str, value: object, condition: str = "") -> str:
    if value is None or pd.isna(value):  # type: ignore[call-overload]
        return ""
    unit, scale, digits = next(
        (u for prefix, u in _CONDITION_UNITS.items() if condition.startswith(prefix)),
        _UNITS.get(detector, ("", 1.0, 4)),
    )
    return f"{float(value) * scale:,.{digits}f} {unit}".strip()  # type: ignore[arg-type]


def _table(head: Sequence[str], rows: Iterable[Sequence[str]], numeric: set[int]) -> str:
    out = ["<table><tr>", *(f"<th>{_esc(h)}</th>" for h in head), "</tr>"]
    for row in rows:
        out.append("<tr>")
        for i, cell in enumerate(row):
            out.append(f"<td class='num'>{cell}</td>" if i in numeric else f"<td>{cell}</td>")
        out.append("</tr>")
    out.append("</table>")
    return "".join(out)


def alert_rows(sink: DuckDBSink, scope: Scope | None = None) -> pd.DataFrame:
    """The alert changes as `incidents_from` reads them: one row per firing or resolve. Of
    the scope's models, but at any time: an incident is folded from all its rows, and kept
    if it overlaps the scope's range (`Scope.overlaps`)."""
    models = Scope(models=scope.models) if scope is not None else Scope()
    return scoped_frame(
        sink,
        "SELECT dedup_key, emitted_at, status, severity, model, detector, window_start, "
        "window_end, summary FROM alerts WHERE {where} ORDER BY emitted_at",
        models,
    )


#: the words of the tracker's second page for an incident open `alerting.sustained_after`
_SUSTAINED = "sustained level shift since"

#: firing before resolved when one window decided both (see `_chronological`)
_STATUS_ORDER = {"firing": 0, "resolved": 1}
#: by name, as the alert rows carry it (an unknown name ranks below info)
_SEVERITY_RANK: dict[str, int] = {str(k): v for k, v in SEVERITY_RANK.items()}


def _chronological(alerts: pd.DataFrame) -> list[dict[str, Any]]:
    """The alert rows in the order the tracker decided them.

    `emitted_at` is when a checkpoint wrote the rows, the same for all of one checkpoint, so it
    cannot order a firing and its resolve. `window_end` is the window that decided the change,
    later for each later change of a dedup key except when one window decides two: an
    evaluator's restart resolves the old incident and the same window fires the new one (the
    older incident, by `window_start`, which every row of an incident carries as its start,
    goes first), and an accepted level resolves the incident its window has just fired or
    escalated (firing before resolved).
    """
    return sorted(
        _records(alerts),
        key=lambda a: (
            pd.Timestamp(a["window_end"]),
            pd.Timestamp(a["window_start"]),
            _STATUS_ORDER.get(str(a["status"]), len(_STATUS_ORDER)),
            pd.Timestamp(a["emitted_at"]),
        ),
    )


def _worse(a: str, b: str) -> str:
    """The higher severity: an incident is as bad as the worst it got while open."""
    return max(a, b, key=lambda s: _SEVERITY_RANK.get(s, -1))


def _opened(a: dict[str, Any], resolved: pd.Timestamp | None = None) -> Incident:
    return Incident(
        str(a["model"]),
        str(a["detector"]),
        str(a["severity"]),
        pd.Timestamp(a["window_start"]),
        resolved,
        str(a["summary"]),
    )


def _updated(old: Incident, a: dict[str, Any]) -> Incident:
    """Another page for an open key (an escalation, a sustained notice) updates the incident,
    as a receiver that dedups by key shows it: same start, worst severity. Its summary stays
    what fired at that start (the table puts them side by side); an escalation is added with
    its own window."""
    severity = _worse(old.severity, str(a["severity"]))
    summary = old.summary
    if severity != old.severity:
        # an alert's window_start is its incident's; window_end ends the window that decided
        summary += f" — escalated to {severity} in the window ending {_when(a['window_end'])}"
    # the tracker's notice (alerts/state.py) is the only record that the shift was sustained
    sustained = old.sustained or _SUSTAINED in str(a["summary"])
    return replace(old, severity=severity, summary=summary, sustained=sustained)


def _closed(old: Incident, a: dict[str, Any]) -> Incident:
    """The resolve ends the incident; its summary stays what fired, which the table shows."""
    return replace(
        old,
        severity=_worse(old.severity, str(a["severity"])),
        resolved=pd.Timestamp(a["window_end"]),
    )


def incidents_from(alerts: pd.DataFrame) -> list[Incident]:
    """One incident per page, from the window it fired in to the window it resolved in.

    The tracker keeps at most one incident open per dedup key, so the rows are folded by key
    as a receiver that dedups by key (Alertmanager) folds them: a firing row while the key is
    open updates that incident (`_updated`) instead of starting one that never resolves, and a
    key that fires again after its resolve is a new incident. A resolve with nothing open is
    either a repeat of the resolve just seen (ignored) or one whose firing is not in the table
    (written to another file); that incident is still shown, with the span the resolve carries.
    """
    found: list[Incident] = []
    open_: dict[str, int] = {}
    last_resolved: dict[str, pd.Timestamp] = {}
    for a in _chronological(alerts):
        key, start = str(a["dedup_key"]), pd.Timestamp(a["window_start"])
        i = open_.get(key)
        if a["status"] == "firing":
            if i is None:
                open_[key] = len(found)
                found.append(_opened(a))
            else:
                found[i] = _updated(found[i], a)
        elif a["status"] == "resolved":
            if i is not None:
                found[i] = _closed(found[i], a)
                del open_[key]
            elif last_resolved.get(key) != start:
                found.append(_opened(a, resolved=pd.Timestamp(a["window_end"])))
            last_resolved[key] = start
    return sorted(found, key=lambda inc: (inc.fired, inc.model, inc.detector))


def with_accepts(incidents: list[Incident], sink: DuckDBSink) -> list[Incident]:
    """Open incidents whose level was accepted as the baseline, marked so: after `lookout
    baseline accept` on a finished file the report still called the incident open and told
    the reader to run the command they had just run."""
    open_ = [i for i in incidents if i.resolved is None]
    if not open_:
        return incidents
    accepts = sink.load_baseline_accepts()
    when = {
        (a.model, a.detector, pd.Timestamp(a.incident_started_at)): pd.Timestamp(a.accepted_at)
        for a in accepts
    }
    return [
        replace(i, accepted=when.get((i.model, i.detector, i.fired))) if i.resolved is None else i
        for i in incidents
    ]


def _summary(
    detections: pd.DataFrame,
    merged: pd.DataFrame,
    incidents: list[Incident],
    *,
    db: str | None = None,
) -> str:
    """The counts, then what alerted (`_what_alerted`), then the worst judged windows."""
    models = sorted(merged["model"].unique()) if len(merged) else []
    starts = detections["window_start"] if len(detections) else pd.Series(dtype="object")
    by_severity = {s: sum(1 for i in incidents if i.severity == s) for s in SEVERITY_FILL}
    still = sum(1 for i in incidents if i.resolved is None and i.accepted is None)
    accepted = sum(1 for i in incidents if i.resolved is None and i.accepted is not None)
    lines = [
        f"<b>{len(models)}</b> model(s): {_esc(', '.join(models)) or 'none'}",
        f"<b>{int(merged['windows'].sum()) if len(merged) else 0:,}</b> (model, window) rows "
        f"over <b>{starts.nunique():,}</b> windows"
        + (f", {_when(starts.min())} to {_when(starts.max())}" if len(starts) else ""),
        f"<b>{int(merged['records'].sum()) if len(merged) else 0:,}</b> records",
        (
            f"<b>{len(incidents)}</b> alert(s): "
            + ", ".join(f"{n} {s}" for s, n in by_severity.items())
            + (f"; <b>{still}</b> still firing" if still else "")
            + (f"; {accepted} accepted as the new baseline" if accepted else "")
            + ("" if still or accepted else "; all resolved")
        )
        if incidents
        else "no alerts",
    ]
    last_end = pd.Timestamp(detections["window_end"].max()) if len(detections) else None
    return "".join(
        [
            "<h2>Summary</h2><ul>",
            *(f"<li>{line}</li>" for line in lines),
            "</ul>",
            _what_alerted(incidents, detections, last_end, db),
            _worst_judged(detections),
        ]
    )


#: how many incidents the summary lists (all of them are in the Alerts table)
_SUMMARY_INCIDENTS = 20
#: a resolved incident this close to the report's last window still gets a "what to do"
_RECENT = pd.Timedelta(hours=24)


def _what_alerted(
    incidents: list[Incident],
    detections: pd.DataFrame,
    last_end: pd.Timestamp | None,
    db: str | None,
) -> str:
    """Every incident first, open ones first and then the newest: what a reader came for.
    A window ranking cannot stand in for it (an incident's worst window may be small beside a
    noisy window that never alerted)."""
    if not incidents:
        return "<h3>What alerted</h3><p>Nothing alerted.</p>"
    ranked = sorted(incidents, key=lambda i: (i.resolved is not None, -i.fired.value))
    rows = [
        [
            _esc(i.model),
            _esc(i.detector),
            _when(i.fired),
            _when(i.resolved)
            if i.resolved is not None
            else f"accepted {_when(i.accepted)}"
            if i.accepted is not None
            else "<b>still open</b>",
            _esc(i.severity),
            _incident_worst(i, detections),
            _what_to_do(i, last_end, db),
        ]
        for i in ranked[:_SUMMARY_INCIDENTS]
    ]
    head = (
        "model",
        "detector",
        "fired (window start)",
        "ended (window end)",
        "peak severity",
        "worst value while alerting",
        "what to do",
    )
    more = len(ranked) - _SUMMARY_INCIDENTS
    note = (
        "<p class='note'>Open incidents first, then the newest. "
        + (f"{more:,} older incident(s) are in the Alerts table below." if more > 0 else "")
        + "</p>"
    )
    return "<h3>What alerted</h3>" + note + _table(head, rows, numeric={5})


def _incident_worst(incident: Incident, detections: pd.DataFrame) -> str:
    """The incident's worst window judged 'alert' (highest value ÷ threshold, so a burn rate
    and a p95 of one latency incident compare), with its value and when; blank when its
    windows are not in the report (another file, or outside --since/--until)."""
    if detections.empty:
        return ""
    mine = detections[
        (detections["model"] == incident.model)
        & (detections["detector"] == incident.detector)
        & (detections["verdict"] == "alert")
        & detections["value"].notna()
        & (detections["window_start"] >= incident.fired)
    ]
    if incident.resolved is not None:
        mine = mine[mine["window_start"] < incident.resolved]
    if mine.empty:
        return ""
    worst = mine.loc[_ranked_by_excess(mine).index[0]]
    amount = _amount(incident.detector, worst["value"], str(worst["condition"]))
    return f"{amount} <span class='note'>({_when(worst['window_start'])})</span>"


def _ranked_by_excess(rows: pd.DataFrame) -> pd.DataFrame:
    """Rows by value ÷ threshold, largest first, then those without a threshold (a window
    of an open incident too small to test alone) by value: a ratio and a value in ms do not
    compare, and ranking them together put a 21-call window above the incident's worst."""
    threshold = rows["threshold"].where(rows["threshold"] > 0)
    ranked = rows.assign(_excess=rows["value"] / threshold, _has=threshold.notna())
    return ranked.sort_values(
        ["_has", "_excess", "value"], ascending=False, kind="stable", na_position="last"
    )


def _what_to_do(incident: Incident, last_end: pd.Timestamp | None, db: str | None) -> str:
    """One line for an open or recently resolved incident (README, alerting: a sustained level
    shift keeps firing until someone accepts it as the new baseline); blank for older ones."""
    if incident.severity == "info":
        return "Information only (never pages): read it beside this model's other incidents."
    accept = (
        f"<code>lookout baseline accept --model {_esc(incident.model)} --detector "
        f"{_esc(incident.detector)} {'--db ' + _esc(db) if db else '[--config C | --db FILE]'}"
        "</code>"
    )
    if incident.resolved is None and incident.accepted is not None:
        return (
            f"Its level was accepted as the baseline at {_when(incident.accepted)}: the "
            "incident closes at the next window a worker judges (this file's last window "
            "was judged before), and the detector is quiet at this level from then on."
        )
    if incident.resolved is None and incident.sustained:
        return (
            f"Sustained level shift since {_when(incident.fired)}: if the new level is "
            f"expected, accept it as the baseline with {accept} (stop the worker first; the "
            "incident then resolves); if not, find what changed then. It keeps firing until "
            "one or the other."
        )
    if incident.resolved is None:
        return (
            f"Find what changed at {_when(incident.fired)} ({_esc(incident.detector)} panel of "
            f"{_esc(incident.model)} below). It resolves once the windows are back at the "
            "pre-incident level; a lasting change is announced as a sustained level shift after "
            f"<code>alerting.sustained_after</code> (6 h by default), which {accept} accepts."
        )
    if last_end is not None and incident.resolved >= last_end - _RECENT:
        lasted = _lasted(incident.resolved - incident.fired)
        return (
            f"Resolved after {lasted}: nothing to do now; if it recurs, start from what "
            f"changed at {_when(incident.fired)}."
        )
    return ""


def _lasted(span: pd.Timedelta) -> str:
    hours, rest = divmod(int(span.total_seconds()), 3600)
    return f"{hours} h {rest // 60:02d} min" if hours else f"{rest // 60} min"


#: what one unit of a detector's sample is
_SAMPLE_UNITS = {"embedding_drift": "embeddings"}


def _worst_judged(detections: pd.DataFrame) -> str:
    """Per detector, its worst window among those it judged (ok or alert: a window of
    insufficient_data has a value but no verdict, and a 20-call window's p95 is noise), alert
    windows before ok ones, then by value ÷ threshold. Each says its verdict and sample size:
    an 'ok' window above the threshold was not significant, the largest normal swing."""
    head = (
        "detector",
        "model",
        "window",
        "value",
        "threshold (minimum effect)",
        "value / threshold",
        "verdict",
        "sample (in the window)",
    )
    parts = [
        "<h3>Worst judged window per detector</h3><p class='note'>Only windows a detector "
        "judged (verdict ok or alert; not insufficient_data). A detector's alert windows come "
        "first, then by value ÷ threshold. The threshold is the minimum effect: a window "
        "alerts only if its test is also significant, so an <i>ok</i> window above it did not "
        "alert and is a normal swing, not a problem.</p>"
    ]
    judged = detections[(detections["verdict"].isin(("ok", "alert"))) & detections["value"].notna()]
    if judged.empty:
        return "".join([*parts, "<p>No window was judged yet.</p>"])
    rows = []
    in_order = dict.fromkeys(p.detector for p in PANELS)  # latency has two panels: one row
    present = set(detections["detector"])
    for detector in [*(d for d in in_order if d in present), *sorted(present - set(in_order))]:
        mine = _ranked_by_excess(judged[judged["detector"] == detector])
        if mine.empty:
            never = "never judged: see Data quality and coverage"
            rows.append([_esc(detector), "", "", "", "", "", never, ""])
            continue
        alerted = mine[mine["verdict"] == "alert"]
        worst = (alerted if len(alerted) else mine).iloc[0]
        rows.append(_worst_row(detector, worst))
    parts.append(_table(head, rows, numeric={3, 4, 5, 7}))
    return "".join(parts)


def _worst_row(detector: str, worst: pd.Series) -> list[str]:
    condition = str(worst["condition"])
    ratio = worst["_excess"] if pd.notna(worst["threshold"]) and worst["threshold"] > 0 else None
    verdict = "alert" if worst["verdict"] == "alert" else "ok (did not alert)"
    unit = _SAMPLE_UNITS.get(detector, "calls")
    return [
        _esc(detector),
        _esc(worst["model"]),
        _when(worst["window_start"]),
        _amount(detector, worst["value"], condition),
        _amount(detector, worst["threshold"], condition),
        f"{ratio:.2f}×" if ratio is not None else "",
        _esc(verdict),
        f"{int(worst['sample_size']):,} {unit}",
    ]


def _key(window_seconds: int) -> str:
    """The legend in words, and what the drift statistics mean."""
    return _KEY.replace("{window}", f"{window_seconds:,} s")


_KEY = (
    "<h2>How to read the plots</h2><p class='key'>"
    "<span style='border-top:2px solid #1f77b4'></span>the window's value · "
    "<span style='border-top:2px dashed #d62728'></span>minimum effect, <b>not</b> an alert "
    "threshold: a window alerts only when its test is significant (p &lt; alpha, on the window "
    "alone or pooled with the windows before it) <i>and</i> the change is at least this large, "
    "so windows above the line with verdict ok are normal, and a pooled test can alert on a "
    "window below it; in the SLO panel, the rule's burn-rate factor, which its long and short "
    "windows must both exceed · "
    "<span style='border-top:2px dotted #7f7f7f'></span>baseline: the past windows it is "
    "compared with · <b style='color:#d62728'>●</b> a window judged 'alert': the verdict, "
    "whatever the lines show; while an incident is open its windows stay 'alert', also below "
    "the line, until the test of a return to the pre-incident level clears · "
    f"<span style='background:{SEVERITY_FILL['critical']}'></span>critical, "
    f"<span style='background:{SEVERITY_FILL['warning']}'></span>warning, "
    f"<span style='background:{SEVERITY_FILL['info']}'></span>info incident, shaded from "
    "the window it fired in to the window it resolved in.</p>"
    "<p class='note'>A window a detector did not judge (verdict <i>insufficient_data</i>: too "
    "few calls, no baseline or reference yet) is left out of its panel: its lines break there "
    "and the panel's title counts such windows. Its value was never tested (a block rate of 3 "
    "calls can be 33%), so it is not drawn as if it had been; Data quality and coverage says "
    "why each detector could not judge. "
    "The x axis is event time: the {window} windows the records fall in, not "
    "when Lookout processed them. The minimum effect is the baseline × <code>min_ratio</code> "
    "for safety, latency and tokens, and <code>min_effect</code> for the drift detectors. "
    "<b>Embedding drift</b> is plotted as the squared maximum mean discrepancy "
    "(MMD²) between the window's prompt embeddings and the model's reference set, estimated "
    "from random Fourier features: 0 means the same distribution, larger means the prompts "
    "moved. Its verdict is not read off this line: the test is on a whitened statistic of the "
    "same features, and a window alerts when that test's p-value is below alpha and MMD² is "
    "at least <code>min_effect</code>. Its unbiased estimate can dip below 0 when nothing "
    "moved, which is shown as 0. "
    "<b>Response descriptors</b> (length, tokens, finish reasons, citations) are compared with "
    "the reference by effect size; they explain incidents and never page. A panel of more "
    "windows than it can draw says so in its title: its lines go through each run's lowest and "
    "highest window, and every alert window keeps its marker.</p>"
)


def _window_seconds(detections: pd.DataFrame) -> int:
    if detections.empty:
        return 60
    first = detections.iloc[0]
    return int((first["window_end"] - first["window_start"]).total_seconds())


def _alerts_table(incidents: list[Incident]) -> str:
    if not incidents:
        return "<h2>Alerts</h2><p>No alerts.</p>"
    rows = [
        [
            _when(i.fired),
            _when(i.resolved)
            if i.resolved is not None
            else f"accepted {_when(i.accepted)}"
            if i.accepted is not None
            else "<b>still firing</b>",
            _esc(i.severity),
            _esc(i.model),
            _esc(i.detector),
            _esc(i.summary),
        ]
        for i in incidents
    ]
    head = (
        "fired (window start)",
        "resolved (window end)",
        "severity",
        "model",
        "detector",
        "what fired",
    )
    return "<h2>Alerts</h2><p class='note'>One row per incident, in event-time order.</p>" + _table(
        head, rows, numeric=set()
    )


def _models_table(merged: pd.DataFrame) -> str:
    def number(value: Any, fmt: str, unit: str = "") -> str:
        return "" if value is None or pd.isna(value) else format(float(value), fmt) + unit

    rows = [
        [
            _esc(m["model"]),
            number(m["windows"], ",.0f"),
            number(m["records"], ",.0f"),
            number(None if pd.isna(m["block_rate"]) else m["block_rate"] * 100, ".2f", "%"),
            number(m["latency_mean_ms"], ",.0f", " ms"),
            number(m["output_tokens_per_call"], ",.0f"),
        ]
        for m in _records(merged)
    ]
    head = ("model", "windows", "records", "blocked", "mean latency", "output tokens / call")
    return "<h2>Models</h2>" + _table(head, rows, numeric={1, 2, 3, 4, 5})


def _records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    return [{str(k): v for k, v in row.items()} for row in frame.to_dict("records")]


_DETECTIONS = (
    "SELECT model, detector, condition, window_start, window_end, verdict, value, threshold, "
    "baseline, sample_size FROM detections WHERE {where} ORDER BY window_start"
)

_MODELS = (
    "SELECT model, count(DISTINCT window_start) AS windows, sum(records)::BIGINT AS records, "
    "sum(late_records)::BIGINT AS late_records, "
    "sum(blocked) / nullif(sum(calls), 0) AS block_rate, "
    "sum(latency_sum_ms) / nullif(sum(latency_count), 0) AS latency_mean_ms, "
    "sum(output_tokens) / nullif(sum(token_calls), 0) AS output_tokens_per_call "
    "FROM window_metrics_merged WHERE {where} GROUP BY model ORDER BY model"
)


def models_in(sink: DuckDBSink) -> list[str]:
    """Every model the file holds a window or a verdict of (what --model may name)."""
    rows = sink.query(
        "SELECT DISTINCT model FROM window_metrics UNION SELECT DISTINCT model FROM detections"
    )
    return sorted(str(r[0]) for r in rows)


def write_report(
    sink: DuckDBSink,
    path: Path,
    *,
    title: str,
    second_opinion: SecondOpinion | None = None,
    scope: Scope | None = None,
) -> Path:
    """Write the report of what `sink` holds within `scope` (all of it by default) to
    `path`. A --model the file does not hold raises `ScopeError` before anything is written."""
    scope = scope or Scope()
    if scope.models:
        problem = unknown_models(scope, models_in(sink))
        if problem:
            raise ScopeError(problem)
    detections = scoped_frame(sink, _DETECTIONS, scope)
    merged = scoped_frame(sink, _MODELS, scope)
    incidents = with_accepts(
        [i for i in incidents_from(alert_rows(sink, scope)) if scope.overlaps(i.fired, i.resolved)],
        sink,
    )
    quality = model_quality(
        merged,
        detector_coverage(sink, scope),
        quarantined(sink, scope),
        [p.detector for p in PANELS],
        time_limited=scope.since is not None or scope.until is not None,
    )
    db = str(sink.path) if isinstance(getattr(sink, "path", None), Path) else None
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>{_esc(title)}</title><style>{_STYLE}</style></head><body>",
        f"<h1>{_esc(title)}</h1>",
        f"<p class='note'>Only {_esc(scope.describe())}.</p>" if scope.limited else "",
        _summary(detections, merged, incidents, db=db),
        _models_table(merged),
        coverage_section(quality),
        _key(_window_seconds(detections)),
        *_figures(detections, incidents),
        _alerts_table(incidents),
    ]
    if second_opinion is not None:
        parts.append(_second_opinions(sink, incidents, second_opinion))
    parts.append("</body></html>")
    path.write_text("\n".join(p for p in parts if p), encoding="utf-8")
    return path


def _figures(detections: pd.DataFrame, incidents: list[Incident]) -> list[str]:
    """One figure per model with plotly's script inlined once, in the first (no network)."""
    if detections.empty:
        return []
    first_start = pd.Timestamp(detections["window_start"].min())
    last_end = pd.Timestamp(detections["window_end"].max())
    out: list[str] = []
    for model in sorted(detections["model"].unique()):
        fig = model_figure(str(model), detections, incidents, last_end, first_start)
        if fig is not None:
            out.append(
                fig.to_html(full_html=False, include_plotlyjs=not out, config={"responsive": True})
            )
    return out


def _second_opinions(
    sink: DuckDBSink, incidents: list[Incident], second_opinion: SecondOpinion
) -> str:
    drifted = [i for i in incidents if i.detector == "embedding_drift"][:3]
    items = []
    for incident in drifted:
        text = second_opinion(sink, incident.model, incident.fired)
        if text:
            items.append(f"<li>{_esc(incident.model)} {_when(incident.fired)}: {_esc(text)}</li>")
    if not items:
        return ""
    return "<h2>Embedding drift: evidently's second opinion</h2><ul>" + "".join(items) + "</ul>"
