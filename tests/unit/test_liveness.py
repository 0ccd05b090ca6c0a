"""/healthz fails once the main loop stops coming round, so the liveness probe restarts a
wedged worker (a hung sink write, a deadlock) instead of leaving it live and holding its
messages' leases; a worker that ticks again is live again."""

from __future__ import annotations

import logging
import urllib.error
import urllib.request
from pathlib import Path

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


def test_readyz_says_why_the_sink_is_not_ready(tmp_path: Path) -> None:
    """Found in review: /readyz answered `not ready: sink` and nothing more, so the on-call
    went to the logs for what the probe already knew."""
    from schemas.config import LookoutConfig
    from worker.cli.pipeline import build_pipeline
    from worker.cli.serve import _start_health

    config = LookoutConfig.model_validate(
        {
            "sink": {"path": str(tmp_path / "lookout.duckdb")},
            "metrics": {"host": "127.0.0.1", "port": 0},
        }
    )
    pipeline = build_pipeline(config, alert_stream=None)
    server = _start_health(config, pipeline, {"sink": pipeline.sink.writable})
    assert server is not None
    try:
        pipeline.sink.close()  # the connection is gone: the sink cannot be written
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{server.port}/readyz", timeout=10)
            raise AssertionError("ready with a closed sink")
        except urllib.error.HTTPError as error:
            status, body = error.code, error.read().decode()
        assert status == 503
        assert body.startswith("not ready: sink (duckdb:"), body
        assert "closed" in body.lower(), body
    finally:
        server.stop()
