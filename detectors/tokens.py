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
  ratio so a tiny but significant change at high traffic does not page.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from detectors._math import ewma_mean_and_variance, mean_and_variance, normal_sf
from detectors.base import Baseline, WindowRef, window_detection
from schemas.batch import LogBatch
from schemas.detection import Detection
from schemas.detector_config import TokensConfig


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
        self.history_windows = config.history_windows

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
        mean, var = mean_and_variance(
            state.output_calls, state.output_tokens, state.output_tokens_sq
        )
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

        condition = "output_tokens_above_baseline"
        hist = baseline.history
        stats = [
            mean_and_variance(h.output_calls, h.output_tokens, h.output_tokens_sq) for h in hist
        ]
        counts = np.array([h.output_calls for h in hist], dtype=np.float64)
        n0 = int(counts.sum())
        if state.output_calls < cfg.min_calls or n0 < cfg.min_baseline_calls:
            return detection(
                verdict="insufficient_data",
                condition=condition,
                reason=(
                    f"not judged: {state.output_calls} calls with output tokens in the window "
                    f"(minimum {cfg.min_calls}) and {n0} in the past {len(hist)} windows "
                    f"(minimum {cfg.min_baseline_calls} for a baseline)."
                ),
            )
        base, base_var = ewma_mean_and_variance(
            np.array([s[0] for s in stats]),
            np.array([s[1] for s in stats]),
            counts,
            cfg.ewma_halflife,
        )
        se = math.sqrt(var / state.output_calls + base_var)
        z = (mean - base) / se if se > 0 else (math.inf if mean > base else 0.0)
        p = normal_sf(z)
        ratio = mean / base if base > 0 else math.inf
        fired = p < cfg.alpha and ratio >= cfg.min_ratio
        details.update({"ratio": ratio, "z": z, "baseline_calls": n0})
        compared = (
            f"{mean:.0f} output tokens per call over {state.output_calls} calls vs "
            f"{base:.0f} (EWMA of the past {len(hist)} windows, {n0} calls): ×{ratio:.2f}, "
            f"z={z:.1f}, one-sided p={p:.2g}; window cost ${cost:,.2f}"
        )
        common = {
            "condition": condition,
            "baseline": base,
            "threshold": base * cfg.min_ratio,
            "p_value": p,
        }
        if fired:
            return detection(
                verdict="alert",
                severity="critical" if ratio >= cfg.critical_ratio else "warning",
                reason=f"output tokens per call up: {compared}.",
                **common,
            )
        return detection(
            verdict="ok",
            reason=(
                f"output tokens normal: {compared}; alerts need p<{cfg.alpha:g} "
                f"and ×{cfg.min_ratio:g}."
            ),
            **common,
        )
