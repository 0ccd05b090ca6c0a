"""gRPC channels and clients for Pub/Sub with no message-size limit, for emulator and production.

Why: with `PUBSUB_EMULATOR_HOST` the google client builds a plain channel that keeps gRPC's
4 MiB receive limit, while one pull response may pack up to 100 messages; NDJSON batches of
~42 KB and more then stall streaming pull silently. Production channels need the same
unlimited sizes for large NDJSON batches, so both paths are built here, explicitly, and every
Lookout Pub/Sub client is constructed through `subscriber_client` / `publisher_client`.

The emulator host is an argument, never read from the environment here: the CLI reads
`PUBSUB_EMULATOR_HOST` once at the edge (`emulator_host_from_env`) and passes it down.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import grpc
from google.api_core import grpc_helpers
from google.cloud import pubsub_v1
from google.pubsub_v1.services.publisher.transports.grpc import PublisherGrpcTransport
from google.pubsub_v1.services.subscriber.transports.grpc import SubscriberGrpcTransport

from worker.failure_policy import LookoutError

PRODUCTION_ENDPOINT = "pubsub.googleapis.com:443"
PUBSUB_SCOPES = (
    "https://www.googleapis.com/auth/cloud-platform",
    "https://www.googleapis.com/auth/pubsub",
)

#: the longest wait between two attempts to reconnect a channel to Pub/Sub. gRPC's own default
#: grows to 120 s: after an outage, pulls resumed 57 s and 82 s after the endpoint came back
#: (an SRE's trial), as every pull in between failed at once on a channel waiting to reconnect
RECONNECT_BACKOFF_MAX_MS = 5_000

#: how long a ping may wait for its answer before the connection counts as dead. gRPC's
#: default is 60 s: a connection whose packets were dropped (a firewall, a node's network gone)
#: answered every pull with a timeout, as an empty subscription does, for 61 s, and after
#: `engine.idle_close_seconds` (60 s) of that the worker closed windows as if traffic had
#: stopped. With 20 s the pulls fail, /readyz says why, and no quiet spell is counted; not less,
#: because a ping's answer waits behind the pull response bytes already in flight, tens of MB
#: on a slow but healthy link (a review)
PING_TIMEOUT_MS = 20_000

#: -1 = unlimited; keepalive keeps idle streaming pulls alive through NAT and load balancers
CHANNEL_OPTIONS: tuple[tuple[str, int], ...] = (
    ("grpc.max_send_message_length", -1),
    ("grpc.max_receive_message_length", -1),
    ("grpc.max_metadata_size", 4 * 1024 * 1024),
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", PING_TIMEOUT_MS),
    ("grpc.http2.ping_timeout_ms", PING_TIMEOUT_MS),
    ("grpc.max_reconnect_backoff_ms", RECONNECT_BACKOFF_MAX_MS),
)

ChannelFactory = Callable[[], grpc.Channel]


def emulator_host_from_env(environ: Mapping[str, str] | None = None) -> str | None:
    """`PUBSUB_EMULATOR_HOST` (e.g. `127.0.0.1:8085`) or None; call it at the edge only."""
    value = (os.environ if environ is None else environ).get("PUBSUB_EMULATOR_HOST", "")
    return value.strip() or None


def open_channel(emulator_host: str | None = None) -> grpc.Channel:
    """An insecure loopback channel to the emulator, or an authenticated one to Google."""
    if emulator_host:
        return grpc.insecure_channel(emulator_host, options=list(CHANNEL_OPTIONS))
    return grpc_helpers.create_channel(
        PRODUCTION_ENDPOINT,
        default_scopes=PUBSUB_SCOPES,
        default_host=PRODUCTION_ENDPOINT.rsplit(":", 1)[0],
        options=list(CHANNEL_OPTIONS),
    )


@dataclass(frozen=True)
class Endpoint:
    """A channel factory that knows where it points, so errors can name the endpoint.

    Calling it opens a fresh channel: each client gets its own (closing one spares others).
    """

    emulator_host: str | None = None

    def __call__(self) -> grpc.Channel:
        return open_channel(self.emulator_host)

    def describe(self) -> str:
        """`127.0.0.1:8085 (PUBSUB_EMULATOR_HOST)` or `pubsub.googleapis.com:443`."""
        if self.emulator_host:
            return f"{self.emulator_host} (PUBSUB_EMULATOR_HOST)"
        return PRODUCTION_ENDPOINT

    def what_to_check(self) -> str:
        """The first things an operator should look at when the endpoint does not answer."""
        if self.emulator_host:
            return (
                f"is the emulator running on {self.emulator_host}? "
                "(or unset PUBSUB_EMULATOR_HOST to use Google Cloud)"
            )
        return (
            "check network access to pubsub.googleapis.com (firewall, proxy, DNS, "
            "Private Google Access) and the credentials"
        )


def channel_factory(emulator_host: str | None = None) -> ChannelFactory:
    """A zero-argument factory: each client gets its own channel (closing one spares others)."""
    return Endpoint(emulator_host)


def describe_endpoint(factory: ChannelFactory) -> str:
    """Where `factory` points, for error messages (`a custom channel` when unknown)."""
    return factory.describe() if isinstance(factory, Endpoint) else "a custom channel"


def what_to_check(factory: ChannelFactory) -> str:
    if isinstance(factory, Endpoint):
        return factory.what_to_check()
    return "check the endpoint the channel factory points at"


class Unreachable(LookoutError):
    """Pub/Sub did not answer within the time allowed; names the endpoint and what to check."""


def check_reachable(factory: ChannelFactory, timeout_seconds: float) -> None:
    """Wait until a channel from `factory` is connected, or raise `Unreachable` in time.

    Why: with a dead endpoint every Pub/Sub call is retried silently by the client library
    for a minute or more; one-shot commands check first and say so within seconds.
    """
    channel = factory()
    try:
        grpc.channel_ready_future(channel).result(timeout=timeout_seconds)
    except grpc.FutureTimeoutError as e:
        msg = (
            f"cannot reach Pub/Sub at {describe_endpoint(factory)} within "
            f"{timeout_seconds:g} s: {what_to_check(factory)}"
        )
        raise Unreachable(msg) from e
    finally:
        channel.close()


def subscriber_client(
    factory: ChannelFactory, channel: grpc.Channel | None = None
) -> pubsub_v1.SubscriberClient:
    """A SubscriberClient on `channel`, or on a fresh unlimited-size channel from `factory`."""
    return pubsub_v1.SubscriberClient(
        transport=SubscriberGrpcTransport(channel=channel or factory())
    )


class ConnectivityWatch:
    """Whether a channel is connected right now, from gRPC's own connectivity callbacks.

    Why: a pull that ends in DEADLINE_EXCEEDED means "no messages" on a live connection and
    "nobody there" on a dead one; readiness must tell them apart.
    """

    def __init__(self, channel: grpc.Channel) -> None:
        self._channel = channel
        self._state = grpc.ChannelConnectivity.IDLE
        self._ready_since = float("-inf")
        channel.subscribe(self._update, try_to_connect=True)

    def _update(self, state: grpc.ChannelConnectivity) -> None:
        ready = grpc.ChannelConnectivity.READY
        if state == ready and self._state != ready:
            self._ready_since = time.monotonic()
        self._state = state

    @property
    def connected(self) -> bool:
        return bool(self._state == grpc.ChannelConnectivity.READY)

    def reconnected_since(self, moment: float) -> bool:
        """Connected now, by a connection made after `moment` (`time.monotonic()`).

        Why: a pull that failed because the endpoint was away can be tried again as soon as
        the channel is back, rather than at the end of a backoff that grew over a long outage;
        a pull that failed on a live connection (a missing subscription) keeps its backoff.
        """
        return self.connected and self._ready_since > moment

    def close(self) -> None:
        self._channel.unsubscribe(self._update)


def publisher_client(
    factory: ChannelFactory,
    batch_settings: pubsub_v1.types.BatchSettings | None = None,
    publisher_options: pubsub_v1.types.PublisherOptions | None = None,
) -> pubsub_v1.PublisherClient:
    """A PublisherClient on a fresh unlimited-size channel from `factory`.

    Pass `publisher_options` with a bounded retry and timeout wherever a caller has a
    deadline: the library's default retries a dead endpoint for minutes.
    """
    transport = PublisherGrpcTransport(channel=factory())
    return pubsub_v1.PublisherClient(
        batch_settings=batch_settings or pubsub_v1.types.BatchSettings(),
        publisher_options=publisher_options or pubsub_v1.types.PublisherOptions(),
        transport=transport,
    )
