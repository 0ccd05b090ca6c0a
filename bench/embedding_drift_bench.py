"""Embedding drift: the native RFF-MMD detector against evidently's default verdict.

    .venv/bin/python -m bench.embedding_drift_bench [--trials N] [--report]

Same run, same arrays, one thread for both, best of several runs each: a 5,000 × 384
window against a 5,000-call reference. Native: `add` of the window (a LogBatch) plus
`evaluate` against the pinned reference. evidently: the default embedding-drift verdict
(`ModelDriftMethod()`, which is what `EmbeddingsDrift` uses with no method and a reference
of ≥ 1,000 rows) on the raw arrays.
Then false-verdict rate and power of both over `--trials` windows of 100, 500 and 5,000 calls,
quiet and with 20% of calls from three unseen topics. `--report` also times one full
evidently Report (it always adds a t-SNE chart).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from datetime import UTC, datetime
from itertools import count

import numpy as np
import orjson
from threadpoolctl import threadpool_limits

from detectors.base import Baseline, WindowRef
from detectors.embedding_drift import EmbeddingDriftDetector, EmbeddingDriftState
from detectors.evidently_drift import evidently_embedding_drift
from detectors.synthetic_embeddings import TopicWorld, embedding_batch
from schemas.drift_config import EmbeddingDriftConfig

WINDOW = WindowRef("m", datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 1, 1, 0, 5, tzinfo=UTC))
N = 5_000


def best_time(fn: Callable[[], object], runs: int) -> float:
    """Best of `runs`: on shared, noisy machines the minimum is the least disturbed figure."""
    best = float("inf")
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def build_reference(
    det: EmbeddingDriftDetector, x: np.ndarray, ids: count[int]
) -> EmbeddingDriftState:
    """The pinned reference, grown from 1,000-call windows as the engine builds it."""
    ref: EmbeddingDriftState | None = None
    for start in range(0, len(x), 1_000):
        batch = embedding_batch(x[start : start + 1_000], ids_from=next(ids) * 100_000)
        ref = det.update_reference(ref, det.add(det.empty(), batch))
    assert ref is not None
    return ref


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=20, help="windows per rate estimate")
    parser.add_argument("--report", action="store_true", help="also time a full Report")
    args = parser.parse_args()

    det = EmbeddingDriftDetector(EmbeddingDriftConfig())
    world = TopicWorld.build(seed=7)
    rng = np.random.default_rng(11)
    ids = count()
    ref_x = world.sample(N, rng)
    ref = build_reference(det, ref_x, ids)
    cur_x = world.sample(N, rng, shift=0.2)
    batch = embedding_batch(cur_x, ids_from=next(ids) * 100_000)
    baseline = Baseline(reference=ref)

    def native() -> str:
        return det.evaluate(det.add(det.empty(), batch), baseline, WINDOW).verdict

    def evidently() -> bool:
        return evidently_embedding_drift(ref_x, cur_x, "model").drifted

    with threadpool_limits(limits=1):
        evidently()  # import evidently and warm both paths before timing
        native()
        t_native = best_time(native, 15)
        t_evidently = best_time(evidently, 5)
    print("5,000 x 384 vs a 5,000-call reference, one thread (best of 15 / 5 runs):")
    print(f"  native add + verdict      {t_native * 1e3:8.1f} ms   verdict: {native()}")
    print(f"  evidently model verdict   {t_evidently * 1e3:8.1f} ms   drifted: {evidently()}")
    print(f"  ratio                     {t_evidently / t_native:8.1f}x  (target >= 10x)")

    window = det.add(det.empty(), embedding_batch(cur_x[:1_000], ids_from=next(ids) * 100_000))
    row = orjson.dumps(det.to_row(window))
    kept = det.config.sample_size
    print(f"  window row, {kept} x 384 sample kept: {len(row):,} bytes (float16 base64 sample)")
    print(f"  reference row: {len(orjson.dumps(det.to_row(ref))):,} bytes")

    if args.report:
        with threadpool_limits(limits=1):
            start = time.perf_counter()
            evidently_embedding_drift(ref_x, cur_x, "model", report=True)
        print(f"  one full evidently Report (with its t-SNE): {time.perf_counter() - start:.1f} s")

    print(f"\nrates over {args.trials} windows each (reference: 5,000 calls):")
    with threadpool_limits(limits=1):
        for size in (100, 500, N):
            for shift in (0.0, 0.2):
                native_hits = evidently_hits = 0
                for _ in range(args.trials):
                    x = world.sample(size, rng, shift=shift)
                    state = det.add(det.empty(), embedding_batch(x, ids_from=next(ids) * 100_000))
                    native_hits += det.evaluate(state, baseline, WINDOW).verdict == "alert"
                    evidently_hits += evidently_embedding_drift(ref_x, x, "model").drifted
                what = "false alerts" if shift == 0 else "caught (20% shift)"
                print(
                    f"  {size:>5} calls, {what:<19} native {native_hits:>3}/{args.trials}"
                    f"   evidently {evidently_hits:>3}/{args.trials}"
                )


if __name__ == "__main__":
    main()
