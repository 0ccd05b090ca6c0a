"""Latency detector: a fixed log-bucket histogram per window, p95 regressions and SLO burn rate.

Lifecycle (a Beam CombineFn): ``empty()`` → ``add(state, batch)`` per batch → ``merge`` (adds
bucket counts, so quantiles merge exactly) → ``evaluate(state, baseline, window)``.

Conditions, most urgent first (one detection per window):

* ``slo_burn_rate_page`` / ``slo_burn_rate_ticket`` when an SLO is configured: the multiwindow,
  multi-burn-rate rules of the Google SRE Workbook (14.4× over 1 h and 5 min pages; 6× over 6 h
  and 30 min is a ticket). The long and short windows are built by merging the history.
* ``p95_above_baseline``: more calls than expected are slower than the baseline's p95 (the exact
  conditional test on exceedance counts), and the window's p95 is at least `min_ratio` times the
  baseline's. The baseline is the merged histogram of the last `baseline_windows` windows
  (further back, up to twice as many, until it holds `min_baseline_calls` calls).
  The window is also pooled with the 1, 3 and 7 before it (each test at alpha / 4; see
  `detectors._sequential`) so a small sustained regression is seen at low traffic. While an
  incident is open the baseline is frozen, and the window stays `alert` until a CUSUM on the
  share of calls slower than the baseline p95 says latency is back (`details["cleared"]`).

Row layout for SQL: ``buckets`` maps a bucket index (as a string) to its count; with
``gamma = bucket_gamma`` and ``m = bucket_min_ms``, bucket k ≥ 1 covers (m·gamma^(k−1), m·gamma^k]
and reports 2·m·gamma^k/(1+gamma); bucket 0 covers [0, m]; the last bucket also holds everything
slower than the configured max. Sort buckets by index, accumulate counts, and the quantile q is
the bucket where the running count first exceeds floor(q·(count−1)).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from detectors._math import (
    BURN_RATE_RULES,
    IntArray,
    LogBuckets,
    burn_rate,
    rate_increase_pvalue,
)
from detectors._sequential import binomial_llr, return_evidence, span_alpha
from detectors.base import Baseline, WindowRef, window_detection
from schemas.batch import LogBatch
from schemas.detection import Detection
from schemas.detector_config import LatencyConfig
from schemas.plural import counted

QUANTILES = np.array([0.5, 0.95, 0.99])
#: `engine.window_seconds`'s default, for a detector built without a configuration file
DEFAULT_WINDOW_SECONDS = 60


def _occupied(states: Sequence[LatencyState]) -> tuple[int, int]:
    """The bucket range [lo, hi) outside which every state's counts are zero ((0, 1) if all
    are empty): a window's latencies fill a few hundred of the 823 buckets."""
    spans = [s.span for s in states if s.span is not None]
    if not spans:
        return 0, 1
    return min(lo for lo, _ in spans), max(hi for _, hi in spans)


def _prefix_counts(history: Sequence[LatencyState], lo: int, hi: int) -> IntArray:
    """Row i is the sum of the bucket counts lo..hi-1 of history[:i] (row 0 is zeros)."""
    out = np.zeros((len(history) + 1, hi - lo), dtype=np.int64)
    if history:
        np.cumsum(np.stack([h.counts[lo:hi] for h in history]), axis=0, out=out[1:])
    return out


def _frozen(counts: IntArray) -> IntArray:
    counts.flags.writeable = False
    return counts


@dataclass(frozen=True, eq=False)
class LatencyState:
    """Bucket counts (read-only array, fixed length) and the sum of latencies for the mean."""

    counts: IntArray
    sum_ms: float = 0.0

    @functools.cached_property
    def count(self) -> int:
        """Found once: the counts are read-only, and judging a window asks for the counts of
        every state in its history."""
        return int(self.counts.sum())

    @functools.cached_property
    def span(self) -> tuple[int, int] | None:
        """[first, last + 1) of the buckets holding calls; None when empty. A state in the
        history is judged against at every later window, so this is found once."""
        held = np.flatnonzero(self.counts)
        return (int(held[0]), int(held[-1]) + 1) if len(held) else None

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, LatencyState):
            return NotImplemented
        return self.sum_ms == other.sum_ms and bool(np.array_equal(self.counts, other.counts))

    __hash__ = None  # type: ignore[assignment]


class LatencyDetector:
    """Latency detector; see the module docstring."""

    name: ClassVar[str] = "latency"
    config_type: ClassVar[type[LatencyConfig]] = LatencyConfig

    def __init__(self, config: LatencyConfig) -> None:
        self.config = config
        self.buckets = LogBuckets(config.min_ms, config.max_ms, config.relative_accuracy)
        self._n = self.buckets.n_buckets
        window = config.expected_window_seconds or DEFAULT_WINDOW_SECONDS
        slo_windows = math.ceil(max(r.long_seconds for r in BURN_RATE_RULES) / window)
        # twice the baseline's windows: the baseline reaches back past `baseline_windows` only
        # until it holds `min_baseline_calls` (`_reference`), so a night at 20 calls a window
        # still has one
        self._reach_back = 2 * config.baseline_windows
        # the SLO's burn rates look further back than the baseline does
        self.history_windows = max(self._reach_back, slo_windows if config.slo else 0)

    def empty(self) -> LatencyState:
        return LatencyState(_frozen(np.zeros(self._n, dtype=np.int64)))

    def add(self, state: LatencyState, batch: LogBatch) -> LatencyState:
        values = batch.latency_ms[~np.isnan(batch.latency_ms)]
        if len(values) == 0:
            return state
        counts = np.bincount(self.buckets.index(values), minlength=self._n)
        return LatencyState(_frozen(state.counts + counts), state.sum_ms + float(values.sum()))

    def merge(self, a: LatencyState, b: LatencyState) -> LatencyState:
        return LatencyState(_frozen(a.counts + b.counts), a.sum_ms + b.sum_ms)

    def quantiles(self, state: LatencyState) -> dict[str, float]:
        """p50/p95/p99 in milliseconds (NaN when the window had no latency)."""
        p50, p95, p99 = self.buckets.quantiles(state.counts, QUANTILES).tolist()
        return {"p50_ms": p50, "p95_ms": p95, "p99_ms": p99}

    def to_row(self, state: LatencyState) -> dict[str, Any]:
        nz = np.flatnonzero(state.counts)
        return {
            "count": state.count,
            "sum_ms": state.sum_ms,
            "buckets": dict(zip(map(str, nz.tolist()), state.counts[nz].tolist(), strict=True)),
            "bucket_gamma": self.buckets.gamma,
            "bucket_min_ms": self.buckets.min_value,
        }

    def from_row(self, row: Mapping[str, Any]) -> LatencyState:
        gamma, low = float(row["bucket_gamma"]), float(row["bucket_min_ms"])
        if not (math.isclose(gamma, self.buckets.gamma) and math.isclose(low, self.config.min_ms)):
            msg = (
                f"latency row has bucket mapping gamma={gamma}, min_ms={low}; this detector "
                f"uses gamma={self.buckets.gamma}, min_ms={self.config.min_ms}"
            )
            raise ValueError(msg)
        counts = np.zeros(self._n, dtype=np.int64)
        for k, v in row["buckets"].items():
            counts[int(k)] = int(v)
        return LatencyState(_frozen(counts), float(row["sum_ms"]))

    def update_reference(self, reference: LatencyState | None, state: LatencyState) -> None:
        return None

    def evaluate(
        self, state: LatencyState, baseline: Baseline[LatencyState], window: WindowRef
    ) -> Detection:
        cfg = self.config
        n = state.count
        q = self.quantiles(state)
        details: dict[str, Any] = {k: (None if math.isnan(v) else v) for k, v in q.items()}
        details["mean_ms"] = state.sum_ms / n if n else None

        def detection(**kw: Any) -> Detection:
            p95 = q["p95_ms"]
            kw.setdefault("value", None if math.isnan(p95) else p95)
            return window_detection(
                self.name,
                window,
                sample_size=n,
                details=details,
                **kw,
            )

        if cfg.slo is not None:
            # the budget burns in every window, an incident's too, open or resolved: against
            # the baseline alone (which leaves them out), the burn rates stayed at their
            # pre-incident level throughout a p95 incident and the SLO never paged, and
            # forgot what it spent once it resolved
            timeline = baseline.timeline or (*baseline.history, *baseline.recent)
            burn = self._burn(state, timeline, window, details)
            if burn is not None:
                return detection(**burn)
        return self._p95(state, baseline, detection, details)

    def _burn(
        self,
        state: LatencyState,
        history: tuple[LatencyState, ...],
        window: WindowRef,
        details: dict[str, Any],
    ) -> dict[str, Any] | None:
        """The first burn-rate rule that fires, as Detection fields; None when none does."""
        slo = self.config.slo
        assert slo is not None
        length = max((window.end - window.start).total_seconds(), 1.0)
        # calls in buckets entirely above the threshold's bucket are "bad" (within 1% of exact)
        first_bad = int(self.buckets.index(np.array([slo.threshold_ms]))[0]) + 1
        states = [*history, state]
        bad = np.array([s.counts[first_bad:].sum() for s in states], dtype=np.float64)
        total = np.array([s.count for s in states], dtype=np.float64)
        rates: dict[str, float] = {}
        for rule in BURN_RATE_RULES:
            spans = {}
            for label, seconds in (("long", rule.long_seconds), ("short", rule.short_seconds)):
                k = min(len(states), max(1, math.ceil(seconds / length)))
                spans[label] = (bad[-k:].sum(), total[-k:].sum(), k)
            long_rate = burn_rate(spans["long"][0], spans["long"][1], slo.objective)
            short_rate = burn_rate(spans["short"][0], spans["short"][1], slo.objective)
            rates[f"{rule.name}_long"], rates[f"{rule.name}_short"] = long_rate, short_rate
            # the history must cover the whole long window: a new model's first 5 minutes
            # say nothing about an hour of budget
            covered_long = len(states) * length >= rule.long_seconds
            enough = covered_long and spans["long"][1] >= self.config.slo_min_calls
            if enough and long_rate >= rule.factor and short_rate >= rule.factor:
                details["burn_rates"] = rates
                covered = spans["long"][2] * length / 3600
                return {
                    "verdict": "alert",
                    "condition": f"slo_burn_rate_{rule.name}",
                    "severity": rule.severity,
                    "threshold": rule.factor,
                    "baseline": 1.0,
                    "value": long_rate,
                    "reason": (
                        f"latency SLO ({slo.objective:.2%} of calls under {slo.threshold_ms:g} ms) "
                        f"is burning its error budget {long_rate:.1f}× over the last "
                        f"{covered:.2g} h ({int(spans['long'][0])} of {int(spans['long'][1])} "
                        f"calls slower) and {short_rate:.1f}× over the last "
                        f"{spans['short'][2] * length / 60:.3g} min; the rule fires at "
                        f"{rule.factor:g}×."
                    ),
                }
        details["burn_rates"] = rates
        return None

    def _p95(
        self,
        state: LatencyState,
        baseline: Baseline[LatencyState],
        detection: Callable[..., Detection],
        details: dict[str, Any],
    ) -> Detection:
        cfg = self.config
        seq = cfg.sequential
        condition = "p95_above_baseline"
        spans = (1,) if baseline.in_incident else seq.spans
        # (p, k, n, x, n0, x0, cur95, base95, ratio) per pooled span that can be judged
        tested: list[tuple[float, int, int, int, int, int, float, float, float]] = []
        # the pooled spans and their baselines are contiguous runs of the history: sums of
        # bucket counts over a run come from one prefix sum (integer sums, so exactly what
        # merging the states one by one gives, without a state per merge)
        history = baseline.history
        # only the buckets any of these windows uses: the sums, running counts and quantiles
        # are the same, on a quarter of the columns
        lo, hi = _occupied([*history, state])
        prefix = _prefix_counts(history, lo, hi)
        calls = prefix.sum(axis=1)
        # every span at once: its pooled windows and its reference as rows of two matrices,
        # one running sum each (a few hundred small numpy calls per window became a dozen)
        ks = [k for k in spans if len(history) >= k - 1]
        ends = np.array([len(history) - max(k - 1, 0) for k in ks], dtype=np.int64)
        starts = self._reference_starts(calls, ends)
        cur_below = np.cumsum(state.counts[lo:hi] + (prefix[-1] - prefix[ends]), axis=1)
        ref_below = np.cumsum(prefix[ends] - prefix[starts], axis=1)
        ns, n0s = cur_below[:, -1], ref_below[:, -1]
        judged = (ns >= cfg.min_calls) & (n0s >= cfg.min_baseline_calls)
        if judged.any():
            rows = np.flatnonzero(judged)
            cur95s = self.buckets.quantiles_of_running(cur_below[rows], QUANTILES[1], lo)
            base95s = self.buckets.quantiles_of_running(ref_below[rows], QUANTILES[1], lo)
            k95s = self.buckets.index(base95s) - lo
            for row, cur95, base95, k95 in zip(rows, cur95s, base95s, k95s, strict=True):
                n, n0 = int(ns[row]), int(n0s[row])
                x = n - int(cur_below[row, k95])
                x0 = n0 - int(ref_below[row, k95])
                p = rate_increase_pvalue(float(x), float(n), float(x0), float(n0))
                cur, base = float(cur95), float(base95)
                tested.append((p, ks[row], n, x, n0, x0, cur, base, cur / base))
        if not tested:
            ref = self._reference(baseline.history)
            n0 = ref.count
            if baseline.in_incident and state.count and n0 >= cfg.min_baseline_calls:
                # too few calls to test this window alone; they still count as evidence
                base95 = float(self.buckets.quantiles(ref.counts, QUANTILES[1:2])[0])
                k95 = int(self.buckets.index(np.array([base95]))[0])
                share = int(ref.counts[k95 + 1 :].sum()) / n0
                cleared, evidence, returned = self._cleared(state, baseline, base95, share)
                details.update(
                    {"cleared": cleared, "clear_evidence": evidence, "return_evidence": returned}
                )
                return detection(
                    verdict="ok" if cleared else "alert",
                    condition=condition,
                    baseline=base95,
                    reason=(
                        f"{state.count} calls, too few to test alone; evidence that the "
                        f"incident ended {evidence:.1f} of {seq.clear_threshold:.1f} nats."
                    ),
                )
            return detection(
                verdict="insufficient_data",
                condition=condition,
                reason=(
                    f"not judged: {counted(state.count, 'call')} with a latency in the window "
                    f"(minimum {cfg.min_calls}) and {n0} in the past "
                    f"{counted(len(baseline.history), 'window')} "
                    f"(minimum {cfg.min_baseline_calls} for a baseline)."
                ),
            )
        alpha = span_alpha(cfg.alpha, seq.spans)
        firing = [t for t in tested if t[0] < alpha and t[8] >= cfg.min_ratio]
        p, span, n, x, n0, x0, cur95, base95, ratio = min(firing) if firing else tested[0]
        details.update(
            {
                "ratio": ratio,
                "slower_than_baseline_p95": x,
                "baseline_calls": n0,
                "span_windows": span,
                "span_value": cur95,
                "span_calls": n,
                "unit": "ms",
            }
        )
        where = "" if span == 1 else f" over the last {span} windows"
        compared = (
            f"p95 {cur95:.0f} ms{where} vs {base95:.0f} ms over the past {n0} calls "
            f"(×{ratio:.2f}); {x} of {n} calls ({x / n:.1%}) were slower than the baseline p95, "
            f"expected {x0 / n0:.1%} (one-sided p={p:.2g})"
        )
        common = {
            "condition": condition,
            "threshold": base95 * cfg.min_ratio,
            "baseline": base95,
            "p_value": p,
        }
        if baseline.in_incident and not firing:
            cleared, evidence, returned = self._cleared(state, baseline, base95, x0 / n0)
            details.update(
                {"cleared": cleared, "clear_evidence": evidence, "return_evidence": returned}
            )
            if not cleared:
                return detection(
                    verdict="alert",
                    severity="warning",
                    reason=(
                        f"latency not yet back to the pre-incident baseline: {compared}; "
                        f"evidence of a return {evidence:.1f} of {seq.clear_threshold:.1f} nats."
                    ),
                    **common,
                )
        if firing:
            return detection(
                verdict="alert",
                severity="critical" if ratio >= cfg.critical_ratio else "warning",
                reason=f"latency regression: {compared}.",
                **common,
            )
        return detection(
            verdict="ok",
            reason=(
                f"latency normal: {compared}; alerts need p<{alpha:.1g} on one of the "
                f"{len(seq.spans)} pooled spans and ×{cfg.min_ratio:g}."
            ),
            **common,
        )

    def _reference_starts(self, calls: IntArray, ends: IntArray) -> IntArray:
        """Where `_reference` of history[:end] begins, per end, from the running call counts:
        the newest `baseline_windows`, and further back (up to `_reach_back`) until they hold
        `min_baseline_calls`; 0 when the history is shorter than `baseline_windows`. All ends
        at once: a few numpy calls per span were a third of judging a window's p95."""
        cfg = self.config
        taken = np.arange(cfg.baseline_windows, self._reach_back + 1)  # windows reached back
        usable = taken[None, :] <= np.minimum(ends, self._reach_back)[:, None]
        back = np.maximum(ends[:, None] - taken[None, :], 0)
        enough = usable & (calls[ends][:, None] - calls[back] >= cfg.min_baseline_calls)
        n_usable = usable.sum(axis=1)  # `usable` is a prefix of each row
        pick = np.where(enough.any(axis=1), np.argmax(enough, axis=1), n_usable - 1)
        starts: IntArray = np.where(n_usable > 0, ends - taken[np.maximum(pick, 0)], 0)
        return starts

    def _reference(self, hist: Sequence[LatencyState]) -> LatencyState:
        """The baseline histogram: the last `baseline_windows` of `hist` merged, reaching
        further back (up to twice as many) until it holds `min_baseline_calls` calls."""
        cfg = self.config
        ref = self.empty()
        for k, h in enumerate(reversed(hist)):
            if k >= cfg.baseline_windows and ref.count >= cfg.min_baseline_calls:
                break
            if k >= self._reach_back:
                break
            ref = self.merge(ref, h)
        return ref

    def _cleared(
        self,
        state: LatencyState,
        baseline: Baseline[LatencyState],
        base95: float,
        base_share: float,
    ) -> tuple[bool, float, float]:
        """Has the open incident returned to the pre-incident latency? A CUSUM (nats) on the
        share of calls slower than the frozen baseline's p95: `base_share` before the incident,
        the incident's pooled share during it."""
        k95 = int(self.buckets.index(np.array([base95]))[0])
        windows = [*baseline.recent, state]
        counted = [(int(w.counts[k95 + 1 :].sum()), w.count) for w in windows]

        def llrs(level_from: Sequence[tuple[int, int]]) -> list[float]:
            total = sum(n for _, n in level_from)
            level = sum(x for x, _ in level_from) / total if total else base_share
            # the incident level is at least 1.5× the baseline share, so a flat stream clears
            level = max(level, min(1.5 * base_share, (1 + base_share) / 2))
            return [binomial_llr(x, n, base_share, level) for x, n in counted]

        evidence, returned = return_evidence(counted, llrs)
        return evidence >= self.config.sequential.clear_threshold, evidence, returned
