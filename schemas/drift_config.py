"""Settings of the embedding-drift and descriptor-drift detectors.

Frozen so a detector built from one cannot change under the engine; every replica must be
built from the same values (the random features and the sample hash depend on `seed`), or
their partial states do not merge into anything meaningful.
"""

from __future__ import annotations

import itertools

from pydantic import BaseModel, ConfigDict, Field, model_validator

#: finish reasons counted on their own; everything else is folded into "other"
DEFAULT_FINISH_REASONS: tuple[str, ...] = (
    "stop",
    "length",
    "max_tokens",
    "content_filter",
    "safety",
    "recitation",
    "tool_calls",
)


class EmbeddingDriftConfig(BaseModel):
    """How the embedding-drift detector samples, summarises and judges a window.

    `alpha` is the false-alert rate per quiet window the test is calibrated to. The default,
    3 in 10,000, keeps a margin under the target of 1 in 1,000: at ~100 calls per window the
    asymptotic null is less exact, and the pinned reference's own noise is shared by every
    window judged against it. With the cross-fitted whitened statistic, 15 references x 2,000
    quiet windows at peaks 50-500 gave 0 false pages at 3e-4 and 1 at 1e-3; 3e-4 instead of
    1e-4 pages a 20% topic shift at peak 100 within 5 windows in 31 of 40 streams, not 27.
    `min_effect` is a floor on the bias-corrected squared MMD, so a
    very large window does not page on a difference too small to matter to anyone.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    dimension: int = Field(default=384, ge=1)
    n_features: int = Field(default=128, ge=8, le=4096)
    bandwidth: float = Field(default=1.0, gt=0)
    seed: int = Field(default=20_240_917, ge=0)
    sample_size: int = Field(default=250, ge=0)
    reference_sample_size: int = Field(default=2_000, ge=2)
    reference_min_calls: int = Field(default=2_000, ge=1)
    min_sample: int = Field(default=50, ge=2)
    alpha: float = Field(default=3e-4, gt=0, lt=1)
    min_effect: float = Field(default=1e-3, ge=0)
    #: windows pooled for the test (1 = the window alone); each span is tested at
    #: alpha / len(spans), so a small shift at low traffic is seen within a few windows while
    #: the false-alarm rate per window stays at most alpha
    spans: tuple[int, ...] = (1, 2, 4, 8)
    #: CUSUM evidence (nats) that an open drift incident is back to the reference before a
    #: window counts as cleared (log 1,000; see detectors._sequential)
    clear_threshold: float = Field(default=6.9, gt=0)

    @model_validator(mode="after")
    def _reference_sample_holds_a_window(self) -> EmbeddingDriftConfig:
        spans = self.spans
        if not spans or spans[0] != 1 or any(b <= a for a, b in itertools.pairwise(spans)):
            msg = f"spans must start at 1 and increase (e.g. [1, 2, 4, 8]), got {list(spans)}"
            raise ValueError(msg)
        if self.reference_sample_size < self.sample_size:
            msg = (
                f"reference_sample_size ({self.reference_sample_size}) must be at least "
                f"sample_size ({self.sample_size}): the reference is built from window samples"
            )
            raise ValueError(msg)
        return self


class DescriptorDriftConfig(BaseModel):
    """How the descriptor-drift detector samples and judges a window.

    `alpha` is the family-wise false-alert rate per quiet window; it is split over the tests
    (Bonferroni). `min_effect` is a floor on the effect (KS distance, total-variation distance
    of finish reasons, absolute change of the citation rate) so a huge window does not raise
    a detection for a difference nobody would act on.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    finish_reasons: tuple[str, ...] = DEFAULT_FINISH_REASONS
    seed: int = Field(default=20_240_917, ge=0)
    sample_size: int = Field(default=1_000, ge=10)
    reference_sample_size: int = Field(default=5_000, ge=10)
    reference_min_calls: int = Field(default=2_000, ge=1)
    min_sample: int = Field(default=50, ge=2)
    alpha: float = Field(default=1e-3, gt=0, lt=1)
    min_effect: float = Field(default=0.05, ge=0, lt=1)

    @model_validator(mode="after")
    def _reasons_are_normalised(self) -> DescriptorDriftConfig:
        for reason in self.finish_reasons:
            if reason != reason.strip().lower() or reason in ("other", "missing", ""):
                msg = (
                    f"finish_reasons entry {reason!r} must be lower-case, trimmed and not "
                    "'other'/'missing' (those buckets are built in)"
                )
                raise ValueError(msg)
        if len(set(self.finish_reasons)) != len(self.finish_reasons):
            msg = f"finish_reasons has duplicates: {self.finish_reasons}"
            raise ValueError(msg)
        if self.reference_sample_size < self.sample_size:
            msg = (
                f"reference_sample_size ({self.reference_sample_size}) must be at least "
                f"sample_size ({self.sample_size})"
            )
            raise ValueError(msg)
        return self
