"""Create Lookout's topic, subscription and dead-letter topic, idempotently.

Why idempotent: `lookout pubsub init` runs from deploy scripts and Helm hooks on every release.
A resource that already exists is checked against what was asked and reported ("exists",
or "mismatch" with the differing fields); it is never silently changed, because changing the
ack deadline or dead-letter policy of a live subscription under running workers is a decision
for a human — who makes it with `update=True` (`--update`): the settings Pub/Sub can change in
place (ack deadline, retry policy, dead-letter policy, exactly-once delivery, message
retention) are then updated ("updated"). The others (the topic, a filter, message ordering)
cannot be: the mismatch says so and what to do. A dead-letter topic also gets a subscription
of its own: Pub/Sub drops messages published to a topic nobody subscribes to, so without it
dead-lettered records would be lost.

Every call is bounded by `timeout_seconds` (retries included): an unreachable endpoint ends
in one clear error within it, not after the client library's minutes of silent retries.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from google.api_core import exceptions as gexc
from google.cloud import pubsub_v1
from google.protobuf import duration_pb2, field_mask_pb2

from worker.failure_policy import InvalidSetting, PubSubError, bounded_retry, describe
from worker.sources.grpc_channel import (
    ChannelFactory,
    Endpoint,
    channel_factory,
    publisher_client,
    subscriber_client,
)

Action = Literal["created", "exists", "mismatch", "updated"]
DEFAULT_TIMEOUT_SECONDS = 15.0

#: compared setting -> the Subscription field (update-mask path) that holds it; the settings
#: not named here (topic, filter, message ordering) cannot be changed on a subscription
MUTABLE: dict[str, str] = {
    "ack_deadline_seconds": "ack_deadline_seconds",
    "dead_letter_topic": "dead_letter_policy",
    "max_delivery_attempts": "dead_letter_policy",
    "retry_min_backoff_seconds": "retry_policy",
    "retry_max_backoff_seconds": "retry_policy",
    "exactly_once": "enable_exactly_once_delivery",
    "message_retention_seconds": "message_retention_duration",
}


@dataclass(frozen=True)
class ResourceStatus:
    """What `init` found or did for one topic or subscription."""

    kind: Literal["topic", "subscription"]
    path: str
    action: Action
    detail: str = ""
    #: for a mismatch: True when `--update` can reconcile every difference
    updatable: bool = False

    def line(self) -> str:
        text = f"{self.kind} {self.path}: {self.action}"
        return f"{text} ({self.detail})" if self.detail else text


@dataclass(frozen=True)
class InitReport:
    """Every resource `init` touched; `ok` is False when an existing one differs from the ask."""

    resources: tuple[ResourceStatus, ...]
    notes: tuple[str, ...] = field(default=())

    @property
    def ok(self) -> bool:
        return all(r.action != "mismatch" for r in self.resources)

    @property
    def updatable(self) -> bool:
        """Every mismatch can be fixed in place with `update=True` (`--update`)."""
        return all(r.updatable for r in self.resources if r.action == "mismatch")

    def lines(self) -> list[str]:
        return [r.line() for r in self.resources] + [f"note: {n}" for n in self.notes]


def _check_range(name: str, value: int, low: int, high: int) -> None:
    if not low <= value <= high:
        msg = f"{name} must be between {low} and {high} (got {value})"
        raise InvalidSetting(msg)


def _ensure_topic(
    publisher: pubsub_v1.PublisherClient, path: str, timeout: float
) -> ResourceStatus:
    try:
        publisher.create_topic(name=path, timeout=timeout, retry=bounded_retry(timeout))
    except gexc.AlreadyExists:
        return ResourceStatus("topic", path, "exists")
    except gexc.GoogleAPICallError as e:
        msg = f"creating topic {path} failed: {describe(e)}"
        raise PubSubError(msg) from e
    return ResourceStatus("topic", path, "created")


def _found(existing: pubsub_v1.types.Subscription) -> dict[str, object]:
    """The compared settings of an existing subscription, keyed as `wanted` is."""
    retry = "retry_policy" in existing  # a 0 s minimum backoff is falsy but still set
    return {
        "topic": existing.topic,
        "filter": existing.filter or None,
        "message_ordering": existing.enable_message_ordering,
        "ack_deadline_seconds": existing.ack_deadline_seconds,
        "dead_letter_topic": existing.dead_letter_policy.dead_letter_topic or None,
        "max_delivery_attempts": (
            existing.dead_letter_policy.max_delivery_attempts
            if existing.dead_letter_policy.dead_letter_topic
            else None
        ),
        "retry_min_backoff_seconds": int(existing.retry_policy.minimum_backoff.total_seconds())
        if retry
        else None,
        "retry_max_backoff_seconds": int(existing.retry_policy.maximum_backoff.total_seconds())
        if retry
        else None,
        "exactly_once": existing.enable_exactly_once_delivery,
        "message_retention_seconds": int(existing.message_retention_duration.total_seconds()),
    }


def _differences(existing: pubsub_v1.types.Subscription, wanted: dict[str, object]) -> list[str]:
    """The settings of `wanted` that differ in `existing`."""
    found = _found(existing)
    return [key for key, value in wanted.items() if found[key] != value]


#: what an unset setting means, said in words (not Python's `None`)
_UNSET = {
    "filter": "none (no filter)",
    "dead_letter_topic": "none (no dead-letter policy)",
    "max_delivery_attempts": "none (no dead-letter policy)",
    "retry_min_backoff_seconds": "none (no retry policy)",
    "retry_max_backoff_seconds": "none (no retry policy)",
}


def _said(key: str, value: object) -> str:
    return _UNSET.get(key, "none") if value is None else repr(value)


def _describe(existing: pubsub_v1.types.Subscription, wanted: dict[str, object], key: str) -> str:
    """`retry_min_backoff_seconds is 10, asked none (no retry policy)`."""
    return f"{key} is {_said(key, _found(existing)[key])}, asked {_said(key, wanted[key])}"


def dead_letter_iam_note(channels: ChannelFactory, dlq_path: str, sub_path: str) -> str | None:
    """The roles the Pub/Sub service account needs for a dead-letter policy, or None against
    the emulator (it has no IAM, so the note would only be noise there)."""
    if isinstance(channels, Endpoint) and channels.emulator_host:
        return None
    return (
        "in production the Pub/Sub service account "
        "(service-PROJECT_NUMBER@gcp-sa-pubsub.iam.gserviceaccount.com) needs "
        f"roles/pubsub.publisher on {dlq_path} and roles/pubsub.subscriber on {sub_path} "
        "for the dead-letter policy to work"
    )


def _fixed_hint(path: str, keys: list[str]) -> str:
    """What to do about differences Pub/Sub cannot change on an existing subscription."""
    name = path.rsplit("/", 1)[-1]
    return (
        f"{', '.join(keys)} cannot be changed on an existing subscription: delete it "
        f"(`gcloud pubsub subscriptions delete {path}`; un-acked messages are lost) and re-run, "
        f"or choose another --subscription than {name}"
    )


def _ensure_subscription(
    subscriber: pubsub_v1.SubscriberClient,
    request: dict[str, object],
    wanted: dict[str, object],
    *,
    update: bool = False,
    timeout: float = DEFAULT_TIMEOUT_SECONDS,
) -> ResourceStatus:
    path = str(request["name"])
    try:
        subscriber.create_subscription(
            request=request, timeout=timeout, retry=bounded_retry(timeout)
        )
    except gexc.AlreadyExists:
        existing = subscriber.get_subscription(
            subscription=path, timeout=timeout, retry=bounded_retry(timeout)
        )
        diffs = _differences(existing, wanted)
        if not diffs:
            return ResourceStatus("subscription", path, "exists")
        detail = "; ".join(_describe(existing, wanted, key) for key in diffs)
        fixed = [key for key in diffs if key not in MUTABLE]
        if fixed:
            return ResourceStatus(
                "subscription", path, "mismatch", f"{detail}; {_fixed_hint(path, fixed)}"
            )
        if not update:
            return ResourceStatus(
                "subscription", path, "mismatch", f"{detail}; --update changes it", updatable=True
            )
        paths = sorted({MUTABLE[key] for key in diffs})
        fields = {k: v for k, v in request.items() if k in paths}
        try:
            subscriber.update_subscription(
                request={
                    "subscription": {"name": path, **fields},
                    "update_mask": field_mask_pb2.FieldMask(paths=paths),
                },
                timeout=timeout,
                retry=bounded_retry(timeout),
            )
        except gexc.GoogleAPICallError as e:
            msg = f"updating subscription {path} ({', '.join(paths)}) failed: {describe(e)}"
            raise PubSubError(msg) from e
        return ResourceStatus("subscription", path, "updated", detail.replace(", asked", " ->"))
    except gexc.GoogleAPICallError as e:
        msg = f"creating subscription {path} failed: {describe(e)}"
        raise PubSubError(msg) from e
    return ResourceStatus("subscription", path, "created")


def init_pubsub(
    project: str,
    topic: str,
    subscription: str,
    dead_letter_topic: str | None = None,
    *,
    ack_deadline_seconds: int = 60,
    max_delivery_attempts: int = 10,
    exactly_once: bool = False,
    retry_min_backoff_seconds: int = 10,
    retry_max_backoff_seconds: int = 600,
    retry_policy: bool = True,
    message_retention_seconds: int | None = None,
    dead_letter_subscription: str | None = None,
    channels: ChannelFactory | None = None,
    update: bool = False,
    timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS,
) -> InitReport:
    """Create (or check) topic, subscription with retry and dead-letter policy, and the DLQ.

    `retry_policy=False` leaves the subscription without one: Pub/Sub then redelivers a nacked
    or expired message at once (its own default) and the backoff arguments are ignored.
    `dead_letter_subscription` defaults to `<dead_letter_topic>-sub`. `channels` defaults to the
    production endpoint; pass `channel_factory(emulator_host)` for the emulator.
    `message_retention_seconds` (600 to 604,800) is set and compared only when given.
    `update=True` changes an existing subscription's mutable settings to what was asked.
    """
    _check_range("ack_deadline_seconds", ack_deadline_seconds, 10, 600)
    _check_range("max_delivery_attempts", max_delivery_attempts, 5, 100)
    _check_range("retry_min_backoff_seconds", retry_min_backoff_seconds, 0, 600)
    _check_range("retry_max_backoff_seconds", retry_max_backoff_seconds, 0, 600)
    if message_retention_seconds is not None:
        _check_range("message_retention_seconds", message_retention_seconds, 600, 604_800)
    if retry_min_backoff_seconds > retry_max_backoff_seconds:
        msg = (
            f"retry_min_backoff_seconds ({retry_min_backoff_seconds}) must not exceed "
            f"retry_max_backoff_seconds ({retry_max_backoff_seconds})"
        )
        raise InvalidSetting(msg)
    factory = channels or channel_factory(None)
    publisher = publisher_client(factory)
    subscriber = subscriber_client(factory)
    topic_path = publisher.topic_path(project, topic)
    sub_path = subscriber.subscription_path(project, subscription)
    timeout = timeout_seconds
    statuses = [_ensure_topic(publisher, topic_path, timeout)]
    notes: list[str] = []
    request: dict[str, object] = {
        "name": sub_path,
        "topic": topic_path,
        "ack_deadline_seconds": ack_deadline_seconds,
        "enable_exactly_once_delivery": exactly_once,
    }
    wanted: dict[str, object] = {
        "topic": topic_path,
        "ack_deadline_seconds": ack_deadline_seconds,
        "dead_letter_topic": None,
        "max_delivery_attempts": None,
        "retry_min_backoff_seconds": None,
        "retry_max_backoff_seconds": None,
        "exactly_once": exactly_once,
        "filter": None,
        "message_ordering": False,
    }
    if message_retention_seconds is not None:
        request["message_retention_duration"] = duration_pb2.Duration(
            seconds=message_retention_seconds
        )
        wanted["message_retention_seconds"] = message_retention_seconds
    if retry_policy:
        request["retry_policy"] = {
            "minimum_backoff": duration_pb2.Duration(seconds=retry_min_backoff_seconds),
            "maximum_backoff": duration_pb2.Duration(seconds=retry_max_backoff_seconds),
        }
        wanted["retry_min_backoff_seconds"] = retry_min_backoff_seconds
        wanted["retry_max_backoff_seconds"] = retry_max_backoff_seconds
    try:
        if dead_letter_topic:
            dlq_path = publisher.topic_path(project, dead_letter_topic)
            statuses.append(_ensure_topic(publisher, dlq_path, timeout))
            dlq_sub = subscriber.subscription_path(
                project, dead_letter_subscription or f"{dead_letter_topic}-sub"
            )
            statuses.append(
                _ensure_subscription(
                    subscriber,
                    {"name": dlq_sub, "topic": dlq_path, "ack_deadline_seconds": 60},
                    {"topic": dlq_path},
                    timeout=timeout,
                )
            )
            request["dead_letter_policy"] = {
                "dead_letter_topic": dlq_path,
                "max_delivery_attempts": max_delivery_attempts,
            }
            wanted["dead_letter_topic"] = dlq_path
            wanted["max_delivery_attempts"] = max_delivery_attempts
            note = dead_letter_iam_note(factory, dlq_path, sub_path)
            if note is not None:
                notes.append(note)
        statuses.append(
            _ensure_subscription(subscriber, request, wanted, update=update, timeout=timeout)
        )
    finally:
        subscriber.close()
        publisher.transport.close()
    return InitReport(tuple(statuses), tuple(notes))
