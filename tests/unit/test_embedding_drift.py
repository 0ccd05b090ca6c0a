"""Embedding drift: exact merges, a calibrated verdict, and a topic shift that gets caught."""

from __future__ import annotations

from datetime import UTC, datetime
from itertools import count, pairwise

import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from detectors import _drift_math as dm
from detectors.base import Baseline, WindowRef
from detectors.embedding_drift import EmbeddingDriftDetector, EmbeddingDriftState
from detectors.synthetic_embeddings import TopicWorld, blank_columns, embedding_batch
from schemas.batch import LogBatch
from schemas.drift_config import EmbeddingDriftConfig

WINDOW = WindowRef("m", datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 1, 1, 0, 5, tzinfo=UTC))
SMALL = EmbeddingDriftConfig(
    dimension=8,
    n_features=16,
    sample_size=6,
    reference_sample_size=12,
    reference_min_calls=30,
    min_sample=5,
)


def _small_batch(n: int, seed: int, ids_from: int = 0) -> LogBatch:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, SMALL.dimension)).astype(np.float32)
    return LogBatch(
        **blank_columns(n),
        request_id=np.array([f"r{ids_from + i}" for i in range(n)], dtype=object),
        timestamp=np.zeros(n),
        model=np.full(n, "m", dtype=object),
        embeddings=x,
        embedding_rows=np.arange(n, dtype=np.int64),
    )


def _small_reference(det: EmbeddingDriftDetector) -> EmbeddingDriftState:
    ref = None
    for i in range(4):  # four 10-call windows, each keeping a 6-row sample
        ref = det.update_reference(ref, det.add(det.empty(), _small_batch(10, 50 + i, 100 * i)))
    assert ref is not None
    return ref


# -- mergeable state ---------------------------------------------------------------------


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(min_value=0, max_value=40),
    cuts=st.lists(st.integers(min_value=0, max_value=40), max_size=4),
    order=st.randoms(use_true_random=False),
)
def test_sharded_and_merged_in_any_order_equals_one_pass(n, cuts, order):
    det = EmbeddingDriftDetector(SMALL)
    batch = _small_batch(n, seed=n)
    one_pass = det.add(det.empty(), batch)
    bounds = sorted({0, n, *(c for c in cuts if c <= n)})
    shards = [det.add(det.empty(), batch.take(np.arange(lo, hi))) for lo, hi in pairwise(bounds)]
    order.shuffle(shards)
    merged = det.empty()
    for shard in shards:
        merged = det.merge(merged, shard)
    assert merged == one_pass
    assert det.merge(one_pass, det.empty()) == one_pass
    assert one_pass.count == n


@settings(max_examples=25, deadline=None)
@given(st.integers(min_value=1, max_value=30), st.integers(min_value=1, max_value=30))
def test_merge_is_associative_commutative_and_does_not_mutate(na, nb):
    det = EmbeddingDriftDetector(SMALL)
    a = det.add(det.empty(), _small_batch(na, 1, 0))
    b = det.add(det.empty(), _small_batch(nb, 2, 1_000))
    c = det.add(det.empty(), _small_batch(7, 3, 2_000))
    a_sum, a_keys = a.feature_sum.copy(), a.sample.keys.copy()
    assert det.merge(a, b) == det.merge(b, a)
    assert det.merge(det.merge(a, b), c) == det.merge(a, det.merge(b, c))
    assert np.array_equal(a.feature_sum, a_sum) and np.array_equal(a.sample.keys, a_keys)


def test_row_round_trips_through_json_for_windows_and_pinned_references():
    det = EmbeddingDriftDetector(SMALL)
    window = det.add(det.empty(), _small_batch(25, 4))
    reference = _small_reference(det)
    assert reference is not None and reference.null_eigenvalues is not None
    for state in (det.empty(), window, reference):
        row = orjson.loads(orjson.dumps(det.to_row(state)))
        assert det.from_row(row) == state


def test_window_row_at_default_sample_size_is_about_a_quarter_megabyte():
    """250 × 384 float16 in base64 plus a 1 KB feature sum: what one window's sample costs
    (written once per window; checkpoints carry only the 1 KB statistic)."""
    det = EmbeddingDriftDetector(EmbeddingDriftConfig())
    world = TopicWorld.build()
    state = det.add(det.empty(), embedding_batch(world.sample(1_500, np.random.default_rng(0))))
    size = len(orjson.dumps(det.to_row(state)))
    summary_only = len(orjson.dumps(det.to_row(det.add(det.empty(), LogBatch.empty()))))
    print(f"window row: {size} bytes; without sample rows: {summary_only} bytes")
    assert 250_000 < size < 280_000
    assert summary_only < 2_000
    body, _ = det.split_sample(state)
    assert len(orjson.dumps(det.to_row(body))) < 3_000


# -- reference and refusals --------------------------------------------------------------


def test_reference_grows_until_full_then_is_pinned():
    det = EmbeddingDriftDetector(SMALL)
    ref = None
    for i in range(5):
        ref = det.update_reference(ref, det.add(det.empty(), _small_batch(10, i, 100 * i)))
        assert ref is not None
        assert ref.count == min(10 * (i + 1), 30)  # grows to 30 calls, then pinned
        assert (ref.null_eigenvalues is not None) == (i >= 2)
    assert ref is not None and len(ref.sample) == SMALL.reference_sample_size


def test_refuses_without_reference_or_minimum_sample():
    det = EmbeddingDriftDetector(SMALL)
    window = det.add(det.empty(), _small_batch(20, 1))
    no_ref = det.evaluate(window, Baseline(), WINDOW)
    assert no_ref.verdict == "insufficient_data"
    assert "no reference yet" in no_ref.reason
    ref = _small_reference(det)
    tiny = det.evaluate(det.add(det.empty(), _small_batch(3, 3)), Baseline(reference=ref), WINDOW)
    assert tiny.verdict == "insufficient_data"
    assert "fewer than the minimum 5" in tiny.reason


def test_embeddings_of_another_dimension_are_ignored_and_named():
    det = EmbeddingDriftDetector(SMALL)
    ref = _small_reference(det)
    n = 12
    wrong = LogBatch(
        **blank_columns(n),
        request_id=np.array([f"w{i}" for i in range(n)], dtype=object),
        timestamp=np.zeros(n),
        model=np.full(n, "m", dtype=object),
        embeddings=np.ones((n, 768), dtype=np.float32),
        embedding_rows=np.arange(n, dtype=np.int64),
    )
    state = det.add(det.empty(), wrong)
    assert state.count == 0
    detection = det.evaluate(state, Baseline(reference=ref), WINDOW)
    assert detection.verdict == "insufficient_data"
    assert "12 embeddings of dimension 768 (expected 8)" in detection.reason
    assert detection.details["rejected"] == {"dimension_768": 12}


# -- the math the verdict rests on ------------------------------------------------------


def test_imhof_tail_matches_exact_chi2_and_monte_carlo():
    assert dm.weighted_chi2_sf(20.0, np.ones(5)) == pytest.approx(stats.chi2.sf(20.0, 5), rel=1e-6)
    rng = np.random.default_rng(0)
    weights = np.sort(rng.exponential(size=64) ** 2)[::-1]
    draws = (rng.standard_normal((400_000, 64)) ** 2) @ weights
    x = float(np.quantile(draws, 0.999))
    assert dm.weighted_chi2_sf(x, weights) == pytest.approx(1e-3, rel=0.15)
    # the two-moment fit is far too light in that tail: it would over-alert
    assert dm.satterthwaite_sf(x, weights) < 0.5e-3


# -- calibration and power ----------------------------------------------------------------
#
# Windows are iid draws (with replacement) from fixed pools of synthetic embeddings: 40,000
# quiet ones and 8,000 from topics the reference never saw. A window's state is a sum of
# per-row features, so after checking that shortcut against `add`, hundreds of windows are
# summed at once from the pool's per-row features and judged by the real `evaluate`.

WORLD = TopicWorld.build(seed=7)
POOL_RNG = np.random.default_rng(2024)
QUIET_POOL = WORLD.sample(40_000, POOL_RNG)
SHIFT_POOL = WORLD.sample(8_000, POOL_RNG, shift=1.0)
DEFAULT = EmbeddingDriftDetector(EmbeddingDriftConfig())


def _row_features(det: EmbeddingDriftDetector, x: np.ndarray) -> np.ndarray:
    """Each row's fixed-point features: what `add` sums."""
    norms = np.sqrt(np.einsum("ij,ij->i", x, x))
    cos = dm.grid_cosine_features(dm.unit_rows_on_grid(x, norms, det.features), det.features)
    return np.rint(cos.astype(np.float64) * dm.FIXED_POINT_SCALE).astype(np.int64)


QUIET_FEATURES = _row_features(DEFAULT, QUIET_POOL)
SHIFT_FEATURES = _row_features(DEFAULT, SHIFT_POOL)


def _draw(rng: np.random.Generator, n: int, shift: float) -> tuple[np.ndarray, np.ndarray]:
    n_new = round(shift * n)
    return rng.integers(0, len(QUIET_POOL), n - n_new), rng.integers(0, len(SHIFT_POOL), n_new)


def _window(quiet: np.ndarray, new: np.ndarray) -> EmbeddingDriftState:
    feature_sum = QUIET_FEATURES[quiet].sum(axis=0) + SHIFT_FEATURES[new].sum(axis=0)
    empty = DEFAULT.empty()
    return EmbeddingDriftState(len(quiet) + len(new), feature_sum, empty.sample)


def test_summing_pool_features_is_what_add_computes():
    rng = np.random.default_rng(3)
    quiet, new = _draw(rng, 700, 0.2)
    batch = embedding_batch(np.concatenate([QUIET_POOL[quiet], SHIFT_POOL[new]]))
    state = DEFAULT.add(DEFAULT.empty(), batch)
    shortcut = _window(quiet, new)
    assert state.count == shortcut.count
    assert np.array_equal(state.feature_sum, shortcut.feature_sum)


def _reference(rng: np.random.Generator, ids: count[int]) -> EmbeddingDriftState:
    ref = None
    for _ in range(5):  # five 1,000-call windows through `add`, as the engine feeds them
        quiet, _ = _draw(rng, 1_000, 0.0)
        batch = embedding_batch(QUIET_POOL[quiet], ids_from=next(ids) * 10_000)
        ref = DEFAULT.update_reference(ref, DEFAULT.add(DEFAULT.empty(), batch))
    assert ref is not None
    return ref


def _verdicts(size: int, trials: int, shift: float, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    ids = count()
    out: list[str] = []
    ref: EmbeddingDriftState | None = None
    for trial in range(trials):
        if trial % 50 == 0:  # a fresh reference every 50 windows: its own noise counts too
            ref = _reference(rng, ids)
        window = _window(*_draw(rng, size, shift))
        out.append(DEFAULT.evaluate(window, Baseline(reference=ref), WINDOW).verdict)
    return out


@pytest.mark.slow
@pytest.mark.parametrize("size", [100, 500, 5_000])
def test_quiet_windows_rarely_alert(size: int):
    verdicts = _verdicts(size, trials=200, shift=0.0, seed=size)
    false = verdicts.count("alert")
    print(f"no drift, {size} calls/window: {false} false alerts in 200 windows")
    assert verdicts.count("insufficient_data") == 0
    assert false <= 2  # ≤ 1%; the test is calibrated to 1 in 1,000


@pytest.mark.slow
@pytest.mark.parametrize("size", [500, 2_000])
def test_a_twenty_percent_topic_shift_is_caught(size: int):
    verdicts = _verdicts(size, trials=20, shift=0.2, seed=size + 1)
    caught = verdicts.count("alert")
    print(f"20% topic shift, {size} calls/window: caught {caught} of 20")
    assert caught >= 19


@pytest.mark.slow
def test_a_twenty_percent_topic_shift_at_100_calls_is_caught_within_5_windows():
    """One window of 100 calls cannot show it at 1 in 10,000; pooled with the windows before
    it (each span at alpha / 4) it shows within 5 windows, every time with the whitened
    statistic."""
    rng = np.random.default_rng(100)
    ids = count()
    caught = 0
    ref = _reference(rng, ids)
    for trial in range(20):
        if trial % 5 == 4:  # a fresh reference now and then: its own noise counts too
            ref = _reference(rng, ids)
        history = [_window(*_draw(rng, 100, 0.0)) for _ in range(8)]
        for _ in range(5):
            window = _window(*_draw(rng, 100, 0.2))
            baseline = Baseline(history=tuple(history[-7:]), reference=ref)
            if DEFAULT.evaluate(window, baseline, WINDOW).verdict == "alert":
                caught += 1
                break
            history.append(window)
    print(f"20% topic shift, 100 calls/window: caught {caught} of 20 within 5 windows")
    # 19 of 20 with the plain statistic (one trial needed a 6th window); 20 of 20 whitened
    assert caught == 20
