"""Evidence across windows: pooled spans to catch small sustained shifts, CUSUM to see them end.

Two questions a single window cannot answer at low traffic, each with its own tool:

* **Has a small shift begun?** Pool the current window with the k − 1 before it, for each k
  in a short ladder of spans (1, 2, 4, 8 by default), and test the pooled window against the
  baseline before it. Each span's test runs at ``alpha / len(spans)``, so by the union
  (Bonferroni) bound the chance that *any* span fires on a quiet window stays at most
  ``alpha``: the false-alarm budget per window holds whatever the correlation between spans.
  A ×2 block rate at 500 calls per window is 10 → 20 expected blocks, hopeless in one window
  at 1 false alarm per 1,000, but 40 → 80 over four. (Pooling with a corrected level: see
  Siegmund (1985), "Sequential Analysis", ch. 2, and the multiple-window scan statistics of
  Glaz, Naus & Wallenstein (2001), "Scan Statistics".)

* **Has an open incident ended?** A one-sided CUSUM (Page 1954, "Continuous inspection
  schemes", Biometrika 41:100–115) of the log-likelihood ratio *pre-incident baseline vs
  incident level*, over the incident's windows in order: ``S ← max(0, S + log L0/L1)``. The
  incident has cleared when S reaches ``h``. While the incident goes on each window adds a
  negative amount on average, so S reaching h is a rare event (its average run length is
  about e^h windows, Siegmund's approximation); after the incident ends each window adds the
  Kullback–Leibler divergence between the two levels, so a large shift clears in one window and
  a small one in a few. A window that merely fails to cross the alert threshold — the common
  case for a small shift — does *not* clear anything.

  How few is set by the data, not by a choice here: for block counts the divergence is
  λ0 · (r − 1 − ln r) nats a window, for λ0 expected blocks a window at the baseline and an
  incident at r times that. Reaching h = log 1000 within two windows of the end (a resolve
  within three, with the tracker's confirming window) needs λ0 ≥ 36 at ×1.5, 11 at ×2 and 4 at
  ×3 — 1,800, 560 and 190 calls a window at a 2% block rate. Below that the resolve lags by
  about h / divergence windows; clearing on less evidence shortens it by a window or two and
  resolves incidents while they last (bench.detection_quality, 40 streams a cell, without the
  confirming window: lag 9 → 7 after ×2 for 30 minutes at 500 calls a window, and 1 resolve
  during the incident in each of ×1.5 and ×3 for 6 hours and ×2 for 30 minutes at 500, where
  there had been none).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import TypeVar

T = TypeVar("T")


def span_alpha(alpha: float, spans: Sequence[int]) -> float:
    """The level of each span's test so that the family stays at `alpha` (Bonferroni)."""
    return alpha / max(len(spans), 1)


def binomial_llr(x: float, n: float, p0: float, p1: float) -> float:
    """log P(x | n, p0) − log P(x | n, p1): positive when the window looks like the baseline."""
    p0 = min(max(p0, 1e-12), 1 - 1e-12)
    p1 = min(max(p1, 1e-12), 1 - 1e-12)
    return x * math.log(p0 / p1) + (n - x) * math.log((1 - p0) / (1 - p1))


def normal_llr(mean: float, n: float, var: float, mu0: float, mu1: float) -> float:
    """Log-likelihood ratio baseline mean mu0 vs incident mean mu1 for a window mean of n calls
    with per-call variance `var`: (n / var) · (mu1 − mu0) · ((mu0 + mu1) / 2 − mean)."""
    if n <= 0 or var <= 0:
        return 0.0
    return (n / var) * (mu1 - mu0) * ((mu0 + mu1) / 2 - mean)


def normal_llr2(mean: float, n: float, var0: float, var1: float, mu0: float, mu1: float) -> float:
    """`normal_llr` with a per-call variance of its own for each level: var0 at the baseline,
    var1 in the incident (a mix of old and new calls spreads wider than either)."""
    if n <= 0 or var0 <= 0 or var1 <= 0:
        return 0.0
    v0, v1 = var0 / n, var1 / n
    return 0.5 * math.log(v1 / v0) - (mean - mu0) ** 2 / (2 * v0) + (mean - mu1) ** 2 / (2 * v1)


def cusum(llrs: Sequence[float]) -> float:
    """Page's CUSUM of the given increments, oldest first: max(0, S + llr) at each step."""
    s = 0.0
    for llr in llrs:
        s = max(0.0, s + llr)
    return s


def level_windows(windows: Sequence[T]) -> Sequence[T]:
    """The incident windows its level is estimated from: all but the newest two once there are
    more than three, so the windows whose return is being judged do not drag the incident's
    level towards the baseline."""
    return windows[:-2] if len(windows) > 3 else windows


def excursion_start(llrs: Sequence[float]) -> int:
    """Index of the first window of the CUSUM's current excursion above zero (len if none)."""
    s, began = 0.0, len(llrs)
    for i, llr in enumerate(llrs):
        s = max(0.0, s + llr)
        if s == 0.0:
            began = i + 1
    return began


def return_evidence(
    windows: Sequence[T], llrs: Callable[[Sequence[T]], list[float]], counted_from: int = 0
) -> tuple[float, float]:
    """CUSUM evidence (nats) that an open incident's windows are back at the baseline:
    (with the incident level from `level_windows`, with it from the windows before the
    CUSUM's current excursion).

    `llrs(level_from)` gives each window's log-likelihood ratio baseline vs the incident level
    estimated from the windows `level_from`. The first figure decides when an incident has
    cleared. The second leaves out the windows of a return already under way, which otherwise
    drag the level towards the baseline so that the two levels are hard to tell apart and the
    evidence barely grows (a false page at 500 calls a window took about 10 quiet windows to
    reach the threshold); it is what tells the evaluator that a false page had returned when
    a new rise follows (`worker.evaluator`). It is not used to clear: on real incidents at low
    traffic it also reaches the threshold on chance low stretches now and then.

    Only the windows from `counted_from` on add to the CUSUM: those before it were pooled into
    the incident's first alert. After a slow ramp they look like the baseline (that is why it
    took a long span to see the shift), and counting them cleared such incidents within a
    window or two of their page while the rate was still rising.
    """
    used = level_windows(windows)
    increments = llrs(used)[counted_from:]
    evidence = cusum(increments)
    began = excursion_start(increments) + counted_from
    if counted_from < began < len(used):
        return evidence, cusum(llrs(used[:began])[counted_from:])
    return evidence, evidence
