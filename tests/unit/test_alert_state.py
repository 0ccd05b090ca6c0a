"""The alert state machine as an on-call engineer sees it: pages, resolves, and their timing."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from alerts.state import AlertTracker, dedup_key
from schemas.alert_config import AlertingConfig
from schemas.detection import Alert, Detection, Severity, Verdict

T0 = datetime(2024, 5, 1, tzinfo=UTC)
WINDOW = timedelta(minutes=5)
KEY = dedup_key("gemini-1.5-flash", "safety", "block_rate_above_baseline")


def det(
    i: int,
    verdict: Verdict,
    *,
    condition: str = "block_rate_above_baseline",
    severity: Severity = "warning",
    model: str = "gemini-1.5-flash",
    detector: str = "safety",
    value: float = 0.061,
) -> Detection:
    return Detection(
        detector=detector,
        model=model,
        window_start=T0 + i * WINDOW,
        window_end=T0 + (i + 1) * WINDOW,
        verdict=verdict,
        condition=condition,
        severity=severity,
        value=value,
        baseline=0.02,
        threshold=0.031,
        sample_size=2013,
        reason="block rate above its baseline's 99.9% Wilson bound",
        # an incident's windows carry the evidence that it ended, as the detectors give it
        details={"metric": "block rate", "unit": "ratio", "clear_evidence": 7.0},
    )


def run(verdicts: Sequence[Verdict], config: AlertingConfig | None = None) -> list[Alert]:
    tracker = AlertTracker(config or AlertingConfig())
    return [a for i, v in enumerate(verdicts) for a in tracker.observe(det(i, v))]


def window_of(alert: Alert) -> int:
    """Index of the window whose detection caused this alert."""
    return (alert.window_end - T0) // WINDOW - 1


def clusters(verdicts: Sequence[Verdict], resolve_after: int) -> list[tuple[int, int]]:
    """(first, last) alert window of each incident: alert runs split by >= resolve_after oks."""
    out: list[tuple[int, int]] = []
    oks = 0
    for i, v in enumerate(verdicts):
        if v == "alert":
            if out and oks < resolve_after:
                out[-1] = (out[-1][0], i)
            else:
                out.append((i, i))
            oks = 0
        elif v == "ok":
            oks += 1
    return out


verdict_lists = st.lists(st.sampled_from(["ok", "alert"]), max_size=40)


@settings(max_examples=200, deadline=None)
@given(verdicts=verdict_lists, resolve_after=st.integers(1, 3))
def test_each_incident_pages_once_and_resolves_exactly_resolve_after_windows_after_its_end(
    verdicts: list[Verdict], resolve_after: int
) -> None:
    alerts = run(verdicts, AlertingConfig(resolve_after_ok_windows=resolve_after))
    expected = clusters(verdicts, resolve_after)

    firings = [a for a in alerts if a.status == "firing"]
    resolveds = [a for a in alerts if a.status == "resolved"]
    assert [window_of(a) for a in firings] == [first for first, _ in expected]
    ends_resolved = [
        last + resolve_after for _, last in expected if last + resolve_after < len(verdicts)
    ]
    assert [window_of(a) for a in resolveds] == ends_resolved
    assert [a.status for a in alerts] == ["firing", "resolved"] * len(resolveds) + ["firing"] * (
        len(firings) - len(resolveds)
    )
    assert {a.dedup_key for a in alerts} <= {KEY}


def test_a_flickering_condition_stays_one_incident() -> None:
    alerts = run(["alert", "ok", "alert", "ok", "alert", "ok", "ok", "alert"])
    assert [(a.status, window_of(a)) for a in alerts] == [
        ("firing", 0),
        ("resolved", 6),
        ("firing", 7),
    ]


@settings(max_examples=100, deadline=None)
@given(
    verdicts=st.lists(st.sampled_from(["ok", "alert", "insufficient_data"]), max_size=40),
)
def test_insufficient_data_neither_fires_nor_resolves(verdicts: list[Verdict]) -> None:
    config = AlertingConfig(resolve_after_insufficient_windows=None)
    judged = [v for v in verdicts if v != "insufficient_data"]
    judged_index = [
        sum(v != "insufficient_data" for v in verdicts[:i]) for i in range(len(verdicts))
    ]
    with_gaps = [(a.status, judged_index[window_of(a)]) for a in run(verdicts, config)]
    without = [(a.status, window_of(a)) for a in run(judged, config)]
    assert with_gaps == without


def test_an_incident_whose_data_vanishes_resolves_after_the_configured_windows_saying_so() -> None:
    config = AlertingConfig(resolve_after_insufficient_windows=3)
    alerts = run(["alert", "insufficient_data", "insufficient_data", "insufficient_data"], config)
    assert [(a.status, window_of(a)) for a in alerts] == [("firing", 0), ("resolved", 3)]
    assert "no judgeable data for 3 windows" in alerts[1].summary
    # nothing was seen to clear: the headline must not say it did
    assert "closed for lack of data" in alerts[1].summary and "cleared" not in alerts[1].summary
    assert alerts[1].value is None  # the numbers of a window that could not be judged mean nothing


def test_data_gaps_shorter_than_the_limit_keep_the_incident_open() -> None:
    config = AlertingConfig(resolve_after_insufficient_windows=3)
    alerts = run(["alert", "insufficient_data", "insufficient_data", "alert", "ok", "ok"], config)
    assert [(a.status, window_of(a)) for a in alerts] == [("firing", 0), ("resolved", 5)]


@settings(max_examples=150, deadline=None)
@given(data=st.data(), verdicts=verdict_lists)
def test_replayed_and_late_detections_change_nothing(
    data: st.DataObject, verdicts: list[Verdict]
) -> None:
    clean = run(verdicts)
    tracker = AlertTracker(AlertingConfig())
    noisy: list[Alert] = []
    for i, v in enumerate(verdicts):
        noisy += tracker.observe(det(i, v))
        # re-evaluations of windows already seen, possibly with a different verdict
        for j in data.draw(st.lists(st.integers(0, i), max_size=3)):
            flipped: Verdict = data.draw(st.sampled_from(["ok", "alert", "insufficient_data"]))
            noisy += tracker.observe(det(j, flipped))
    assert noisy == clean


def test_observe_many_orders_a_shuffled_batch_by_window() -> None:
    verdicts: list[Verdict] = ["alert", "alert", "ok", "ok", "alert"]
    tracker = AlertTracker(AlertingConfig())
    batch = [det(i, v) for i, v in enumerate(verdicts)]
    assert tracker.observe_many(reversed(batch)) == run(verdicts)


@settings(max_examples=150, deadline=None)
@given(data=st.data(), verdicts=verdict_lists)
def test_a_restart_from_rows_neither_pages_again_nor_forgets_to_resolve(
    data: st.DataObject, verdicts: list[Verdict]
) -> None:
    cut = data.draw(st.integers(0, len(verdicts)))
    config = AlertingConfig()
    before = AlertTracker(config)
    alerts = [a for i in range(cut) for a in before.observe(det(i, verdicts[i]))]
    rows = orjson.loads(orjson.dumps(before.to_rows()))  # as a sink would store them
    after = AlertTracker.from_rows(rows, config)
    # the evaluator that restarted re-evaluates the last window it saw: no second page
    if cut:
        alerts += after.observe(det(cut - 1, verdicts[cut - 1]))
    alerts += [a for i in range(cut, len(verdicts)) for a in after.observe(det(i, verdicts[i]))]
    assert alerts == run(verdicts)


def test_restart_mid_incident_then_resolve() -> None:
    config = AlertingConfig()
    first = AlertTracker(config)
    assert [a.status for a in first.observe(det(0, "alert"))] == ["firing"]
    second = AlertTracker.from_rows(first.to_rows(), config)
    assert second.observe(det(1, "alert")) == []
    assert second.observe(det(2, "ok")) == []
    resolved = second.observe(det(3, "ok"))
    assert [(a.status, a.dedup_key) for a in resolved] == [("resolved", KEY)]
    assert second.open_incidents() == []


def test_malformed_state_rows_are_rejected() -> None:
    with pytest.raises(ValidationError, match="last_window_end"):
        AlertTracker.from_rows(
            [{"kind": "stream", "model": "m", "detector": "d"}], AlertingConfig()
        )


def test_summaries_read_as_one_line_with_the_numbers_and_the_duration() -> None:
    alerts = run(["alert", "alert", "ok", "ok"])
    assert alerts[0].summary == (
        "[FIRING] gemini-1.5-flash safety: block rate 6.1% (baseline 2.0%, threshold 3.1%, "
        "n=2,013) — block rate above its baseline's 99.9% Wilson bound"
    )
    assert alerts[1].summary.startswith(
        "[RESOLVED] gemini-1.5-flash safety: block rate cleared, now "
    )
    # how long it lasted, and why it cleared when this window's value is above the threshold
    assert "— after 20 min (4 windows); this window alone is still above" in alerts[1].summary
    assert "\n" not in alerts[0].summary + alerts[1].summary


def test_a_window_by_window_resolve_above_the_threshold_says_why_it_is_not_a_shift() -> None:
    """Found in a soak trial: a descriptor-drift resolve read "cleared, now 0.0816 (threshold
    0.05) ... the windows since the incident are back at the baseline's level", although that
    detector judges each window alone: the effect was large on few calls, and not significant."""
    tracker = AlertTracker(AlertingConfig())

    def descriptor(i: int, verdict: Verdict, value: float, reason: str) -> Detection:
        return det(
            i, verdict, detector="descriptor_drift", severity="info", value=value
        ).model_copy(
            update={
                "condition": "descriptor_distribution_shift",
                "threshold": 0.05,
                "p_value": 0.31 if verdict == "ok" else 1e-6,
                "reason": reason,
                "details": {},
            }
        )

    tracker.observe(descriptor(0, "alert", 0.44, "response descriptors moved"))
    tracker.observe(descriptor(1, "ok", 0.08, "no material change in 4 descriptors over 222 calls"))
    [resolved] = tracker.observe(
        descriptor(2, "ok", 0.0816, "no material change in 4 descriptors over 222 calls")
    )
    assert "back at the baseline's level" not in resolved.summary
    assert resolved.summary.endswith(
        "this window's value is above the threshold but not significant (p=0.31): no material "
        "change in 4 descriptors over 222 calls"
    ), resolved.summary


def test_alerts_span_the_incident_and_share_a_stable_dedup_key() -> None:
    firing, resolved = run(["ok", "alert", "alert", "alert", "ok", "ok"])
    assert firing.dedup_key == resolved.dedup_key == KEY
    assert (firing.window_start, firing.window_end) == (T0 + WINDOW, T0 + 2 * WINDOW)
    assert (resolved.window_start, resolved.window_end) == (T0 + WINDOW, T0 + 6 * WINDOW)


def test_fire_after_two_windows_ignores_a_single_blip() -> None:
    config = AlertingConfig(fire_after_alert_windows=2)
    alerts = run(["alert", "ok", "alert", "alert", "ok", "ok"], config)
    assert [(a.status, window_of(a)) for a in alerts] == [("firing", 3), ("resolved", 5)]
    assert alerts[0].window_start == T0 + 2 * WINDOW  # the incident began with the first alert


def test_severity_is_the_max_seen_and_an_escalation_is_announced_once() -> None:
    tracker = AlertTracker(AlertingConfig())
    seq: list[tuple[Verdict, Severity]] = [
        ("alert", "warning"),
        ("alert", "critical"),
        ("alert", "warning"),
        ("alert", "critical"),
        ("ok", "warning"),
        ("ok", "warning"),
    ]
    reason = "block rate above its baseline's bound. Top reasons: SAFETY (55)."
    alerts = [
        a
        for i, (v, s) in enumerate(seq)
        for a in tracker.observe(det(i, v, severity=s).model_copy(update={"reason": reason}))
    ]
    assert [(a.status, a.severity) for a in alerts] == [
        ("firing", "warning"),
        ("firing", "critical"),
        ("resolved", "critical"),
    ]
    assert "escalated from warning" in alerts[1].summary
    assert "SAFETY (55); escalated from warning" in alerts[1].summary  # one sentence, no ".;"
    assert len({a.dedup_key for a in alerts}) == 1


def test_without_escalation_notices_an_incident_pages_exactly_once() -> None:
    tracker = AlertTracker(AlertingConfig(notify_on_escalation=False))
    sevs: list[Severity] = ["info", "warning", "critical"]
    alerts = [a for i, s in enumerate(sevs) for a in tracker.observe(det(i, "alert", severity=s))]
    alerts += tracker.observe(det(3, "ok")) + tracker.observe(det(4, "ok"))
    assert [(a.status, a.severity) for a in alerts] == [
        ("firing", "info"),
        ("resolved", "critical"),
    ]


def test_a_recurrence_inside_the_cooldown_pages_only_if_it_outlasts_it() -> None:
    config = AlertingConfig(cooldown=timedelta(minutes=30))
    tracker = AlertTracker(config)
    #   window: 0 alert → fire; 1, 2 ok → resolve at end of window 2 (00:15)
    #   3 alert, 4, 5 ok: a short recurrence inside the cooldown → silent
    #   6.. alert until 00:45 (resolve + 30 min) → one page, "held back"
    verdicts: list[Verdict] = ["alert", "ok", "ok", "alert", "ok", "ok", "alert", "alert"]
    verdicts += ["alert", "alert"]
    alerts = [a for i, v in enumerate(verdicts) for a in tracker.observe(det(i, v))]
    assert [(a.status, window_of(a)) for a in alerts] == [
        ("firing", 0),
        ("resolved", 2),
        ("firing", 8),
    ]
    assert alerts[2].window_end == T0 + 45 * timedelta(minutes=1)
    assert "held back by cooldown" in alerts[2].summary
    assert alerts[2].window_start == T0 + 6 * WINDOW


def test_models_and_conditions_are_separate_incidents() -> None:
    tracker = AlertTracker(AlertingConfig())
    alerts = tracker.observe(det(0, "alert", model="a")) + tracker.observe(
        det(0, "alert", model="b")
    )
    assert len({a.dedup_key for a in alerts}) == 2
    # once closed, another condition of the same detector is an incident of its own
    for i in (1, 2):
        alerts += tracker.observe(det(i, "ok", model="a"))
    for i in (3, 4):
        alerts += tracker.observe(det(i, "alert", model="a", condition="prompt_block_rate"))
    statuses = Counter((a.dedup_key, a.status) for a in alerts)
    assert statuses[(dedup_key("a", "safety", "block_rate_above_baseline"), "resolved")] == 1
    assert statuses[(dedup_key("a", "safety", "prompt_block_rate"), "firing")] == 1
    assert statuses[(dedup_key("b", "safety", "block_rate_above_baseline"), "resolved")] == 0


def test_conditions_taking_turns_in_one_incident_page_once() -> None:
    """Found in review: a block rate near the ceiling alerted 'above ceiling' in some windows
    and 'above baseline' in others; each counted the other's windows as ok and resolved,
    and one 30-minute incident paged ten times with nine resolves between."""
    tracker = AlertTracker(AlertingConfig())
    alerts: list[Alert] = []
    for i in range(30):
        ceiling = i % 3 != 1
        alerts += tracker.observe(
            det(
                i,
                "alert",
                condition="block_rate_above_ceiling" if ceiling else "block_rate_above_baseline",
                severity="critical" if ceiling else "warning",
            )
        )
    for i in range(30, 33):
        alerts += tracker.observe(det(i, "ok"))
    assert [(a.status, window_of(a)) for a in alerts] == [("firing", 0), ("resolved", 31)]
    assert alerts[0].condition == alerts[1].condition == "block_rate_above_ceiling"
    # an incident opened as a warning rises to critical on the other condition: one update
    tracker = AlertTracker(AlertingConfig())
    alerts = tracker.observe(det(0, "alert")) + tracker.observe(
        det(1, "alert", condition="block_rate_above_ceiling", severity="critical")
    )
    assert [(a.status, a.severity, a.dedup_key) for a in alerts] == [
        ("firing", "warning", KEY),
        ("firing", "critical", KEY),
    ]
    assert "escalated from warning" in alerts[1].summary


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("resolve_after_ok_windows", 4),
        ("resolve_after_ok_windows", 0),
        ("fire_after_alert_windows", 3),
        ("cooldown", -60),
    ],
)
def test_settings_that_would_break_the_alert_promises_are_rejected(field: str, value: int) -> None:
    with pytest.raises(ValidationError, match=field):
        AlertingConfig.model_validate({field: value})


@pytest.mark.parametrize("field", ["sustained_after", "accept_after"])
def test_incident_horizons_must_be_positive_or_null(field: str) -> None:
    with pytest.raises(ValidationError, match="positive duration"):
        AlertingConfig.model_validate({field: 0})
    assert getattr(AlertingConfig.model_validate({field: None}), field) is None
    assert getattr(AlertingConfig.model_validate({field: "PT6H"}), field) == timedelta(hours=6)


def test_a_sustained_incident_is_announced_once_under_its_own_key() -> None:
    config = AlertingConfig(sustained_after=timedelta(minutes=30))
    alerts = run(["alert"] * 12, config)
    assert [a.status for a in alerts] == ["firing", "firing"]
    assert window_of(alerts[1]) == 5  # six 5-minute windows = 30 min after the first
    assert "sustained level shift since 2024-05-01 00:00Z (30 min)" in alerts[1].summary
    assert {a.dedup_key for a in alerts} == {KEY}


def test_restart_resolves_the_stale_incident_and_the_new_rise_pages_once() -> None:
    """The evaluator's call when an incident had returned and a fresh rise follows: the stale
    page resolves saying why, the rise pages as a new incident (same key, new start), and the
    restart itself moves no watermark, so the rise's own window is still observed."""
    tracker = AlertTracker(AlertingConfig())
    alerts = [a for i in range(4) for a in tracker.observe(det(i, "alert"))]
    assert [a.status for a in alerts] == ["firing"]
    rise = det(4, "alert")
    closed = tracker.restart(rise, "the evidence had returned before a new rise")
    assert [a.status for a in closed] == ["resolved"]
    assert "before a new rise" in closed[0].summary and closed[0].value is None
    assert tracker.open_incident("gemini-1.5-flash", "safety") is None
    (page,) = tracker.observe(rise)
    assert page.status == "firing" and page.window_start == rise.window_start
    assert [a.status for i in range(5, 8) for a in tracker.observe(det(i, "alert"))] == []


def test_a_recurrence_on_the_other_condition_of_an_incident_keeps_its_cooldown() -> None:
    """Found in review: the cooldown was kept per condition, and the windows of the second
    condition went to the first incident: a recurrence on it paged inside the cooldown."""
    tracker = AlertTracker(AlertingConfig(cooldown=timedelta(hours=2)))
    ceiling = {"condition": "block_rate_above_ceiling", "severity": "critical"}
    alerts = tracker.observe(det(0, "alert"))  # the incident opens on the baseline condition
    alerts += tracker.observe(det(1, "alert", **ceiling))  # type: ignore[arg-type]
    for i in (2, 3):
        alerts += tracker.observe(det(i, "ok"))
    assert [a.status for a in alerts][-1] == "resolved"
    recurrence = tracker.observe(det(6, "alert", **ceiling))  # type: ignore[arg-type]
    assert recurrence == []  # 15 minutes later, inside the 2-hour cooldown: held back
    assert tracker.open_incidents()[0].phase == "suppressed"
