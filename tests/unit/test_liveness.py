"""/healthz fails once the main loop stops coming round, so the liveness probe restarts a
wedged worker (a hung sink write, a deadlock) instead of leaving it live and holding its
messages' leases; a worker that ticks again is live again."""

from __future__ import annotations

import logging
import urllib.error
import urllib.request

import pytest
from prometheus_client import CollectorRegistry

from alerts.state import AlertTracker
from detectors.registry import build_detectors
from schemas.alert_config import AlertingConfig
from worker.engine import Engine, EngineSettings
from worker.evaluator import WindowEvaluator
from worker.health import HealthServer, stall_check
from worker.testing import FakeClock, MemorySink


def healthz(port: int) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def test_healthz_fails_while_the_main_loop_is_stuck_and_recovers_when_it_runs(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = FakeClock()
    detectors = build_detectors({"safety": None})
    evaluator = WindowEvaluator(detectors, 60, AlertTracker(AlertingConfig()))
    engine = Engine(EngineSettings(), detectors, MemorySink(), evaluator, now=clock)
    liveness = stall_check(lambda: engine.seconds_since_progress, 600.0)
    server = HealthServer(CollectorRegistry(), {}, host="127.0.0.1", port=0, liveness=liveness)
    server.start()
    try:
        engine.tick()
        clock.advance(590)
        assert healthz(server.port) == (200, "ok\n")
        with caplog.at_level(logging.ERROR, logger="lookout.health"):
            clock.advance(20)  # a sink write that hangs: no tick, no checkpoint begun
            first = healthz(server.port)
            again = healthz(server.port)
        assert first[0] == 503 and again[0] == 503
        assert "the main loop has not run for 610 s (metrics.stall_seconds 600)" in first[1]
        assert [r.getMessage().count("liveness probe") for r in caplog.records] == [1]
        engine.tick()
        assert healthz(server.port) == (200, "ok\n")
    finally:
        server.stop()
