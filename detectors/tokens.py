"""Token-usage detector: output tokens per call against an EWMA of the past, and a cost budget.

Lifecycle (a Beam CombineFn): ``empty()`` → ``add(state, batch)`` per batch → ``merge`` →
``evaluate(state, baseline, window)``. The state holds exact integer sums (tokens and squared
tokens), so merging is exactly associative and the per-call variance is available for a test
that knows how many calls each mean rests on.

Conditions (one detection per window):

* ``cost_above_budget``: the window's cost for this model, from the configured price table,
  exceeds `budget_usd_per_window`. A budget is an absolute figure, so it needs no baseline.
* ``output_tokens_above_baseline``: a one-sided z test of the window's mean output tokens per call
  against a count-weighted EWMA of past windows, with the variance of both sides, plus a minimum
  ratio so a tiny but significant change at high traffic does not page. The window is also
  pooled with the 1, 3 and 7 before it (each test at alpha / 4; see `detectors._sequential`).
  While an incident is open the baseline is frozen and the window stays `alert` until a CUSUM
  says the mean is back to the pre-incident level (`details["cleared"]`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from detectors._math import FloatArray, ewma_mean_and_variance, mean_and_variance, normal_sf
from detectors._sequential import normal_llr, return_evidence, span_alpha
from detectors.base import Baseline, WindowRef, window_detection
from schemas.batch import LogBatch
from schemas.detection import Detection
from schemas.detector_config import TokensConfig
from schemas.plural import counted


@dataclass(frozen=True)
class TokensState:
    calls: int = 0
    input_calls: int = 0
    input_tokens: int = 0
    input_tokens_sq: int = 0
    output_calls: int = 0
    output_tokens: int = 0
    output_tokens_sq: int = 0


def _sums(values: np.ndarray[Any, Any]) -> tuple[int, int, int]:
    """Count, sum and sum of squares of the present (non-NaN) token counts, as exact ints."""
    present = values[~np.isnan(values)].astype(np.int64)
    return len(present), int(present.sum()), int(np.dot(present, present))


class TokensDetector:
    """Token-usage detector; see the module docstring."""

    name: ClassVar[str] = "tokens"
    config_type: ClassVar[type[TokensConfig]] = TokensConfig

    def __init__(self, config: TokensConfig) -> None:
        self.config = config
        # three times the configured windows: the EWMA hardly weighs the older ones (halflife
        # 6 windows), but their calls count towards `min_baseline_calls`, so that a night at
        # 20 calls a window still has a baseline (24 such windows hold fewer than 500 calls,
        # and a ×2 rise starting then was not judged at all), and a slow ramp is seen against
        # a baseline that does not quite keep up with it
        self.history_windows = config.history_windows * 3

    def empty(self) -> TokensState:
        return TokensState()

    def add(self, state: TokensState, batch: LogBatch) -> TokensState:
        if len(batch) == 0:
            return state
        ni, si, qi = _sums(batch.input_tokens)
        no, so, qo = _sums(batch.output_tokens)
        return self.merge(state, TokensState(len(batch), ni, si, qi, no, so, qo))

    def merge(self, a: TokensState, b: TokensState) -> TokensState:
        return TokensState(
            calls=a.calls + b.calls,
            input_calls=a.input_calls + b.input_calls,
            input_tokens=a.input_tokens + b.input_tokens,
            input_tokens_sq=a.input_tokens_sq + b.input_tokens_sq,
            output_calls=a.output_calls + b.output_calls,
            output_tokens=a.output_tokens + b.output_tokens,
            output_tokens_sq=a.output_tokens_sq + b.output_tokens_sq,
        )

    def to_row(self, state: TokensState) -> dict[str, Any]:
        return {
            "calls": state.calls,
            "input_calls": state.input_calls,
            "input_tokens": state.input_tokens,
            "input_tokens_sq": state.input_tokens_sq,
            "output_calls": state.output_calls,
            "output_tokens": state.output_tokens,
            "output_tokens_sq": state.output_tokens_sq,
        }

    def from_row(self, row: Mapping[str, Any]) -> TokensState:
        return TokensState(**{k: int(row[k]) for k in self.to_row(TokensState())})

    def update_reference(self, reference: TokensState | None, state: TokensState) -> None:
        return None

    def cost_usd(self, state: TokensState, model: str) -> float:
        """What the window cost, from the price table (USD per million tokens)."""
        price = self.config.price_for(model)
        return (
            state.input_tokens * price.input_per_million
            + state.output_tokens * price.output_per_million
        ) / 1e6

    def analyst_values(self, state: TokensState, model: str) -> dict[str, float]:
        """Numbers for the analyst tables that the state alone does not hold."""
        return {"cost_usd": self.cost_usd(state, model)}

    def evaluate(
        self, state: TokensState, baseline: Baseline[TokensState], window: WindowRef
    ) -> Detection:
        cfg = self.config
        mean, _ = mean_and_variance(state.output_calls, state.output_tokens, state.output_tokens_sq)
        cost = self.cost_usd(state, window.model)
        details: dict[str, Any] = {
            "cost_usd": cost,
            "input_tokens": state.input_tokens,
            "output_tokens": state.output_tokens,
            "mean_input_tokens": state.input_tokens / state.input_calls
            if state.input_calls
            else None,
            "mean_output_tokens": mean if state.output_calls else None,
        }

        def detection(**kw: Any) -> Detection:
            kw.setdefault("value", mean if state.output_calls else None)
            return window_detection(
                self.name,
                window,
                sample_size=state.output_calls,
                details=details,
                **kw,
            )

        budget = cfg.budget_usd_per_window
        if budget is not None and cost > budget:
            return detection(
                verdict="alert",
                condition="cost_above_budget",
                severity="critical" if cost >= 2 * budget else "warning",
                value=cost,
                threshold=budget,
                reason=(
                    f"this window cost ${cost:,.2f} for {state.calls} calls "
                    f"({state.input_tokens} input + {state.output_tokens} output tokens), over "
                    f"the ${budget:,.2f} budget per window."
                ),
            )

        return self._against_baseline(state, baseline, detection, details, cost)

    def _against_baseline(
        self,
        state: TokensState,
        baseline: Baseline[TokensState],
        detection: Callable[..., Detection],
        details: dict[str, Any],
        cost: float,
    ) -> Detection:
        cfg = self.config
        seq = cfg.sequential
        condition = "output_tokens_above_baseline"
        spans = (1,) if baseline.in_incident else seq.spans
        # (p, k, calls, mean, base, z, n0, history windows) per pooled span that can be judged
        tested: list[tuple[float, int, int, float, float, float, int, int]] = []
        # each span's baseline is a prefix of the history: its per-window figures once
        stats = self._history_stats(baseline.history)
        for k in spans:
            pooled, hist = baseline.span(k)
            if len(pooled) < k - 1:
                continue
            cur = state
            for h in pooled:
                cur = self.merge(cur, h)
            mean, var = mean_and_variance(cur.output_calls, cur.output_tokens, cur.output_tokens_sq)
            base, base_var, n0 = self._ewma_of(*(a[: len(hist)] for a in stats))
            if cur.output_calls < cfg.min_calls or n0 < cfg.min_baseline_calls:
                continue
            se = math.sqrt(var / cur.output_calls + base_var)
            z = (mean - base) / se if se > 0 else (math.inf if mean > base else 0.0)
            tested.append((normal_sf(z), k, cur.output_calls, mean, base, z, n0, len(hist)))
        if not tested:
            n0 = sum(h.output_calls for h in baseline.history)
            if baseline.in_incident and state.output_calls and n0 >= cfg.min_baseline_calls:
                # too few calls to test this window alone; they still count as evidence
                base, _, _ = self._ewma(baseline.history)
                cleared, evidence, returned = self._cleared(state, baseline, base)
                details.update(
                    {"cleared": cleared, "clear_evidence": evidence, "return_evidence": returned}
                )
                return detection(
                    verdict="ok" if cleared else "alert",
                    condition=condition,
                    baseline=base,
                    reason=(
                        f"{state.output_calls} calls, too few to test alone; evidence that the "
                        f"incident ended {evidence:.1f} of {seq.clear_threshold:.1f} nats."
                    ),
                )
            return detection(
                verdict="insufficient_data",
                condition=condition,
                reason=(
                    f"not judged: {counted(state.output_calls, 'call')} with output tokens in "
                    f"the window (minimum {cfg.min_calls}) and {n0} in the past "
                    f"{counted(len(baseline.history), 'window')} (minimum "
                    f"{cfg.min_baseline_calls} for a baseline)."
                ),
            )
        alpha = span_alpha(cfg.alpha, seq.spans)

        def ratio_of(t: tuple[float, int, int, float, float, float, int, int]) -> float:
            return t[3] / t[4] if t[4] > 0 else math.inf

        firing = [t for t in tested if t[0] < alpha and ratio_of(t) >= cfg.min_ratio]
        chosen = min(firing) if firing else tested[0]
        p, span, calls, mean, base, z, n0, windows = chosen
        ratio = ratio_of(chosen)
        details.update(
            {
                "ratio": ratio,
                "z": z,
                "baseline_calls": n0,
                "span_windows": span,
                "span_value": mean,
                "span_calls": calls,
                "unit": "tokens/call",
            }
        )
        where = "" if span == 1 else f" in the last {span} windows"
        compared = (
            f"{mean:.0f} output tokens per call over {calls} calls{where} vs "
            f"{base:.0f} (EWMA of the past {windows} windows, {n0} calls): ×{ratio:.2f}, "
            f"z={z:.1f}, one-sided p={p:.2g}; window cost ${cost:,.2f}"
        )
        common = {
            "condition": condition,
            "baseline": base,
            "threshold": base * cfg.min_ratio,
            "p_value": p,
        }
        if baseline.in_incident and not firing:
            cleared, evidence, returned = self._cleared(state, baseline, base)
            details.update(
                {"cleared": cleared, "clear_evidence": evidence, "return_evidence": returned}
            )
            if not cleared:
                return detection(
                    verdict="alert",
                    severity="warning",
                    reason=(
                        f"output tokens not yet back to the pre-incident baseline: {compared}; "
                        f"evidence of a return {evidence:.1f} of {seq.clear_threshold:.1f} nats."
                    ),
                    **common,
                )
        if firing:
            return detection(
                verdict="alert",
                severity="critical" if ratio >= cfg.critical_ratio else "warning",
                reason=f"output tokens per call up: {compared}.",
                **common,
            )
        return detection(
            verdict="ok",
            reason=(
                f"output tokens normal: {compared}; alerts need p<{alpha:.1g} on one of the "
                f"{len(seq.spans)} pooled spans and ×{cfg.min_ratio:g}."
            ),
            **common,
        )

    def _ewma(self, hist: tuple[TokensState, ...]) -> tuple[float, float, int]:
        """EWMA baseline mean, its sampling variance, and the calls it rests on."""
        return self._ewma_of(*self._history_stats(hist))

    @staticmethod
    def _history_stats(hist: tuple[TokensState, ...]) -> tuple[FloatArray, FloatArray, FloatArray]:
        """Per window of `hist`: mean and variance of output tokens, and the calls."""
        stats = [
            mean_and_variance(h.output_calls, h.output_tokens, h.output_tokens_sq) for h in hist
        ]
        return (
            np.array([s[0] for s in stats], dtype=np.float64),
            np.array([s[1] for s in stats], dtype=np.float64),
            np.array([h.output_calls for h in hist], dtype=np.float64),
        )

    def _ewma_of(
        self, means: FloatArray, variances: FloatArray, counts: FloatArray
    ) -> tuple[float, float, int]:
        n0 = int(counts.sum())
        if n0 == 0:
            return math.nan, math.nan, 0
        base, base_var = ewma_mean_and_variance(means, variances, counts, self.config.ewma_halflife)
        return base, base_var, n0

    def _cleared(
        self, state: TokensState, baseline: Baseline[TokensState], base: float
    ) -> tuple[bool, float, float]:
        """Has the open incident returned to the pre-incident mean `base`? (CUSUM, nats)."""
        cfg = self.config
        windows = [*baseline.recent, state]
        means = [
            (mean_and_variance(w.output_calls, w.output_tokens, w.output_tokens_sq)[0], w)
            for w in windows
        ]

        def llrs(level_from: Sequence[tuple[float, TokensState]]) -> list[float]:
            pooled = self.empty()
            for _, w in level_from:
                pooled = self.merge(pooled, w)
            level, var = mean_and_variance(
                pooled.output_calls, pooled.output_tokens, pooled.output_tokens_sq
            )
            level = max(level, base * cfg.min_ratio)
            return [normal_llr(mean, w.output_calls, var, base, level) for mean, w in means]

        evidence, returned = return_evidence(means, llrs)
        return evidence >= cfg.sequential.clear_threshold, evidence, returned
