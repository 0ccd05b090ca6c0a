"""Tenant and endpoint survive decoding: analysts slice cost and block rate by them."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime

import numpy as np

from schemas.batch import LogBatch
from schemas.decode import decode_message
from worker.sources.simulator import SimulationConfig, simulate_batches, simulate_logs
from worker.sources.wire_encode import encode

START = datetime(2026, 3, 2, 6, 0, tzinfo=UTC)


def test_native_and_envelope_lines_keep_tenant_and_endpoint() -> None:
    sim = SimulationConfig(start=START, hours=0.02, tenants=("acme", "globex"), seed=3)
    logs = list(simulate_logs(sim))[:40]
    for fmt in ("native", "gemini", "openai", "palm"):
        data = b"\n".join(encode(log, fmt) for log in logs)
        batch = decode_message(data).batch
        assert list(batch.tenant) == [log.tenant for log in logs], fmt
        assert list(batch.endpoint) == [log.endpoint for log in logs], fmt
    assert {log.tenant for log in logs} == {"acme", "globex"}


def test_simulated_tenants_spread_calls_without_changing_the_numbers() -> None:
    plain = SimulationConfig(start=START, hours=0.1, seed=5)
    tenanted = SimulationConfig(start=START, hours=0.1, seed=5, tenants=("a", "b", "c"))
    one = LogBatch.concat(list(simulate_batches(plain)))
    other = LogBatch.concat(list(simulate_batches(tenanted)))
    np.testing.assert_array_equal(one.latency_ms, other.latency_ms)
    assert set(one.tenant) == {None}
    shares = Counter(other.tenant)
    assert set(shares) == {"a", "b", "c"}
    assert min(shares.values()) > len(other) / 6


def test_a_batch_without_the_columns_reads_them_as_absent() -> None:
    batch = LogBatch(
        request_id=np.array(["r1", "r2"], dtype=object),
        timestamp=np.array([1.0, 2.0]),
        model=np.array(["m", "m"], dtype=object),
    )
    assert list(batch.tenant) == [None, None]
    assert np.isnan(batch.latency_ms).all()
    assert len(batch.take(np.array([1])).endpoint) == 1
