"""The PrometheusRule on Lookout's own health: valid for Prometheus (`promtool check rules`),
each alert fires when it should and stays silent otherwise (`promtool test rules`), and each
runbook link lands on a README section."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import yaml

from tests.chart.conftest import REPO, load_values, render, require_tool

TESTS = Path(__file__).parent / "promtool" / "lookout-rules.test.yaml"
RUNBOOK_BASE = "https://github.com/lookout/lookout/blob/main/README.md#"


def rule_groups() -> dict[str, Any]:
    """The PrometheusRule's spec: what promtool (and Prometheus) read as a rule file."""
    (rule,) = render(load_values("full-values")).of_kind("PrometheusRule")
    spec: dict[str, Any] = rule["spec"]
    return spec


def alerts() -> list[dict[str, Any]]:
    return [r for group in rule_groups()["groups"] for r in group["rules"] if "alert" in r]


def promtool(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [require_tool("promtool"), *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=120,
        check=False,
    )


def test_rules_pass_promtool_check(tmp_path: Path) -> None:
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump(rule_groups()))
    done = promtool("check", "rules", "rules.yaml", cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(alerts())} rules found" in done.stdout


def test_every_alert_fires_and_stays_silent_in_promtool_tests(tmp_path: Path) -> None:
    by_name = {a["alert"]: a for a in alerts()}
    tests = yaml.safe_load(TESTS.read_text())
    fires: set[str] = set()
    silent: set[str] = set()
    for case in tests["tests"]:
        for check in case["alert_rule_test"]:
            name = check["alertname"]
            (fires if check["exp_alerts"] else silent).add(name)
            for expected in check["exp_alerts"]:
                # static annotations come from the rule itself; templated ones are in the file
                annotations = dict(by_name[name]["annotations"])
                annotations.update(expected.get("exp_annotations", {}))
                expected["exp_annotations"] = annotations
    assert fires == silent == set(by_name), "every alert needs a firing and a silent case"
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump(rule_groups()))
    (tmp_path / "rules.test.yaml").write_text(yaml.safe_dump(tests))
    done = promtool("test", "rules", "rules.test.yaml", cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_alert_links_a_readme_runbook_section() -> None:
    readme = (REPO / "README.md").read_text()
    anchors = {
        re.sub(r"[^a-z0-9 -]", "", line.lstrip("#").strip().lower()).replace(" ", "-")
        for line in readme.splitlines()
        if line.startswith("#")
    }
    for alert in alerts():
        url = alert["annotations"]["runbook_url"]
        assert url.startswith(RUNBOOK_BASE), url
        assert url.removeprefix(RUNBOOK_BASE) in anchors, f"{alert['alert']}: no section {url}"
        assert alert["labels"]["severity"] in {"warning", "critical"}
