"""The Pub/Sub source's counters reach /metrics, read at scrape time."""

from __future__ import annotations

from dataclasses import fields, replace

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from worker.sources.pubsub_source import PubSubSourceStats
from worker.sources.source_metrics import PubSubSourceCollector


def _stats(**values: int) -> PubSubSourceStats:
    zero = PubSubSourceStats(**{f.name: 0 for f in fields(PubSubSourceStats)})
    return replace(zero, **values)


def test_every_source_counter_is_exported_and_follows_the_scrape() -> None:
    current = {"stats": _stats(received=10, dead_letter_failures=1, held=4)}
    registry = CollectorRegistry()
    registry.register(PubSubSourceCollector(lambda: current["stats"]))

    assert registry.get_sample_value("lookout_pubsub_received_total") == 10
    assert registry.get_sample_value("lookout_pubsub_dead_letter_failures_total") == 1
    assert registry.get_sample_value("lookout_pubsub_held_messages") == 4

    current["stats"] = _stats(received=25, callback_errors=2, stream_restarts=1)
    assert registry.get_sample_value("lookout_pubsub_received_total") == 25
    assert registry.get_sample_value("lookout_pubsub_callback_errors_total") == 2
    assert registry.get_sample_value("lookout_pubsub_stream_restarts_total") == 1

    exported = {
        family.name for family in text_string_to_metric_families(generate_latest(registry).decode())
    }
    counters = {f.name for f in fields(PubSubSourceStats)} - {"held"}
    assert {f"lookout_pubsub_{name}" for name in counters} <= exported
