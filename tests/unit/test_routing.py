"""Routing: who gets paged for what, and that one broken receiver does not silence the others."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError

from alerts.notifiers import (
    RecordingNotifier,
    RetryableNotifierError,
    TerminalNotifierError,
)
from alerts.routing import Router
from schemas.alert_config import AlertingConfig, Route
from schemas.detection import Alert, Severity

T0 = datetime(2024, 5, 1, tzinfo=UTC)


def alert(
    detector: str = "safety", model: str = "gemini-1.5-flash", severity: Severity = "warning"
) -> Alert:
    return Alert(
        dedup_key=f"lookout:{model}:{detector}:c",
        status="firing",
        severity=severity,
        detector=detector,
        model=model,
        condition="c",
        window_start=T0,
        window_end=T0 + timedelta(minutes=5),
        value=1.0,
        threshold=0.5,
        baseline=0.2,
        sample_size=100,
        summary=f"[FIRING] {model} {detector}: c",
    )


def router(*routes: Route) -> Router:
    return Router(AlertingConfig(routes=routes, default_receiver="slack", info_receiver="report"))


def test_unmatched_alerts_go_to_the_default_receiver() -> None:
    assert router().receivers_for(alert()) == ("slack",)


def test_info_alerts_never_page_unless_a_rule_opts_in() -> None:
    catch_all = Route(receivers=("pagerduty",))
    assert router(catch_all).receivers_for(alert(severity="info")) == ("report",)
    opt_in = Route(receivers=("drift-review",), detector="descriptor_*", min_severity="info")
    routed = router(opt_in, catch_all)
    assert routed.receivers_for(alert("descriptor_drift", severity="info")) == ("drift-review",)
    assert routed.receivers_for(alert("latency", severity="info")) == ("report",)


def test_first_match_wins_and_continue_adds_later_matches() -> None:
    routes = (
        Route(receivers=("pagerduty",), min_severity="critical"),
        Route.model_validate(
            {"receivers": ["ml-team"], "detector": "embedding_*", "continue": True}
        ),
        Route(receivers=("slack-gemini", "ml-team"), model="gemini-*"),
        Route(receivers=("never",)),
    )
    r = router(*routes)
    assert r.receivers_for(alert(severity="critical")) == ("pagerduty",)
    assert r.receivers_for(alert("embedding_drift")) == ("ml-team", "slack-gemini")
    assert r.receivers_for(alert("latency", model="gpt-4o")) == ("never",)
    assert r.receiver_names() == {
        "pagerduty",
        "ml-team",
        "slack-gemini",
        "never",
        "slack",
        "report",
    }


def test_dispatch_sends_each_receiver_one_batch_in_order() -> None:
    r = router(Route(receivers=("pagerduty",), min_severity="critical", continue_=True))
    slack, pagerduty = RecordingNotifier(), RecordingNotifier()
    batch = [alert("a", severity="critical"), alert("b"), alert("c", severity="critical")]
    result = r.dispatch(batch, {"slack": slack, "pagerduty": pagerduty})
    assert result.ok
    assert result.delivered == {"pagerduty": 2, "slack": 1}
    assert [[a.detector for a in b] for b in pagerduty.batches] == [["a", "c"]]
    assert [a.detector for a in slack.sent] == ["b"]


def test_a_failing_or_missing_receiver_does_not_stop_the_others() -> None:
    routes = (Route(receivers=("pagerduty", "webhook", "slack", "broken"), detector="safety"),)
    r = router(*routes)
    slack = RecordingNotifier()
    pagerduty = RecordingNotifier(fail_with=RetryableNotifierError("pagerduty", "HTTP 503"))

    class Broken:
        def send(self, alerts: object) -> None:
            raise RuntimeError("bug in a plugin")

    result = r.dispatch([alert()], {"slack": slack, "pagerduty": pagerduty, "broken": Broken()})
    assert len(slack.sent) == 1
    assert result.delivered == {"slack": 1}
    failures = {f.receiver: f for f in result.failures}
    assert failures["pagerduty"].retryable
    assert failures["pagerduty"].alerts == (alert(),)
    assert not failures["webhook"].retryable
    assert "no notifier is configured" in str(failures["webhook"].error)
    assert isinstance(failures["broken"].error, TerminalNotifierError)


def test_receiver_names_must_be_plain_names() -> None:
    with pytest.raises(ValueError, match="receivers"):
        Route(receivers=("https://hooks.slack.com/services/T0/B0/secret",))


def test_routes_match_severity_globs() -> None:
    routes = (
        Route(receivers=("pager",), severity="crit*"),
        Route(receivers=("info-log",), severity="info"),
    )
    r = router(*routes)
    assert r.receivers_for(alert(severity="critical")) == ("pager",)
    assert r.receivers_for(alert(severity="info")) == ("info-log",)  # `severity` opts info in
    assert r.receivers_for(alert()) == ("slack",)


def test_a_route_on_a_misspelt_detector_is_refused_naming_the_likely_one() -> None:
    """`detector: saftey` was accepted and matched nothing: safety pages went to the default
    receiver, and config check said ok."""
    with pytest.raises(ValidationError, match=r"'saftey' names no detector.*did you mean 'safety'"):
        Route(receivers=("pager",), detector="saftey")
    assert Route(receivers=("pager",), detector="*_drift").detector == "*_drift"


@pytest.mark.parametrize("severity", ["critcal", "CRITICAL", "page"])
def test_a_route_on_a_severity_no_alert_has_is_refused(severity: str) -> None:
    """`severity: critcal` was accepted and matched nothing: the critical pages went to the
    console instead of PagerDuty, and config check said ok (an SRE's trial)."""
    with pytest.raises(ValidationError, match=rf"'{severity}' matches no severity"):
        Route(receivers=("pager",), severity=severity)
    with pytest.raises(ValidationError, match="did you mean 'critical'"):
        Route(receivers=("pager",), severity="critcal")
    assert Route(receivers=("pager",), severity="warn*").severity == "warn*"


@pytest.mark.parametrize("key", ["tenant", "model_version"])
def test_a_route_on_tenant_or_version_is_refused_not_silently_never_matched(key: str) -> None:
    """An alert is a whole model's (judged over all its versions and tenants): a route on
    `tenant: acme` was accepted, matched nothing, and acme's pages went to the default."""
    with pytest.raises(ValidationError, match="never match the slice it names; route on `model`"):
        AlertingConfig.model_validate(
            {"routes": [{"receivers": ["acme"], key: "acme"}], "receivers": []}
        )
    with pytest.raises(ValidationError, match="group_by"):
        AlertingConfig.model_validate({"group_by": [key]})


def test_grouping_comes_from_the_matching_route_else_the_root() -> None:
    config = AlertingConfig.model_validate(
        {
            "group_by": ["model"],
            "group_wait": "10s",
            "repeat_interval": "2h",
            "routes": [
                {"receivers": ["pager"], "severity": "critical", "repeat_interval": "30m"},
                {"receivers": ["team"], "group_by": ["model", "detector"], "group_wait": "1m"},
            ],
        }
    )
    r = Router(config)
    paging = r.grouping(alert(severity="critical"), "pager")
    assert (paging.group_by, paging.group_wait, paging.repeat_interval) == (
        ("model",),
        timedelta(seconds=10),
        timedelta(minutes=30),
    )
    team = r.grouping(alert(), "team")
    assert team.group_by == ("model", "detector") and team.group_wait == timedelta(minutes=1)
    assert team.key(alert()) == "model=gemini-1.5-flash,detector=safety"
    assert r.grouping(alert(), "unrouted").repeat_interval == timedelta(hours=2)


def test_retune_actions_follow_first_match_and_continue() -> None:
    config = AlertingConfig.model_validate(
        {
            "routes": [
                {"receivers": ["pager"], "detector": "safety", "retune": "a", "continue": True},
                {"receivers": ["team"], "model": "gemini-*", "retune": "b"},
                {"receivers": ["other"], "retune": "c"},
            ],
            "retune": {
                "actions": [
                    {"name": n, "kind": "pubsub", "project": "p", "topic": "t"}
                    for n in ("a", "b", "c")
                ]
            },
        }
    )
    r = Router(config)
    assert r.retune_actions_for(alert()) == ("a", "b")
    assert r.retune_actions_for(alert("latency", model="gpt-4o")) == ("c",)
    with pytest.raises(ValueError, match=r"retune actions not in alerting.retune.actions: \['x'\]"):
        AlertingConfig.model_validate({"routes": [{"receivers": ["r"], "retune": "x"}]})


def test_receiver_names_are_unique_and_not_the_builtin_ones() -> None:
    hook = {"kind": "webhook", "url": {"env": "U"}}
    with pytest.raises(ValueError, match=r"used twice or reserved: \['console', 'h'\]"):
        AlertingConfig.model_validate(
            {
                "receivers": [
                    {"name": "h", **hook},
                    {"name": "h", **hook},
                    {"name": "console", **hook},
                ]
            }
        )
