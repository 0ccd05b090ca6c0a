"""An incident as the on-call engineer lives it: one page, firing while it lasts, resolved soon
after it ends; a lasting shift announced as such, then accepted as the new normal.

Windows go through the real `WindowEvaluator` and `AlertTracker` (frozen baselines, pooled
spans, CUSUM clearing); block counts are drawn per window, so hundreds of windows take
milliseconds.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from pydantic import ValidationError

from alerts.state import AlertTracker
from detectors.registry import build_detectors
from detectors.safety import SafetyState
from schemas.alert_config import AlertingConfig
from schemas.detection import Alert
from schemas.detector_config import SafetyConfig
from worker.evaluator import WindowEvaluator
from worker.sink import BaselineAccept

WINDOW = 300
T0 = int(datetime(2026, 6, 1, tzinfo=UTC).timestamp())
MODEL = "gpt-4o-mini"


@dataclass
class Run:
    """A stream of windows through one evaluator, and everything it said."""

    alerting: AlertingConfig = field(default_factory=AlertingConfig)
    safety: SafetyConfig = field(default_factory=SafetyConfig)
    accepts: list[BaselineAccept] = field(default_factory=list)
    alerts: list[tuple[int, Alert]] = field(default_factory=list)
    open_at: list[bool] = field(default_factory=list)
    i: int = 0

    def __post_init__(self) -> None:
        detectors = build_detectors({"safety": self.safety})
        self.evaluator = WindowEvaluator(
            detectors,
            WINDOW,
            AlertTracker(self.alerting),
            baseline_accepts=lambda: self.accepts,
        )

    def feed(self, rng: np.random.Generator, calls: int, rate: float, windows: int) -> None:
        for blocked in rng.binomial(calls, rate, windows):
            state = SafetyState(calls=calls, blocked=int(blocked))
            result = self.evaluator.evaluate(MODEL, T0 + self.i * WINDOW, {"safety": state})
            self.alerts += [(self.i, a) for a in result.alerts]
            self.open_at.append(self.evaluator.tracker.open_incident(MODEL, "safety") is not None)
            self.i += 1

    def of(self, status: str) -> list[tuple[int, Alert]]:
        return [(i, a) for i, a in self.alerts if a.status == status]

    def pages(self) -> list[int]:
        """Windows where a new incident paged (follow-up notices share the key and say so)."""
        return [
            i
            for i, a in self.of("firing")
            if "sustained level shift" not in a.summary and "escalated" not in a.summary
        ]


def _accept_now(run: Run) -> None:
    incident = run.evaluator.tracker.open_incident(MODEL, "safety")
    assert incident is not None and incident.started_at is not None
    run.accepts.append(
        BaselineAccept(MODEL, "safety", incident.started_at, datetime.now(UTC), "oncall")
    )


@pytest.mark.parametrize(
    ("calls", "ratio"), [(2000, 2.0), (500, 3.0), (5000, 1.5)], ids=["2000x2", "500x3", "5000x1.5"]
)
def test_a_six_hour_incident_pages_once_fires_throughout_and_resolves_within_3_windows(
    calls: int, ratio: float
) -> None:
    rng = np.random.default_rng(calls)
    run = Run()
    run.feed(rng, calls, 0.02, 48)
    start = run.i
    run.feed(rng, calls, 0.02 * ratio, 72)  # 6 hours of 5-minute windows
    end = run.i
    run.feed(rng, calls, 0.02, 24)

    assert run.pages() == [start] or run.pages() == [start + 1], run.alerts
    first = run.pages()[0]
    assert all(run.open_at[first:end]), "the incident resolved while it was still going on"
    resolved = run.of("resolved")
    assert len(resolved) == 1, [a.summary for _, a in resolved]
    at, alert = resolved[0]
    assert end <= at < end + 3, f"resolved {at - end + 1} windows after the incident ended"
    assert "cleared" in alert.summary
    # the resolve is judged against the pre-incident baseline, not the incident's level
    assert alert.baseline is not None and alert.baseline < 0.02 * 1.25


def test_a_lasting_shift_is_announced_after_the_horizon_and_keeps_firing() -> None:
    rng = np.random.default_rng(11)
    run = Run(AlertingConfig(sustained_after=timedelta(hours=2)))
    run.feed(rng, 2000, 0.02, 30)
    run.feed(rng, 2000, 0.05, 40)
    notices = [(i, a) for i, a in run.of("firing") if "sustained level shift since" in a.summary]
    assert len(notices) == 1
    i, notice = notices[0]
    assert i == 30 + 23  # 24 windows = 2 h after the incident's first window
    assert "lookout baseline accept --model gpt-4o-mini --detector safety" in notice.summary
    assert notice.dedup_key == run.of("firing")[0][1].dedup_key
    assert all(run.open_at[30:]) and not run.of("resolved")


def test_an_accepted_level_is_quiet_and_a_further_shift_fires_again() -> None:
    rng = np.random.default_rng(12)
    run = Run()
    run.feed(rng, 2000, 0.02, 30)
    run.feed(rng, 2000, 0.04, 40)
    assert run.pages() == [30] and not run.of("resolved")

    _accept_now(run)
    accepted_at = run.i
    run.feed(rng, 2000, 0.04, 1)
    ((at, resolve),) = run.of("resolved")
    assert at == accepted_at
    assert "accepted" in resolve.summary and "by oncall" in resolve.summary

    run.feed(rng, 2000, 0.04, 60)  # the new normal: quiet
    assert run.pages() == [30] and not any(run.open_at[accepted_at:])

    further = run.i
    run.feed(rng, 2000, 0.10, 6)  # a further shift on top of the accepted level
    assert run.pages()[1:] == [further]


def test_an_acceptance_for_an_earlier_incident_does_not_close_a_later_one() -> None:
    rng = np.random.default_rng(13)
    run = Run()
    run.feed(rng, 2000, 0.02, 30)
    run.feed(rng, 2000, 0.06, 6)
    run.feed(rng, 2000, 0.02, 10)  # cleared on its own
    assert len(run.of("resolved")) == 1
    run.accepts.append(
        BaselineAccept(
            MODEL, "safety", datetime.fromtimestamp(T0 + 30 * WINDOW, UTC), datetime.now(UTC)
        )
    )
    run.feed(rng, 2000, 0.06, 6)  # a second incident
    assert len(run.pages()) == 2 and len(run.of("resolved")) == 1


def test_accept_after_accepts_automatically_and_says_so() -> None:
    rng = np.random.default_rng(14)
    run = Run(AlertingConfig(accept_after=timedelta(hours=1)))
    run.feed(rng, 2000, 0.02, 30)
    run.feed(rng, 2000, 0.05, 30)
    ((at, resolve),) = run.of("resolved")
    assert at == 30 + 11
    assert "accepted as the baseline automatically" in resolve.summary
    assert not any(run.open_at[at:])


def test_a_restarted_evaluator_keeps_judging_an_open_incident_against_the_frozen_baseline() -> None:
    rng = np.random.default_rng(15)
    run = Run()
    run.feed(rng, 2000, 0.02, 30)
    run.feed(rng, 2000, 0.04, 10)
    assert run.pages() == [30]
    # restart: the tracker from its rows, the history re-seeded window by window
    tracker = AlertTracker.from_rows(run.evaluator.tracker.to_rows(), run.alerting)
    detectors = build_detectors({"safety": SafetyConfig()})
    restarted = WindowEvaluator(detectors, WINDOW, tracker)
    replay = np.random.default_rng(15)
    history: Sequence[int] = [int(b) for b in replay.binomial(2000, 0.02, 30)] + [
        int(b) for b in replay.binomial(2000, 0.04, 10)
    ]
    for i, blocked in enumerate(history[-24:], start=len(history) - 24):
        restarted.remember(MODEL, T0 + i * WINDOW, {"safety": SafetyState(2000, blocked)})
    alerts = []
    for i, blocked in enumerate(rng.binomial(2000, 0.04, 20), start=40):
        state = {"safety": SafetyState(2000, int(blocked))}
        alerts += restarted.evaluate(MODEL, T0 + i * WINDOW, state).alerts
    assert not alerts, [a.summary for a in alerts]
    assert restarted.tracker.open_incident(MODEL, "safety") is not None


@pytest.mark.parametrize(("calls", "within"), [(500, 5), (2000, 2)])
def test_a_doubled_block_rate_is_paged_within_a_few_windows(calls: int, within: int) -> None:
    """Block rate 2% → 4%: at 500 calls a window (10 → 20 blocks) the pooled spans page within
    5 windows (measured 96 of 100, with a tenth of the false-alarm budget spent on the older
    reference; 95 with a quarter: the issue's 100% is not reached at 1 false page per 1,000
    windows); at 2,000 calls within 2 windows, every time. 100 incidents each."""
    rng = np.random.default_rng(calls + within)
    delays = []
    for _ in range(100):
        run = Run()
        run.feed(rng, calls, 0.02, 30)
        run.feed(rng, calls, 0.04, within)
        pages = [i - 30 + 1 for i in run.pages() if i >= 30]
        delays.append(pages[0] if pages else None)
    caught = sum(d is not None for d in delays)
    print(f"block ×2 at {calls} calls/window: {caught}/100 paged within {within} windows")
    assert caught >= (100 if calls >= 2000 else 93)


def test_a_real_incident_after_a_false_page_that_had_returned_pages_again() -> None:
    """A false page (one window drawn at 6% blocks, 500 calls), eight quiet windows in which
    the evidence returns to the 2% baseline, then a real ×3 incident. Before, a stale incident
    still open when the real one began stayed open (the real one's windows kept it alerting)
    and the real incident never paged. Now, once the stale incident's evidence of a return
    has reached the clearing threshold, the new rise resolves it and pages on its own."""
    streams = caught = split = 0
    for seed in range(40):
        rng = np.random.default_rng([seed, 5])
        run = Run()
        run.feed(rng, 500, 0.02, 40)
        run.feed(rng, 500, 0.06, 1)  # drawn high on purpose: a false page's window
        if run.pages() != [40]:
            continue  # the window did not page (or an earlier page is still open)
        streams += 1
        run.feed(rng, 500, 0.02, 8)
        start = run.i
        run.feed(rng, 500, 0.06, 12)
        new = [i for i in run.pages() if i >= start]
        if not new:
            continue
        caught += new[0] < start + 6
        # exactly one page for the real incident, and it stays open while it lasts
        assert len(new) == 1, run.alerts
        assert all(run.open_at[new[0] : run.i])
        # the false page was closed first: by its own clearing, or as the new rise began
        stale = [a for i, a in run.of("resolved") if i <= new[0]]
        assert len(stale) == 1
        split += "before a new rise" in stale[0].summary
    print(
        f"real ×3 incident 8 windows after a false page: {caught}/{streams} paged within 6 "
        f"windows ({split} closing the stale incident as they paged)"
    )
    assert streams >= 30 and caught == streams


def feed_counts(run: Run, calls: int, blocked: Sequence[int]) -> None:
    """Windows with exactly these block counts (a stream drawn to order)."""
    for x in blocked:
        state = SafetyState(calls=calls, blocked=x)
        result = run.evaluator.evaluate(MODEL, T0 + run.i * WINDOW, {"safety": state})
        run.alerts += [(run.i, a) for a in result.alerts]
        run.open_at.append(run.evaluator.tracker.open_incident(MODEL, "safety") is not None)
        run.i += 1


def sustained_notices(run: Run) -> list[str]:
    return [a.summary for _, a in run.of("firing") if "sustained level shift" in a.summary]


def test_a_page_from_a_baseline_low_by_chance_says_so_when_it_lasts() -> None:
    """At 100 calls a window and a steady 2% (2 blocks a window), a recent baseline that came
    out at 1% by chance, then one window of 8 blocks: a false page. The ordinary 2% then sits
    between that baseline and the incident level, so the incident does not clear on its own
    (3 of 13 false pages in 60,000 quiet windows at 100 calls stayed open over 1,800 windows).
    It must not pretend to be a real shift: the sustained-level-shift notice says the rate
    since the page is about what it was in the hours before the recent baseline. A real
    doubling, or a rise of a quarter, after the same history says nothing of the kind."""
    run = Run()
    feed_counts(run, 100, [2] * 48 + [1] * 24 + [8])
    assert run.pages() == [72]
    feed_counts(run, 100, [2] * 80)
    (notice,) = sustained_notices(run)
    assert "is about what it was in the 48 windows before the recent baseline" in notice
    assert "low by chance" in notice

    for risen in ([4] * 80, [2, 3] * 40):  # ×2, and ×1.25 (not significantly above 2%)
        real = Run()
        feed_counts(real, 100, [2] * 48 + [1] * 24 + [8])
        feed_counts(real, 100, risen)
        (notice,) = sustained_notices(real)
        assert "low by chance" not in notice


def test_a_page_decided_over_several_windows_shows_their_rate_and_calls() -> None:
    """A ×1.7 block rate at 500 calls a window is mostly paged on the window pooled with the
    ones before it. The page's headline showed the window's own rate and its 500 calls, often
    below the threshold printed beside it ("0.026 (baseline 0.0208, threshold 0.0311, n=500)"
    above a reason saying 74 of 2,000 calls): a page that reads as if it should not have fired.
    It now shows the pooled rate as a percentage, its calls, and over how many windows."""
    pooled = 0
    for seed in range(12):
        rng = np.random.default_rng(seed)
        run = Run()
        run.feed(rng, 500, 0.02, 100)
        run.feed(rng, 500, 0.034, 12)
        (page,) = [a for i, a in run.alerts if i in run.pages()]
        assert page.value is not None and page.threshold is not None
        assert page.value >= page.threshold, page.summary
        headline = page.summary.split(" — ")[0]
        over = re.search(r"([\d.]+)% over the last (\d+) windows \(.*n=([\d,]+)\)$", headline)
        if over is None:
            assert page.sample_size == 500 and f"{page.value:.1%} (" in headline, headline
            continue
        pooled += 1
        rate, windows, calls = float(over[1]), int(over[2]), int(over[3].replace(",", ""))
        assert calls == page.sample_size == 500 * windows, headline
        assert rate == pytest.approx(100 * page.value, abs=0.05)
        # the reason gives the same span: "68 of 2000 calls blocked in the last 4 windows"
        assert f"of {calls} calls blocked in the last {windows} windows" in page.summary
    assert pooled >= 6, "too few pooled pages to tell"


def test_a_slow_ramp_the_recent_baseline_follows_pages_once_and_stays_open() -> None:
    """Block rate 2% → 4% over 3 hours, held 3 hours, at 2,000 calls a window. The recent
    baseline (the last 2 hours) follows the ramp, so the rate is hardly ever ×1.5 above it:
    before the older reference (2–6 hours back) these streams paged 14 times in 20. Now they
    page once, judged against the level before the ramp, and stay open while the rate is held
    (20 of 20)."""
    caught = 0
    for seed in range(20):
        rng = np.random.default_rng([seed, 21])
        run = Run()
        run.feed(rng, 2000, 0.02, 72)
        start = run.i
        for k in range(36):
            run.feed(rng, 2000, 0.02 * (1 + (k + 1) / 36), 1)
        run.feed(rng, 2000, 0.04, 36)
        end = run.i
        pages = run.pages()
        assert all(p >= start for p in pages), f"seed {seed}: paged before the ramp"
        if not pages:
            continue
        caught += 1
        assert len(pages) == 1, f"seed {seed}: {[a.summary for _, a in run.alerts]}"
        assert all(run.open_at[pages[0] : end]), f"seed {seed}: resolved during the ramp"
    print(f"x1->x2 ramp over 3 h at 2,000 calls: paged in {caught} of 20 streams")
    assert caught >= 19


def test_a_doubled_rate_starting_at_night_is_paged_when_the_recent_baseline_absorbed_it() -> None:
    """×2 at 120 calls a window (2 → 5 blocks at 2%) is too little to page in its first
    windows; it used to enter the recent baseline and often never page at all (10 of these 20
    streams paged within 26 windows). The older reference pages it within about two hours
    (20 of 20), once, and it stays open while it lasts."""
    caught = 0
    for seed in range(20):
        rng = np.random.default_rng([seed, 22])
        run = Run()
        run.feed(rng, 120, 0.02, 72)
        start = run.i
        run.feed(rng, 120, 0.04, 48)
        end = run.i
        pages = [p for p in run.pages() if p >= start]
        if not pages:
            continue
        caught += pages[0] < start + 26
        assert len(pages) == 1, f"seed {seed}: {[a.summary for _, a in run.alerts]}"
        assert all(run.open_at[pages[0] : end]), f"seed {seed}: resolved during the incident"
    print(f"x2 at 120 calls: paged within 26 windows in {caught} of 20 streams")
    assert caught >= 18


def doubled_at_night_paged_within(windows: int, safety: SafetyConfig) -> int:
    """Of 20 streams with ×2 at 120 calls a window after 6 quiet hours, how many page within
    `windows` windows of the start."""
    caught = 0
    for seed in range(20):
        rng = np.random.default_rng([seed, 22])
        run = Run(safety=safety)
        run.feed(rng, 120, 0.02, 72)
        start = run.i
        run.feed(rng, 120, 0.04, 48)
        caught += any(start <= p < start + windows for p in run.pages())
    return caught


def test_the_older_reference_can_be_turned_off_where_hours_apart_are_not_comparable() -> None:
    """`safety.older_windows: 0` is for a model whose block rate genuinely differs by time of
    day: only the recent baseline judges, with the whole alpha, and the night-start ×2 goes
    back to what the recent baseline alone catches."""
    on = doubled_at_night_paged_within(26, SafetyConfig())
    off = doubled_at_night_paged_within(26, SafetyConfig(older_windows=0))
    print(f"x2 at 120 calls, paged within 26 windows: {on}/20 with, {off}/20 without")
    assert off <= 14 < on
    with pytest.raises(ValidationError, match="older_spans"):
        SafetyConfig(older_spans=(6, 30))
    # a short recent history stays valid once the older reference is off
    assert SafetyConfig(history_windows=12, older_windows=0).history_windows == 12
    with pytest.raises(ValidationError, match="older_windows: 0"):
        SafetyConfig(history_windows=12)


def test_a_six_hour_incident_at_low_traffic_stays_open_when_paged_on_the_older_reference() -> None:
    """×3 at 40 calls a window (about 1 block → 2.4): paged on a long span against the older
    reference, which takes every window after that reference out of the baseline. The recent
    baseline then reaches back until it holds enough calls; when it did not, the incident had
    no judgeable baseline, and 6 windows of 'insufficient data' resolved it mid-way (then it
    paged again: 1.45 pages per incident in the benchmark at 100 calls peak)."""
    paged = 0
    for seed in range(20):
        rng = np.random.default_rng([seed, 23])
        run = Run()
        run.feed(rng, 40, 0.02, 72)
        start = run.i
        run.feed(rng, 40, 0.06, 72)
        end = run.i
        pages = [p for p in run.pages() if p >= start]
        if not pages:
            continue
        paged += 1
        assert len(pages) == 1, f"seed {seed}: {[a.summary for _, a in run.alerts]}"
        assert all(run.open_at[pages[0] : end]), f"seed {seed}: resolved during the incident"
    print(f"x3 at 40 calls a window for 6 h: paged once and open throughout in {paged} of 20")
    assert paged >= 15
