"""The dashed line in the report's panels says what it is: a minimum effect, not the alert
threshold.

It was labelled "threshold (alert above)", but no detector alerts on it alone: safety, latency
and tokens store baseline × `min_ratio` as `threshold` and also need a significant test, the
drift detectors store `min_effect`, and embedding drift's verdict comes from a whitened
statistic's p-value while its panel plots MMD². On a stream without incidents 14–28 of 116
judged safety windows sat above that line with verdict ok. The red markers (verdict "alert")
are what decided; the figure is read here as plotly draws it.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd

from schemas.detection import Detection
from tests.report_html import sections
from tests.window_detections import minute_detection
from worker.cli.report import write_report
from worker.cli.report_plots import model_figure
from worker.sink import Checkpoint
from worker.sinks.duckdb_sink import DuckDBSink

T0 = datetime(2026, 1, 5, 6, 0, tzinfo=UTC)
MODEL = "gemini-1.5-flash"

#: (detector, condition, value, threshold) of a window above its dashed line, verdict ok
ABOVE_THE_LINE = (
    ("safety", "block_rate_above_baseline", 0.04, 0.03),
    ("latency", "p95_above_baseline", 3900.0, 3600.0),
    ("latency", "slo_burn_rate_page", 15.0, 14.4),
    ("tokens", "output_tokens_above_baseline", 450.0, 390.0),
    ("embedding_drift", "embedding_distribution_shift", 0.03, 0.02),
    ("descriptor_drift", "descriptor_distribution_shift", 0.08, 0.05),
)


def window(i: int, detector: str, condition: str, value: float, threshold: float) -> Detection:
    return minute_detection(
        T0,
        i,
        detector=detector,
        model=MODEL,
        verdict="ok",
        condition=condition,
        value=value,
        threshold=threshold,
        baseline=threshold / 1.5,
        p_value=0.2,
        sample_size=300,
        reason="normal: not significant",
    )


def detections() -> list[Detection]:
    out = [window(i, *case) for case in ABOVE_THE_LINE for i in range(5)]
    # safety above its 25% ceiling: an alert on another quantity than the dashed line's
    ceiling = window(5, "safety", "block_rate_above_ceiling", 0.31, 0.25)
    return [*out, ceiling.model_copy(update={"verdict": "alert", "severity": "critical"})]


def frame() -> pd.DataFrame:
    return pd.DataFrame([d.model_dump() for d in detections()]).assign(
        window_start=lambda f: pd.to_datetime(f["window_start"], utc=True),
        window_end=lambda f: pd.to_datetime(f["window_end"], utc=True),
    )


def dashed(figure: Any) -> dict[str, Any]:
    """The dashed trace of each panel, by the title of the panel it is drawn in."""
    titles = {
        f"y{i + 1 if i else ''}": a.text.split("<br>")[0]
        for i, a in enumerate(figure.layout.annotations)
    }
    return {titles[t.yaxis]: t for t in figure.data if t.line and t.line.dash == "dash"}


def test_no_line_claims_to_be_the_alert_threshold() -> None:
    figure = model_figure(MODEL, frame(), [], pd.Timestamp(T0 + timedelta(minutes=6)))
    assert figure is not None
    names = [t.name for t in figure.data]
    assert not [n for n in names if "threshold" in n or "alert above" in n], names
    lines = dashed(figure)
    assert len(lines) == 6, list(lines)
    for title, trace in lines.items():
        if title.startswith("Latency SLO"):
            # the SLO rule's factor is what its burn rate is compared with, on two windows
            assert trace.name.startswith("the rule's burn-rate factor"), trace.name
            assert "long and short windows" in trace.name
        else:
            assert trace.name.startswith("minimum effect"), (title, trace.name)
            assert "an alert also needs" in trace.name and "p < alpha" in trace.name
    assert (
        "baseline × min_ratio" in lines["Safety: share of calls blocked (prompt or response)"].name
    )
    embedding = next(t for title, t in lines.items() if title.startswith("Embedding drift"))
    assert "min_effect" in embedding.name and "whitened test" in embedding.name


def test_the_ceiling_window_is_not_drawn_on_the_baselines_line() -> None:
    """Safety's ceiling is an absolute limit on another test (its lower confidence bound),
    not baseline × min_ratio: the line has a gap there, the alert marker stays."""
    figure = model_figure(MODEL, frame(), [], pd.Timestamp(T0 + timedelta(minutes=6)))
    assert figure is not None
    safety = next(t for title, t in dashed(figure).items() if title.startswith("Safety"))
    assert [None if pd.isna(y) else round(y, 6) for y in safety.y] == [3.0] * 5 + [None]
    markers = [t for t in figure.data if t.name == "window judged 'alert'" and t.yaxis == "y"]
    drawn = [[y for y in t.y if y is not None] for t in markers]  # one is the legend's
    assert [ys for ys in drawn if ys] == [[31.0]]


def test_the_key_says_the_markers_decide_and_the_line_is_a_minimum(tmp_path: Path) -> None:
    sink = DuckDBSink(tmp_path / "lookout.duckdb")
    sink.write_checkpoint(Checkpoint("w1", 0, detections=detections()))
    try:
        page = write_report(sink, tmp_path / "report.html", title="t")
    finally:
        sink.close()
    key = sections(page)["How to read the plots"].text
    assert "alert above" not in page.read_text()
    assert "minimum effect, not an alert threshold" in key
    assert "a window judged 'alert': the verdict, whatever the lines show" in key
    assert "the test is on a whitened statistic" in key
