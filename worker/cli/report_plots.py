"""The report's plots: one figure per model, one panel per detector, readable without the code.

Each panel shows the window's value (blue line), the detector's minimum effect (red dashes),
the baseline it is compared with (grey dots), the windows whose verdict was "alert" (red dots)
and each incident shaded from the window it fired in to the window it resolved in. Every axis
names its unit; the x axis is event time (the windows), not when Lookout ran.

The dashed line is not an alert threshold, and is not called one: a window alerts when its
test is significant (p < alpha, on the window alone or pooled with the windows before it) *and*
the effect is at least that large (`threshold` in the detections table is that minimum: the
baseline × `min_ratio` for safety, latency and tokens, `min_effect` for the drift detectors;
embedding drift plots MMD² while its test is on a whitened statistic). On a stream without
incidents 14 to 28 of 116 judged safety windows sat above the line, then labelled "threshold
(alert above)", with verdict ok. The red dots are the verdicts; the line says how large a
change must at least be.

A window a detector did not judge (verdict insufficient_data: too few calls, no baseline or
reference yet) is left out of its panel's lines, which break there, and the panel's title counts
such windows. Safety carries the block rate of a 3-call window as its value all the same: drawn
on the line, 1 blocked call of 3 and 2 of 4 were 33% and 50% spikes among 1% windows, read as
incidents no test had found. A monitoring chart leaves a metric out where it was not computed
rather than draw an untested number as a measurement; the data-quality section lists them.

A series of more than `MAX_POINTS` windows (ten days of one-minute windows is 14,400) is drawn
from the lowest and the highest value of each run of windows, so a spike stays visible and the
file stays small; every alert window keeps its marker, and the panel's title says so.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
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
    #: what the dashed line (the detections' `threshold`) is, in the legend's words
    limit: str = ""
    #: the conditions whose `threshold` that is (safety's ceiling is another quantity)
    limit_conditions: tuple[str, ...] = ()


#: the dashed line of a detector that compares with a baseline (`threshold` = baseline × min_ratio)
MIN_RATIO_LIMIT = "minimum effect: baseline × min_ratio (an alert also needs p < alpha)"
#: the dashed line of a drift detector (`threshold` = `min_effect`)
MIN_EFFECT_LIMIT = "minimum effect: min_effect (an alert also needs p < alpha)"


PANELS: tuple[Panel, ...] = (
    Panel(
        "safety",
        ("block_rate_above_baseline", "block_rate_above_ceiling"),
        "Safety: share of calls blocked (prompt or response)",
        "blocked calls (%)",
        scale=100.0,
        from_zero=True,
        limit=MIN_RATIO_LIMIT,
        limit_conditions=("block_rate_above_baseline",),
    ),
    Panel(
        "latency",
        ("p95_above_baseline",),
        "Latency: 95th percentile of call latency",
        "p95 latency (ms)",
        from_zero=True,
        limit=MIN_RATIO_LIMIT,
        limit_conditions=("p95_above_baseline",),
    ),
    Panel(
        "latency",
        ("slo_burn_rate_page", "slo_burn_rate_ticket"),
        "Latency SLO: error-budget burn rate of the decisive rule (1 = the budget lasts the "
        "SLO period)",
        "burn rate (× budget)",
        from_zero=True,
        limit="the rule's burn-rate factor (it alerts when its long and short windows both exceed "
        "it)",
        limit_conditions=("slo_burn_rate_page", "slo_burn_rate_ticket"),
    ),
    Panel(
        "tokens",
        ("output_tokens_above_baseline",),
        "Tokens: mean output tokens per call",
        "output tokens per call",
        from_zero=True,
        limit=MIN_RATIO_LIMIT,
        limit_conditions=("output_tokens_above_baseline",),
    ),
    Panel(
        "embedding_drift",
        ("embedding_distribution_shift",),
        "Embedding drift: MMD² of prompt embeddings vs the model's reference (0 = no change)",
        "MMD² (unitless, ≥ 0)",
        from_zero=True,
        limit="minimum effect: MMD² ≥ min_effect (an alert also needs the whitened test's "
        "p < alpha)",
        limit_conditions=("embedding_distribution_shift",),
    ),
    Panel(
        "descriptor_drift",
        ("descriptor_distribution_shift",),
        "Response descriptors: largest effect size vs the reference (info only, never pages)",
        "effect size (0–1)",
        from_zero=True,
        limit=MIN_EFFECT_LIMIT,
        limit_conditions=("descriptor_distribution_shift",),
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
    #: the tracker announced it as a sustained level shift (`alerting.sustained_after`)
    sustained: bool = False
    #: when its level was accepted as the baseline (`lookout baseline accept`) while open: it
    #: closes at the next judged window, which a finished file never gets
    accepted: pd.Timestamp | None = None


#: the verdicts of a window its detector judged; any other (insufficient_data) is not plotted
JUDGED = ("ok", "alert")
#: the columns a panel draws lines through, blank where the detector did not judge the window
_LINE_COLUMNS = ("value", "threshold", "baseline")


def judged_only(rows: pd.DataFrame) -> pd.DataFrame:
    """`rows` with their lines' values blanked where the detector did not judge the window.
    The window stays, as a gap: dropping it would join the windows either side of it with a
    line no verdict stands for, and the count of windows a panel states would be off."""
    judged = rows["verdict"].isin(JUDGED)
    return rows.assign(**{column: rows[column].where(judged) for column in _LINE_COLUMNS})


#: a series longer than this is drawn from each run's lowest and highest value (`drawn_rows`)
MAX_POINTS = 3000
#: how many runs a long series is cut into: at most twice as many points are drawn
RUNS = 1000


def drawn_rows(rows: pd.DataFrame, most: int = MAX_POINTS, runs: int = RUNS) -> pd.DataFrame:
    """The windows a panel draws its lines through: all of them up to `most`, else the lowest
    and the highest value of each of `runs` runs of consecutive windows (a spike or a dip
    stays, a flat stretch is thinned), and the first window of a run without any value (so a
    gap in the data still breaks the line). A plain every-n-th sample would drop most spikes.
    Alert markers are drawn from all windows, not from these."""
    n = len(rows)
    if n <= most:
        return rows
    position = np.arange(n)
    run = position * runs // n
    values = rows["value"].to_numpy(dtype=float, na_value=np.nan)
    valued = ~np.isnan(values)
    found = pd.DataFrame({"run": run[valued], "at": position[valued], "value": values[valued]})
    by_run = found.groupby("run")["value"]
    keep = set(found.loc[by_run.idxmin(), "at"]) | set(found.loc[by_run.idxmax(), "at"])
    empty = np.setdiff1d(np.arange(runs), found["run"].unique())
    keep |= {int(np.searchsorted(run, r)) for r in empty if np.searchsorted(run, r) < n}
    return rows.iloc[sorted(int(k) for k in keep)]


def _utc(times: pd.Series) -> np.ndarray:
    """Window starts as naive UTC datetime64 (the axis says UTC): plotly copies a numpy array
    of these in one piece, where a series of tz-aware timestamps is copied object by object
    (two thirds of a ten-day report's time)."""
    return np.asarray(times.dt.tz_convert("UTC").dt.tz_localize(None), dtype="datetime64[ns]")


def _naive(stamp: pd.Timestamp) -> pd.Timestamp:
    return stamp.tz_convert("UTC").tz_localize(None) if stamp.tzinfo is not None else stamp


def _panel_title(panel: Panel, drawn: int, windows: int, unjudged: int) -> str:
    """The panel's title; a line saying how many windows were left out because the detector
    did not judge them (a gap in a line is otherwise read as missing data), and one saying
    by how much the lines were thinned and what was kept."""
    notes: list[str] = []
    if unjudged:
        notes.append(
            f"{unjudged:,} of {windows:,} windows not judged (insufficient_data): left out, "
            "see Data quality and coverage"
        )
    if drawn != windows:
        notes.append(
            f"downsampled: lines drawn through {drawn:,} of {windows:,} windows (the lowest "
            "and highest of each run); every 'alert' window keeps its marker"
        )
    return "".join(
        [panel.title, *(f"<br><span style='font-size:11px'>{note}</span>" for note in notes)]
    )


def model_figure(
    model: str,
    detections: pd.DataFrame,
    incidents: Sequence[Incident],
    last_window_end: pd.Timestamp,
    first_window_start: pd.Timestamp | None = None,
) -> go.Figure | None:
    """The figure for one model, with a panel per detector that has a value in a window it
    judged (`judged_only`); None if none. Incidents are shaded within [first_window_start,
    last_window_end]: one that began before the report's range starts at its edge rather than
    stretching the axis back to it."""
    mine = detections[detections["model"] == model]
    panels = []
    titles: list[str] = []
    for panel in PANELS:
        rows = mine[(mine["detector"] == panel.detector) & mine["condition"].isin(panel.conditions)]
        shown = judged_only(rows.sort_values("window_start"))
        if shown["value"].notna().any():
            drawn = drawn_rows(shown)
            unjudged = int((~rows["verdict"].isin(JUDGED)).sum())
            panels.append((panel, shown, drawn))
            titles.append(_panel_title(panel, len(drawn), len(shown), unjudged))
    if not panels:
        return None
    fig = make_subplots(
        rows=len(panels),
        cols=1,
        shared_xaxes=True,
        vertical_spacing=0.09 / max(len(panels) - 1, 1) * 2,
        subplot_titles=titles,
    )
    named: set[str] = set()
    for row, (panel, rows, drawn) in enumerate(panels, start=1):
        _add_panel(fig, row, panel, rows, drawn, named=named)
        for incident in incidents:
            if incident.model == model and incident.detector == panel.detector:
                end = incident.resolved if incident.resolved is not None else last_window_end
                start = incident.fired
                if first_window_start is not None:
                    start = max(start, first_window_start)
                fig.add_vrect(
                    x0=_naive(start),
                    x1=_naive(min(end, last_window_end)),
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
    _add_legend_only_entries(fig)
    # each further line of the first panel's title (its notes) needs room below the legend
    below_legend = 32 + 16 * titles[0].count("<br>")
    height = 260 * len(panels) + 220 + below_legend - 32
    top, bottom = 140 + below_legend - 32, 80
    fig.update_layout(
        height=height,
        # the model's name at the very top, the legend between it and the first panel's title
        title={"text": model, "x": 0.0, "xanchor": "left", "y": 1 - 12 / height, "yanchor": "top"},
        margin={"t": top, "b": bottom, "r": 20},
        legend={
            "orientation": "h",
            "yanchor": "bottom",
            "y": 1.0 + below_legend / (height - top - bottom),
            "x": 0.0,
        },
        hovermode="x unified",
        # the dashed line's name says what it is; hover must not cut it to 15 characters
        hoverlabel={"namelength": -1},
        template="plotly_white",
    )
    return fig


def _add_legend_only_entries(fig: go.Figure) -> None:
    """Legend entries that hold in every figure: the alert marker (a model may have no
    alerting window, and plotly leaves an empty trace out of the legend) and the shading
    (shapes have no legend entries of their own)."""
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


def _add_panel(
    fig: go.Figure,
    row: int,
    panel: Panel,
    rows: pd.DataFrame,
    drawn: pd.DataFrame,
    *,
    named: set[str],
) -> None:
    """The panel's lines through `drawn` (all its windows, or `drawn_rows` of them) and a
    marker on every alert window of `rows`. A legend entry is shown once per name in the
    figure (`named`): the dashed line has a different meaning in some panels."""
    x = _utc(drawn["window_start"])

    def scaled(values: pd.Series) -> pd.Series:
        scaled_values = values.astype(float) * panel.scale
        return scaled_values.clip(lower=0.0) if panel.from_zero else scaled_values

    # the line is the threshold of the conditions it names only (safety's ceiling is not the
    # baseline's minimum effect; its windows alert and carry their marker)
    limit = drawn["threshold"].where(drawn["condition"].isin(panel.limit_conditions))
    traces = [
        go.Scatter(
            x=x,
            y=scaled(drawn["value"]),
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
            y=scaled(limit),
            mode="lines",
            line={"color": THRESHOLD_COLOR, "width": 2, "dash": "dash"},
            name=panel.limit,
            legendgroup="limit",
            connectgaps=False,
        ),
        go.Scatter(
            x=x,
            y=scaled(drawn["baseline"]),
            mode="lines",
            line={"color": BASELINE_COLOR, "width": 2, "dash": "dot"},
            name="baseline",
            legendgroup="baseline",
        ),
    ]
    for trace in traces:
        trace.showlegend = trace.name not in named
        named.add(trace.name)
    alerting = rows[rows["verdict"] == "alert"]
    marker = go.Scatter(
        x=_utc(alerting["window_start"]),
        y=scaled(alerting["value"]),
        mode="markers",
        marker={"color": THRESHOLD_COLOR, "size": 7},
        name="window judged 'alert'",
        legendgroup="alert",
        showlegend=False,  # its legend entry is added once per figure
    )
    for trace in [*traces, marker]:
        fig.add_trace(trace, row=row, col=1)
