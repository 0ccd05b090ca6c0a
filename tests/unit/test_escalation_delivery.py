"""What receivers get when an incident escalates, when a receiver asks to wait long, and when
its outbox is full: every page that was sent is resolved where it was sent, and nothing
arrives as a resolve alone."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from prometheus_client import CollectorRegistry

from alerts.receivers.dispatcher import Dispatcher
from alerts.receivers.outbox import Outbox, overflow
from alerts.receivers.senders import Notification, RateLimited
from alerts.routing import Router
from schemas.alert_config import AlertingConfig
from schemas.detection import Alert, Severity
from tests.alert_cases import T0, make_alert


class RecordingSender:
    """A receiver that keeps what it was sent (or refuses with `refuse`)."""

    def __init__(self, name: str, kind: str, *, per_alert: bool = False) -> None:
        self.name, self.kind, self.per_alert = name, kind, per_alert
        self.sent: list[Notification] = []
        self.refuse: Exception | None = None

    def send(self, notification: Notification) -> None:
        if self.refuse is not None:
            raise self.refuse
        self.sent.append(notification)

    def close(self) -> None:
        return None

    def changes(self) -> list[tuple[str, str, str, bool]]:
        return [(a.dedup_key, a.status, a.severity, n.repeat) for n in self.sent for a in n.alerts]


def alert(status: str, severity: Severity, minute: int, key: str = "lookout:m:safety:c") -> Alert:
    return make_alert(
        status,
        severity=severity,
        dedup_key=key,
        start=T0 + timedelta(minutes=minute),
        summary=f"{key} {status} {severity}",
    )


class Harness:
    """Alerts through the router into a dispatcher, on a clock the test moves."""

    def __init__(self, config: dict[str, Any], senders: Sequence[RecordingSender]) -> None:
        self.config = AlertingConfig.model_validate(config)
        self.router = Router(self.config)
        self.now = 1_000.0
        by_name = {c.name: c for c in self.config.receivers}
        self.dispatcher = Dispatcher(
            self.router,
            [(s, by_name[s.name]) for s in senders],
            Outbox(":memory:"),
            registry=CollectorRegistry(),
            clock=lambda: self.now,
        )
        self.notifiers = self.dispatcher.notifiers()

    def raise_(self, *alerts: Alert) -> None:
        for a in alerts:
            self.router.dispatch([a], self.notifiers)
            self.advance(600)

    def advance(self, seconds: float) -> None:
        self.now += seconds
        self.dispatcher.pump()
        for name in self.dispatcher.names():
            while self.dispatcher.deliver_next(name) is not None:
                pass


ESCALATING_ROUTES = [{"receivers": ["pd"], "severity": "critical"}, {"receivers": ["slack"]}]
RECEIVERS = [
    {"name": "pd", "kind": "pagerduty", "routing_key": {"env": "PD_KEY"}},
    {"name": "slack", "kind": "slack", "webhook_url": {"env": "SLACK_URL"}},
]


def escalating_harness() -> tuple[Harness, RecordingSender, RecordingSender]:
    """PagerDuty takes critical alerts, Slack every other one (first match wins)."""
    pd = RecordingSender("pd", "pagerduty", per_alert=True)
    slack = RecordingSender("slack", "slack")
    return Harness({"receivers": RECEIVERS, "routes": ESCALATING_ROUTES}, [pd, slack]), pd, slack


def test_a_resolve_reaches_every_receiver_the_escalating_incident_paged() -> None:
    h, pd, slack = escalating_harness()
    h.raise_(alert("firing", "warning", 0), alert("firing", "critical", 5))
    h.raise_(alert("resolved", "critical", 10))
    for hours in (5, 10, 50):  # well past every repeat interval
        h.advance(hours * 3600)
    assert slack.changes() == [
        ("lookout:m:safety:c", "firing", "warning", False),
        ("lookout:m:safety:c", "resolved", "critical", False),
    ]
    assert [c[:2] for c in pd.changes()] == [
        ("lookout:m:safety:c", "firing"),
        ("lookout:m:safety:c", "resolved"),
    ]


def test_a_receiver_that_never_got_the_page_gets_no_resolve() -> None:
    h, pd, slack = escalating_harness()
    h.raise_(alert("firing", "warning", 0), alert("resolved", "warning", 5))
    assert pd.sent == []
    assert [c[1] for c in slack.changes()] == ["firing", "resolved"]


def test_an_escalation_between_severity_groups_stops_the_old_groups_repeats() -> None:
    slack = RecordingSender("slack", "slack")
    h = Harness(
        {
            "receivers": RECEIVERS[1:],
            "routes": [{"receivers": ["slack"]}],
            "group_by": ["model", "severity"],
        },
        [slack],
    )
    h.raise_(alert("firing", "warning", 0), alert("firing", "critical", 5))
    h.raise_(alert("resolved", "critical", 10))
    sent = len(slack.sent)
    for hours in (5, 10, 50):
        h.advance(hours * 3600)
    assert len(slack.sent) == sent, slack.changes()[sent:]
    assert slack.changes()[-1][1] == "resolved"


def test_alertmanager_resolves_the_label_set_an_escalation_replaced() -> None:
    am = RecordingSender("am", "alertmanager")
    h = Harness(
        {
            "receivers": [{"name": "am", "kind": "alertmanager", "url": "http://127.0.0.1:9/"}],
            "routes": [{"receivers": ["am"]}],
        },
        [am],
    )
    h.raise_(alert("firing", "warning", 0), alert("firing", "critical", 5))
    h.raise_(alert("resolved", "critical", 10))
    changes = [(status, severity) for _, status, severity, repeat in am.changes() if not repeat]
    # every label set that was posted firing is posted resolved
    assert changes == [
        ("firing", "warning"),
        ("resolved", "warning"),
        ("firing", "critical"),
        ("resolved", "critical"),
    ]


def test_a_long_retry_after_waits_at_most_backoff_max_and_keeps_the_notification() -> None:
    slack = RecordingSender("slack", "slack")
    h = Harness({"receivers": RECEIVERS[1:], "routes": [{"receivers": ["slack"]}]}, [slack])
    slack.refuse = RateLimited("slack", "429 Too Many Requests", retry_after=7200.0)
    h.router.dispatch([alert("firing", "critical", 0)], h.notifiers)
    h.now += 600
    h.dispatcher.pump()
    wait = h.dispatcher.deliver_next("slack")
    config = h.config.receivers[0]
    assert wait is not None and 0 < wait <= config.backoff_max.total_seconds()
    assert h.dispatcher.pending("slack") == 1
    slack.refuse = None
    h.advance(config.backoff_max.total_seconds())
    assert [c[1] for c in slack.changes()] == ["firing"]


def test_a_full_outbox_drops_repeats_first_and_never_keeps_a_resolve_alone() -> None:
    pd = RecordingSender("pd", "pagerduty", per_alert=True)
    receivers = [{**RECEIVERS[0], "outbox_max": 2}]
    h = Harness({"receivers": receivers, "routes": [{"receivers": ["pd"]}]}, [pd])
    pd.refuse = RateLimited("pd", "down", retry_after=1.0)
    for a in (alert("firing", "critical", 0, "A"), alert("firing", "critical", 0, "B")):
        h.router.dispatch([a], h.notifiers)
        h.now += 60
        h.dispatcher.pump()
    h.router.dispatch([alert("resolved", "critical", 5, "A")], h.notifiers)
    h.now += 60
    h.dispatcher.pump()
    pd.refuse = None
    h.advance(60)
    assert [c[:2] for c in pd.changes()] == [("B", "firing")]


def test_overflow_picks_repeats_before_pages() -> None:
    def note(key: str, status: str, *, repeat: bool = False) -> Notification:
        return Notification("pd", "g", (alert(status, "critical", 0, key),), repeat)

    queued = [
        (1, note("A", "firing")),
        (2, note("A", "firing", repeat=True)),
        (3, note("B", "firing")),
        (4, note("A", "resolved")),
        (5, note("B", "firing", repeat=True)),
    ]
    assert overflow(queued, 2) == [2, 5]
    # a third goes: the oldest page, and with it the resolve that would be left alone
    assert overflow(queued, 3) == [1, 2, 4, 5]
