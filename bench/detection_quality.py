"""Detection quality on labelled streams: Lookout beside a static threshold and evidently.

    .venv/bin/python -m bench.detection_quality            # the README table (~10 min)
    .venv/bin/python -m bench.detection_quality --quick    # fewer seeds and sizes
    .venv/bin/python -m bench.detection_quality --only safety --traffic 500 --match "×2"

Streams: per-window states drawn for the simulator's model profiles (`model_profile`: block
rate, output-token median; latency lognormal around the profile's typical call), with diurnal
load swinging 5× a day, at 50 to 20,000 calls per window (peak). Windows are drawn directly as
what the detectors fold (binomial block counts, multinomial latency histograms over the
detector's buckets, per-call token draws, sums of per-embedding random features from the
synthetic topic world), because pushing every call of hundreds of streams through the
simulator's record generator would take hours; the statistics the detectors see are the same.

Incidents of graded size and duration (5 min, 30 min, 6 h; and a gradual drift over 3 h),
after 48 quiet windows and followed by 24; control streams have none. Every stream goes through
the real `WindowEvaluator` + `AlertTracker` (Lookout), through a static threshold on the raw
per-window value (mean + 3.09 sd of the 48 warm-up windows, the same alert state machine), and
for embedding drift through evidently's default embedding-drift method (model-based) on each
window's sample against a 2,000-embedding reference.

Per detector and incident: recall within 5 windows of the start, time to detect (median and
p90, in windows, counting the first window as 1), alerts (pages) per incident, resolves while
the incident was still going on, resolve lag after its end (windows); per detector and traffic:
false pages per 1,000 quiet windows.
"""

from __future__ import annotations

import argparse
import math
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
from scipy import stats

from alerts.state import AlertTracker
from detectors import _drift_math as dm
from detectors.base import Detector
from detectors.embedding_drift import EmbeddingDriftDetector, EmbeddingDriftState
from detectors.latency import LatencyDetector, LatencyState
from detectors.registry import build_detectors
from detectors.safety import SafetyState
from detectors.synthetic_embeddings import TopicWorld, embedding_batch
from detectors.tokens import TokensState
from schemas.alert_config import AlertingConfig
from schemas.detection import Alert, Detection
from schemas.detector_config import LatencyConfig, SafetyConfig, TokensConfig
from schemas.drift_config import EmbeddingDriftConfig
from worker.evaluator import WindowEvaluator
from worker.sources.simulator import DEFAULT_MODELS, model_profile

WINDOW = 300
T0 = int(datetime(2026, 6, 1, tzinfo=UTC).timestamp())
DAY = 288
WARMUP = 48
AFTER = 24
#: pages this many windows after an incident's end still belong to it (pooled spans)
ATTRIBUTION = 8
Factor = Callable[[int], float]  # window index inside the incident → multiplier


@dataclass(frozen=True)
class Case:
    detector: str
    label: str
    duration: int  # windows
    factor: Factor
    traffic: int


@dataclass
class Outcome:
    caught5: int = 0
    ttd: list[int] = field(default_factory=list)
    pages: list[int] = field(default_factory=list)
    resolves_during: int = 0
    lag: list[int] = field(default_factory=list)
    streams: int = 0
    quiet_windows: int = 0
    false_pages: int = 0
    #: incidents starting in busy hours (first window at least half the peak traffic), and of
    #: those, caught within 5 windows: the night trough carries a fifth of the peak
    busy: int = 0
    busy_caught5: int = 0


def diurnal(peak: int, windows: int, phase: float) -> np.ndarray:
    t = np.arange(windows)
    swing = 0.6 + 0.4 * np.sin(2 * np.pi * t / DAY + phase)
    return np.maximum(1, np.round(peak * swing)).astype(int)


# -- window makers: (rng, calls, factor, model) → state -------------------------------------


class Makers:
    def __init__(self, rng: np.random.Generator) -> None:
        self.latency = LatencyDetector(LatencyConfig())
        self.embedding = EmbeddingDriftDetector(EmbeddingDriftConfig())
        self._latency_probs: dict[tuple[str, float], np.ndarray] = {}
        world = TopicWorld.build(seed=7)
        self.quiet_pool = world.sample(20_000, rng)
        self.shift_pool = world.sample(6_000, rng, shift=1.0)
        self.quiet_features = self._features(self.quiet_pool)
        self.shift_features = self._features(self.shift_pool)

    def _features(self, x: np.ndarray) -> np.ndarray:
        det = self.embedding
        norms = np.sqrt(np.einsum("ij,ij->i", x, x))
        cos = dm.grid_cosine_features(dm.unit_rows_on_grid(x, norms, det.features), det.features)
        return np.asarray(np.rint(cos.astype(np.float64) * dm.FIXED_POINT_SCALE), dtype=np.int64)

    def safety(self, rng: np.random.Generator, n: int, f: float, model: str) -> SafetyState:
        rate = min(model_profile(model).block_rate * f, 1.0)
        return SafetyState(calls=n, blocked=int(rng.binomial(n, rate)))

    def latency_state(self, rng: np.random.Generator, n: int, f: float, model: str) -> LatencyState:
        key = (model, round(f, 3))
        probs = self._latency_probs.get(key)
        if probs is None:
            p = model_profile(model)
            median = p.ttft_median_ms + p.ms_per_token * p.output_median
            b = self.latency.buckets
            edges = np.array([b.upper(k) for k in range(b.n_buckets)])
            cdf = stats.lognorm.cdf(edges, s=0.5, scale=median * f)
            cdf[-1] = 1.0
            probs = np.diff(np.concatenate([[0.0], cdf]))
            self._latency_probs[key] = probs
        counts = rng.multinomial(n, probs).astype(np.int64)
        counts.flags.writeable = False
        b = self.latency.buckets
        return LatencyState(counts, float(np.dot(counts, b.value(np.arange(b.n_buckets)))))

    def tokens(self, rng: np.random.Generator, n: int, f: float, model: str) -> TokensState:
        median = model_profile(model).output_median * f
        out = np.round(rng.lognormal(np.log(median), 0.7, n)).astype(np.int64)
        return TokensState(
            calls=n, output_calls=n, output_tokens=int(out.sum()), output_tokens_sq=int(out @ out)
        )

    def embedding_rows(
        self, rng: np.random.Generator, n: int, share: float
    ) -> tuple[np.ndarray, np.ndarray]:
        new = int(rng.binomial(n, min(share, 1.0))) if share > 0 else 0
        return (
            rng.integers(0, len(self.quiet_pool), n - new),
            rng.integers(0, len(self.shift_pool), new),
        )

    def embedding_state(self, rows: tuple[np.ndarray, np.ndarray]) -> EmbeddingDriftState:
        quiet, new = rows
        total = self.quiet_features[quiet].sum(axis=0) + self.shift_features[new].sum(axis=0)
        return EmbeddingDriftState(len(quiet) + len(new), total, self.embedding.empty().sample)

    def embedding_sample(self, rows: tuple[np.ndarray, np.ndarray], limit: int) -> np.ndarray:
        quiet, new = rows
        x = np.concatenate([self.quiet_pool[quiet], self.shift_pool[new]])
        return x[:limit]


# -- running one stream ---------------------------------------------------------------------


def _pages_and_resolves(alerts: Sequence[tuple[int, Alert]]) -> tuple[list[int], list[int]]:
    """Window indices of pages and of resolves. A resolve that comes just before a page in the
    same window (an earlier incident closed because a new one begins) counts half a window
    earlier, so it is not taken for a resolve during the new incident."""
    pages = [
        i
        for i, a in alerts
        if a.status == "firing" and "sustained" not in a.summary and "escalated" not in a.summary
    ]
    resolves = [
        i - 1 if any(j == i and b.status == "firing" for j, b in alerts[n + 1 :]) else i
        for n, (i, a) in enumerate(alerts)
        if a.status == "resolved"
    ]
    return pages, resolves


def run_lookout(
    name: str, detector: Detector[Any], states: Sequence[Any], reference: Any = None
) -> list[tuple[int, Alert]]:
    refs = {("m", name): reference} if reference is not None else None
    evaluator = WindowEvaluator({name: detector}, WINDOW, AlertTracker(AlertingConfig()), refs)
    out: list[tuple[int, Alert]] = []
    for i, state in enumerate(states):
        out += [(i, a) for a in evaluator.evaluate("m", T0 + i * WINDOW, {name: state}).alerts]
    return out


def run_flags(name: str, flags: Sequence[bool | None]) -> list[tuple[int, Alert]]:
    """A per-window yes/no (None: not judged) through the same alert state machine."""
    tracker = AlertTracker(AlertingConfig())
    out: list[tuple[int, Alert]] = []
    for i, flag in enumerate(flags):
        start = datetime.fromtimestamp(T0 + i * WINDOW, UTC)
        end = datetime.fromtimestamp(T0 + (i + 1) * WINDOW, UTC)
        verdict = "insufficient_data" if flag is None else ("alert" if flag else "ok")
        d = Detection(
            detector=name,
            model="m",
            window_start=start,
            window_end=end,
            verdict=verdict,
            condition="static_threshold",
            reason="static",
        )
        out += [(i, a) for a in tracker.observe(d)]
    return out


def static_flags(values: Sequence[float | None]) -> list[bool | None]:
    """Value above mean + 3.09 sd of the warm-up windows (a 1-in-1,000 line if normal)."""
    warm = np.array([v for v in values[:WARMUP] if v is not None and math.isfinite(v)])
    if len(warm) < 10:
        return [None] * len(values)
    line = float(warm.mean() + 3.09 * warm.std(ddof=1))
    return [
        None if i < 12 or v is None or not math.isfinite(v) else v > line
        for i, v in enumerate(values)
    ]


def score(
    out: Outcome,
    alerts: Sequence[tuple[int, Alert]],
    start: int,
    end: int,
    total: int,
    busy: bool = False,
) -> None:
    pages, resolves = _pages_and_resolves(alerts)
    out.streams += 1
    if end <= start:  # control stream
        out.quiet_windows += total - 12
        out.false_pages += sum(p >= 12 for p in pages)
        return
    mine = [p for p in pages if start <= p < end + ATTRIBUTION]
    out.quiet_windows += (start - 12) + max(0, total - (end + ATTRIBUTION))
    out.false_pages += sum(12 <= p < start or p >= end + ATTRIBUTION for p in pages)
    out.pages.append(len(mine))
    out.busy += busy
    if mine:
        out.ttd.append(mine[0] - start + 1)
        out.caught5 += mine[0] - start < 5
        out.busy_caught5 += busy and mine[0] - start < 5
        out.resolves_during += sum(mine[0] <= r < end for r in resolves)
        after = [r for r in resolves if r >= end]
        if after:
            out.lag.append(after[0] - end + 1)


# -- the cases ------------------------------------------------------------------------------


def const(f: float) -> Factor:
    return lambda _i: f


def ramp(top: float, windows: int) -> Factor:
    return lambda i: 1 + (top - 1) * min(1.0, (i + 1) / windows)


def cases(traffic: Sequence[int], quick: bool) -> list[Case]:
    durations = {"5 min": 1, "30 min": 6, "6 h": 72}
    if quick:
        durations = {"30 min": 6, "6 h": 72}
    out: list[Case] = []
    sizes = {
        "safety": [("block ×1.5", 1.5), ("block ×2", 2.0), ("block ×3", 3.0)],
        "latency": [("p95 ×1.3", 1.3), ("p95 ×2", 2.0)],
        "tokens": [("output ×1.3", 1.3), ("output ×2", 2.0)],
        "embedding_drift": [
            ("topic 5%", 0.05), ("topic 10%", 0.1), ("topic 20%", 0.2), ("topic 40%", 0.4)
        ],
    }  # fmt: skip
    for det, items in sizes.items():
        for n in traffic:
            if det == "embedding_drift" and n > 2_000:
                continue  # the window sample is bounded; 2,000 already pools well past it
            for label, f in items:
                for dlabel, d in durations.items():
                    out.append(Case(det, f"{label}, {dlabel}", d, const(f), n))
            out.append(Case(det, "control", 0, const(1.0), n))
        gradual = {"safety": 2.0, "latency": 2.0, "tokens": 2.0, "embedding_drift": 0.2}[det]
        for n in traffic:
            if det == "embedding_drift" and n > 2_000:
                continue
            name = "topic 0→20%" if det == "embedding_drift" else f"×1→×{gradual:g}"
            share = det == "embedding_drift"
            factor = (lambda i: 0.2 * min(1.0, (i + 1) / 36)) if share else ramp(gradual, 36)
            out.append(Case(det, f"{name} over 3 h, held 3 h", 72, factor, n))
    return out


def run_case(
    case: Case,
    seeds: int,
    makers: Makers,
    reference: EmbeddingDriftState,
    ref_sample: np.ndarray,
    evidently: bool,
) -> tuple[Outcome, Outcome]:
    lookout, baseline = Outcome(), Outcome()
    detectors = build_detectors(
        {"safety": SafetyConfig(), "latency": LatencyConfig(), "tokens": TokensConfig()}
    )
    for seed in range(seeds):
        rng = np.random.default_rng([seed, case.traffic, zlib.crc32(case.label.encode())])
        model = DEFAULT_MODELS[seed % len(DEFAULT_MODELS)]
        total = WARMUP + (case.duration or 100) + AFTER
        calls = diurnal(case.traffic, total, phase=rng.uniform(0, 2 * np.pi))
        start, end = WARMUP, WARMUP + case.duration
        normal = 0.0 if case.detector == "embedding_drift" else 1.0
        factors = [case.factor(i - start) if start <= i < end else normal for i in range(total)]
        if case.detector == "embedding_drift":
            rows = [
                makers.embedding_rows(rng, int(n), f) for n, f in zip(calls, factors, strict=True)
            ]
            states = [makers.embedding_state(r) for r in rows]
            alerts = run_lookout("embedding_drift", makers.embedding, states, reference)
            score(lookout, alerts, start, end, total)
            if evidently:
                flags = evidently_flags(rows, makers, ref_sample, start, end)
                score(baseline, run_flags("evidently", flags), start, end, total)
            continue
        make: dict[str, Callable[[np.random.Generator, int, float, str], Any]] = {
            "safety": makers.safety,
            "latency": makers.latency_state,
            "tokens": makers.tokens,
        }
        states = [
            make[case.detector](rng, int(n), f, model) for n, f in zip(calls, factors, strict=True)
        ]
        busy = bool(end > start and calls[start] * 2 >= case.traffic)
        alerts = run_lookout(case.detector, detectors[case.detector], states)
        score(lookout, alerts, start, end, total, busy)
        values = [raw_value(case.detector, s, makers) for s in states]
        score(baseline, run_flags("static", static_flags(values)), start, end, total, busy)
    return lookout, baseline


def raw_value(detector: str, state: Any, makers: Makers) -> float | None:
    if detector == "safety":
        return state.blocked / state.calls if state.calls else None
    if detector == "latency":
        if state.count == 0:
            return None
        return float(makers.latency.buckets.quantiles(state.counts, np.array([0.95]))[0])
    return state.output_tokens / state.output_calls if state.output_calls else None


def evidently_flags(
    rows: Sequence[tuple[np.ndarray, np.ndarray]],
    makers: Makers,
    ref_sample: np.ndarray,
    start: int,
    end: int,
) -> list[bool | None]:
    """evidently's default (model) verdict per window: on an incident and the 12 windows either
    side (evidently is slow; the other windows are not judged), on every window of a control
    stream."""
    from detectors.evidently_drift import evidently_embedding_drift

    out: list[bool | None] = []
    # control streams: every window from the 12th (false alarms per judged window)
    lo, hi = (start - 12, end + 12) if end > start else (12, len(rows))
    for i, r in enumerate(rows):
        if not lo <= i < hi:
            out.append(None)
            continue
        sample = makers.embedding_sample(r, 250)
        out.append(len(sample) >= 50 and evidently_embedding_drift(ref_sample, sample).drifted)
    return out


# -- output ---------------------------------------------------------------------------------


def _median(values: Sequence[int]) -> str:
    return "–" if not values else f"{np.median(values):g}"


def _p90(values: Sequence[int]) -> str:
    return "–" if not values else f"{np.percentile(values, 90):g}"


def row(case: Case, o: Outcome) -> str:
    if case.duration == 0:
        rate = 1000 * o.false_pages / max(o.quiet_windows, 1)
        return f"false pages {rate:.2f}/1k quiet windows ({o.false_pages} in {o.quiet_windows})"
    n = len(o.pages)
    per = f"{np.mean(o.pages):.2f}" if o.pages else "–"
    return (
        f"recall@5 {o.caught5}/{n} (busy-hour starts {o.busy_caught5}/{o.busy}) · "
        f"ttd {_median(o.ttd)}/{_p90(o.ttd)} · pages/incident {per} · "
        f"resolves during {o.resolves_during} · resolve lag {_median(o.lag)}"
    )


def cell(case: Case, o: Outcome) -> str:
    """One README cell: caught within 5 windows (median windows to the page) · pages per
    incident · resolves while it was still on · median resolve lag; controls: false pages."""
    if not o.streams:
        return "–"
    if case.duration == 0:
        return f"{1000 * o.false_pages / max(o.quiet_windows, 1):.2f}/1k"
    per = f"{np.mean(o.pages):.2f}" if o.pages else "–"
    return (
        f"{o.caught5}/{len(o.pages)} ({_median(o.ttd)}) · {per} · {o.resolves_during} · "
        f"{_median(o.lag)}"
    )


def readme_table(results: dict[tuple[str, str], dict[int, tuple[Case, Outcome, Outcome]]]) -> None:
    """The README's table: Lookout and the same-run baseline side by side per traffic level."""
    traffic = sorted({n for cells in results.values() for n in cells})
    head = [f"Lookout {n:,}" for n in traffic] + [f"baseline {n:,}" for n in traffic]
    print("| detector | incident | " + " | ".join(head) + " |")
    print("|---|---|" + "---|" * len(head))
    for (detector, label), cells in results.items():
        ours = [cell(cells[n][0], cells[n][1]) if n in cells else "–" for n in traffic]
        theirs = [cell(cells[n][0], cells[n][2]) if n in cells else "–" for n in traffic]
        print(f"| {detector} | {label} | " + " | ".join(ours + theirs) + " |", flush=True)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--no-evidently", action="store_true")
    parser.add_argument("--only", help="one detector (safety, latency, tokens, embedding_drift)")
    parser.add_argument(
        "--traffic", type=int, action="append", help="only this peak calls/window (repeatable)"
    )
    parser.add_argument("--match", help="only incidents whose label contains this text")
    parser.add_argument(
        "--readme",
        action="store_true",
        help="the README's table: 30-minute and 6-hour incidents at 100, 500 and 2,000 calls",
    )
    args = parser.parse_args(argv)
    traffic = (100, 500, 2_000) if args.quick or args.readme else (50, 100, 500, 2_000, 20_000)
    seeds = 3 if args.quick else args.seeds
    began = time.perf_counter()
    rng = np.random.default_rng(2026)
    makers = Makers(rng)
    reference = None
    for i in range(3):
        batch = embedding_batch(
            makers.quiet_pool[rng.integers(0, 20_000, 1_000)], ids_from=i * 10_000
        )
        reference = makers.embedding.update_reference(
            reference, makers.embedding.add(makers.embedding.empty(), batch)
        )
    assert reference is not None
    ref_sample = makers.quiet_pool[rng.integers(0, 20_000, 2_000)]
    if not args.readme:
        print("| detector | incident | calls/window (peak) | Lookout | baseline |")
        print("|---|---|---|---|---|")
    results: dict[tuple[str, str], dict[int, tuple[Case, Outcome, Outcome]]] = {}
    for case in cases(traffic, args.quick or args.readme):
        if args.only and case.detector != args.only:
            continue
        if args.traffic and case.traffic not in args.traffic:
            continue
        if args.match and args.match not in case.label:
            continue
        use_evidently = (
            not args.no_evidently
            and case.detector == "embedding_drift"
            and case.traffic <= 500
            and ("30 min" in case.label or case.label == "control")
        )
        ours, theirs = run_case(case, seeds, makers, reference, ref_sample, use_evidently)
        if args.readme:
            if case.detector == "embedding_drift" and not use_evidently:
                theirs = Outcome()  # not run: printed as "–"
            results.setdefault((case.detector, case.label), {})[case.traffic] = (
                case,
                ours,
                theirs,
            )
            continue
        if case.detector == "embedding_drift":
            other = f"evidently default: {row(case, theirs)}" if use_evidently else "–"
        else:
            other = f"static threshold: {row(case, theirs)}"
        print(
            f"| {case.detector} | {case.label} | {case.traffic:,} | {row(case, ours)} | {other} |",
            flush=True,
        )
    if args.readme:
        readme_table(results)
    print(f"\n{seeds} seeds per cell, {time.perf_counter() - began:.0f} s")


if __name__ == "__main__":
    main()
