"""Alerts reach people: a real incident through `lookout`'s pipeline to loopback Slack,
PagerDuty and signed-webhook servers that validate every payload against the published
formats; receivers that fail, rate-limit or stay down; and no secret anywhere it could leak."""

from __future__ import annotations

import itertools
import logging
import os
import shutil
import subprocess
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from alerts.receivers import build_dispatcher
from alerts.receivers.payloads import pagerduty_event, slack_message
from schemas.alert_config import AlertingConfig
from schemas.batch import LogBatch
from schemas.config import DetectorsConfig, DuckDBSinkConfig, EngineConfig, LookoutConfig
from schemas.detection import Alert
from tests.integration import receiver_stand_ins as stand_ins
from tests.integration.receiver_stand_ins import (
    Received,
    StandIn,
    pagerduty_problems,
    slack_problems,
    wait_for,
)
from worker.cli.pipeline import Pipeline, build_pipeline
from worker.cli.report import write_report
from worker.sources.simulator import Incident, SimulationConfig, simulate_batches

T0 = datetime(2026, 1, 5, 6, 0, tzinfo=UTC)
MODEL = "gemini-1.5-flash"
SAFETY_KEY = f"lookout:{MODEL}:safety:block_rate_above_baseline"
ROUTING_KEY = "R0UT1NGKEYsecret0123456789abcdef"
HMAC_SECRET = "hmac-shared-secret-do-not-leak"
SLACK_PATH = "/services/T000/B000/slackSecretPath"
HOOK_PATH = "/hooks/webhookSecretPath"
SECRETS = (ROUTING_KEY, HMAC_SECRET, "slackSecretPath", "webhookSecretPath")


@pytest.fixture
def servers() -> Iterator[dict[str, StandIn]]:
    started = {
        "pd": stand_ins.pagerduty(),
        "slack": stand_ins.slack(),
        "hook": stand_ins.webhook(HMAC_SECRET.encode()),
    }
    yield started
    for server in started.values():
        server.stop()


@pytest.fixture
def secrets_env(monkeypatch: pytest.MonkeyPatch, servers: dict[str, StandIn]) -> None:
    monkeypatch.setenv("LOOKOUT_PAGERDUTY_ROUTING_KEY", ROUTING_KEY)
    monkeypatch.setenv("LOOKOUT_SLACK_WEBHOOK_URL", servers["slack"].url + SLACK_PATH)
    monkeypatch.setenv("LOOKOUT_WEBHOOK_URL", servers["hook"].url + HOOK_PATH)
    monkeypatch.setenv("LOOKOUT_WEBHOOK_HMAC_SECRET", HMAC_SECRET)


def alerting(servers: dict[str, StandIn], **extra: object) -> AlertingConfig:
    """The CONTRACTS.md shape, with the PagerDuty endpoint pointed at the loopback stand-in."""
    return AlertingConfig.model_validate(
        {
            "notify_on_escalation": False,
            "receivers": [
                {
                    "name": "oncall-pagerduty",
                    "kind": "pagerduty",
                    "routing_key": {"env": "LOOKOUT_PAGERDUTY_ROUTING_KEY"},
                    "url": servers["pd"].url + "/v2/enqueue",
                    "backoff_initial": "50ms",
                },
                {
                    "name": "team-slack",
                    "kind": "slack",
                    "webhook_url": {"env": "LOOKOUT_SLACK_WEBHOOK_URL"},
                    "backoff_initial": "50ms",
                },
                {
                    "name": "audit-hook",
                    "kind": "webhook",
                    "url": {"env": "LOOKOUT_WEBHOOK_URL"},
                    "hmac_secret": {"env": "LOOKOUT_WEBHOOK_HMAC_SECRET"},
                },
            ],
            "routes": [{"receivers": ["oncall-pagerduty", "team-slack", "audit-hook"]}],
            "links": {"console": "https://lookout.example/m/{model}/{detector}?at={window_end}"},
            **extra,
        }
    )


def incident_stream() -> tuple[list[LogBatch], list[LogBatch]]:
    """28 minutes of one model; its block rate x5 from minute 10 to 20; split mid-incident."""
    config = SimulationConfig(
        start=T0,
        hours=28 / 60,
        models=(MODEL,),
        calls_per_minute=400,
        embedding_fraction=0.0,
        incidents=(
            Incident("safety_spike", timedelta(minutes=10), timedelta(minutes=10), magnitude=5),
        ),
    )
    batches = list(simulate_batches(config, seconds_per_batch=20))
    cut = (T0 + timedelta(minutes=15, seconds=10)).timestamp()
    return [b for b in batches if b.timestamp[0] < cut], [
        b for b in batches if b.timestamp[0] >= cut
    ]


def pipeline(path: Path, writer: str, config: AlertingConfig) -> Pipeline:
    lookout = LookoutConfig(
        sink=DuckDBSinkConfig(path=str(path)),
        engine=EngineConfig(writer_id=writer),
        detectors=DetectorsConfig(enabled=("safety", "latency", "tokens")),
        alerting=config,
    )
    return build_pipeline(lookout, alert_stream=None)


def run(p: Pipeline, batches: Sequence[LogBatch], *, end: bool) -> list[Alert]:
    for b in batches:
        p.engine.feed(b)
        p.engine.tick()
    assert p.engine.finish(end_of_input=end)
    return list(p.engine.stats.alerts)


def pd_events(server: StandIn, action: str) -> list[dict[str, object]]:
    return [
        r.body
        for r in server.accepted()
        if r.body["event_action"] == action and r.body["dedup_key"] == SAFETY_KEY
    ]


def slack_messages(server: StandIn, word: str) -> list[dict[str, object]]:
    return [
        r.body
        for r in server.accepted()
        if SAFETY_KEY in str(r.body) and r.body["blocks"][0]["text"]["text"].startswith(word)
    ]


def test_an_incident_pages_once_and_resolves_once_across_a_restart(
    servers: dict[str, StandIn], secrets_env: None, tmp_path: Path
) -> None:
    before, after = incident_stream()
    config = alerting(servers)
    first = pipeline(tmp_path / "lookout.duckdb", "pod-1", config)
    fired = run(first, before, end=False)
    assert [a.status for a in fired if a.dedup_key == SAFETY_KEY] == ["firing"]
    wait_for(lambda: len(pd_events(servers["pd"], "trigger")) == 1, what="the PagerDuty trigger")
    wait_for(lambda: len(slack_messages(servers["slack"], "[FIRING")) == 1, what="Slack")
    first.close()  # the pod is replaced mid-incident

    second = pipeline(tmp_path / "lookout.duckdb", "pod-2", config)
    resolved = run(second, after, end=True)
    assert [a.status for a in resolved if a.dedup_key == SAFETY_KEY] == ["resolved"]
    wait_for(lambda: len(pd_events(servers["pd"], "resolve")) == 1, what="the resolve")
    wait_for(lambda: len(slack_messages(servers["slack"], "[RESOLVED")) == 1, what="Slack")
    report = write_report(second.report_sink(), tmp_path / "report.html", title="incident")
    second.close()
    html = report.read_text()
    assert "safety" in html  # the incident is in the report
    assert not [secret for secret in SECRETS if secret in html]

    pd, slack, hook = servers["pd"], servers["slack"], servers["hook"]
    assert pd.problems == slack.problems == hook.problems == []
    assert len(pd_events(pd, "trigger")) == 1 and len(pd_events(pd, "resolve")) == 1
    trigger = pd_events(pd, "trigger")[0]
    details = trigger["payload"]["custom_details"]  # type: ignore[index]
    assert details["value"] > details["threshold"] > 0 and details["sample_size"] > 100
    assert details["baseline"] is not None and details["reason"]
    assert details["details"]["top_reasons"]["SAFETY"] > 0  # why: the blocks' own reasons
    fired_message = slack_messages(slack, "[FIRING")[0]
    blocks: list[dict[str, Any]] = fired_message["blocks"]  # type: ignore[assignment]
    fields = [f["text"] for b in blocks for f in b.get("fields", [])]
    assert any(f.startswith("*Top block reasons*\nSAFETY ") for f in fields), fields
    assert details["links"]["console"].startswith(f"https://lookout.example/m/{MODEL}/safety?at=")
    assert trigger["routing_key"] == ROUTING_KEY
    assert len(slack_messages(slack, "[FIRING")) == len(slack_messages(slack, "[RESOLVED")) == 1
    hooked = [a for r in hook.accepted() for a in r.body["alerts"] if a["dedup_key"] == SAFETY_KEY]
    assert [a["status"] for a in hooked] == ["firing", "resolved"]


class Killed(BaseException):
    """kill -9, as far as this process's engine can tell: nothing after it runs."""


def test_a_page_stored_by_a_worker_killed_before_sending_it_goes_out_from_its_successor(
    servers: dict[str, StandIn], secrets_env: None, tmp_path: Path
) -> None:
    """The checkpoint holding the incident's firing alert lands, and the worker dies before
    handing it to the receivers' outbox. The alert state says it was sent and its window reads
    as judged, so nothing in the sink would page again: the worker that starts next must."""
    before, after = incident_stream()
    config = alerting(servers)
    first = pipeline(tmp_path / "lookout.duckdb", "pod-1", config)

    def killed_on_the_page(alerts: Sequence[Alert]) -> list[Alert]:
        if any(a.dedup_key == SAFETY_KEY for a in alerts):
            raise Killed
        return []

    first.engine._notify_hook = killed_on_the_page
    with pytest.raises(Killed):
        run(first, before, end=False)
    assert first.dispatcher is not None
    first.dispatcher.close(drain_seconds=0)
    first.sink.close()
    assert pd_events(servers["pd"], "trigger") == []  # the page never left

    second = pipeline(tmp_path / "lookout.duckdb", "pod-2", config)
    wait_for(lambda: len(pd_events(servers["pd"], "trigger")) == 1, what="the PagerDuty trigger")
    wait_for(lambda: len(slack_messages(servers["slack"], "[FIRING")) == 1, what="Slack")
    run(second, after, end=True)
    wait_for(lambda: len(pd_events(servers["pd"], "resolve")) == 1, what="the resolve")
    second.close()
    third = pipeline(tmp_path / "lookout.duckdb", "pod-3", config)  # nothing left to send
    third.close()
    assert len(pd_events(servers["pd"], "trigger")) == 1
    assert len(slack_messages(servers["slack"], "[FIRING")) == 1
    trigger = pd_events(servers["pd"], "trigger")[0]
    details = trigger["payload"]["custom_details"]  # type: ignore[index]
    assert details["details"]["top_reasons"]["SAFETY"] > 0  # the whole alert, not a table row
    assert servers["pd"].problems == servers["slack"].problems == []


def test_failing_and_rate_limiting_receivers_deliver_once_and_never_block_the_worker(
    servers: dict[str, StandIn], secrets_env: None, tmp_path: Path
) -> None:
    pd, slack = servers["pd"], servers["slack"]
    pd.respond = [(500, {})]
    slack.respond = [(429, {"Retry-After": "1"})]
    registry = CollectorRegistry()
    config = alerting(
        servers,
        routes=[{"receivers": ["oncall-pagerduty", "team-slack", "audit-hook"]}],
    )
    # the webhook points at a port nobody listens on: it stays down the whole test
    servers["hook"].stop()
    dispatcher = build_dispatcher(config, outbox_path=tmp_path / "outbox.sqlite", registry=registry)
    notifiers = dispatcher.notifiers()
    dispatcher.start()
    try:
        alert = sample_alert()
        started = time.monotonic()
        for name in ("oncall-pagerduty", "team-slack", "audit-hook"):
            notifiers[name].send([alert])
        assert time.monotonic() - started < 0.5  # queued, not sent inline

        def count(receiver: str, outcome: str) -> float:
            value = registry.get_sample_value(
                "lookout_notifications_total", {"receiver": receiver, "outcome": outcome}
            )
            return value or 0.0

        wait_for(lambda: count("oncall-pagerduty", "delivered") == 1, what="PagerDuty delivery")
        wait_for(lambda: count("team-slack", "delivered") == 1, what="Slack delivery")
        assert count("oncall-pagerduty", "retried") == count("team-slack", "retried") == 1
        assert [r.status for r in pd.requests] == [500, 202]
        assert [r.status for r in slack.requests] == [429, 200]
        assert slack.requests[1].at - slack.requests[0].at >= 0.95  # Retry-After honoured
        assert pd.requests[0].body == pd.requests[1].body  # the same event, same dedup_key
        assert pd.problems == slack.problems == []
        wait_for(lambda: count("audit-hook", "retried") >= 2, what="retries to the down hook")
        assert count("audit-hook", "delivered") == 0
        assert dispatcher.pending("audit-hook") == 1  # kept, bounded, persisted
        assert_promtool_clean(generate_latest(registry))
    finally:
        dispatcher.close(drain_seconds=0)


def assert_promtool_clean(exposition: bytes) -> None:
    """`promtool check metrics`: names, types and help as Prometheus expects."""
    promtool = shutil.which("promtool")
    if promtool is None:
        assert os.environ.get("CI") != "true", "promtool required with CI=true"
        return
    checked = subprocess.run(
        [promtool, "check", "metrics"], input=exposition, capture_output=True, check=False
    )
    assert checked.returncode == 0, checked.stdout.decode() + checked.stderr.decode()


def sample_alert(status: str = "firing") -> Alert:
    return Alert(
        dedup_key=SAFETY_KEY,
        status="firing" if status == "firing" else "resolved",
        severity="critical",
        detector="safety",
        model=MODEL,
        condition="block_rate_above_baseline",
        window_start=T0,
        window_end=T0 + timedelta(minutes=1),
        value=0.061,
        threshold=0.035,
        baseline=0.02,
        sample_size=812,
        summary=f"[FIRING] {MODEL} safety: block rate 6.1% — above baseline",
    )


def test_no_secret_reaches_logs_metrics_errors_or_the_outbox_file(
    servers: dict[str, StandIn],
    secrets_env: None,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    servers["pd"].respond = [(500, {})] * 2
    servers["slack"].respond = [(400, {})]
    servers["hook"].respond = [(503, {"Retry-After": "0"})]
    registry = CollectorRegistry()
    outbox = tmp_path / "outbox.sqlite"
    caplog.set_level(logging.DEBUG)
    dispatcher = build_dispatcher(alerting(servers), outbox_path=outbox, registry=registry)
    notifiers = dispatcher.notifiers()
    dispatcher.start()
    try:
        for notifier in notifiers.values():
            notifier.send([sample_alert()])
        wait_for(
            lambda: all(len(s.requests) >= 2 for s in (servers["pd"], servers["hook"])),
            what="failures and retries",
        )
        wait_for(lambda: len(servers["slack"].requests) >= 1, what="the rejected Slack post")
        wait_for(lambda: dispatcher.pending("oncall-pagerduty") == 0, what="PagerDuty drained")
        exposition = generate_latest(registry).decode()
        stored = outbox.read_bytes() + Path(f"{outbox}-wal").read_bytes()
    finally:
        dispatcher.close(drain_seconds=0)
    assert "giving up" in caplog.text and "retry" in caplog.text  # the failures were logged
    for secret in SECRETS:
        assert secret not in caplog.text
        assert secret not in exposition
        assert secret.encode() not in stored


def test_payloads_match_the_published_formats() -> None:
    long = sample_alert().model_copy(
        update={"summary": "x" * 5000, "links": {"report": "https://r.example/1"}}
    )
    for a in (sample_alert(), sample_alert("resolved"), long):
        event = pagerduty_event(a, routing_key="k" * 32, source=None, group="lookout")
        assert pagerduty_problems(Received("/v2/enqueue", {}, b"", event, 0, 202)) == []
    message = slack_message([long, sample_alert("resolved")])
    assert slack_problems(Received("/", {}, b"", message, 0, 200)) == []
    assert message["blocks"][-1]["type"] == "actions"


def test_slack_fallback_text_says_its_prefix_once() -> None:
    """The push-notification text repeated "[FIRING] model safety: " (title, then summary)."""
    fired = slack_message([sample_alert()])["text"]
    assert fired == f"[FIRING] {MODEL} safety: block rate 6.1% — above baseline"
    resolved = sample_alert("resolved").model_copy(
        update={"summary": f"[RESOLVED] {MODEL} safety: block rate above baseline cleared"}
    )
    assert slack_message([resolved])["text"] == (
        f"[RESOLVED] {MODEL} safety: block rate above baseline cleared"
    )
    again = slack_message([sample_alert()], repeat=True)["text"]
    assert again == f"[FIRING] {MODEL} safety (still firing): block rate 6.1% — above baseline"
    grouped = slack_message([sample_alert(), resolved])["text"]
    assert grouped.count("[FIRING") == 1 and "[RESOLVED" not in grouped, grouped
    custom = sample_alert().model_copy(update={"summary": "something odd"})
    assert slack_message([custom])["text"] == f"[FIRING] {MODEL} safety: something odd"
    # a group titled FIRING whose first alert is a resolve: its words must still say so
    mixed = slack_message([resolved, sample_alert()])["text"]
    assert mixed.startswith(f"[FIRING:2] {MODEL} safety: [RESOLVED] {MODEL} safety: "), mixed


def test_repeat_interval_renotifies_on_schedule_while_firing(
    servers: dict[str, StandIn], secrets_env: None, tmp_path: Path
) -> None:
    config = alerting(servers, routes=[{"receivers": ["team-slack"], "repeat_interval": "1s"}])
    dispatcher = build_dispatcher(
        config, outbox_path=tmp_path / "outbox.sqlite", registry=CollectorRegistry()
    )
    notifier = dispatcher.notifiers()["team-slack"]
    dispatcher.start()
    slack = servers["slack"]
    try:
        notifier.send([sample_alert()])
        wait_for(lambda: len(slack.accepted()) >= 4, what="three repeats")
        notifier.send([sample_alert("resolved")])
        wait_for(
            lambda: "[RESOLVED" in slack.accepted()[-1].body["blocks"][0]["text"]["text"],
            what="the resolve",
        )
        sent = len(slack.accepted())
        time.sleep(1.5)  # a resolved incident must not repeat: nothing may arrive meanwhile
        assert len(slack.accepted()) == sent
    finally:
        dispatcher.close(drain_seconds=0)
    messages = slack.accepted()
    headers = [m.body["blocks"][0]["text"]["text"] for m in messages]
    assert headers[0].startswith("[FIRING]") and not headers[0].endswith("(still firing)")
    repeats = [m for m, h in zip(messages, headers, strict=True) if h.endswith("(still firing)")]
    assert len(repeats) >= 3
    gaps = [b.at - a.at for a, b in itertools.pairwise(messages)][: len(repeats)]
    assert all(0.95 <= gap <= 1.6 for gap in gaps), gaps  # every repeat_interval, +tick
    assert slack.problems == []


def test_the_log_says_what_was_delivered_and_what_a_restart_sends_again(
    servers: dict[str, StandIn],
    secrets_env: None,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An on-call engineer reads the worker's log: each delivery is a line naming the receiver
    and the change (never the URL or key), and a restart that finds notifications left in the
    outbox says so before sending them (a receiver may see one again)."""
    caplog.set_level(logging.INFO, logger="lookout.receivers")
    config = alerting(servers, routes=[{"receivers": ["team-slack"]}])
    outbox = tmp_path / "outbox.sqlite"
    servers["slack"].stop()  # down: the notification stays in the outbox
    first = build_dispatcher(config, outbox_path=outbox, registry=CollectorRegistry())
    first.start()
    first.notifiers()["team-slack"].send([sample_alert()])
    wait_for(lambda: first.pending("team-slack") == 1, what="the queued notification")
    first.close(drain_seconds=0)
    assert "team-slack: 1 notification(s) not sent yet" in caplog.text

    servers["slack"] = stand_ins.slack()  # back, on a new port: point the secret at it
    monkeypatch.setenv("LOOKOUT_SLACK_WEBHOOK_URL", servers["slack"].url + SLACK_PATH)
    caplog.clear()
    second = build_dispatcher(config, outbox_path=outbox, registry=CollectorRegistry())
    second.start()
    try:
        wait_for(lambda: len(servers["slack"].accepted()) == 1, what="the resent notification")
        wait_for(lambda: "delivered" in caplog.text, what="the delivery's log line")
    finally:
        second.close(drain_seconds=0)
    assert "team-slack: 1 notification(s) left in the outbox by the previous run" in caplog.text
    assert f"receiver team-slack: delivered {SAFETY_KEY} firing" in caplog.text
    assert not [secret for secret in SECRETS if secret in caplog.text]
