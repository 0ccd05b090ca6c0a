"""Embedding drift: has the distribution of prompt embeddings moved away from a reference?

Lifecycle (Beam CombineFn): ``empty()`` → ``add(state, batch)`` → ``merge(a, b)`` … →
``evaluate(state, baseline, window)``; ``update_reference`` after each window.

The verdict comes from a compact mergeable statistic, not from raw vectors: the exact
fixed-point sum of D random Fourier features of the (L2-normalised) embeddings, plus a count.
That is 1 KB for D = 128 however many calls a window has, so partial states of many replicas
cost little in the sink, and integer sums make merges exact in any order. A bounded
bottom-k sample of the raw embeddings (float16) rides along for evidently's second opinion,
the report, and the reference's feature covariance.

The test (see `_drift_math`): T = nm/(n+m)‖W(mean φ(cur) − mean φ(ref))‖², the RFF estimate of
the kernel two-sample MMD after a regularised whitening W = (Σ + γI)^(-½) of the reference
feature covariance Σ (the kernel Fisher discriminant test), against its asymptotic null law
Σ μᵢ χ²₁, the tail computed exactly with Imhof's formula. W and the μᵢ come from the two
halves of the reference sample (cross-fitted). New topics move the feature mean mostly along
directions in which the reference varies little, which the plain ‖Δ‖² weighs least: whitened,
a 20% topic shift at peak 100 calls a window (20 at night) pages within 5 windows in 31 of 40
streams instead of 17 (at the default alpha of 3e-4; 27 at 1e-4), at peak 500 within 2 windows
in 40 of 40 instead of 33
(`tests/unit/test_embedding_whitening.py`), and no quiet window of 30,000 paged
(`tests/unit/test_calibration.py`). A detection also needs the bias-corrected MMD² to exceed
`min_effect`, so a 20,000-call window does not page on a negligible change. A permutation
test on the samples was the alternative; it needs the raw vectors of the whole window in
one place and ~1,000 permutations to resolve α = 10⁻³, which the mergeable statistic avoids.

Reference: pinned per model. The first windows are merged into it until it holds
`reference_min_calls` embeddings; from then on it no longer changes (a change of model
version should start a new reference: the engine keys references by model). Until then the
detector answers ``insufficient_data``. Embeddings whose dimension is not the configured one,
or that are not finite or have zero norm, are counted and ignored, and the detection says so.

Calibration is over references as well as windows: a pinned reference carries its own
sampling noise, shared by every window judged against it, so keep `reference_min_calls` at
least as large as a typical window. Redelivered records are counted twice in the sum (the
sample keeps them once); at most one checkpoint's worth, which the test tolerates.

Sizes: a window row is ~1.04 MB at the default 1,000-embedding sample (384-d float16 in
base64) and ~1.3 KB without it (`sample_size=0`); the pinned reference row ~2 MB.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import numpy.typing as npt

from detectors import _drift_math as dm
from detectors import reservoir as rs
from detectors._sequential import cusum, excursion_start, level_windows, normal_llr2
from detectors.base import Baseline, WindowRef, window_detection
from schemas.base64_text import Base64Text, base64_bytes
from schemas.batch import LogBatch
from schemas.detection import Detection
from schemas.drift_config import EmbeddingDriftConfig

CONDITION = "embedding_distribution_shift"


@dataclass(frozen=True, eq=False)
class EmbeddingDriftState:
    """Count and fixed-point feature sum of accepted embeddings, rejections, and a sample."""

    count: int
    feature_sum: npt.NDArray[np.int64]
    sample: rs.Reservoir
    rejected: tuple[tuple[str, int], ...] = field(default=())  # (reason, count), sorted
    #: eigenvalues of the feature covariance, set once a reference is pinned, so the null
    #: distribution is computed once per reference and is the same on every replica
    null_eigenvalues: npt.NDArray[np.float64] | None = None
    #: the reference's whitening and the whitened null law (`_drift_math.whitening`), set with
    #: `null_eigenvalues`; derived from the sample, so it is not stored in the row
    whitening: dm.Whitening | None = None

    @property
    def is_empty(self) -> bool:
        return self.count == 0 and not len(self.sample) and not self.rejected

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, EmbeddingDriftState):
            return NotImplemented
        return (
            self.count == other.count
            and np.array_equal(self.feature_sum, other.feature_sum)
            and self.sample == other.sample
            and self.rejected == other.rejected
            and _same_optional(self.null_eigenvalues, other.null_eigenvalues)
        )

    __hash__ = None  # type: ignore[assignment]


def _merge_counts(
    a: tuple[tuple[str, int], ...], b: tuple[tuple[str, int], ...]
) -> tuple[tuple[str, int], ...]:
    merged: dict[str, int] = dict(a)
    for reason, n in b:
        merged[reason] = merged.get(reason, 0) + n
    return tuple(sorted(merged.items()))


class EmbeddingDriftDetector:
    """RFF-MMD drift of prompt embeddings against a pinned per-model reference."""

    name = "embedding_drift"
    config_type = EmbeddingDriftConfig

    def __init__(self, config: EmbeddingDriftConfig) -> None:
        self.config = config
        #: the windows pooled with the current one come from the history
        self.history_windows = config.spans[-1] - 1
        #: an open incident's newest windows the evaluator keeps (8 hours at 5 minutes): its
        #: level is estimated from them, and at 20-40 calls a window the evidence of a return
        #: takes a few windows to gather; with the default 24, the windows after a 6-hour
        #: shift had ended replaced the shifted ones in that estimate before it was enough,
        #: and the incident stayed open (3 of 40 streams still open 2 hours after the end)
        self.incident_windows = 96
        self.features = dm.random_features(
            config.dimension, config.n_features, config.bandwidth, config.seed
        )

    # -- accumulator -----------------------------------------------------------------------

    def empty(self) -> EmbeddingDriftState:
        return EmbeddingDriftState(
            count=0,
            feature_sum=np.zeros(self.config.n_features, dtype=np.int64),
            sample=rs.Reservoir.empty(self.config.sample_size, self.config.dimension, np.float16),
        )

    def add(self, state: EmbeddingDriftState, batch: LogBatch) -> EmbeddingDriftState:
        if not len(batch.embedding_rows):
            return state
        emb = batch.embeddings
        if batch.embedding_dim != self.config.dimension:
            reason = f"dimension_{batch.embedding_dim}"
            return EmbeddingDriftState(
                state.count,
                state.feature_sum,
                state.sample,
                _merge_counts(state.rejected, ((reason, len(emb)),)),
            )
        x = np.asarray(emb, dtype=np.float32)
        norms = np.sqrt(np.einsum("ij,ij->i", x, x))
        good = np.isfinite(norms) & (norms > 0)
        n_bad = int(len(good) - np.count_nonzero(good))
        rejected = state.rejected
        if n_bad:
            rejected = _merge_counts(rejected, (("not_finite_or_zero", n_bad),))
            x, norms = x[good], norms[good]
        if not len(x):
            return EmbeddingDriftState(state.count, state.feature_sum, state.sample, rejected)
        # unit-normalised and rounded to the feature map's grid in one pass, so a row's
        # features are bit-identical whichever batch it arrives in
        grid = dm.unit_rows_on_grid(x, norms, self.features)
        feature_sum = state.feature_sum + dm.fixed_point_sum(
            dm.grid_cosine_features(grid, self.features)
        )
        sample = state.sample
        if self.config.sample_size:
            keys = rs.hash_rows(batch.request_id, batch.embedding_rows[good], self.config.seed)
            sample = rs.add(sample, keys, grid, lambda rows: dm.grid_to_unit(rows, self.features))
        return EmbeddingDriftState(state.count + len(x), feature_sum, sample, rejected)

    def merge(self, a: EmbeddingDriftState, b: EmbeddingDriftState) -> EmbeddingDriftState:
        """Sum of two partial states; a pinned reference merged with anything stops being one."""
        if b.is_empty:
            return a
        if a.is_empty:
            return b
        return EmbeddingDriftState(
            a.count + b.count,
            a.feature_sum + b.feature_sum,
            rs.merge(a.sample, b.sample),
            _merge_counts(a.rejected, b.rejected),
        )

    def split_sample(
        self, state: EmbeddingDriftState
    ) -> tuple[EmbeddingDriftState, EmbeddingDriftState]:
        """(everything but the sample, the sample alone); their merge is `state`.

        The verdict needs only the count and feature sum; the sample (up to ~1 MB a window) is
        for the reference and the report. The engine writes it once per window, when the window
        closes, instead of in every checkpoint's partial row.
        """
        body = replace(state, sample=state.sample.emptied())
        sample_only = EmbeddingDriftState(0, np.zeros_like(state.feature_sum), state.sample)
        return body, sample_only

    def trim_sample(
        self, state: EmbeddingDriftState, seen: EmbeddingDriftState, scale: float
    ) -> EmbeddingDriftState:
        """`state` without the sample rows that cannot make the window's bottom-k sample.

        `seen` is the window as this writer knows it and `scale` how many times more records
        every writer together stored: the window then holds about `seen.count * scale`
        embeddings, and with N ingest writers the samples they write add up to about 1.5
        samples instead of N (`reservoir.still_competing`)."""
        population = int(seen.count * scale)
        return replace(state, sample=rs.still_competing(state.sample, (), population=population))

    def to_row(self, state: EmbeddingDriftState) -> dict[str, Any]:
        """JSON-safe row: the feature sum as base64 int64 (1 KB at D = 128), sample as float16."""
        return {
            "count": state.count,
            "feature_sum": Base64Text(state.feature_sum.astype("<i8").tobytes()),
            "sample": rs.to_row(state.sample),
            "rejected": [[reason, n] for reason, n in state.rejected],
            "null_eigenvalues": None
            if state.null_eigenvalues is None
            else [float(v) for v in state.null_eigenvalues],
        }

    def from_row(self, row: Mapping[str, Any]) -> EmbeddingDriftState:
        feature_sum = np.frombuffer(base64_bytes(row["feature_sum"]), dtype="<i8")
        if len(feature_sum) != self.config.n_features:
            msg = (
                f"embedding_drift row has {len(feature_sum)} features, the configuration "
                f"{self.config.n_features}: rows were written with a different configuration"
            )
            raise ValueError(msg)
        sample = rs.from_row(row["sample"])
        pinned = row.get("null_eigenvalues") is not None
        return EmbeddingDriftState(
            count=int(row["count"]),
            feature_sum=feature_sum.astype(np.int64),
            sample=sample,
            rejected=tuple((str(r), int(n)) for r, n in row["rejected"]),
            null_eigenvalues=np.asarray(row["null_eigenvalues"], dtype=np.float64)
            if pinned
            else None,
            # a pinned reference's whitening, recomputed from its sample as `_pin` did
            whitening=dm.whitening(dm.cosine_features(sample.rows, self.features))
            if pinned
            else None,
        )

    # -- reference ---------------------------------------------------------------------------

    def update_reference(
        self, reference: EmbeddingDriftState | None, state: EmbeddingDriftState
    ) -> EmbeddingDriftState | None:
        """Grow the reference from closed windows until it is full, then keep it pinned."""
        if reference is not None and reference.count >= self.config.reference_min_calls:
            return reference if reference.null_eigenvalues is not None else self._pin(reference)
        if state.count == 0:
            return reference
        base = reference if reference is not None else self.empty()
        merged = self.merge(base, state)
        grown = EmbeddingDriftState(
            merged.count,
            merged.feature_sum,
            merged.sample.with_capacity(self.config.reference_sample_size),
            merged.rejected,
        )
        return self._pin(grown) if grown.count >= self.config.reference_min_calls else grown

    def _pin(self, reference: EmbeddingDriftState) -> EmbeddingDriftState:
        cos = dm.cosine_features(reference.sample.rows, self.features)
        return EmbeddingDriftState(
            reference.count,
            reference.feature_sum,
            reference.sample,
            reference.rejected,
            dm.feature_covariance_eigenvalues(cos),
            dm.whitening(cos),
        )

    # -- verdict -----------------------------------------------------------------------------

    def evaluate(
        self,
        state: EmbeddingDriftState,
        baseline: Baseline[EmbeddingDriftState],
        window: WindowRef,
    ) -> Detection:
        cfg = self.config
        reference = baseline.reference
        details: dict[str, Any] = {
            "rejected": dict(state.rejected),
            "n_features": cfg.n_features,
            "dimension": cfg.dimension,
        }

        def refuse(reason: str) -> Detection:
            return self._detection(window, "insufficient_data", reason, state.count, details)

        rejected_note = _rejection_note(state, cfg.dimension)
        if reference is None or reference.count < cfg.reference_min_calls:
            have = 0 if reference is None else reference.count
            return refuse(
                f"no reference yet: it holds {have} of the {cfg.reference_min_calls} "
                f"embeddings it needs{rejected_note}"
            )
        if len(reference.sample) < 2 * cfg.min_sample:
            return refuse(
                f"the reference sample holds {len(reference.sample)} embeddings, fewer than "
                f"{2 * cfg.min_sample} needed to estimate the null distribution"
            )
        n_feat = cfg.n_features
        mean_ref = dm.feature_mean(reference.feature_sum, reference.count, n_feat)
        eig, whitened = reference.null_eigenvalues, reference.whitening
        if eig is None or whitened is None:
            pinned = self._pin(reference)
            eig, whitened = pinned.null_eigenvalues, pinned.whitening
            assert eig is not None and whitened is not None
        trace = float(eig.sum())
        # pool the window with the k - 1 before it (their feature sums add), each span at
        # alpha / len(spans); during an open incident the window alone decides. Every span's
        # statistic has the same null law, so spans are ranked by statistic and only the
        # one reported needs a p-value
        spans = (1,) if baseline.in_incident else cfg.spans
        alpha = cfg.alpha / len(cfg.spans)
        spans_seen: list[tuple[float, int, int, npt.NDArray[np.float64], float]] = []
        for k in spans:
            pooled, _ = baseline.span(k)
            if len(pooled) < k - 1:
                continue
            count = state.count + sum(p.count for p in pooled)
            if count < cfg.min_sample:
                continue
            feature_sum = state.feature_sum + sum(
                (p.feature_sum for p in pooled), np.zeros_like(state.feature_sum)
            )
            diff = dm.feature_mean(feature_sum, count, n_feat) - mean_ref
            factor = count * reference.count / (count + reference.count)
            mmd2 = float(diff @ diff) - trace / factor
            spans_seen.append((dm.whitened_statistic(diff, factor, whitened), k, count, diff, mmd2))

        def full_test(
            seen: tuple[float, int, int, npt.NDArray[np.float64], float],
        ) -> dm.MeanEmbeddingTest:
            _, _, count, diff, _ = seen
            return dm.mean_embedding_test(
                diff + mean_ref, count, mean_ref, reference.count, eig, whitened
            )

        if not spans_seen and baseline.in_incident and state.count:
            cleared, evidence = self._cleared(state, baseline.recent, reference, mean_ref, eig)
            details.update(cleared=cleared, clear_evidence=evidence)
            return self._detection(
                window,
                "ok" if cleared else "alert",
                f"{state.count} embeddings, too few to test alone; evidence that the incident "
                f"ended {evidence:.1f} of {cfg.clear_threshold:.1f} nats",
                state.count,
                details,
            )
        if not spans_seen or state.count == 0:
            pooled_note = "" if baseline.in_incident else " (nor pooled with the windows before)"
            return refuse(
                f"{state.count} embeddings in the window, fewer than the minimum "
                f"{cfg.min_sample}{pooled_note}{rejected_note}"
            )
        large = [t for t in spans_seen if t[4] >= cfg.min_effect]
        best = max(large, key=lambda t: (t[0], -t[1])) if large else None
        test = full_test(best) if best is not None else None
        drifted = test is not None and test.p_value < alpha
        if not drifted or best is None:
            test = test if best is spans_seen[0] else full_test(spans_seen[0])
            best = spans_seen[0]
        assert test is not None
        _, span, pooled_count, _, _ = best
        details["span_windows"] = span
        if baseline.in_incident and not drifted:
            cleared, evidence = self._cleared(state, baseline.recent, reference, mean_ref, eig)
            details.update(cleared=cleared, clear_evidence=evidence)
            if not cleared:
                return self._detection(
                    window,
                    "alert",
                    f"prompt embeddings not yet back to the reference: evidence of a return "
                    f"{evidence:.1f} of {cfg.clear_threshold:.1f} nats over {state.count} calls "
                    f"(window alone: p = {test.p_value:.2g})",
                    state.count,
                    details,
                    value=test.mmd2,
                    p_value=test.p_value,
                )
        over = f"{pooled_count} calls" + ("" if span == 1 else f" in the last {span} windows")
        details.update(
            statistic=test.statistic,
            mmd2_estimate=test.mmd2,
            mmd2_null_sd=test.mmd2_null_sd,
            reference_calls=reference.count,
            reference_sample=len(reference.sample),
            alpha=cfg.alpha,
        )
        if drifted:
            reason = (
                f"prompt embeddings moved: MMD² {test.mmd2:.4f} ≥ {cfg.min_effect} and "
                f"p = {test.p_value:.2g} < {alpha:.2g} over {over}"
            )
        elif test.p_value < alpha:
            reason = (
                f"a significant but small change (MMD² {test.mmd2:.4f} < {cfg.min_effect}) "
                f"over {over}"
            )
        else:
            reason = f"no significant change over {over} (p = {test.p_value:.2g})"
        return self._detection(
            window,
            "alert" if drifted else "ok",
            reason + rejected_note,
            state.count,
            details,
            # MMD² is a squared distance, but its unbiased estimate dips below 0 when nothing
            # moved; the raw estimate stays in details
            value=max(test.mmd2, 0.0),
            p_value=test.p_value,
        )

    def _cleared(
        self,
        state: EmbeddingDriftState,
        recent: tuple[EmbeddingDriftState, ...],
        reference: EmbeddingDriftState,
        mean_ref: npt.NDArray[np.float64],
        eigenvalues: npt.NDArray[np.float64],
    ) -> tuple[bool, float]:
        """Has an open drift incident returned to the reference? A CUSUM (nats) on each
        window's mean feature vector projected on the incident's direction d (incident mean −
        reference mean), with the per-call variance of that projection from the reference's
        sample: a normal likelihood ratio reference vs incident level per window.

        The incident level is *not* ‖d‖²: d carries the sampling noise of the few hundred calls
        it was estimated from, whose squared length (tr Σ / n, Σ the feature covariance) is
        often larger than the shift itself at low traffic. Taking ‖d‖² as the level put it
        beyond twice the true one, where every incident window counts as evidence of a return
        and 20-call windows resolved 6-hour incidents. The level is the bias-corrected
        ‖d‖² − tr Σ · (1/n + 1/n_ref) (the unbiased MMD² estimate), and at least `min_effect`,
        the smallest shift the detector pages on."""
        cfg = self.config
        windows = [w for w in (*recent, state) if w.count]
        if not windows or len(reference.sample) < 2:
            return True, 0.0
        phi = math.sqrt(2.0 / cfg.n_features) * dm.cosine_features(
            reference.sample.rows, self.features
        ).astype(np.float64)
        used = list(level_windows(windows))
        llrs = self._return_llrs(windows, used, phi, mean_ref, eigenvalues, reference.count)
        # the windows of a return already under way do not define the incident's level:
        # re-estimate it from the windows before the CUSUM's current excursion began,
        # otherwise each window back at the reference drags the level towards it and the
        # evidence of a return never accumulates
        began = excursion_start(llrs)
        if 0 < began < len(used):
            llrs = self._return_llrs(
                windows, used[:began], phi, mean_ref, eigenvalues, reference.count
            )
        evidence = cusum(llrs)
        # and the windows that make the evidence hold at least a testable sample: at 10 calls a
        # window, one or two windows with hardly a shifted prompt are, by likelihood, strong
        # evidence of a return, and resolved 6-hour incidents while they lasted
        returning = sum(w.count for w in windows[excursion_start(llrs) :])
        return evidence >= cfg.clear_threshold and returning >= cfg.min_sample, evidence

    def _return_llrs(
        self,
        windows: list[EmbeddingDriftState],
        used: list[EmbeddingDriftState],
        phi: npt.NDArray[np.float64],
        mean_ref: npt.NDArray[np.float64],
        eigenvalues: npt.NDArray[np.float64],
        ref_calls: int,
    ) -> list[float]:
        """Per window: log-likelihood ratio reference vs the level of the `used` windows, each
        level with its own per-call variance (`_incident_spread`)."""
        cfg = self.config
        count = sum(w.count for w in used)
        total = sum((w.feature_sum for w in used), np.zeros_like(windows[0].feature_sum))
        direction = dm.feature_mean(total, count, cfg.n_features) - mean_ref
        variance = float(np.var(phi @ direction, ddof=1))
        base = float(mean_ref @ direction)
        noise = float(np.sum(eigenvalues)) * (1.0 / count + 1.0 / ref_calls)
        level = base + max(float(direction @ direction) - noise, cfg.min_effect)
        projected = [
            (float(dm.feature_mean(w.feature_sum, w.count, cfg.n_features) @ direction), w.count)
            for w in windows
        ]
        if variance <= 0:
            return [math.inf]
        # `used` is the first windows of `windows` (those the level is estimated from)
        spread = _incident_spread(projected[: len(used)], variance)
        return [normal_llr2(x, n, variance, spread, base, level) for x, n in projected]

    def _detection(
        self,
        window: WindowRef,
        verdict: str,
        reason: str,
        sample_size: int,
        details: dict[str, Any],
        value: float | None = None,
        p_value: float | None = None,
    ) -> Detection:
        return window_detection(
            self.name,
            window,
            verdict=verdict,
            condition=CONDITION,
            severity="warning",
            value=value,
            threshold=self.config.min_effect,
            baseline=0.0,
            p_value=p_value,
            sample_size=sample_size,
            reason=reason,
            details=details,
        )


def _incident_spread(means: list[tuple[float, int]], reference_variance: float) -> float:
    """Per-call variance of the projection during the incident, from how much its windows'
    means (each of n calls) differ from one window to the next: the mean of
    (x̄ᵢ₊₁ − x̄ᵢ)² / (1/nᵢ + 1/nᵢ₊₁), so a step in the level (the incident's start or end among
    the windows) adds one term rather than inflating every window's scatter.

    A mix of old and new prompts spreads wider than the reference alone (a 20% shift at about
    40 calls a window: 2.6 times the reference's variance), so judging an incident window with
    the reference's variance made a chance window with few shifted prompts strong evidence
    of a return (one 39-call window gave 7.8 of the 6.9 nats needed) and resolved 6-hour
    incidents while they lasted. Never below the reference's variance; with fewer than 3
    windows, that."""
    if len(means) < 3:
        return reference_variance
    steps = [(b - a) ** 2 / (1 / m + 1 / n) for (a, m), (b, n) in itertools.pairwise(means)]
    return max(reference_variance, sum(steps) / len(steps))


def _same_optional(a: npt.NDArray[np.float64] | None, b: npt.NDArray[np.float64] | None) -> bool:
    if a is None or b is None:
        return a is b
    return np.array_equal(a, b)


def _rejection_note(state: EmbeddingDriftState, dimension: int) -> str:
    if not state.rejected:
        return ""
    parts = []
    for reason, n in state.rejected:
        if reason.startswith("dimension_"):
            got = reason.removeprefix("dimension_")
            parts.append(f"{n} embeddings of dimension {got} (expected {dimension})")
        else:
            parts.append(f"{n} embeddings not finite or of zero norm")
    return "; ignored " + ", ".join(parts)


__all__ = [
    "CONDITION",
    "EmbeddingDriftDetector",
    "EmbeddingDriftState",
]
