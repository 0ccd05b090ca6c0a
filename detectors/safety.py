"""Safety-block detector: is the block rate significantly above this model's own past?

Lifecycle (a Beam CombineFn): ``empty()`` → ``add(state, batch)`` per batch → ``merge`` of
partial states → ``evaluate(state, baseline, window)``.

Two conditions, one detection per window:

* ``block_rate_above_ceiling`` (critical): the Wilson lower bound of the block rate is above
  `ceiling`; needs no baseline, because a model blocking a quarter of its calls is broken
  whatever it did yesterday.
* ``block_rate_above_baseline``: the rate of the window, and of the window pooled with the
  1, 3 and 7 before it (to catch small sustained shifts at low traffic; see
  `detectors._sequential`), against the pooled rate of the recent history before them (the
  last `history_windows`), with the exact conditional test for two Poisson rates and a minimum
  effect size. While an incident is open the baseline is frozen and the window stays `alert`
  until a CUSUM says the rate is back to the pre-incident level (`details["cleared"]`).

  A second, older reference catches what the recent baseline absorbs: a shift too small to page
  in its first windows (a ×2 rate starting at night, at 2 blocks a window) or a slow ramp enters
  the recent baseline window by window, lifts it, and is never significant against it. The
  window pooled with the 5, 11 and 23 before it is also tested against the windows *older* than
  the recent baseline (`older_windows` of them: 2 to 6 hours back at 5-minute windows). The
  false-alarm budget is split: the recent family at ``alpha · (1 − older_share)``, the older at
  ``alpha · older_share``, each divided among its spans (Bonferroni), so a quiet window still
  fires with probability at most ``alpha``.
"""

from __future__ import annotations

import zlib
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, NamedTuple

import numpy as np

from detectors._math import rate_increase_pvalue, wilson_interval
from detectors._sequential import binomial_llr, return_evidence
from detectors.base import Baseline, WindowRef, window_detection
from schemas.batch import LogBatch
from schemas.detection import Detection
from schemas.detector_config import SafetyConfig
from schemas.plural import counted

Counts = tuple[tuple[str, int], ...]
#: an open incident says its page may have come from a low recent baseline when its rate since
#: the page is not above the older windows' at this level (one-sided), and within this factor
#: of theirs: "not significantly higher" alone let ×1.4 (28 of 1,000 calls against 2.00%) pass
LOW_BASELINE_HINT_P = 0.05
LOW_BASELINE_HINT_RATIO = 1.1
OTHER = "other"
_MAX_LABEL = 64


class _Test(NamedTuple):
    """One pooled span's test: its p-value, and what the detection reports when it decides."""

    p: float
    span: int
    calls: int
    blocked: int
    base_calls: int
    base: float
    ratio: float
    #: the level it runs at (its family's share of alpha over the family's spans)
    alpha: float
    older: bool


@dataclass(frozen=True)
class SafetyState:
    calls: int = 0
    blocked: int = 0
    prompt_blocks: int = 0
    response_blocks: int = 0
    #: block reason → count, sorted by name; bounded by `max_reasons` plus "other"
    reasons: Counts = ()
    #: score category → calls with a score ≥ `high_score`; bounded the same way
    high_scores: Counts = ()


def _label_key(label: str) -> tuple[int, str]:
    """Order in which labels are kept when there are too many: a stable hash, not the count.

    Keeping the k labels with the smallest hash ("bottom-k") makes truncation commute with
    merging: a label kept in the final state was kept in every partial state, so its count is
    exact, and the same labels survive whatever order replicas merge in. Keeping the k most
    frequent would not be associative.
    """
    return zlib.crc32(label.encode()), label


def _bounded(counts: Mapping[str, int], limit: int) -> Counts:
    """Counts with at most `limit` named labels; the rest (and any "other") summed as "other"."""
    named = [k for k, v in counts.items() if k != OTHER and v]
    if len(named) > limit:  # only then does the order of keeping matter (hashing is not free)
        named.sort(key=_label_key)
    other = counts.get(OTHER, 0) + sum(counts[k] for k in named[limit:])
    out = {k: counts[k] for k in named[:limit]}
    if other:
        out[OTHER] = other
    return tuple(sorted(out.items()))


def _sum_counts(a: Counts, b: Counts) -> dict[str, int]:
    out = dict(a)
    for k, v in b:
        out[k] = out.get(k, 0) + v
    return out


def _reason_counts(reasons: np.ndarray[Any, Any]) -> dict[str, int]:
    """Counts of each distinct reason; one Python step per distinct value, not per record."""
    if len(reasons) == 0:
        return {}
    out: dict[str, int] = {}
    # a window slice holds a handful of blocked rows: counting them in Python is several
    # times faster than `np.unique` of their text. The text is what `astype(str)` made of
    # each value before (`str`, trailing NULs dropped), so the labels are the same.
    for value, count in Counter(str(v).rstrip("\x00") for v in reasons.tolist()).items():
        label = "unspecified" if value in ("None", "") else value.strip()[:_MAX_LABEL]
        out[label] = out.get(label, 0) + count
    return out


class SafetyDetector:
    """Block-rate detector; see the module docstring."""

    name: ClassVar[str] = "safety"
    config_type: ClassVar[type[SafetyConfig]] = SafetyConfig

    def __init__(self, config: SafetyConfig) -> None:
        self.config = config
        self.recent_windows = config.history_windows
        self.history_windows = config.history_windows + config.older_windows

    @property
    def _older_share(self) -> float:
        """The share of alpha the older reference takes: none when it is turned off."""
        return self.config.older_share if self.config.older_windows else 0.0

    def empty(self) -> SafetyState:
        return SafetyState()

    def add(self, state: SafetyState, batch: LogBatch) -> SafetyState:
        if len(batch) == 0:
            return state
        blocked = batch.blocked
        # string comparisons on object arrays are the slow part: do them on blocked rows only
        stage = batch.block_stage[blocked]
        part = SafetyState(
            calls=len(batch),
            blocked=len(stage),
            prompt_blocks=int((stage == "prompt").sum()),
            response_blocks=int((stage == "response").sum()),
            reasons=_bounded(_reason_counts(batch.block_reason[blocked]), self.config.max_reasons),
            high_scores=_bounded(
                {
                    cat: int(np.count_nonzero(scores >= self.config.high_score))
                    for cat, scores in batch.safety_scores.items()
                },
                self.config.max_reasons,
            ),
        )
        return self.merge(state, part)

    def merge(self, a: SafetyState, b: SafetyState) -> SafetyState:
        limit = self.config.max_reasons
        return SafetyState(
            calls=a.calls + b.calls,
            blocked=a.blocked + b.blocked,
            prompt_blocks=a.prompt_blocks + b.prompt_blocks,
            response_blocks=a.response_blocks + b.response_blocks,
            reasons=_bounded(_sum_counts(a.reasons, b.reasons), limit),
            high_scores=_bounded(_sum_counts(a.high_scores, b.high_scores), limit),
        )

    def to_row(self, state: SafetyState) -> dict[str, Any]:
        return {
            "calls": state.calls,
            "blocked": state.blocked,
            "prompt_blocks": state.prompt_blocks,
            "response_blocks": state.response_blocks,
            "block_reasons": dict(state.reasons),
            "high_scores": dict(state.high_scores),
        }

    def from_row(self, row: Mapping[str, Any]) -> SafetyState:
        return SafetyState(
            calls=int(row["calls"]),
            blocked=int(row["blocked"]),
            prompt_blocks=int(row["prompt_blocks"]),
            response_blocks=int(row["response_blocks"]),
            reasons=tuple(sorted((str(k), int(v)) for k, v in row["block_reasons"].items())),
            high_scores=tuple(sorted((str(k), int(v)) for k, v in row["high_scores"].items())),
        )

    def update_reference(self, reference: SafetyState | None, state: SafetyState) -> None:
        return None

    def evaluate(
        self, state: SafetyState, baseline: Baseline[SafetyState], window: WindowRef
    ) -> Detection:
        cfg = self.config
        n, x = state.calls, state.blocked
        rate = x / n if n else 0.0
        details: dict[str, Any] = {
            "unit": "ratio",  # pages print rates as percentages
            "block_rate": rate,
            "prompt_blocks": state.prompt_blocks,
            "response_blocks": state.response_blocks,
            "top_reasons": dict(sorted(state.reasons, key=lambda kv: -kv[1])[:5]),
            "high_scores": dict(state.high_scores),
        }

        def detection(**kw: Any) -> Detection:
            return window_detection(
                self.name,
                window,
                sample_size=n,
                value=rate,
                details=details,
                **kw,
            )

        if n >= cfg.min_calls:
            low, _ = wilson_interval(x, n, cfg.ceiling_z)
            details["wilson_lower"] = low
            if low > cfg.ceiling:
                return detection(
                    verdict="alert",
                    condition="block_rate_above_ceiling",
                    severity="critical",
                    threshold=cfg.ceiling,
                    reason=(
                        f"{x} of {n} calls blocked ({rate:.1%}); even the lower confidence bound "
                        f"{low:.1%} is above the {cfg.ceiling:.0%} ceiling. "
                        f"Top reasons: {_top(state.reasons)}."
                    ),
                )
        return self._against_baseline(state, baseline, detection, details)

    def _against_baseline(
        self,
        state: SafetyState,
        baseline: Baseline[SafetyState],
        detection: Callable[..., Detection],
        details: dict[str, Any],
    ) -> Detection:
        cfg = self.config
        condition = "block_rate_above_baseline"
        seq = cfg.sequential
        recent = self._recent(baseline.history)
        tested = self._tests(state, recent, seq.spans if not baseline.in_incident else (1,))
        if not baseline.in_incident and cfg.older_windows:
            # the older reference: the windows before the recent baseline (see the module
            # docstring); during an open incident only the window itself is tested
            tested += self._tests(state, baseline.history, cfg.older_spans, older=len(recent))
        if not tested:
            n0 = sum(h.calls for h in recent)
            if baseline.in_incident and state.calls and n0 >= cfg.min_baseline_calls:
                # too few calls to test this window alone, but they still count as evidence
                # for (or against) the incident having ended
                base = max(sum(h.blocked for h in recent) / n0, cfg.min_baseline_rate)
                cleared, evidence, returned = self._cleared(state, baseline, base)
                details.update(
                    {"cleared": cleared, "clear_evidence": evidence, "return_evidence": returned}
                )
                return detection(
                    verdict="ok" if cleared else "alert",
                    condition=condition,
                    baseline=base,
                    reason=(
                        f"{state.blocked} of {state.calls} calls blocked, too few to test "
                        f"alone; evidence that the incident ended {evidence:.1f} of "
                        f"{seq.clear_threshold:.1f} nats."
                    ),
                )
            return detection(
                verdict="insufficient_data",
                condition=condition,
                reason=(
                    f"not judged: {counted(state.calls, 'call')} in the window (minimum "
                    f"{cfg.min_calls}) and {counted(n0, 'call')} in the "
                    f"{counted(len(recent), 'past window')} "
                    f"(minimum {cfg.min_baseline_calls} for a baseline)."
                ),
            )
        firing = [t for t in tested if t.p < t.alpha and t.ratio >= cfg.min_ratio]
        chosen = min(firing, key=lambda t: t.p / t.alpha) if firing else tested[0]
        p, span, n, x, n0, base, ratio = chosen[:7]
        details.update(
            {
                "span_windows": span,
                "span_calls": n,
                "span_blocked": x,
                "span_value": x / n,
                "ratio": ratio,
                "reference": "older" if chosen.older else "recent",
            }
        )
        if firing and chosen.older:
            # the recent baseline is suspect (it did not see the shift): the incident is judged
            # against the older reference it fired against, so every window after that
            # reference leaves the baseline (`worker.evaluator`)
            details["incident_windows_before"] = len(recent)
        where = "this window" if span == 1 else f"the last {span} windows"
        past = (
            f"the {len(baseline.history) - len(recent)} windows before the recent "
            "baseline (older reference)"
            if chosen.older
            else "the past windows"
        )
        compared = (
            f"{x} of {n} calls blocked in {where} ({x / n:.2%}) vs a baseline of {base:.2%} "
            f"over {n0} calls in {past} (×{ratio:.2f}, one-sided p={p:.2g})"
        )
        common = {
            "condition": condition,
            "threshold": base * cfg.min_ratio,
            "baseline": base,
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
                        f"block rate not yet back to the pre-incident baseline: {compared}; "
                        f"evidence of a return {evidence:.1f} of {seq.clear_threshold:.1f} nats."
                        f"{self._low_baseline_hint(state, baseline, recent, base, details)}"
                    ),
                    **common,
                )
        if firing:
            hint = (
                self._low_baseline_hint(state, baseline, recent, base, details)
                if baseline.in_incident
                else ""
            )
            return detection(
                verdict="alert",
                severity="critical" if ratio >= cfg.critical_ratio else "warning",
                reason=f"block rate up: {compared}. Top reasons: {_top(state.reasons)}.{hint}",
                **common,
            )
        older = (
            f" (or p<{cfg.alpha * cfg.older_share / len(cfg.older_spans):.1g} on one of "
            f"{len(cfg.older_spans)} longer spans against the older reference)"
            if cfg.older_windows
            else ""
        )
        return detection(
            verdict="ok",
            reason=(
                f"block rate normal: {compared}; alerts need p<{tested[0].alpha:.1g} on one "
                f"of the {len(seq.spans)} pooled spans against the recent baseline{older} and "
                f"×{cfg.min_ratio:g}."
            ),
            **common,
        )

    def _recent(self, history: tuple[SafetyState, ...]) -> tuple[SafetyState, ...]:
        """The recent baseline: the last `history_windows` windows, reaching further back
        (at most the whole history) until it holds `min_baseline_calls` calls, so that a
        night of thin traffic, or an incident that took the recent windows out of a frozen
        baseline, still leaves something to judge against."""
        take = min(self.recent_windows, len(history))
        calls = sum(h.calls for h in history[len(history) - take :])
        while calls < self.config.min_baseline_calls and take < len(history):
            take += 1
            calls += history[len(history) - take].calls
        return history[len(history) - take :]

    def _tests(
        self,
        state: SafetyState,
        history: Sequence[SafetyState],
        spans: Sequence[int],
        *,
        older: int = 0,
    ) -> list[_Test]:
        """The window pooled with the k − 1 before it, for each span k, tested against the
        history before them (the recent family), or against the windows older than the
        newest `older` ones (the recent baseline); spans without enough windows or calls are
        left out."""
        cfg = self.config
        recent = older
        if older:
            alpha = cfg.alpha * cfg.older_share / len(spans)
        else:
            alpha = cfg.alpha * (1 - self._older_share) / len(cfg.sequential.spans)
        out: list[_Test] = []
        for k in spans:
            if len(history) < k - 1 or (older and (k - 1 > recent or recent >= len(history))):
                continue
            pooled = history[len(history) - (k - 1) :]
            hist = history[: len(history) - recent] if older else history[: len(history) - (k - 1)]
            n = state.calls + sum(h.calls for h in pooled)
            x = state.blocked + sum(h.blocked for h in pooled)
            n0 = sum(h.calls for h in hist)
            x0 = sum(h.blocked for h in hist)
            if n < cfg.min_calls or n0 < cfg.min_baseline_calls:
                continue
            base = max(x0 / n0, cfg.min_baseline_rate)
            p = rate_increase_pvalue(float(x), float(n), base * n0, float(n0))
            out.append(_Test(p, k, n, x, n0, base, (x / n) / base, alpha, older > 0))
        return out

    def _low_baseline_hint(
        self,
        state: SafetyState,
        baseline: Baseline[SafetyState],
        recent: Sequence[SafetyState],
        base: float,
        details: dict[str, Any],
    ) -> str:
        """A sentence for an open incident whose rate since its page is no higher than the
        older windows' (those before the recent baseline), which were above the recent
        baseline: then the page most likely came from a recent baseline that was low by
        chance, and the on-call engineer should hear it.

        Such a false page does not clear on its own: the ordinary rate sits between the low
        baseline and the incident level, where the clearing CUSUM gains nothing either way (at
        a steady 100 calls a window, 3 of 13 false pages in 60,000 quiet windows stayed open
        over 1,800 windows). Clearing against the older windows' rate ends those within 174
        windows, but also resolves real ×1.5 incidents that follow a drop of the block rate in
        the hours before them (a 30% drop at 500 calls a window: 23 resolves during 60 six-hour
        incidents instead of 6), and no test of the windows alone tells a chance low from a
        drop at that traffic. So the incident stays open, judged as before, and says what it
        looks like; `lookout baseline accept` (or `alerting.accept_after`) ends it, and the
        sustained-level-shift notice after `alerting.sustained_after` carries this sentence."""
        cfg = self.config
        older = baseline.history[: len(baseline.history) - len(recent)]
        n_old = sum(h.calls for h in older)
        x_old = sum(h.blocked for h in older)
        since = [*baseline.recent[baseline.recent_onset :], state]
        n_since = sum(w.calls for w in since)
        x_since = sum(w.blocked for w in since)
        if n_old < cfg.min_baseline_calls or n_since < cfg.min_calls or x_old / n_old <= base:
            return ""
        above_older = rate_increase_pvalue(
            float(x_since), float(n_since), float(x_old), float(n_old)
        )
        if above_older < LOW_BASELINE_HINT_P or (
            x_since / n_since > LOW_BASELINE_HINT_RATIO * x_old / n_old
        ):
            return ""
        details["older_rate"] = x_old / n_old
        details["rate_since_page"] = x_since / n_since
        return (
            f" The rate since the page, {x_since / n_since:.2%} over "
            f"{counted(n_since, 'call')}, is about what it was in the "
            f"{counted(len(older), 'window')} before the recent baseline ({x_old / n_old:.2%} "
            f"over {counted(n_old, 'call')}, p={above_older:.2g}): either the recent baseline was "
            "low by chance (a false page) or the rate is back at its level of those hours."
        )

    def _cleared(
        self, state: SafetyState, baseline: Baseline[SafetyState], base: float
    ) -> tuple[bool, float, float]:
        """Has the open incident returned to the pre-incident rate `base`? (CUSUM, nats; see
        `return_evidence` for the two figures)."""
        cfg = self.config
        windows = [*baseline.recent, state]

        def llrs(level_from: Sequence[SafetyState]) -> list[float]:
            calls = sum(w.calls for w in level_from)
            level = sum(w.blocked for w in level_from) / calls if calls else base
            level = max(level, base * cfg.min_ratio)
            return [binomial_llr(w.blocked, w.calls, base, level) for w in windows]

        evidence, returned = return_evidence(windows, llrs, baseline.recent_onset)
        return evidence >= cfg.sequential.clear_threshold, evidence, returned


def _top(counts: Counts) -> str:
    if not counts:
        return "none recorded"
    ranked = sorted(counts, key=lambda kv: -kv[1])[:3]
    return ", ".join(f"{k} ({v})" for k, v in ranked)
