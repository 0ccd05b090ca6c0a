"""The PrometheusRule on Lookout's own health: valid for Prometheus (`promtool check rules`),
each alert fires when it should and stays silent otherwise (`promtool test rules`), and each
runbook link lands on a README section."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import yaml

from tests.chart.conftest import REPO, load_values, render, render_error, require_tool

TESTS = Path(__file__).parent / "promtool" / "lookout-rules.test.yaml"
RUNBOOK_BASE = "https://github.com/lookout/lookout/blob/main/README.md#"
#: a retune action, so that LookoutRetuneFailing (rendered only with actions) is tested too
RETUNE = {
    "retune": {
        "actions": [{"name": "safety-retune", "kind": "pubsub", "project": "p", "topic": "t"}]
    }
}


def full_values(**rule_values: Any) -> dict[str, Any]:
    """full-values.yaml with a retune action and these `prometheusRule` values on top."""
    values = load_values("full-values")
    alerting = {**values["config"].get("alerting", {}), **RETUNE}
    values["config"] = {**values["config"], "alerting": alerting}
    values["prometheusRule"] = {**values["prometheusRule"], **rule_values}
    return values


def rule_groups(values: dict[str, Any] | None = None) -> dict[str, Any]:
    """The PrometheusRule's spec: what promtool (and Prometheus) read as a rule file."""
    (rule,) = render(full_values() if values is None else values).of_kind("PrometheusRule")
    spec: dict[str, Any] = rule["spec"]
    return spec


def alerts(values: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    return [r for group in rule_groups(values)["groups"] for r in group["rules"] if "alert" in r]


def named(name: str, values: dict[str, Any]) -> list[dict[str, Any]]:
    return [a for a in alerts(values) if a["alert"] == name]


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
    # one alert may have a rule per severity (LookoutSourceErrors), each with its annotations
    by_rule = {(a["alert"], a["labels"]["severity"]): a for a in alerts()}
    tests = yaml.safe_load(TESTS.read_text())
    fires: set[tuple[str, str]] = set()
    silent: set[str] = set()
    for case in tests["tests"]:
        for check in case["alert_rule_test"]:
            name = check["alertname"]
            if not check["exp_alerts"]:
                silent.add(name)
            for expected in check["exp_alerts"]:
                rule = (name, expected["exp_labels"]["severity"])
                fires.add(rule)
                # static annotations come from the rule itself; templated ones are in the file
                annotations = dict(by_rule[rule]["annotations"])
                annotations.update(expected.get("exp_annotations", {}))
                expected["exp_annotations"] = annotations
    assert fires == set(by_rule), "every rule needs a case where it fires"
    assert silent == {name for name, _ in by_rule}, "every alert needs a silent case"
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


def test_source_errors_rules_follow_their_value_and_need_a_pubsub_source() -> None:
    rules = named("LookoutSourceErrors", full_values(sourceErrorsFor="20m"))
    assert sorted(r["labels"]["severity"] for r in rules) == ["critical", "warning"]
    for rule in rules:
        assert rule["for"] == "20m"
        assert 'step!="dead_letter"' in rule["expr"]  # LookoutDeadLetterPublishFailing's
        assert "20m" in rule["annotations"]["description"]
    # the file source has no such counter: no rule that could never fire
    file_source = {"prometheusRule": {"enabled": True}}
    assert named("LookoutSourceErrors", file_source) == []
    assert [r["for"] for r in named("LookoutSourceErrors", load_values("full-values"))] == [
        "10m",
        "10m",
    ]


def test_retune_failing_is_rendered_only_with_retune_actions() -> None:
    (rule,) = named("LookoutRetuneFailing", full_values(retuneFailingWindow="3h"))
    assert rule["expr"].count("[3h]") == 2
    assert "3h" in rule["annotations"]["description"]
    assert named("LookoutRetuneFailing", load_values("full-values")) == []
    no_actions = full_values()
    no_actions["config"]["alerting"] = {"retune": {"actions": []}}
    assert named("LookoutRetuneFailing", no_actions) == []


def test_rule_durations_are_checked_at_install() -> None:
    for key in ("sourceErrorsFor", "retuneFailingWindow"):
        message = render_error({"prometheusRule": {"enabled": True, key: "ten minutes"}})
        assert f"/prometheusRule/{key}" in message, message


def test_managed_prometheus_rules_pass_promtool_check(tmp_path: Path) -> None:
    """The Rules and GlobalRules Managed Service for Prometheus evaluates are rule files too
    (its `.spec.groups` is Prometheus's rule_group array)."""
    values = load_values("gke-autopilot-values")
    rendered = render(values)
    for kind in ("Rules", "GlobalRules"):
        (rule,) = rendered.of_kind(kind)
        (tmp_path / f"{kind}.yaml").write_text(yaml.safe_dump(rule["spec"]))
        done = promtool("check", "rules", f"{kind}.yaml", cwd=tmp_path)
        count = sum(len(g["rules"]) for g in rule["spec"]["groups"])
        assert done.returncode == 0 and f"SUCCESS: {count} rules found" in done.stdout, (
            done.stdout + done.stderr
        )
