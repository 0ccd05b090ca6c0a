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
from collections.abc import Callable, Mapping
from functools import partial

import grpc
from google.api_core import grpc_helpers
from google.cloud import pubsub_v1
from google.pubsub_v1.services.publisher.transports.grpc import PublisherGrpcTransport
from google.pubsub_v1.services.subscriber.transports.grpc import SubscriberGrpcTransport

PRODUCTION_ENDPOINT = "pubsub.googleapis.com:443"
PUBSUB_SCOPES = (
    "https://www.googleapis.com/auth/cloud-platform",
    "https://www.googleapis.com/auth/pubsub",
)

#: -1 = unlimited; keepalive keeps idle streaming pulls alive through NAT and load balancers
CHANNEL_OPTIONS: tuple[tuple[str, int], ...] = (
    ("grpc.max_send_message_length", -1),
    ("grpc.max_receive_message_length", -1),
    ("grpc.max_metadata_size", 4 * 1024 * 1024),
    ("grpc.keepalive_time_ms", 30_000),
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


def channel_factory(emulator_host: str | None = None) -> ChannelFactory:
    """A zero-argument factory: each client gets its own channel (closing one spares others)."""
    return partial(open_channel, emulator_host)


def subscriber_client(factory: ChannelFactory) -> pubsub_v1.SubscriberClient:
    """A SubscriberClient on a fresh unlimited-size channel from `factory`."""
    return pubsub_v1.SubscriberClient(transport=SubscriberGrpcTransport(channel=factory()))


def publisher_client(
    factory: ChannelFactory, batch_settings: pubsub_v1.types.BatchSettings | None = None
) -> pubsub_v1.PublisherClient:
    """A PublisherClient on a fresh unlimited-size channel from `factory`."""
    transport = PublisherGrpcTransport(channel=factory())
    if batch_settings is None:
        return pubsub_v1.PublisherClient(transport=transport)
    return pubsub_v1.PublisherClient(batch_settings=batch_settings, transport=transport)
