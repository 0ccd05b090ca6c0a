"""An HTML report of a run: what an SRE or ML engineer looks at instead of reading tables.

One self-contained file: per model, block rate, p95 latency, output tokens per call and the
embedding drift statistic over time, with alerting windows marked; the alert log; and for the
windows that drifted, evidently's embedding-drift verdict as a second opinion.
"""

from __future__ import annotations

import html
import logging
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from worker.sinks.duckdb_sink import DuckDBSink

log = logging.getLogger("lookout.report")

_PANELS: tuple[tuple[str, str, str], ...] = (
    ("safety", "block rate", "value"),
    ("latency", "p95 latency (ms)", "value"),
    ("tokens", "output tokens per call", "value"),
    ("embedding_drift", "embedding drift statistic", "value"),
)

SecondOpinion = Callable[[DuckDBSink, str, pd.Timestamp], str | None]


def _frame(sink: DuckDBSink, sql: str) -> pd.DataFrame:
    with sink._lock:
        return sink._con.execute(sql).df()


def write_report(
    sink: DuckDBSink,
    path: Path,
    *,
    title: str,
    second_opinion: SecondOpinion | None = None,
) -> Path:
    detections = _frame(
        sink,
        "SELECT model, detector, window_start, verdict, value, threshold, baseline "
        "FROM detections ORDER BY window_start",
    )
    alerts = _frame(
        sink,
        "SELECT emitted_at, status, severity, model, detector, window_start, summary "
        "FROM alerts ORDER BY window_start, emitted_at",
    )
    merged = _frame(
        sink,
        "SELECT model, count(*) AS windows, sum(records)::BIGINT AS records, "
        "sum(blocked) / nullif(sum(calls), 0) AS block_rate FROM window_metrics_merged "
        "GROUP BY model ORDER BY model",
    )
    parts = [
        f"<html><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
        "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:4px 8px;font-size:13px}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        "<h2>Models</h2>",
        merged.to_html(index=False, float_format=lambda v: f"{v:.4f}"),
    ]
    include_js = True
    for model in sorted(detections["model"].unique()) if len(detections) else []:
        fig = make_subplots(
            rows=len(_PANELS),
            cols=1,
            shared_xaxes=True,
            subplot_titles=[label for _, label, _ in _PANELS],
        )
        for row, (detector, label, column) in enumerate(_PANELS, start=1):
            d = detections[(detections["model"] == model) & (detections["detector"] == detector)]
            if d.empty:
                continue
            fig.add_trace(
                go.Scatter(
                    x=d["window_start"], y=d[column], mode="lines", name=label, showlegend=False
                ),
                row=row,
                col=1,
            )
            fig.add_trace(
                go.Scatter(
                    x=d["window_start"],
                    y=d["threshold"],
                    mode="lines",
                    line={"dash": "dot", "width": 1},
                    name="threshold",
                    showlegend=False,
                ),
                row=row,
                col=1,
            )
            firing = d[d["verdict"] == "alert"]
            fig.add_trace(
                go.Scatter(
                    x=firing["window_start"],
                    y=firing[column],
                    mode="markers",
                    marker={"color": "red", "size": 7},
                    name="alert",
                    showlegend=False,
                ),
                row=row,
                col=1,
            )
        fig.update_layout(height=220 * len(_PANELS), title_text=model, margin={"t": 60})
        parts.append(fig.to_html(full_html=False, include_plotlyjs=include_js))
        include_js = False
    parts.append("<h2>Alerts</h2>")
    parts.append(alerts.to_html(index=False) if len(alerts) else "<p>No alerts.</p>")
    if second_opinion is not None:
        drifted = alerts[(alerts["detector"] == "embedding_drift") & (alerts["status"] == "firing")]
        if len(drifted):
            parts.append("<h2>Embedding drift: evidently's second opinion</h2><ul>")
            for _, a in drifted.head(3).iterrows():
                text = second_opinion(sink, str(a["model"]), a["window_start"])
                if text:
                    parts.append(
                        f"<li>{html.escape(str(a['model']))} {a['window_start']}: "
                        f"{html.escape(text)}</li>"
                    )
            parts.append("</ul>")
    parts.append("</body></html>")
    path.write_text("\n".join(parts), encoding="utf-8")
    return path
