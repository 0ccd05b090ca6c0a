"""`lookout demo` as a user runs it, and its HTML report as a person sees it in a browser.

The demo runs once (three simulated hours, one incident of each kind). Its printed summary must
be whole when stdout is not a terminal and say where the info alerts went; its report must load
in a real headless Chromium with no console error, and every plot in it must have data, a
legend, and a unit on every axis. The report's tables are read from the loaded page too:
the summary at the top, incidents in event-time order with when each resolved. A replay whose
incidents escalate (warning, then critical while open) must show each as one incident that
resolved, not a second one "still firing".
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from schemas.alert_config import SEVERITY_RANK
from tests.e2e.browser import DevTools, chromium, chromium_path, evaluate, load
from tests.e2e.conftest import (
    REPLAY_TIMEOUT,
    Result,
    Stream,
    assert_no_traceback,
    lookout,
    query,
)

DEMO_MODELS = ("gemini-1.5-flash", "text-bison", "gpt-4o-mini")


@dataclass(frozen=True)
class Demo:
    where: Path
    result: Result

    @property
    def report(self) -> Path:
        return self.where / "lookout-demo-report.html"

    @property
    def db(self) -> Path:
        return self.where / "lookout-demo.duckdb"


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Demo:
    where = tmp_path_factory.mktemp("demo")
    result = lookout("demo", "--alerts-out", "alerts.jsonl", cwd=where, timeout=REPLAY_TIMEOUT)
    assert_no_traceback(result)
    assert result.returncode == 0, result.describe()
    return Demo(where, result)


@pytest.fixture(scope="module")
def browser() -> Iterator[DevTools]:
    if chromium_path() is None:
        pytest.fail("chromium is not installed (scripts/install-test-tools)", pytrace=False)
    with chromium() as devtools:
        yield devtools


@pytest.fixture(scope="module")
def page(demo: Demo, browser: DevTools) -> tuple[DevTools, str, list[str]]:
    session, report = load(browser, demo.report)
    return browser, session, report.errors


def test_the_demo_summary_is_whole_when_stdout_is_not_a_terminal(demo: Demo) -> None:
    out = demo.result.stdout
    assert "…" not in out, "nothing is cut to fit a terminal width"
    for model in DEMO_MODELS:
        assert f" {model} " in out, f"{model} is printed whole"
    assert "latency_regression" in out and "token_explosion" in out


def test_the_demo_says_how_many_info_alerts_went_to_the_report(demo: Demo) -> None:
    out = demo.result.stdout
    printed = [line for line in out.splitlines() if "[FIRING]" in line or "[RESOLVED]" in line]
    written = (demo.where / "alerts.jsonl").read_text().splitlines()
    info = sum(1 for line in written if json.loads(line)["severity"] == "info")
    assert info > 0, "the demo's descriptor drift explains its incidents"
    assert len(printed) + info == len(written)
    assert f"alert changes: {len(written)}; {len(printed)} printed above, {info} info" in out, out[
        -2000:
    ]


def test_no_resolved_line_shows_a_negative_statistic(demo: Demo) -> None:
    for line in demo.result.stdout.splitlines():
        if "[RESOLVED]" in line:
            now = line.split("cleared, now ", 1)[1].split(" ", 1)[0]
            assert not now.startswith("-"), line
    (low,) = query(demo.db, "SELECT min(value) FROM detections WHERE detector = 'embedding_drift'")
    assert low[0] >= 0


def test_the_report_loads_with_no_console_error(page: tuple[DevTools, str, list[str]]) -> None:
    _, _, errors = page
    assert errors == []


PLOTS_JS = """
Array.from(document.querySelectorAll('.js-plotly-plot')).map(gd => {
  const layout = gd._fullLayout;
  const axes = Object.keys(layout).filter(k => /^yaxis\\d*$/.test(k));
  return {
    title: layout.title && layout.title.text,
    panels: axes.map(name => {
      const ref = 'y' + name.slice(5);
      const points = gd.data
        .filter(t => (t.yaxis || 'y') === ref && t.name === 'window value')
        .map(t => Array.from(t.y).filter(v => v !== null && Number.isFinite(v)).length)
        .reduce((a, b) => a + b, 0);
      const limits = gd.data
        .filter(t => (t.yaxis || 'y') === ref && t.legendgroup === 'limit')
        .map(t => Array.from(t.y).filter(v => v !== null && Number.isFinite(v)).length)
        .reduce((a, b) => a + b, 0);
      const own = gd.layout[name] || {};
      return {axis: name, unit: own.title && own.title.text,
              min: layout[name].range[0], points, limits};
    }),
    xtitle: Object.keys(gd.layout).filter(k => /^xaxis\\d*$/.test(k))
      .map(k => gd.layout[k].title && gd.layout[k].title.text).filter(Boolean),
    legend: Array.from(gd.querySelectorAll('.legend .traces')).map(e => e.textContent),
    lines: Array.from(gd.querySelectorAll('.scatterlayer path.js-line'))
      .filter(p => (p.getAttribute('d') || '').length > 20).length,
    shaded: (layout.shapes || []).length,
  };
})
"""


def test_every_plot_has_data_a_legend_and_units(
    page: tuple[DevTools, str, list[str]],
) -> None:
    devtools, session, _ = page
    plots: list[dict[str, Any]] = evaluate(devtools, session, PLOTS_JS)
    assert sorted(p["title"] for p in plots) == sorted(DEMO_MODELS)
    for plot in plots:
        name = plot["title"]
        assert len(plot["panels"]) == 5, f"{name}: a panel per detector"
        for panel in plot["panels"]:
            assert panel["points"] >= 150, f"{name} {panel['axis']}: the windows are drawn"
            assert panel["limits"] > 0, f"{name} {panel['axis']}: its minimum effect is drawn"
            assert panel["unit"], f"{name} {panel['axis']}: the axis names its unit"
            assert panel["min"] >= 0, f"{name} {panel['axis']}: no axis of these goes negative"
        assert plot["xtitle"] == ["window start (UTC, event time)"]
        assert plot["lines"] >= 5 * 2, f"{name}: value and minimum-effect lines are rendered"
        legend = " | ".join(plot["legend"])
        assert "threshold" not in legend, f"{name}: no line claims to be the alert threshold"
        for entry in ("window value", "minimum effect", "baseline", "judged 'alert'", "incident"):
            assert entry in legend, f"{name}: the legend explains {entry!r}: {legend}"
        assert plot["shaded"] >= 1, f"{name}: its incidents are shaded"


def utc(text: str) -> datetime:
    """A time as the report prints it: `2026-01-05 06:45 UTC`."""
    return datetime.strptime(text, "%Y-%m-%d %H:%M UTC").replace(tzinfo=UTC)


def _table(devtools: DevTools, session: str, heading: str) -> list[list[str]]:
    return list(
        evaluate(
            devtools,
            session,
            f"""(() => {{
              const h = Array.from(document.querySelectorAll('h2, h3'))
                .find(e => e.textContent === {json.dumps(heading)});
              let t = h && h.nextElementSibling;
              while (t && t.tagName !== 'TABLE') t = t.nextElementSibling;
              return t ? Array.from(t.rows).map(r => Array.from(r.cells)
                .map(c => c.textContent)) : [];
            }})()""",
        )
    )


def test_the_alerts_are_in_event_time_order_with_when_each_resolved(
    page: tuple[DevTools, str, list[str]], demo: Demo
) -> None:
    devtools, session, _ = page
    rows = _table(devtools, session, "Alerts")
    head, body = rows[0], rows[1:]
    assert head[:2] == ["fired (window start)", "resolved (window end)"]
    # every row of an incident carries its start, so (dedup key, start) is one incident
    (incidents,) = query(demo.db, "SELECT count(DISTINCT (dedup_key, window_start)) FROM alerts")
    assert len(body) == incidents[0], "one row per incident"
    fired = [utc(r[0]) for r in body]
    assert fired == sorted(fired)
    for row in body:
        assert utc(row[1]) > utc(row[0]), row


def test_the_summary_at_the_top_names_models_windows_alerts_and_worst_windows(
    page: tuple[DevTools, str, list[str]],
) -> None:
    devtools, session, _ = page
    first = evaluate(devtools, session, "document.querySelector('h2').textContent")
    assert first == "Summary"
    text = evaluate(devtools, session, "document.querySelector('h2 + ul').textContent")
    assert "3 model(s)" in text and "180 windows" in text and "alert(s)" in text, text
    worst = _table(devtools, session, "Worst judged window per detector")
    assert [r[0] for r in worst[1:]] == [
        "safety",
        "latency",
        "tokens",
        "embedding_drift",
        "descriptor_drift",
    ]
    by_detector = {r[0]: r for r in worst[1:]}
    assert (
        by_detector["safety"][1] == "gemini-1.5-flash" and "% blocked" in by_detector["safety"][3]
    )
    assert by_detector["latency"][1] == "text-bison" and "ms" in by_detector["latency"][3]
    assert by_detector["tokens"][1] == "gpt-4o-mini"
    # each of these alerted in the demo: the worst window shown is one that alerted
    for detector in ("safety", "latency", "tokens"):
        assert by_detector[detector][6] == "alert", by_detector[detector]
    alerted = _table(devtools, session, "What alerted")
    assert alerted[0][:5] == [
        "model",
        "detector",
        "fired (window start)",
        "ended (window end)",
        "peak severity",
    ]
    assert {("text-bison", "latency"), ("gpt-4o-mini", "tokens")} <= {
        (r[0], r[1]) for r in alerted[1:]
    }, alerted


def test_the_report_explains_the_drift_statistic(page: tuple[DevTools, str, list[str]]) -> None:
    devtools, session, _ = page
    text = evaluate(devtools, session, "document.body.innerText")
    assert "maximum mean discrepancy" in text and "0 means the same distribution" in text


def test_the_report_is_one_self_contained_file(demo: Demo) -> None:
    """It opens offline: no script or stylesheet is fetched from anywhere."""
    text = demo.report.read_text()
    assert "<script src=" not in text and "<link " not in text


@pytest.fixture(scope="module")
def escalated(incident_stream: Stream, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`lookout replay --report` of the safety-spike stream: two models' incidents page as
    warning and escalate to critical while open (a second firing row, same dedup key)."""
    where = tmp_path_factory.mktemp("escalated")
    result = lookout(
        "replay",
        incident_stream.path,
        "--report",
        "report.html",
        "--alerts-out",
        "alerts.jsonl",
        cwd=where,
        timeout=REPLAY_TIMEOUT,
    )
    assert_no_traceback(result)
    assert result.returncode == 0, result.describe()
    return where


def test_an_incident_that_escalated_and_resolved_is_one_resolved_incident(
    escalated: Path, browser: DevTools
) -> None:
    """Before: each escalation was a second incident that never resolved ("2 still firing"
    at the top of a report whose every incident had resolved)."""
    alerts = [json.loads(line) for line in (escalated / "alerts.jsonl").read_text().splitlines()]
    firing = Counter(a["dedup_key"] for a in alerts if a["status"] == "firing")
    escalations = {key for key, n in firing.items() if n > 1}
    assert escalations, "the stream no longer escalates an incident; this test needs one"
    incidents = {(a["dedup_key"], a["window_start"]) for a in alerts}
    worst = {
        key: max(
            (a["severity"] for a in alerts if a["dedup_key"] == key), key=lambda s: SEVERITY_RANK[s]
        )
        for key in firing
    }

    session, report = load(browser, escalated / "report.html")
    assert report.errors == []
    summary = evaluate(browser, session, "document.querySelector('h2 + ul').textContent")
    assert f"{len(incidents)} alert(s)" in summary and "all resolved" in summary, summary
    rows = _table(browser, session, "Alerts")[1:]
    assert len(rows) == len(incidents), "one row per incident"
    for fired, resolved, severity, model, detector, _ in rows:
        assert utc(resolved) > utc(fired), (fired, resolved, model, detector)
        (key,) = [k for k in firing if k.startswith(f"lookout:{model}:{detector}:")]
        assert severity == worst[key], f"{model} {detector}: the worst it got"
