"""The contract every detector in the registry keeps, whatever it measures.

A window's state must not depend on how its logs were split across replicas and checkpoints, or
on the order partial states were merged in, and must survive the trip through the sink. If any of
these fail, the numbers an SRE sees change with the deployment's replica count.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from detectors.registry import DETECTORS, build_detectors
from schemas.batch import LogBatch

NAMES = sorted(DETECTORS)
DETECTOR = build_detectors(dict.fromkeys(NAMES))
REASONS = [None, "", "SAFETY", "PROHIBITED_CONTENT", "content_filter", "x" * 300, "BLOCKLIST"]
CATEGORIES = ["harassment", "hate", "sexual", "dangerous"]
SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _embedding_dim(name: str) -> int:
    return int(getattr(DETECTOR[name].config, "dimension", 8))  # type: ignore[attr-defined]


@st.composite
def batches(draw: st.DrawFn, dim: int = 8) -> LogBatch:
    """Columns as decoders produce them: NaN for missing numbers, None for missing strings."""
    n = draw(st.integers(0, 40))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    missing = rng.random((4, n)) < draw(st.sampled_from([0.0, 0.1, 0.5]))
    latency = rng.lognormal(np.log(800), draw(st.sampled_from([0.3, 2.0, 6.0])), n)
    latency[rng.random(n) < 0.05] = 0.0
    latency[missing[0]] = np.nan
    input_tokens = rng.integers(0, 5000, n).astype(float)
    input_tokens[missing[1]] = np.nan
    output_tokens = rng.integers(0, 3000, n).astype(float)
    output_tokens[missing[2]] = np.nan
    blocked = rng.random(n) < draw(st.sampled_from([0.0, 0.05, 0.5, 1.0]))
    stage = np.full(n, None, dtype=object)
    stage[blocked] = np.where(rng.random(int(blocked.sum())) < 0.5, "prompt", "response")
    reason = np.full(n, None, dtype=object)
    pool = draw(st.lists(st.sampled_from(REASONS), min_size=1, max_size=4))
    reason[blocked] = [pool[i] for i in rng.integers(0, len(pool), int(blocked.sum()))]
    cats = draw(st.lists(st.sampled_from(CATEGORIES), unique=True, max_size=3))
    scores = {c: np.where(missing[3], np.nan, rng.random(n)) for c in cats}
    emb_rows = np.flatnonzero(rng.random(n) < 0.5)
    none = np.full(n, None, dtype=object)
    return LogBatch(
        request_id=np.array([f"r{seed}-{i}" for i in range(n)], dtype=object),
        timestamp=np.full(n, 1.7e9),
        model=np.full(n, "m", dtype=object),
        model_version=none,
        latency_ms=latency,
        time_to_first_token_ms=np.full(n, np.nan),
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        blocked=blocked,
        block_stage=stage,
        block_reason=reason,
        finish_reason=none,
        citation_count=np.full(n, np.nan),
        response_length=np.full(n, np.nan),
        error=none,
        safety_scores=scores,
        embeddings=rng.normal(size=(len(emb_rows), dim)).astype(np.float32),
        embedding_rows=emb_rows.astype(np.int64),
    )


def assert_rows_close(a: Any, b: Any, path: str = "row") -> None:
    """Equal rows, floats within a relative 1e-9 (sums are added in a different order)."""
    if isinstance(a, dict):
        assert isinstance(b, dict), path
        assert a.keys() == b.keys(), f"{path}: keys {sorted(a)} != {sorted(b)}"
        for k in a:
            assert_rows_close(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, list | tuple):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_rows_close(x, y, f"{path}[{i}]")
    elif isinstance(a, float) or isinstance(b, float):
        assert math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9), f"{path}: {a} != {b}"
    else:
        assert a == b, f"{path}: {a!r} != {b!r}"


def _state(name: str, batch: LogBatch) -> Any:
    det = DETECTOR[name]
    return det.add(det.empty(), batch)


@pytest.mark.parametrize("name", NAMES)
@SETTINGS
@given(data=st.data())
def test_merging_with_empty_changes_nothing(name: str, data: st.DataObject) -> None:
    det = DETECTOR[name]
    state = _state(name, data.draw(batches(_embedding_dim(name))))
    assert det.merge(state, det.empty()) == state
    assert det.merge(det.empty(), state) == state
    assert det.add(state, LogBatch.empty()) == state


@pytest.mark.parametrize("name", NAMES)
@SETTINGS
@given(data=st.data())
def test_merge_does_not_mutate_its_arguments(name: str, data: st.DataObject) -> None:
    det = DETECTOR[name]
    dim = _embedding_dim(name)
    a = _state(name, data.draw(batches(dim)))
    b = _state(name, data.draw(batches(dim)))
    rows = (orjson.dumps(det.to_row(a)), orjson.dumps(det.to_row(b)))
    det.merge(a, b)
    det.add(a, data.draw(batches(dim)))
    assert (orjson.dumps(det.to_row(a)), orjson.dumps(det.to_row(b))) == rows


@pytest.mark.parametrize("name", NAMES)
@SETTINGS
@given(data=st.data())
def test_merge_is_associative_and_commutative(name: str, data: st.DataObject) -> None:
    det = DETECTOR[name]
    dim = _embedding_dim(name)
    a, b, c = (_state(name, data.draw(batches(dim))) for _ in range(3))
    left = det.to_row(det.merge(det.merge(a, b), c))
    assert_rows_close(left, det.to_row(det.merge(a, det.merge(b, c))))
    assert_rows_close(left, det.to_row(det.merge(c, det.merge(b, a))))


@pytest.mark.parametrize("name", NAMES)
@SETTINGS
@given(data=st.data())
def test_sharded_adds_merge_to_one_pass(name: str, data: st.DataObject) -> None:
    """Twelve replicas over forty checkpoints must report what one process would have."""
    det = DETECTOR[name]
    batch = data.draw(batches(_embedding_dim(name)))
    shard_of = np.array(
        data.draw(st.lists(st.integers(0, 3), min_size=len(batch), max_size=len(batch))),
        dtype=np.int64,
    )
    parts = [det.add(det.empty(), batch.take(shard_of == k)) for k in range(4)]
    order = data.draw(st.permutations(range(4)))
    merged = det.empty()
    for k in order:
        merged = det.merge(merged, parts[k])
    assert_rows_close(det.to_row(merged), det.to_row(det.add(det.empty(), batch)))


@pytest.mark.parametrize("name", NAMES)
@SETTINGS
@given(data=st.data())
def test_state_survives_the_sink_row(name: str, data: st.DataObject) -> None:
    det = DETECTOR[name]
    dim = _embedding_dim(name)
    state = det.merge(_state(name, data.draw(batches(dim))), _state(name, data.draw(batches(dim))))
    row = det.to_row(state)
    assert det.from_row(row) == state
    assert det.from_row(orjson.loads(orjson.dumps(row))) == state
