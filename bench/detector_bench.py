"""add + merge throughput of the safety, latency and token detectors vs a naive pandas loop.

Run: .venv/bin/python -m bench.detector_bench [--batches 40] [--false-alerts 1000]

Both sides see the same 10,000-record batches (2% blocked, lognormal latency and tokens, two
safety-score categories) on one pinned core. The detectors fold each batch into a fresh partial
state and merge it into the window's state, as a replica does per checkpoint. The baseline is
the obvious per-record code: `DataFrame.iterrows` accumulating the same counts, the same log
bucket histogram and the same token sums; its results are checked equal to the detectors'.
Best of 3 for both; the ratio is the figure to compare (target ≥ 50×).

`--evaluate CALLS` also times `evaluate` of one window of CALLS calls against a full history
(the per-window cost of judging), beside the add+merge of the same window's records.

`--false-alerts N` also replays N quiet windows (after a 24-window history) at 50, 500, 5,000 and
20,000 calls per window and prints the false alerts per detector.
"""

from __future__ import annotations

import argparse
import math
import os
import time
from collections import Counter
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd

from detectors.base import Baseline, WindowRef
from detectors.latency import LatencyDetector
from detectors.safety import SafetyDetector
from detectors.tokens import TokensDetector
from schemas.batch import LogBatch
from schemas.detector_config import LatencyConfig, SafetyConfig, TokensConfig

BATCH = 10_000
REASONS = np.array(["SAFETY", "PROHIBITED_CONTENT", "BLOCKLIST"], dtype=object)


def make_batch(rng: np.random.Generator, n: int = BATCH) -> LogBatch:
    blocked = rng.random(n) < 0.02
    k = int(blocked.sum())
    stage = np.full(n, None, dtype=object)
    stage[blocked] = np.where(rng.random(k) < 0.5, "prompt", "response")
    reason = np.full(n, None, dtype=object)
    reason[blocked] = REASONS[rng.integers(0, 3, k)]
    none = np.full(n, None, dtype=object)
    nan = np.full(n, np.nan)
    return LogBatch(
        request_id=np.array([f"r{i}" for i in range(n)], dtype=object),
        timestamp=np.full(n, 1.7e9),
        model=np.full(n, "chat-model", dtype=object),
        model_version=none,
        latency_ms=rng.lognormal(np.log(800.0), 0.5, n),
        time_to_first_token_ms=nan,
        input_tokens=np.round(rng.lognormal(np.log(600.0), 0.8, n)),
        output_tokens=np.round(rng.lognormal(np.log(250.0), 0.7, n)),
        blocked=blocked,
        block_stage=stage,
        block_reason=reason,
        finish_reason=none,
        citation_count=nan,
        response_length=nan,
        error=none,
        safety_scores={"harassment": rng.random(n) ** 8, "hate": rng.random(n) ** 8},
    )


def to_frame(batch: LogBatch) -> pd.DataFrame:
    frame = pd.DataFrame(
        {
            "latency_ms": batch.latency_ms,
            "input_tokens": batch.input_tokens,
            "output_tokens": batch.output_tokens,
            "blocked": batch.blocked,
            "block_stage": batch.block_stage,
            "block_reason": batch.block_reason,
        }
    )
    for cat, scores in batch.safety_scores.items():
        frame[f"score_{cat}"] = scores
    return frame


def naive(frames: list[pd.DataFrame], high: float, lat: LatencyConfig) -> dict[str, Any]:
    """The per-record loop a first version would have: same counts, histogram and sums."""
    gamma = (1 + lat.relative_accuracy) / (1 - lat.relative_accuracy)
    last = math.ceil(math.log(lat.max_ms / lat.min_ms, gamma))
    out: dict[str, Any] = {"calls": 0, "blocked": 0, "prompt": 0, "response": 0}
    reasons: Counter[str] = Counter()
    highs: Counter[str] = Counter()
    hist: Counter[int] = Counter()
    tokens = [0, 0, 0, 0, 0]  # input sum, output calls, output sum, output sum sq, input calls
    for frame in frames:
        score_cols = [c for c in frame.columns if c.startswith("score_")]
        for _, row in frame.iterrows():
            out["calls"] += 1
            if row["blocked"]:
                out["blocked"] += 1
                out["prompt"] += row["block_stage"] == "prompt"
                out["response"] += row["block_stage"] == "response"
                reasons[row["block_reason"] or "unspecified"] += 1
            for col in score_cols:
                if row[col] >= high:
                    highs[col.removeprefix("score_")] += 1
            latency = row["latency_ms"]
            if not math.isnan(latency):
                k = (
                    math.ceil(math.log(latency / lat.min_ms) / math.log(gamma))
                    if latency > 0
                    else 0
                )
                hist[min(max(k, 0), last)] += 1
            if not math.isnan(row["input_tokens"]):
                tokens[0] += int(row["input_tokens"])
                tokens[4] += 1
            if not math.isnan(row["output_tokens"]):
                value = int(row["output_tokens"])
                tokens[1] += 1
                tokens[2] += value
                tokens[3] += value * value
    out.update(reasons=dict(reasons), highs=dict(highs), hist=dict(hist), tokens=tokens)
    return out


def best_of(fn: Any, repeat: int = 3) -> tuple[float, Any]:
    times, result = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return min(times), result


def throughput(batches: int) -> None:
    rng = np.random.default_rng(0)
    data = [make_batch(rng) for _ in range(batches)]
    frames = [to_frame(b) for b in data[:2]]
    safety = SafetyDetector(SafetyConfig())
    latency = LatencyDetector(LatencyConfig())
    tokens = TokensDetector(TokensConfig())

    def fold(det: Any, batches_: list[LogBatch]) -> Any:
        state = det.empty()
        for b in batches_:
            state = det.merge(state, det.add(det.empty(), b))
        return state

    naive_s, expected = best_of(lambda: naive(frames, 0.75, latency.config))
    naive_rate = len(frames) * BATCH / naive_s

    # the vectorised states must hold exactly what the naive loop counted
    s, lat, tok = (fold(d, data[:2]) for d in (safety, latency, tokens))
    row, lrow = safety.to_row(s), latency.to_row(lat)
    assert (row["calls"], row["blocked"]) == (expected["calls"], expected["blocked"])
    assert (row["prompt_blocks"], row["response_blocks"]) == (
        expected["prompt"],
        expected["response"],
    )
    assert row["block_reasons"] == expected["reasons"] and row["high_scores"] == expected["highs"]
    assert {int(k): v for k, v in lrow["buckets"].items()} == expected["hist"]
    t = expected["tokens"]
    assert (tok.input_tokens, tok.output_calls, tok.output_tokens, tok.output_tokens_sq) == tuple(
        t[:4]
    )

    print(f"naive pandas iterrows loop (all three): {naive_rate:>12,.0f} records/s")
    records = batches * BATCH
    total = 0.0
    for name, det in (("safety", safety), ("latency", latency), ("tokens", tokens)):
        secs, _ = best_of(lambda det=det: fold(det, data))
        total += secs
        print(
            f"{name:<8} add+merge: {records / secs:>12,.0f} records/s "
            f"({1e6 * secs / records:.3f} µs/record, ×{records / secs / naive_rate:,.0f} naive)"
        )
    rate = records / total
    print(
        f"all three add+merge: {rate:>12,.0f} records/s "
        f"({1e6 / rate:.3f} µs/record) → ×{rate / naive_rate:,.0f} the naive loop (target ≥ 50×)"
    )


def evaluate_cost(calls: int) -> None:
    """µs per judged window of the latency and token detectors, full history, best of 3."""
    rng = np.random.default_rng(5)
    window = WindowRef(
        "chat-model", datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 1, 1, 0, 5, tzinfo=UTC)
    )
    judged: tuple[tuple[str, Any], ...] = (
        ("latency", LatencyDetector(LatencyConfig())),
        ("tokens", TokensDetector(TokensConfig())),
    )
    for name, det in judged:
        batches = [make_batch(rng, calls) for _ in range(det.history_windows + 1)]
        states = [det.add(det.empty(), b) for b in batches]
        baseline = Baseline(history=tuple(states[:-1]))
        judge, _ = best_of(
            lambda det=det, states=states, baseline=baseline: [
                det.evaluate(states[-1], baseline, window) for _ in range(200)
            ]
        )
        fold_secs, _ = best_of(
            lambda det=det, b=batches[-1]: [det.add(det.empty(), b) for _ in range(200)]
        )
        print(
            f"{name:<8} evaluate: {1e6 * judge / 200:>8.0f} µs/window ({det.history_windows} "
            f"windows of history) vs add of its {calls} calls {1e6 * fold_secs / 200:.0f} µs "
            f"(evaluate/add ×{judge / fold_secs:.1f})"
        )


def false_alerts(windows: int) -> None:
    from tests.unit.test_detector_incidents import HISTORY, evaluate_stream, window_batches

    for calls in (50, 500, 5000, 20_000):
        rng = np.random.default_rng(1000 + calls)
        batches = window_batches(rng, calls, windows + HISTORY)
        counts = {}
        for name in ("safety", "latency", "tokens"):
            detections = evaluate_stream(name, batches, start=HISTORY)
            counts[name] = sum(d.firing for d in detections)
        print(f"{calls:>6} calls/window, {windows} quiet windows: false alerts {counts}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--batches", type=int, default=40)
    parser.add_argument("--false-alerts", type=int, default=0, metavar="WINDOWS")
    parser.add_argument("--evaluate", type=int, default=0, metavar="CALLS")
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    throughput(args.batches)
    if args.evaluate:
        evaluate_cost(args.evaluate)
    if args.false_alerts:
        false_alerts(args.false_alerts)


if __name__ == "__main__":
    main()
