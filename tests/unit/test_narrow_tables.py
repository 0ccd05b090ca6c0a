"""`lookout demo`'s summary and `lookout sql`'s result read whole in an 80-column terminal.

Rich fits a wide table by cutting every column: the demo's summary printed `gemini-1.5-fl…`,
`+0h…`, `after 1 window…` and headers `sta…`, `verdi…`; `SELECT * FROM alerts` squeezed fourteen
columns to `│ loo │ fir │ cri │`. Rendered here at 80 columns with made-up rows.
"""

from __future__ import annotations

import io
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from rich.console import Console

from worker.cli.demo import (
    DEMO_START,
    SUGGESTED_QUERY,
    DemoOutcome,
    IncidentOutcome,
    print_summary,
)
from worker.cli.sql import print_rows
from worker.engine import EngineStats
from worker.sources.simulator import Incident, SimulationConfig, default_demo_incidents

WINDOW = 300


def console(width: int) -> tuple[Console, io.StringIO]:
    out = io.StringIO()
    return Console(file=out, width=width, color_system=None, highlight=False), out


def sql_result(
    monkeypatch: pytest.MonkeyPatch, names: list[str], rows: list[tuple[object, ...]]
) -> str:
    """`lookout sql`'s table output, as a terminal 80 columns wide shows it."""
    terminal, out = console(80)
    monkeypatch.setattr("worker.cli.sql.output_console", lambda: terminal)
    print_rows(names, rows, "table")
    return out.getvalue()


def outcome(
    incident: Incident, *, fired_after: int | None, resolved_after: int | None
) -> IncidentOutcome:
    start = DEMO_START + incident.start_offset
    end = start + incident.duration
    return IncidentOutcome(
        incident=incident,
        model=incident.model or "gemini-1.5-flash",
        start=start,
        end=end,
        fired_at=None if fired_after is None else start + timedelta(seconds=WINDOW * fired_after),
        resolved_at=None
        if resolved_after is None
        else end + timedelta(seconds=WINDOW * resolved_after),
        window_seconds=WINDOW,
    )


def summary(width: int) -> str:
    sim = SimulationConfig(start=DEMO_START, incidents=default_demo_incidents())
    safety, latency, tokens, topic = sim.incidents
    result = DemoOutcome(
        (
            outcome(safety, fired_after=0, resolved_after=1),  # caught in its first window
            outcome(latency, fired_after=1, resolved_after=2),
            outcome(tokens, fired_after=None, resolved_after=None),  # missed
            outcome(topic, fired_after=1, resolved_after=3),
        ),
        (),
    )
    out_console, out = console(width)
    print_summary(
        out_console,
        result,
        EngineStats(records=1_512_345, windows_evaluated=108),
        sim=sim,
        db=Path("lookout-demo.duckdb"),
        report=Path("lookout-demo-report.html"),
        alerts_out=None,
        seconds=15.2,
    )
    return out.getvalue()


@pytest.mark.parametrize("width", [80, 60])
def test_the_demo_summary_is_whole_at_80_columns_and_narrower(width: int) -> None:
    out = summary(width)
    assert "…" not in out, out
    for model in ("gemini-1.5-flash", "text-bison", "gpt-4o-mini"):
        assert model in out, out
    for kind in ("safety_spike", "latency_regression", "token_explosion", "topic_shift"):
        assert kind in out, out
    for header in ("start", "fired in", "resolved", "verdict"):
        assert header in out, out
    # start and resolve offsets from the simulated start, each whole
    for when in ("+0h45m", "+1h02m", "+0h55m", "+1h17m", "+1h05m", "+1h50m", "+2h20m"):
        assert when in out, out
    assert "1 window" in out and "2 windows" in out and "never" in out, out
    assert "MISSED" in out and " ok" in out, out
    assert all(len(line) <= width for line in out.splitlines() if "lookout sql" not in line)


def test_the_demo_summary_is_a_table_at_80_columns() -> None:
    out = summary(80)
    (row,) = [line for line in out.splitlines() if "latency_regression" in line]
    cells = [cell.strip() for cell in row.split("│")]
    assert cells == ["latency_regression", "text-bison", "+0h55m", "2 windows", "+1h17m", "ok"]


def test_the_demo_summary_is_one_incident_per_block_when_no_table_fits() -> None:
    out = summary(60)
    assert "│" not in out and "model:" in out, out
    block = out.split("incident:")[2]  # the second incident
    assert "latency_regression" in block and "text-bison" in block and "2 windows" in block


def test_the_suggested_query_is_one_line_and_fits_as_a_table(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    out = summary(80)
    (line,) = [line for line in out.splitlines() if "lookout sql" in line]
    assert f'"{SUGGESTED_QUERY}"' in line
    assert "SELECT *" not in SUGGESTED_QUERY
    names = ["window_start", "model", "detector", "status"]
    at = datetime(2026, 1, 5, 6, 45).astimezone()
    row = (at, "gemini-1.5-flash", "embedding_drift", "firing")
    shown = sql_result(monkeypatch, names, [row])
    assert "┃ window_start" in shown and "…" not in shown, shown


ALERT_COLUMNS = [
    "dedup_key",
    "status",
    "severity",
    "detector",
    "model",
    "condition",
    "window_start",
    "window_end",
    "value",
    "threshold",
    "baseline",
    "sample_size",
    "summary",
    "emitted_at",
]


def alert_row(model: str, status: str) -> tuple[object, ...]:
    start = datetime.fromisoformat("2026-01-05T06:45:00+00:00")
    return (
        f"lookout:{model}:safety:block_rate",
        status,
        "critical",
        "safety",
        model,
        "block_rate",
        start,
        start + timedelta(minutes=5),
        0.0831,
        0.02,
        0.011,
        702,
        f"[{status.upper()}] safety on {model}: block rate 8.31% (baseline 1.1%)",
        start + timedelta(minutes=5, seconds=2),
    )


def test_select_star_from_alerts_is_one_record_per_block_at_80_columns(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rows = [alert_row("gemini-1.5-flash", "firing"), alert_row("text-bison", "resolved")]
    text = sql_result(monkeypatch, ALERT_COLUMNS, rows)
    assert "…" not in text and "│" not in text, text
    blocks = text.strip().split("\n\n")
    assert len(blocks) == 3 and blocks[-1] == "2 row(s)", text
    first = blocks[0].splitlines()
    labels = [line.split(":", 1)[0] for line in first if not line.startswith(" ")]
    assert labels == ALERT_COLUMNS, text
    assert "model:        gemini-1.5-flash" in first
    assert "status:       firing" in first
    assert "window_start: 2026-01-05T06:45:00+00:00" in first
    assert "summary:      [FIRING] safety on gemini-1.5-flash" in blocks[0]  # not read as markup
    assert "model:        text-bison" in blocks[1] and "status:       resolved" in blocks[1]
    assert all(len(line) <= 80 for line in text.splitlines())


def test_a_result_that_fits_stays_a_table(monkeypatch: pytest.MonkeyPatch) -> None:
    shown = sql_result(monkeypatch, ["model", "n"], [("gemini-1.5-flash", 3)])
    assert "┃ model" in shown and "gemini-1.5-flash" in shown
    assert shown.rstrip().endswith("1 row(s)")


def test_not_on_a_terminal_select_star_is_still_a_table(capsys: pytest.CaptureFixture[str]) -> None:
    """Piped, the console is 10,000 columns wide: a table with every value whole, as before."""
    print_rows(ALERT_COLUMNS, [alert_row("gemini-1.5-flash", "firing")], "table")
    text = capsys.readouterr().out
    assert "┃ dedup_key" in text and "gemini-1.5-flash" in text and "…" not in text


def test_values_that_look_like_markup_are_shown_as_they_are(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A cell holding "[red]x" showed a red x: the table read values as rich markup."""
    values = ("[FIRING] gemini-1.5-flash safety: up", "[red]x", "[bold]y[/bold]")
    shown = sql_result(monkeypatch, ["summary", "a", "b"], [values])
    for value in values:
        assert value in shown, shown
