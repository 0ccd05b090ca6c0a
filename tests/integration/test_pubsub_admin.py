"""`init_pubsub` against the real emulator: idempotent, and loud about mismatching config."""

from __future__ import annotations

import pytest

from worker.failure_policy import InvalidSetting
from worker.sources.grpc_channel import ChannelFactory, subscriber_client
from worker.sources.pubsub_admin import init_pubsub

PROJECT = "lookout-test"


def test_init_creates_everything_then_reports_exists(
    pubsub_channels: ChannelFactory, unique_name: str
) -> None:
    args = (PROJECT, f"{unique_name}-logs", f"{unique_name}-sub", f"{unique_name}-dlq")
    first = init_pubsub(*args, ack_deadline_seconds=90, channels=pubsub_channels)
    assert [r.action for r in first.resources] == ["created"] * 4, first.lines()
    assert first.ok

    second = init_pubsub(*args, ack_deadline_seconds=90, channels=pubsub_channels)
    assert [r.action for r in second.resources] == ["exists"] * 4, second.lines()
    assert second.ok

    subscriber = subscriber_client(pubsub_channels)
    try:
        sub = subscriber.get_subscription(subscription=first.resources[-1].path)
    finally:
        subscriber.close()
    assert sub.ack_deadline_seconds == 90
    assert sub.dead_letter_policy.dead_letter_topic.endswith(f"/topics/{unique_name}-dlq")
    assert sub.dead_letter_policy.max_delivery_attempts == 10


def test_init_reports_a_mismatching_existing_subscription(
    pubsub_channels: ChannelFactory, unique_name: str
) -> None:
    args = (PROJECT, f"{unique_name}-logs", f"{unique_name}-sub")
    init_pubsub(*args, ack_deadline_seconds=30, channels=pubsub_channels)

    report = init_pubsub(*args, ack_deadline_seconds=120, channels=pubsub_channels)

    assert not report.ok
    mismatch = [r for r in report.resources if r.action == "mismatch"]
    assert len(mismatch) == 1
    assert "ack_deadline_seconds is 30, asked 120" in mismatch[0].line()


def test_init_rejects_out_of_range_settings_before_calling_pubsub(
    pubsub_channels: ChannelFactory,
) -> None:
    with pytest.raises(InvalidSetting, match="max_delivery_attempts must be between 5 and 100"):
        init_pubsub(PROJECT, "t", "s", "d", max_delivery_attempts=3, channels=pubsub_channels)


def test_the_service_account_note_is_for_the_real_service_only() -> None:
    """The emulator has no IAM: the roles/… note is for pubsub.googleapis.com alone."""
    from worker.sources.grpc_channel import channel_factory
    from worker.sources.pubsub_admin import dead_letter_iam_note

    dlq = "projects/p/topics/logs-dlq"
    sub = "projects/p/subscriptions/logs-sub"
    note = dead_letter_iam_note(channel_factory(None), dlq, sub)
    assert note is not None
    assert f"roles/pubsub.publisher on {dlq}" in note
    assert f"roles/pubsub.subscriber on {sub}" in note
    assert dead_letter_iam_note(channel_factory("127.0.0.1:8085"), dlq, sub) is None
