"""Session fixtures for integration tests against the real Cloud Pub/Sub and BigQuery emulators.

One emulator serves the whole session (it takes ~1.5-4 s to start); each test gets its own
topic/subscription names so tests never see each other's messages. With `CI=true` a missing
java/javac/gcloud fails the session; elsewhere those tests skip with the reason, loudly.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.integration.bigquery_emulator import BigQueryEmulator
from tests.integration.bigquery_emulator import EmulatorUnavailable as BigQueryUnavailable
from tests.integration.pubsub_emulator import EmulatorUnavailable, PubSubEmulator, start_emulator
from tests.integration.tcp_gate import TcpGate
from worker.sources.grpc_channel import ChannelFactory, channel_factory


@pytest.fixture(scope="session")
def pubsub_emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PubSubEmulator]:
    """The patched emulator on a free loopback port, killed at session end."""
    try:
        emulator = start_emulator(tmp_path_factory.mktemp("pubsub-emulator"))
    except EmulatorUnavailable as e:
        if os.environ.get("CI") == "true":
            pytest.fail(f"Pub/Sub emulator required with CI=true: {e}", pytrace=False)
        pytest.skip(f"SKIPPING Pub/Sub integration tests: {e}")
    try:
        yield emulator
    finally:
        emulator.stop()
        assert emulator.uses_patch(), f"emulator hit NoSuchMethodError; see {emulator.log_path}"


@pytest.fixture(scope="session")
def pubsub_channels(pubsub_emulator: PubSubEmulator) -> ChannelFactory:
    """Channel factory for Lookout clients talking to the session emulator."""
    return channel_factory(pubsub_emulator.host)


@pytest.fixture
def unique_name() -> str:
    """A short name unique to one test, for topics and subscriptions."""
    return f"t{uuid.uuid4().hex[:12]}"


@pytest.fixture
def emulator_log(pubsub_emulator: PubSubEmulator) -> Path:
    return pubsub_emulator.log_path


# -- BigQuery ------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def bigquery_emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BigQueryEmulator]:
    """The local BigQuery emulator on free loopback ports, stopped at session end. Each test
    uses datasets of its own (`bigquery_dataset`), never another test's."""
    try:
        emulator = BigQueryEmulator(tmp_path_factory.mktemp("bigquery-emulator"))
    except BigQueryUnavailable as e:
        if os.environ.get("CI") == "true":
            pytest.fail(f"BigQuery emulator required with CI=true: {e}", pytrace=False)
        pytest.skip(f"SKIPPING BigQuery integration tests: {e}")
    emulator.start()
    try:
        yield emulator
    finally:
        emulator.stop()


@pytest.fixture
def bigquery_dataset(bigquery_emulator: BigQueryEmulator) -> Iterator[str]:
    """A fresh dataset with Lookout's tables and views, unique to one test, dropped after it:
    the emulator slows down as datasets pile up (a 45 s test took three minutes late in the
    suite)."""
    from worker.sinks.bigquery_init import init_dataset

    name = f"t{uuid.uuid4().hex[:12]}"
    client = bigquery_emulator.client()
    init_dataset(client, bigquery_emulator.project, name, None)
    try:
        yield name
    finally:
        client.delete_dataset(
            f"{bigquery_emulator.project}.{name}", delete_contents=True, not_found_ok=True
        )
        client.close()


@pytest.fixture
def tcp_gate() -> Iterator[Callable[[int], TcpGate]]:
    """`tcp_gate(port)` forwards a fresh loopback port to `port` until shut; closed at the end."""
    gates: list[TcpGate] = []

    def open_gate(port: int) -> TcpGate:
        gates.append(TcpGate(port))
        return gates[-1]

    try:
        yield open_gate
    finally:
        for gate in gates:
            gate.close()
