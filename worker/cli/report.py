"""An HTML report of a run: what an SRE or ML engineer looks at instead of reading tables.

One self-contained file (plotly's script inline, no network): a summary first (models, windows,
alerts, the worst window per detector), a key to the plots, one figure per model (see
report_plots.py), every alert as an incident from the window it fired in to the window it
resolved in, sorted by event time, and for the windows that drifted, evidently's
embedding-drift verdict as a second opinion.
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
from worker.cli.report_plots import PANELS, SEVERITY_FILL, Incident, model_figure
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
"""

#: how a detector's value reads in a table: (unit words, scale, digits)
_UNITS = {
    "safety": ("% blocked", 100.0, 2),
    "latency": ("ms p95", 1.0, 0),
    "tokens": ("output tokens/call", 1.0, 0),
    "embedding_drift": ("MMD²", 1.0, 4),
    "descriptor_drift": ("effect size", 1.0, 3),
}


def _frame(sink: DuckDBSink, sql: str) -> pd.DataFrame:
    with sink._lock:
        return sink._con.execute(sql).df()


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


def alert_rows(sink: DuckDBSink) -> pd.DataFrame:
    """The alert changes as `incidents_from` reads them: one row per firing or resolve."""
    return _frame(
        sink,
        "SELECT dedup_key, emitted_at, status, severity, model, detector, window_start, "
        "window_end, summary FROM alerts ORDER BY emitted_at",
    )


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
    return replace(old, severity=severity, summary=summary)


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


def _summary(detections: pd.DataFrame, merged: pd.DataFrame, incidents: list[Incident]) -> str:
    models = sorted(merged["model"].unique()) if len(merged) else []
    starts = detections["window_start"] if len(detections) else pd.Series(dtype="object")
    by_severity = {s: sum(1 for i in incidents if i.severity == s) for s in SEVERITY_FILL}
    still = sum(1 for i in incidents if i.resolved is None)
    lines = [
        f"<b>{len(models)}</b> model(s): {_esc(', '.join(models)) or 'none'}",
        f"<b>{int(merged['windows'].sum()) if len(merged) else 0:,}</b> (model, window) rows "
        f"over <b>{starts.nunique():,}</b> windows"
        + (f", {_when(starts.min())} to {_when(starts.max())}" if len(starts) else ""),
        f"<b>{int(merged['records'].sum()) if len(merged) else 0:,}</b> records",
        (
            f"<b>{len(incidents)}</b> alert(s): "
            + ", ".join(f"{n} {s}" for s, n in by_severity.items())
            + (f"; <b>{still}</b> still firing" if still else "; all resolved")
        )
        if incidents
        else "no alerts",
    ]
    parts = ["<h2>Summary</h2><ul>", *(f"<li>{line}</li>" for line in lines), "</ul>"]
    parts.append("<h3>Worst window per detector</h3>")
    judged = detections[
        detections["value"].notna()
        & detections["threshold"].notna()
        & (detections["threshold"] > 0)
    ].copy()
    if judged.empty:
        return "".join([*parts, "<p>No window was judged yet.</p>"])
    judged["ratio"] = judged["value"] / judged["threshold"]
    rows = []
    in_order = dict.fromkeys(p.detector for p in PANELS)  # latency has two panels: one row
    for detector in [d for d in in_order if d in set(judged["detector"])]:
        d = judged[judged["detector"] == detector]
        worst = d.loc[d["ratio"].idxmax()]
        rows.append(
            [
                _esc(detector),
                _esc(worst["model"]),
                _when(worst["window_start"]),
                _amount(detector, worst["value"], str(worst["condition"])),
                _amount(detector, worst["threshold"], str(worst["condition"])),
                f"{worst['ratio']:.2f}×",
                _esc(worst["verdict"]),
            ]
        )
    head = ("detector", "model", "window", "value", "threshold", "value / threshold", "verdict")
    parts.append(_table(head, rows, numeric={3, 4, 5}))
    return "".join(parts)


def _key(window_seconds: int) -> str:
    """The legend in words, and what the drift statistics mean."""
    return _KEY.replace("{window}", f"{window_seconds:,} s")


_KEY = (
    "<h2>How to read the plots</h2><p class='key'>"
    "<span style='border-top:2px solid #1f77b4'></span>the window's value · "
    "<span style='border-top:2px dashed #d62728'></span>threshold: a window alerts above it "
    "(when the test is also significant); while an incident is open its windows stay 'alert', "
    "also below the line, until the test of a return to the pre-incident level clears · "
    "<span style='border-top:2px dotted #7f7f7f'></span>baseline: the past windows it is "
    "compared with · <b style='color:#d62728'>●</b> a window judged 'alert' · "
    f"<span style='background:{SEVERITY_FILL['critical']}'></span>critical, "
    f"<span style='background:{SEVERITY_FILL['warning']}'></span>warning, "
    f"<span style='background:{SEVERITY_FILL['info']}'></span>info incident, shaded from "
    "the window it fired in to the window it resolved in.</p>"
    "<p class='note'>The x axis is event time: the {window} windows the records fall in, not "
    "when Lookout processed them. <b>Embedding drift</b> is the squared maximum mean discrepancy "
    "(MMD²) between the window's prompt embeddings and the model's reference set, estimated "
    "from random Fourier features: 0 means the same distribution, larger means the prompts "
    "moved; a window alerts when MMD² is above the threshold and the test's p-value is below "
    "alpha. Its unbiased estimate can dip below 0 when nothing moved, which is shown as 0. "
    "<b>Response descriptors</b> (length, tokens, finish reasons, citations) are compared with "
    "the reference by effect size; they explain incidents and never page.</p>"
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
            _when(i.resolved) if i.resolved is not None else "<b>still firing</b>",
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


def write_report(
    sink: DuckDBSink,
    path: Path,
    *,
    title: str,
    second_opinion: SecondOpinion | None = None,
) -> Path:
    detections = _frame(
        sink,
        "SELECT model, detector, condition, window_start, window_end, verdict, value, "
        "threshold, baseline FROM detections ORDER BY window_start",
    )
    alerts = alert_rows(sink)
    merged = _frame(
        sink,
        "SELECT model, count(DISTINCT window_start) AS windows, sum(records)::BIGINT AS records, "
        "sum(blocked) / nullif(sum(calls), 0) AS block_rate, "
        "sum(latency_sum_ms) / nullif(sum(latency_count), 0) AS latency_mean_ms, "
        "sum(output_tokens) / nullif(sum(token_calls), 0) AS output_tokens_per_call "
        "FROM window_metrics_merged GROUP BY model ORDER BY model",
    )
    incidents = incidents_from(alerts)
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>{_esc(title)}</title><style>{_STYLE}</style></head><body>",
        f"<h1>{_esc(title)}</h1>",
        _summary(detections, merged, incidents),
        _models_table(merged),
        _key(_window_seconds(detections)),
    ]
    last_end = pd.Timestamp(detections["window_end"].max()) if len(detections) else None
    include_js: bool | str = True
    for model in sorted(detections["model"].unique()) if len(detections) else []:
        assert last_end is not None
        fig = model_figure(str(model), detections, incidents, last_end)
        if fig is None:
            continue
        parts.append(
            fig.to_html(full_html=False, include_plotlyjs=include_js, config={"responsive": True})
        )
        include_js = False
    parts.append(_alerts_table(incidents))
    if second_opinion is not None:
        parts.append(_second_opinions(sink, incidents, second_opinion))
    parts.append("</body></html>")
    path.write_text("\n".join(parts), encoding="utf-8")
    return path


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
