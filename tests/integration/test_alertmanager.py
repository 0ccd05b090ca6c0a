"""A real Prometheus Alertmanager receives Lookout's alerts (API v2) and routes them to a
loopback webhook: firing, not re-notified while Lookout keeps re-posting, then resolved."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from prometheus_client import CollectorRegistry

from alerts.receivers import build_dispatcher
from schemas.alert_config import AlertingConfig
from schemas.detection import Alert
from tests.integration.receiver_stand_ins import StandIn, wait_for

BINARY = "prometheus-alertmanager"
KEY = "lookout:gemini-1.5-flash:safety:block_rate_above_baseline"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def hook() -> Iterator[StandIn]:
    server = StandIn(lambda got: [] if isinstance(got.body, dict) else ["not an object"]).start()
    yield server
    server.stop()


@pytest.fixture
def alertmanager(tmp_path: Path, hook: StandIn) -> Iterator[str]:
    """Alertmanager on a free loopback port, routing everything to `hook` after 1 s."""
    binary = shutil.which(BINARY)
    if binary is None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{BINARY} required with CI=true (scripts/install-test-tools)")
        pytest.skip(f"SKIPPING: {BINARY} not installed (run scripts/install-test-tools)")
    config = tmp_path / "alertmanager.yml"
    config.write_text(
        f"""route:
  receiver: lookout-hook
  group_by: [alertname, model]
  group_wait: 1s
  group_interval: 1s
  repeat_interval: 1h
receivers:
  - name: lookout-hook
    webhook_configs:
      - url: {hook.url}/alertmanager
        send_resolved: true
"""
    )
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = (tmp_path / "alertmanager.log").open("wb")
    process = subprocess.Popen(
        [
            binary,
            f"--config.file={config}",
            f"--storage.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--cluster.listen-address=",
            f"--web.external-url={url}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:

        def ready() -> bool:
            try:
                return httpx.get(f"{url}/-/ready", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(ready, timeout=20, what="Alertmanager /-/ready")
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


def lookout_alert(status: str) -> Alert:
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=3)
    return Alert(
        dedup_key=KEY,
        status="firing" if status == "firing" else "resolved",
        severity="critical",
        detector="safety",
        model="gemini-1.5-flash",
        condition="block_rate_above_baseline",
        window_start=start,
        window_end=start + timedelta(minutes=2),
        value=0.061,
        threshold=0.035,
        baseline=0.02,
        sample_size=812,
        summary="[FIRING] gemini-1.5-flash safety: block rate 6.1% — above baseline",
    )


def test_alertmanager_routes_lookout_alerts_firing_then_resolved(
    alertmanager: str, hook: StandIn, tmp_path: Path
) -> None:
    config = AlertingConfig.model_validate(
        {
            "receivers": [
                {
                    "name": "platform-alertmanager",
                    "kind": "alertmanager",
                    "url": alertmanager,
                    "resend_interval": "500ms",
                    "labels": {"team": "ml-platform"},
                }
            ],
            "routes": [{"receivers": ["platform-alertmanager"]}],
            "links": {"console": "https://lookout.example/{model}/{detector}"},
        }
    )
    registry = CollectorRegistry()
    dispatcher = build_dispatcher(config, outbox_path=tmp_path / "outbox.sqlite", registry=registry)
    notifier = dispatcher.notifiers()["platform-alertmanager"]
    dispatcher.start()
    try:
        notifier.send([lookout_alert("firing")])
        wait_for(lambda: len(hook.accepted()) >= 1, timeout=20, what="the firing notification")
        wait_for(
            lambda: (
                (
                    registry.get_sample_value(
                        "lookout_notifications_total",
                        {"receiver": "platform-alertmanager", "outcome": "delivered"},
                    )
                    or 0
                )
                >= 4
            ),
            what="Lookout re-posting the firing alert",
        )
        assert len(hook.accepted()) == 1  # re-posts keep it alive; Alertmanager dedups them
        notifier.send([lookout_alert("resolved")])
        wait_for(lambda: len(hook.accepted()) >= 2, timeout=20, what="the resolved notification")
    finally:
        dispatcher.close(drain_seconds=0)
    firing, resolved = (r.body for r in hook.accepted()[:2])
    assert (firing["status"], resolved["status"]) == ("firing", "resolved")
    assert firing["version"] == "4" and firing["receiver"] == "lookout-hook"
    (sent,) = firing["alerts"]
    assert sent["labels"]["dedup_key"] == KEY and sent["labels"]["team"] == "ml-platform"
    assert sent["labels"]["severity"] == "critical"
    assert sent["annotations"]["value"] == "0.061" and sent["annotations"]["sample_size"] == "812"
    assert sent["generatorURL"] == "https://lookout.example/gemini-1.5-flash/safety"
    assert resolved["alerts"][0]["labels"]["dedup_key"] == KEY
    assert hook.problems == []
