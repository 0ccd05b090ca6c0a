"""The report's plots: one figure per model, one panel per detector, readable without the code.

Each panel shows the window's value (blue line), the threshold it is judged against (red
dashes), the baseline it is compared with (grey dots), the windows whose verdict was "alert"
(red dots) and each incident shaded from the window it fired in to the window it resolved in.
Every axis names its unit; the x axis is event time (the windows), not when Lookout ran.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots


@dataclass(frozen=True)
class Panel:
    detector: str
    #: conditions whose value is this panel's quantity (a cost-budget verdict is in USD, not in
    #: tokens per call, so it is left out of the tokens panel)
    conditions: tuple[str, ...]
    title: str
    axis: str
    #: multiplies value, threshold and baseline (a rate is shown in percent)
    scale: float = 1.0
    #: a statistic that cannot be negative starts its axis at zero
    from_zero: bool = False


PANELS: tuple[Panel, ...] = (
    Panel(
        "safety",
        ("block_rate_above_baseline", "block_rate_above_ceiling"),
        "Safety: share of calls blocked (prompt or response)",
        "blocked calls (%)",
        scale=100.0,
        from_zero=True,
    ),
    Panel(
        "latency",
        ("p95_above_baseline",),
        "Latency: 95th percentile of call latency",
        "p95 latency (ms)",
        from_zero=True,
    ),
    Panel(
        "latency",
        ("slo_burn_rate_page", "slo_burn_rate_ticket"),
        "Latency SLO: error-budget burn rate of the decisive rule (1 = the budget lasts the "
        "SLO period)",
        "burn rate (× budget)",
        from_zero=True,
    ),
    Panel(
        "tokens",
        ("output_tokens_above_baseline",),
        "Tokens: mean output tokens per call",
        "output tokens per call",
        from_zero=True,
    ),
    Panel(
        "embedding_drift",
        ("embedding_distribution_shift",),
        "Embedding drift: MMD² of prompt embeddings vs the model's reference (0 = no change)",
        "MMD² (unitless, ≥ 0)",
        from_zero=True,
    ),
    Panel(
        "descriptor_drift",
        ("descriptor_distribution_shift",),
        "Response descriptors: largest effect size vs the reference (info only, never pages)",
        "effect size (0–1)",
        from_zero=True,
    ),
)

SEVERITY_FILL = {
    "critical": "rgba(214, 39, 40, 0.15)",
    "warning": "rgba(255, 127, 14, 0.18)",
    "info": "rgba(31, 119, 180, 0.12)",
}
VALUE_COLOR = "#1f77b4"
THRESHOLD_COLOR = "#d62728"
BASELINE_COLOR = "#7f7f7f"


@dataclass(frozen=True)
class Incident:
    """An alert from the window it fired in to the window it resolved in (None: still open)."""

    model: str
    detector: str
    severity: str
    fired: pd.Timestamp
    resolved: pd.Timestamp | None
    summary: str


def model_figure(
    model: str,
    detections: pd.DataFrame,
    incidents: Sequence[Incident],
    last_window_end: pd.Timestamp,
) -> go.Figure | None:
    """The figure for one model, with a panel per detector that has values; None if none."""
    mine = detections[detections["model"] == model]
    panels = []
    for panel in PANELS:
        rows = mine[(mine["detector"] == panel.detector) & mine["condition"].isin(panel.conditions)]
        if rows["value"].notna().any():
            panels.append((panel, rows.sort_values("window_start")))
    if not panels:
        return None
    fig = make_subplots(
        rows=len(panels),
        cols=1,
        shared_xaxes=True,
        vertical_spacing=0.09 / max(len(panels) - 1, 1) * 2,
        subplot_titles=[p.title for p, _ in panels],
    )
    for row, (panel, rows) in enumerate(panels, start=1):
        _add_panel(fig, row, panel, rows, first=row == 1)
        for incident in incidents:
            if incident.model == model and incident.detector == panel.detector:
                fig.add_vrect(
                    x0=incident.fired,
                    x1=incident.resolved if incident.resolved is not None else last_window_end,
                    fillcolor=SEVERITY_FILL.get(incident.severity, SEVERITY_FILL["warning"]),
                    line_width=0,
                    layer="below",
                    row=row,
                    col=1,
                )
        fig.update_yaxes(
            title_text=panel.axis, rangemode="tozero" if panel.from_zero else "normal", row=row
        )
    fig.update_xaxes(title_text="window start (UTC, event time)", row=len(panels), col=1)
    # legend entries that hold in every figure: the alert marker (a model may have no alerting
    # window, and plotly leaves an empty trace out of the legend) and the shading (shapes have
    # no legend entries of their own)
    fig.add_trace(
        go.Scatter(
            x=[None],
            y=[None],
            mode="markers",
            marker={"color": THRESHOLD_COLOR, "size": 7},
            name="window judged 'alert'",
            legendgroup="alert",
        ),
        row=1,
        col=1,
    )
    for severity in ("critical", "warning", "info"):
        fig.add_trace(
            go.Scatter(
                x=[None],
                y=[None],
                mode="markers",
                marker={"symbol": "square", "size": 14, "color": SEVERITY_FILL[severity]},
                name=f"{severity} incident (fired → resolved)",
                legendgroup=f"incident-{severity}",
            ),
            row=1,
            col=1,
        )
    height = 260 * len(panels) + 220
    top, bottom = 140, 80
    fig.update_layout(
        height=height,
        # the model's name at the very top, the legend between it and the first panel's title
        title={"text": model, "x": 0.0, "xanchor": "left", "y": 1 - 12 / height, "yanchor": "top"},
        margin={"t": top, "b": bottom, "r": 20},
        legend={
            "orientation": "h",
            "yanchor": "bottom",
            "y": 1.0 + 32 / (height - top - bottom),
            "x": 0.0,
        },
        hovermode="x unified",
        template="plotly_white",
    )
    return fig


def _add_panel(fig: go.Figure, row: int, panel: Panel, rows: pd.DataFrame, *, first: bool) -> None:
    x = rows["window_start"]

    def scaled(column: str) -> pd.Series:
        values = rows[column].astype(float) * panel.scale
        return values.clip(lower=0.0) if panel.from_zero else values

    traces = [
        go.Scatter(
            x=x,
            y=scaled("value"),
            # markers too: a window with no judged neighbour (a lone window, one between
            # windows of too little data) draws no line at all
            mode="lines+markers",
            marker={"color": VALUE_COLOR, "size": 3},
            line={"color": VALUE_COLOR, "width": 1.6},
            name="window value",
            legendgroup="value",
        ),
        go.Scatter(
            x=x,
            y=scaled("threshold"),
            mode="lines",
            line={"color": THRESHOLD_COLOR, "width": 2, "dash": "dash"},
            name="threshold (alert above)",
            legendgroup="threshold",
            connectgaps=False,
        ),
        go.Scatter(
            x=x,
            y=scaled("baseline"),
            mode="lines",
            line={"color": BASELINE_COLOR, "width": 2, "dash": "dot"},
            name="baseline",
            legendgroup="baseline",
        ),
    ]
    alerting = rows[rows["verdict"] == "alert"]
    traces.append(
        go.Scatter(
            x=alerting["window_start"],
            y=(alerting["value"].astype(float) * panel.scale).clip(
                lower=0.0 if panel.from_zero else None
            ),
            mode="markers",
            marker={"color": THRESHOLD_COLOR, "size": 7},
            name="window judged 'alert'",
            legendgroup="alert",
        )
    )
    traces[-1].showlegend = False  # its legend entry is added once per figure
    for trace in traces[:-1]:
        trace.showlegend = first
    for trace in traces:
        fig.add_trace(trace, row=row, col=1)
