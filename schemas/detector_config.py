"""Frozen configuration of the safety, latency and token detectors.

Settings are read once at the edge and passed down; a detector is built from one of these and
holds nothing else. Every field has a default that works for a typical chat model with
5-minute windows, so `SafetyConfig()` is a valid configuration. Thresholds are chosen for at most
one false alert per 1,000 quiet windows (see tests/unit/test_detector_incidents.py).
"""

from __future__ import annotations

import itertools
import math

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

_FROZEN = ConfigDict(frozen=True, extra="forbid")

#: pooled spans (in windows) each detector tries; each test runs at alpha / len(spans)
DEFAULT_SPANS: tuple[int, ...] = (1, 2, 4, 8)
#: the CUSUM level at which an open incident counts as cleared (e^h ≈ incident windows between
#: false clears): log(1,000); the tracker then wants two cleared windows in a row
DEFAULT_CLEAR_THRESHOLD = math.log(1e3)


class SequentialSettings(BaseModel):
    """Evidence across windows, shared by the safety, latency and token detectors.

    `spans`: how many consecutive windows are pooled for the onset tests (1 = the window alone).
    Every span's test runs at alpha / len(spans), so the detector's false-alarm rate per quiet
    window stays at most its `alpha` (union bound). `clear_threshold`: the CUSUM evidence, in
    nats, that an open incident has returned to its pre-incident baseline before a window
    counts as cleared.
    """

    model_config = _FROZEN

    spans: tuple[int, ...] = DEFAULT_SPANS
    clear_threshold: float = Field(default=DEFAULT_CLEAR_THRESHOLD, gt=0)

    @field_validator("spans")
    @classmethod
    def _spans_ladder(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        if not value or value[0] != 1 or any(b <= a for a, b in itertools.pairwise(value)):
            msg = f"spans must start at 1 and increase (e.g. [1, 2, 4, 8]), got {list(value)}"
            raise ValueError(msg)
        if value[-1] > 24:
            msg = f"spans longer than 24 windows pool too much history, got {value[-1]}"
            raise ValueError(msg)
        return value


class SafetyConfig(BaseModel):
    """Block-rate alerting: significantly above the model's own past, or above a hard ceiling."""

    model_config = _FROZEN

    #: calls needed (in the window, or in the last two windows together) before judging
    min_calls: int = Field(default=100, ge=1)
    #: calls the history must hold before it counts as a baseline
    min_baseline_calls: int = Field(default=1000, ge=1)
    #: the baseline rate is never taken below this, so a clean history does not page on one block
    min_baseline_rate: float = Field(default=0.002, ge=0, le=1)
    #: one-sided significance of the rate test, split over the pooled spans (the exact test is
    #: conservative at these counts)
    alpha: float = Field(default=1e-3, gt=0, lt=0.5)
    #: and the observed rate must be at least this multiple of the baseline (effect size)
    min_ratio: float = Field(default=1.5, ge=1)
    #: a ratio at or above this makes the alert critical
    critical_ratio: float = Field(default=3.0, ge=1)
    #: fires whatever the baseline when the Wilson lower bound of the block rate exceeds this
    ceiling: float = Field(default=0.25, gt=0, le=1)
    #: z of the Wilson lower bound for the ceiling (3.09 ≈ one-sided 99.9%)
    ceiling_z: float = Field(default=3.09, gt=0)
    #: a per-category safety score at or above this counts as a high-severity rating
    high_score: float = Field(default=0.75, ge=0, le=1)
    #: past windows used for the baseline
    history_windows: int = Field(default=24, ge=2)
    #: distinct block reasons / score categories kept per state; the rest fold into "other"
    max_reasons: int = Field(default=32, ge=1)
    sequential: SequentialSettings = SequentialSettings()
    #: windows older than the recent `history_windows` kept as a second reference, so a shift
    #: the recent baseline absorbed (a slow ramp, a doubled rate starting at night) still
    #: pages: 48 reach 2 to 6 hours back at 5-minute windows. 0 turns it off — do so where the
    #: block rate genuinely differs by time of day, since it compares hours that far apart
    older_windows: int = Field(default=48, ge=0)
    #: spans (the window pooled with the k − 1 before it) tested against the older reference
    older_spans: tuple[int, ...] = (6, 12, 24)
    #: the share of `alpha` spent on the older reference (the recent spans keep the rest)
    older_share: float = Field(default=0.1, gt=0, lt=1)

    @model_validator(mode="after")
    def _older_spans_fit(self) -> SafetyConfig:
        """The spans matter only with an older reference: with `older_windows: 0` a short
        `history_windows` is as valid as it was before the older reference existed."""
        spans = self.older_spans
        if not self.older_windows:
            return self
        if not spans or any(k < 1 for k in spans) or max(spans) - 1 > self.history_windows:
            msg = (
                "safety.older_spans must be non-empty, each at least 1 and at most "
                f"history_windows + 1 ({self.history_windows + 1}); got {list(spans)} "
                "(or set older_windows: 0 to turn the older reference off)"
            )
            raise ValueError(msg)
        return self


class SloConfig(BaseModel):
    """A latency SLO: `objective` of calls complete within `threshold_ms`."""

    model_config = _FROZEN

    threshold_ms: float = Field(gt=0)
    objective: float = Field(gt=0, lt=1)


class LatencyConfig(BaseModel):
    """p95 regression against the past, and SLO burn-rate alerts when an SLO is set."""

    model_config = _FROZEN

    #: histogram range; values outside are clamped into the first/last bucket
    min_ms: float = Field(default=0.1, gt=0)
    max_ms: float = Field(default=600_000.0, gt=0)
    #: relative error of every reported quantile (inside the range)
    relative_accuracy: float = Field(default=0.0095, gt=0, lt=0.1)
    min_calls: int = Field(default=50, ge=1)
    min_baseline_calls: int = Field(default=500, ge=1)
    #: past windows merged into the p95 baseline
    baseline_windows: int = Field(default=24, ge=2)
    #: one-sided significance of the "more calls above the baseline p95" test
    alpha: float = Field(default=1e-4, gt=0, lt=0.5)
    #: and the window's p95 must be at least this multiple of the baseline p95
    min_ratio: float = Field(default=1.3, ge=1)
    critical_ratio: float = Field(default=1.75, ge=1)
    slo: SloConfig | None = None
    #: calls the long burn-rate window must hold before a burn-rate alert
    slo_min_calls: int = Field(default=100, ge=1)
    #: the window length, which sizes the history so a 6-hour burn-rate window fits in it;
    #: None: `engine.window_seconds` (a fixed 300 kept 72 one-minute windows, 1.2 h, and
    #: the 6-hour ticket rule could never fire)
    expected_window_seconds: int | None = Field(default=None, ge=1)
    sequential: SequentialSettings = SequentialSettings()

    @model_validator(mode="after")
    def _range(self) -> LatencyConfig:
        if self.max_ms <= self.min_ms:
            msg = f"latency max_ms ({self.max_ms}) must be above min_ms ({self.min_ms})"
            raise ValueError(msg)
        return self


class TokenPrice(BaseModel):
    """USD per million tokens."""

    model_config = _FROZEN

    input_per_million: float = Field(ge=0)
    output_per_million: float = Field(ge=0)


class TokensConfig(BaseModel):
    """Output-token jumps against an EWMA of past windows, and a cost budget per window."""

    model_config = _FROZEN

    min_calls: int = Field(default=50, ge=2)
    min_baseline_calls: int = Field(default=500, ge=2)
    history_windows: int = Field(default=24, ge=2)
    #: windows after which a past window weighs half as much in the baseline
    ewma_halflife: float = Field(default=6.0, gt=0)
    alpha: float = Field(default=1e-4, gt=0, lt=0.5)
    #: and the mean must be at least this multiple of the baseline mean (effect size)
    min_ratio: float = Field(default=1.25, ge=1)
    critical_ratio: float = Field(default=2.0, ge=1)
    #: price per model name; models not listed use `default_price`
    prices: dict[str, TokenPrice] = Field(default_factory=dict)
    default_price: TokenPrice = TokenPrice(input_per_million=0.5, output_per_million=1.5)
    #: alert when one window of one model costs more than this (USD); None disables it
    budget_usd_per_window: float | None = Field(default=None, gt=0)
    sequential: SequentialSettings = SequentialSettings()

    def price_for(self, model: str) -> TokenPrice:
        return self.prices.get(model, self.default_price)
