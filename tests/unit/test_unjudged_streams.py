"""A model too quiet for a detector's minimums is said to be unjudged, once, in the log."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

import pytest

from alerts.tracking import EvidenceTracker
from detectors.registry import build_detectors
from schemas.alert_config import AlertingConfig
from schemas.detection import Detection
from worker.engine import Engine, EngineSettings
from worker.evaluator import WindowEvaluator
from worker.sources.simulator import SimulationConfig, simulate_batches
from worker.testing import FakeClock, MemorySink
from worker.unjudged import UnjudgedStreams


def test_a_model_too_quiet_to_judge_is_named_once_in_the_log(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Found in review: a model at 8 calls a minute got `insufficient_data` from safety and
    latency for every window of three hours, and nothing but silence told the on-call."""
    sink = MemorySink()
    detectors = build_detectors(dict.fromkeys(("safety", "latency")))
    tracker = EvidenceTracker.load(sink.load_alert_state(), AlertingConfig())
    engine = Engine(
        EngineSettings(),
        detectors,
        sink,
        WindowEvaluator(detectors, 60, tracker),
        now=FakeClock(),
        wall_clock=None,
    )
    config = SimulationConfig(
        start=datetime(2026, 1, 5, 6, 0, tzinfo=UTC),
        hours=2.5,
        models=("text-bison",),
        calls_per_minute=8,
        embedding_fraction=0.0,
    )
    with caplog.at_level(logging.WARNING, logger="lookout.engine"):
        for batch in simulate_batches(config, seconds_per_batch=60):
            engine.feed(batch)
            engine.tick()
        engine.finish(end_of_input=True)
    said = [r.getMessage() for r in caplog.records if "no verdict" in r.getMessage()]
    assert len(said) == 2, said  # one per detector, not one per window
    assert any(s.startswith("text-bison latency: no verdict for 60 windows in a row") for s in said)
    assert all("detectors." in s and "engine.window_seconds" in s for s in said)


def test_a_model_without_the_data_a_detector_reads_is_not_called_quiet() -> None:
    """Found in review: a busy model that sends no embeddings was told to lower the
    minimums or lengthen the window, neither of which would help."""
    watch = UnjudgedStreams(after=2)
    window = datetime(2026, 1, 5, tzinfo=UTC)
    no_embeddings = Detection(
        detector="embedding_drift",
        model="gpt-4o-mini",
        window_start=window,
        window_end=window,
        verdict="insufficient_data",
        condition="embedding_distribution_shift",
        reason="no reference yet: it holds 0 of the 500 embeddings it needs",
        sample_size=0,
    )
    assert watch.observe([no_embeddings]) == []
    [said] = watch.observe([no_embeddings])
    assert "leave embedding_drift out of detectors.enabled" in said
    assert "quiet" not in said


def _latency(verdict: str) -> Detection:
    window = datetime(2026, 1, 5, tzinfo=UTC)
    return Detection(
        detector="latency",
        model="text-bison",
        window_start=window,
        window_end=window,
        verdict=verdict,
        condition="latency_p95_regression",
        reason="not judged: 9 calls with a latency in the window (minimum 50)",
        sample_size=9,
    )


def test_a_stream_flipping_around_its_minimum_is_named_at_most_once_a_day() -> None:
    """Found replaying 50 hours at 10 calls a minute: a latency baseline at 490-510 calls in 48
    windows against its minimum of 500 gave a verdict every few windows, and each one re-armed
    the warning: the same line 7 times for one model. In review: an hour judged, an hour not,
    all day, still warned 12 times a day."""
    watch = UnjudgedStreams(after=10, renotify_after=300)
    silent, judged = _latency("insufficient_data"), _latency("ok")
    said = []
    for _ in range(10):  # ten stretches: 10 windows unjudged, 3 judged
        said += watch.observe([silent] * 10 + [judged] * 3)
    for _ in range(6):  # judged for `after` windows, then silent as long
        said += watch.observe([judged] * 10 + [silent] * 10)
    assert len(said) == 1, said  # 250 windows: within the "day"
    said += watch.observe([judged] * 10 + [silent] * 60)  # past it: named again
    assert len(said) == 2, said


def test_a_new_long_silence_a_day_after_the_warning_is_named_again() -> None:
    """Found in review: one verdict every 45 windows kept the warning from re-arming, and a
    later week without a verdict said nothing; then a silence that began just after the
    warning and went on past the day was not named either."""
    watch = UnjudgedStreams(after=10, renotify_after=300)
    silent, judged = _latency("insufficient_data"), _latency("ok")
    said = watch.observe([silent] * 10)
    for _ in range(5):  # 5 x 45 windows with one verdict each: never 10 verdicts in a row
        said += watch.observe([judged] + [silent] * 44)
    assert len(said) == 1, said  # the flapping is not news
    said += watch.observe([judged] + [silent] * 500)  # a "day" after the warning: named again
    assert len(said) == 2, said
    assert "no verdict for " in said[1] and "windows in a row" in said[1]
    # a silence that simply goes on is not named again
    said += watch.observe([silent] * 1000)
    assert len(said) == 2, said


def test_a_silence_under_way_when_the_day_ends_is_named_with_its_length() -> None:
    watch = UnjudgedStreams(after=10, renotify_after=300)
    silent, judged = _latency("insufficient_data"), _latency("ok")
    said = watch.observe([silent] * 10 + [judged] + [silent] * 298)
    assert len(said) == 1, said
    said += watch.observe([silent] * 5)
    assert len(said) == 2 and "no verdict for 299 windows in a row" in said[1], said


def test_the_hour_and_the_day_are_time_not_windows() -> None:
    """In review: at 5-minute windows "60 windows" was 5 hours and "a day" 5 days."""
    five = UnjudgedStreams.for_windows(300)
    assert (five.after, five.renotify_after) == (12, 288)
    assert (
        UnjudgedStreams.for_windows(60).after,
        UnjudgedStreams.for_windows(60).renotify_after,
    ) == (60, 1440)
    hourly = UnjudgedStreams.for_windows(3600)  # not at the first window without a baseline
    assert (hourly.after, hourly.renotify_after) == (12, 24)
