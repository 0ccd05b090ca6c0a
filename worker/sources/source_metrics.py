"""Pub/Sub source counters on /metrics, read from the source at scrape time.

A custom collector instead of counters incremented inside the source: the source's counters
live under its own lock in its receiver threads, and a scrape only needs a snapshot.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import asdict

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from worker.sources.pubsub_source import PubSubSourceStats

_HELP = {
    "received": "Messages received from the subscription.",
    "redelivered_acked": "Redeliveries of already-acked messages, acked again and not counted.",
    "redelivered_held": "Redeliveries of messages still held, settled with the original.",
    "delivered_again": "Messages Pub/Sub says it delivered before (delivery_attempt above 1, "
    "set when the subscription has a dead-letter policy): after a crash, what the stopped "
    "process had pulled and not acked; they are counted once, through the stored request ids.",
    "bad_encoding": "Messages whose Content-Encoding body could not be decoded (dead-lettered).",
    "dead_lettered_records": "Records published to the dead-letter topic with their reason.",
    "dead_letter_failures": "Dead-letter publishes that failed (the message was nacked).",
    "callback_errors": "Exceptions inside the streaming-pull callback (message nacked).",
    "stream_restarts": "Times the streaming pull was reopened after it ended.",
    "lease_extensions": "Ack-deadline extensions of held messages.",
    "lease_expired": "Held messages whose lease ran past max_lease_duration.",
    "ack_failures": "Acknowledge calls that failed (the message will be redelivered).",
    "dead_letter_oversized": "Records too large to publish, dead-lettered as a finder record.",
    "dead_letter_given_up": "Bad records given up on after repeated dead-letter failures "
    "(logged with size and sha256, kept in the overflow directory if set).",
}


class PubSubSourceCollector(Collector):
    def __init__(self, stats: Callable[[], PubSubSourceStats]) -> None:
        self._stats = stats

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        stats = self._stats()
        snapshot = asdict(stats)
        errors = CounterMetricFamily(
            "lookout_source_errors",
            "Failed source calls by step (pull, ack, dead_letter) and reason.",
            labels=["step", "reason"],
        )
        for (step, reason), count in stats.errors:
            errors.add_metric([step, reason], count)
        yield errors
        for name, help_text in _HELP.items():
            family = CounterMetricFamily(f"lookout_pubsub_{name}", help_text)
            family.add_metric([], snapshot[name])
            yield family
        held = GaugeMetricFamily(
            "lookout_pubsub_held_messages", "Messages received and not yet acked or nacked."
        )
        held.add_metric([], snapshot["held"])
        yield held
        queued = GaugeMetricFamily(
            "lookout_pubsub_queued_messages",
            "Messages pulled ahead of the engine and not yet handed to it.",
        )
        queued.add_metric([], snapshot["queued"])
        yield queued
