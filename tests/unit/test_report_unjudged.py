"""A window a detector did not judge is not plotted as if it had been.

Safety carries a window's block rate as its value even when the window is too small to test
(2 to 6 calls: verdict insufficient_data), and the report drew those values on the judged line:
1 blocked call of 3 and 2 of 4 became 33% and 50% spikes among 1% windows, which an analyst read
as incidents no verdict ever raised. Here a file holds such a safety stream (and an embedding
detector that never judged a window) as `lookout report` reads it, attached read-only; the
plotted series are read out of the HTML the report writes, as a browser gets them.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from schemas.detection import Detection, Verdict
from tests.report_html import sections
from tests.window_detections import minute_detection
from worker.cli.report import write_report
from worker.sink import Checkpoint, PartialRow
from worker.sinks.duckdb_read_only import open_read_only
from worker.sinks.duckdb_sink import DuckDBSink

T0 = datetime(2026, 1, 5, 6, 0, tzinfo=UTC)
MODEL = "gpt-4o-mini"
WINDOWS = 30
#: window → (calls, blocked) of the windows too small to judge
SMALL = {8: (3, 1), 9: (4, 2), 20: (2, 1)}
#: the judged windows' block rate (9 of 900 calls)
JUDGED_RATE = 0.01


def safety(i: int, verdict: Verdict, rate: float, calls: int) -> Detection:
    """A safety window: the block rate is its value whether or not it was judged, and a
    baseline is known for the small windows too (the window was small, not the history)."""
    return minute_detection(
        T0,
        i,
        detector="safety",
        model=MODEL,
        verdict=verdict,
        condition="block_rate_above_baseline",
        value=rate,
        threshold=0.015 if verdict != "insufficient_data" else None,
        baseline=0.01,
        sample_size=calls,
        reason="not judged: too few calls" if verdict == "insufficient_data" else "normal",
    )


def never_judged(i: int) -> Detection:
    """Embedding drift without a reference yet: a statistic, but no verdict."""
    return minute_detection(
        T0,
        i,
        detector="embedding_drift",
        model=MODEL,
        verdict="insufficient_data",
        condition="embedding_distribution_shift",
        value=0.4,
        sample_size=50,
        reason="no reference yet: it holds 50 of the 2000 embeddings it needs",
    )


def detections() -> list[Detection]:
    out = []
    for i in range(WINDOWS):
        if i in SMALL:
            calls, blocked = SMALL[i]
            out.append(safety(i, "insufficient_data", blocked / calls, calls))
        else:
            out.append(safety(i, "ok", JUDGED_RATE, 900))
        out.append(never_judged(i))
    return out


def partials() -> list[PartialRow]:
    """The windows' records, so the data-quality section has the model to list."""
    start = int(T0.timestamp())
    return [
        PartialRow(MODEL, start + 60 * i, start + 60 * (i + 1), SMALL.get(i, (900, 9))[0], 0, {})
        for i in range(WINDOWS)
    ]


@dataclass(frozen=True)
class Plotted:
    """One panel as the page's plot data holds it: its title and each named line's points
    (x as the page writes it, y None where the line has no point)."""

    title: str
    lines: dict[str, list[tuple[str, float | None]]]


_SEPARATOR = re.compile(r",\s*")


def plotted(page: Path) -> list[Plotted]:
    """The panels of every figure in `page`, read from the data each `Plotly.newPlot` call is
    given: the series a reader's browser draws, whatever code produced them."""
    text = page.read_text(encoding="utf-8")
    decoder = json.JSONDecoder()
    panels: list[Plotted] = []
    for call in re.finditer(r"Plotly\.newPlot\(\s*\"[^\"]+\",\s*", text):
        traces, end = decoder.raw_decode(text, call.end())
        comma = _SEPARATOR.match(text, end)
        assert comma is not None, "newPlot's data is followed by its layout"
        layout, _ = decoder.raw_decode(text, comma.end())
        titles = [str(a["text"]) for a in layout.get("annotations", [])]
        for i, title in enumerate(titles):
            axis = f"y{i + 1}" if i else "y"
            lines: dict[str, list[tuple[str, float | None]]] = {}
            for trace in traces:
                if trace.get("yaxis", "y") == axis and trace.get("x") and trace["x"][0]:
                    points = list(zip(trace["x"], trace["y"], strict=True))
                    lines[str(trace["name"])] = [(str(x), _number(y)) for x, y in points]
            panels.append(Plotted(title, lines))
    return panels


def _number(value: Any) -> float | None:
    return None if value is None else float(value)


def _at(i: int) -> str:
    return f"2026-01-05T06:{i:02d}:00"


@pytest.fixture
def page(tmp_path: Path) -> Path:
    path = tmp_path / "lookout.duckdb"
    writer = DuckDBSink(path)
    writer.write_checkpoint(Checkpoint("w1", 0, partials=partials(), detections=detections()))
    writer.close()
    sink = open_read_only(path)  # as `lookout report` opens it
    try:
        return write_report(sink, tmp_path / "report.html", title="t")
    finally:
        sink.close()


def _safety_panel(page: Path) -> Plotted:
    (panel,) = [p for p in plotted(page) if p.title.startswith("Safety")]
    return panel


def test_no_unjudged_window_is_plotted_as_a_block_rate(page: Path) -> None:
    line = dict(_safety_panel(page).lines["window value"])
    drawn = {x: y for x, y in line.items() if y is not None}
    assert drawn, "the judged windows are drawn"
    assert max(drawn.values()) == pytest.approx(JUDGED_RATE * 100), (
        "no 33% or 50% point of a window of 2 to 4 calls"
    )
    assert len(drawn) == WINDOWS - len(SMALL)


def test_the_line_breaks_at_an_unjudged_window(page: Path) -> None:
    """A gap, not a line drawn straight across: no value was judged there."""
    panel = _safety_panel(page)
    for name in ("window value", "baseline"):
        line = dict(panel.lines[name])
        for i in SMALL:
            assert line.get(_at(i), "absent") is None, f"{name} at {_at(i)}: a gap"


def test_the_panel_says_how_many_windows_it_left_out(page: Path) -> None:
    title = _safety_panel(page).title
    assert f"{len(SMALL)} of {WINDOWS} windows not judged" in title, title
    assert "Data quality and coverage" in title, title


def test_a_detector_that_never_judged_gets_no_plotted_values(page: Path) -> None:
    assert [p.title for p in plotted(page) if p.title.startswith("Embedding drift")] == []
    found = sections(page)
    rows = {r["detector"]: r for r in found[MODEL].table}
    assert rows["embedding_drift"]["windows judged (ok or alert)"] == "0 of 30: never judged"


def test_the_key_says_unjudged_windows_are_left_out(page: Path) -> None:
    key = sections(page)["How to read the plots"].text
    assert "did not judge" in key and "left out" in key, key
