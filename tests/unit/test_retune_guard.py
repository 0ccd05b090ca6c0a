"""A retune request that started nothing does not count as made: a failed one is tried again
at the incident's next alerting window, and a dry run leaves no cooldown for real requests."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from alerts.retune.guard import RetuneLog
from alerts.retune.request import RetuneRequest
from alerts.retune.trigger import RetuneTrigger
from alerts.state import Incident
from schemas.alert_config import AlertingConfig
from schemas.config import LookoutConfig
from schemas.detection import Detection
from schemas.retune_config import RetuneAction
from tests.sink_cases import detection

T0 = datetime(2026, 1, 5, 6, 0, tzinfo=UTC)
KEY = "lookout:m:safety:block_rate_above_baseline"


def alerting(*, dry_run: bool = False) -> AlertingConfig:
    return AlertingConfig.model_validate(
        {
            "routes": [{"receivers": ["log"], "retune": "retrain"}],
            "retune": {
                "actions": [
                    {
                        "name": "retrain",
                        "kind": "pubsub",
                        "project": "p",
                        "topic": "t",
                        "consecutive_windows": 2,
                        "cooldown": "24h",
                        "dry_run": dry_run,
                    }
                ]
            },
        }
    )


def window(k: int) -> tuple[Detection, Incident]:
    """The incident's k-th alerting window (k from 1)."""
    end = T0 + timedelta(minutes=5 * k)
    judged = detection(model="m", start=int(end.timestamp()) - 60)
    incident = Incident(
        dedup_key=KEY,
        model="m",
        detector="safety",
        condition="block_rate_above_baseline",
        phase="firing",
        severity="critical",
        started_at=T0,
        windows=k,
        alert_windows=k,
    )
    return judged, incident


class FlakyRunner:
    """Refuses the first `failures` requests, then starts runs."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.started: list[RetuneRequest] = []

    def __call__(self, action: RetuneAction, request: RetuneRequest) -> str:
        if self.failures:
            self.failures -= 1
            raise RuntimeError("503 Service Unavailable")
        self.started.append(request)
        return f"run-{len(self.started)}"


def trigger(config: AlertingConfig, log: RetuneLog, runner: Any) -> RetuneTrigger:
    made = RetuneTrigger(config, log, registry=CollectorRegistry(), runner=runner)
    made.start()
    return made


def test_a_failed_request_is_tried_again_at_the_next_alerting_window(tmp_path: Path) -> None:
    runner = FlakyRunner(failures=1)
    retune = trigger(alerting(), RetuneLog(tmp_path / "retune.sqlite"), runner)
    try:
        asked = []
        for k in range(1, 6):
            asked.append(len(retune.consider(*window(k))))
            retune.wait_idle()
        # window 2 is sustained and fails; window 3 tries again and starts the run; then
        # the incident has its request
        assert asked == [0, 1, 1, 0, 0]
        assert len(runner.started) == 1
        failed = retune.total.labels("retrain", "failed")._value.get()
        sent = retune.total.labels("retrain", "sent")._value.get()
        assert (failed, sent) == (1, 1)
    finally:
        retune.close()


def test_a_dry_run_leaves_no_cooldown_for_the_real_requests(tmp_path: Path) -> None:
    path = tmp_path / "retune.sqlite"
    dry = trigger(alerting(dry_run=True), RetuneLog(path), FlakyRunner(failures=0))
    try:
        assert len(dry.consider(*window(2))) == 1
        dry.wait_idle()
    finally:
        dry.close()
    runner = FlakyRunner(failures=0)
    real = trigger(alerting(), RetuneLog(path), runner)  # the operator turned dry_run off
    try:
        assert len(real.consider(*window(3))) == 1
        real.wait_idle()
        assert len(runner.started) == 1
        assert real.consider(*window(4)) == []  # and the real one counts from now on
    finally:
        real.close()


def test_a_retune_action_whose_client_is_not_installed_stops_the_start(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Found by a newcomer: without the retune extra, `config check` said ok and `lookout
    run` started; the first incident long enough to retune failed in the log, and the run
    exited 0. Now config check warns and run refuses to start, naming the action."""
    import importlib.util

    from worker.cli.app import start_problems

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: (
            None if name.startswith(("kfp", "google.cloud.aiplatform")) else real(name, *a)
        ),
    )
    config = LookoutConfig.model_validate(
        {
            "sink": {"path": str(tmp_path / "x.duckdb")},
            "alerting": {
                "retune": {
                    "actions": [
                        {
                            "name": "vertex-tune",
                            "kind": "vertex_pipeline",
                            "project": "p",
                            "location": "us-central1",
                            "template_path": "gs://b/t.yaml",
                            "pipeline_root": "gs://b/root",
                        }
                    ]
                },
                "routes": [{"receivers": ["log"], "retune": "vertex-tune"}],
            },
        }
    )
    [problem] = start_problems(config)
    assert problem.startswith("retune action 'vertex-tune' (vertex_pipeline) needs the retune")
    assert "requirements-retune.lock" in problem
    ingest = config.model_copy(
        update={"engine": config.engine.model_copy(update={"role": "ingest"})}
    )
    assert start_problems(ingest) == []  # an ingest replica never retunes
    # an action no route names never runs: staged, it needs nothing installed (found in review)
    unrouted = config.alerting.model_copy(update={"routes": ()})
    assert start_problems(config.model_copy(update={"alerting": unrouted})) == []
