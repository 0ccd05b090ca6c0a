"""The Pub/Sub source's counters reach /metrics, read at scrape time."""

from __future__ import annotations

from dataclasses import fields, replace

import grpc
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from worker.sources.pubsub_source import PubSubSourceStats
from worker.sources.source_metrics import PubSubSourceCollector


def _stats(**values: object) -> PubSubSourceStats:
    zero = PubSubSourceStats(
        **{f.name: 0 for f in fields(PubSubSourceStats) if f.name != "errors"}  # type: ignore[arg-type]
    )
    return replace(zero, **values)  # type: ignore[arg-type]


def test_every_source_counter_is_exported_and_follows_the_scrape() -> None:
    current = {"stats": _stats(received=10, dead_letter_failures=1, held=4, queued=3)}
    registry = CollectorRegistry()
    registry.register(PubSubSourceCollector(lambda: current["stats"]))

    assert registry.get_sample_value("lookout_pubsub_received_total") == 10
    assert registry.get_sample_value("lookout_pubsub_dead_letter_failures_total") == 1
    assert registry.get_sample_value("lookout_pubsub_held_messages") == 4
    assert registry.get_sample_value("lookout_pubsub_queued_messages") == 3

    current["stats"] = _stats(received=25, callback_errors=2, stream_restarts=1)
    assert registry.get_sample_value("lookout_pubsub_received_total") == 25
    assert registry.get_sample_value("lookout_pubsub_callback_errors_total") == 2
    assert registry.get_sample_value("lookout_pubsub_stream_restarts_total") == 1

    exported = {
        family.name for family in text_string_to_metric_families(generate_latest(registry).decode())
    }
    counters = {f.name for f in fields(PubSubSourceStats)} - {"held", "queued", "errors"}
    assert {f"lookout_pubsub_{name}" for name in counters} <= exported


def test_source_errors_are_one_family_labelled_by_step_and_reason() -> None:
    """`lookout_source_errors_total{step,reason}`: what an alert on a broken setup keys on."""
    errors = (
        (("pull", "not_found"), 7),
        (("dead_letter", "unavailable"), 2),
        (("ack", "other"), 0),
    )
    registry = CollectorRegistry()
    registry.register(PubSubSourceCollector(lambda: _stats(errors=errors)))

    def value(step: str, reason: str) -> float | None:
        labels = {"step": step, "reason": reason}
        return registry.get_sample_value("lookout_source_errors_total", labels)

    assert value("pull", "not_found") == 7
    assert value("dead_letter", "unavailable") == 2
    assert value("ack", "other") == 0
    assert value("pull", "unavailable") is None


def test_every_pull_failure_reason_is_exported_from_a_real_source_from_the_start() -> None:
    """Stable series: every (step, reason) pair exists from the first scrape (at 0 unless it
    already failed: the source starts pulling at once), so rate() works from the start."""
    from worker.failure_policy import ERROR_REASONS
    from worker.sources.pubsub_source import ERROR_STEPS, PubSubSource, PubSubSourceSettings

    source = PubSubSource(
        PubSubSourceSettings(project="p", subscription="s"),
        channel_factory=_dead_channel,
    )
    try:
        errors = dict(source.stats().errors)
    finally:
        source.close()
    assert set(errors) == {(step, reason) for step in ERROR_STEPS for reason in ERROR_REASONS}
    # a refused connection is the only thing that can have been counted so far
    assert {pair for pair, count in errors.items() if count} <= {("pull", "unavailable")}


def _dead_channel() -> grpc.Channel:
    return grpc.insecure_channel("127.0.0.1:9")
