"""Receiver payloads stay within what Slack and PagerDuty accept, and user text stays text.

Each test is a message a receiver would have rejected (HTTP 400: the page or the whole
message lost) or a message that did something its author did not write (a `<!channel>` in a
model name pinging a channel, alerts vanishing from a large group)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import ValidationError

from alerts.receivers.payloads import (
    MAX_BLOCKS,
    alertmanager_alerts,
    pagerduty_event,
    render_links,
    slack_message,
)
from alerts.state import dedup_key
from schemas.alert_config import LABEL_NAME, AlertmanagerReceiver
from schemas.detection import Alert
from tests.alert_cases import make_alert

T0 = datetime(2026, 1, 5, 6, 0, tzinfo=UTC)
CONDITION = "block_rate_above_baseline"
PING = "<!channel>"
LINK = "<https://evil.example|click>"


def alert(
    status: str = "firing", model: str = "m", summary: str | None = None, **extra: Any
) -> Alert:
    return make_alert(
        status,
        model=model,
        condition=CONDITION,
        dedup_key=dedup_key(model, "safety", CONDITION),
        summary=summary,
        **extra,
    )


def event_key(a: Alert) -> str:
    key = pagerduty_event(a, routing_key="k", source=None, group="lookout")["dedup_key"]
    assert isinstance(key, str)
    return key


# -- PagerDuty dedup_key -----------------------------------------------------------------------


def test_pagerduty_dedup_key_of_a_long_model_fits_and_the_resolve_closes_its_trigger() -> None:
    """A 256-char model name made a 297-char key: PagerDuty answers 400 and the page is lost."""
    model = "m" * 256
    fired, resolved = event_key(alert(model=model)), event_key(alert("resolved", model=model))
    assert len(fired) <= 255
    assert fired == resolved
    assert fired == event_key(alert(model=model))  # deterministic across runs and replicas
    other = event_key(alert(model="m" * 255 + "n"))  # same prefix, another incident
    assert len(other) <= 255 and other != fired
    trigger = pagerduty_event(alert(model=model), routing_key="k", source=None, group="g")
    assert trigger["payload"]["custom_details"]["dedup_key"] == dedup_key(
        model, "safety", CONDITION
    )


def test_pagerduty_dedup_key_of_255_chars_or_fewer_is_sent_unchanged() -> None:
    """Incidents opened before the fix were keyed by the plain key; their resolves must match."""
    for model in ("gemini-1.5-flash", "m" * (255 - len(dedup_key("", "safety", CONDITION)))):
        a = alert(model=model)
        assert len(a.dedup_key) <= 255
        assert event_key(a) == a.dedup_key == event_key(alert("resolved", model=model))


# -- Slack escaping ----------------------------------------------------------------------------


def test_slack_control_sequences_in_user_text_arrive_as_text() -> None:
    """`<!channel>` in a model name pinged the channel; `<url|text>` made a disguised link."""
    a = alert(
        model=PING,
        summary=f"[FIRING] {PING} safety: x & y {LINK}",
        reason=f"reason {PING}",
        details={"top_reasons": {PING: 3}},
    )
    message = slack_message([a])
    escaped = "&lt;!channel&gt;"
    mrkdwn = [message["text"]]
    for block in message["blocks"][1:]:
        mrkdwn += [block.get("text", {}).get("text", "")]
        mrkdwn += [f["text"] for f in block.get("fields", [])]
        mrkdwn += [e["text"] for e in block.get("elements", []) if e.get("type") == "mrkdwn"]
    assert PING not in json.dumps(mrkdwn)
    assert "<https://" not in json.dumps(mrkdwn)
    assert escaped in message["text"]
    section = message["blocks"][1]
    assert section["text"]["text"].startswith(f"[FIRING] {escaped} safety: x &amp; y &lt;https")
    assert any(escaped in f["text"] for f in section["fields"])  # the detail value
    context = next(b for b in message["blocks"] if b["type"] == "context")
    assert context["elements"][0]["text"].count(escaped) == 2  # the dedup key and the reason
    assert message["blocks"][0]["text"]["text"] == f"[FIRING] {PING} safety"  # plain_text
    assert section["fields"][0]["text"].startswith("*Status*\n")  # Lookout's own markup kept


def test_slack_escaped_text_is_clipped_within_limits_and_not_mid_entity() -> None:
    """Escaping lengthens text (`<` is four characters): the limits must hold afterwards."""
    message = slack_message([alert(summary="<" * 2999)])
    text = message["blocks"][1]["text"]["text"]
    assert len(text) <= 3000 and len(message["text"]) <= 3000
    assert text.endswith("&lt;…")


# -- Slack buttons -----------------------------------------------------------------------------


def test_slack_button_with_a_url_over_3000_chars_is_left_out_not_cut() -> None:
    """Slack rejects the whole message for one button URL over 3000 characters."""
    model = "é" * 256
    template = "https://lookout.example/models/{model}/{detector}?at={window_end}&k={dedup_key}"
    long = render_links(alert(model=model), {"console": template})
    assert len(long["console"]) > 3000
    a = alert(model=model, links={**long, "runbook": "https://r.example/1"})
    message = slack_message([a])
    buttons = [e for b in message["blocks"] if b["type"] == "actions" for e in b["elements"]]
    assert [(b["text"]["text"], b["url"]) for b in buttons] == [("runbook", "https://r.example/1")]
    only_long = slack_message([alert(model=model, links=long)])
    assert [b["type"] for b in only_long["blocks"]] == ["header", "section", "context"]


# -- Slack large groups ------------------------------------------------------------------------


def test_slack_group_too_large_for_one_message_says_how_many_alerts_are_left_out() -> None:
    """60 alerts showed 46 sections under `[FIRING:60]` and nothing about the other 14."""
    alerts = [alert(model=f"m{i}") for i in range(50)]
    alerts += [alert("resolved", model=f"r{i}") for i in range(10)]
    links = {"console": "https://c.example/1"}
    alerts[0] = alerts[0].model_copy(update={"links": links})
    message = slack_message(alerts)
    blocks = message["blocks"]
    assert len(blocks) <= MAX_BLOCKS
    sections = sum(1 for b in blocks if b["type"] == "section")
    notes = [
        e["text"]
        for b in blocks
        if b["type"] == "context"
        for e in b["elements"]
        if "more" in e["text"]
    ]
    assert len(notes) == 1, notes
    left_out = 60 - sections
    assert left_out > 0
    assert f"{left_out} more alerts" in notes[0]
    assert f"firing: {50 - sections}, resolved: 10" in notes[0]
    assert blocks[-1]["type"] == "actions"  # the buttons are kept


def test_slack_group_that_fits_has_no_more_note() -> None:
    """A group shown whole must not claim anything was left out."""
    message = slack_message([alert(model=f"m{i}") for i in range(3)])
    assert sum(1 for b in message["blocks"] if b["type"] == "section") == 3
    assert not any("more alert" in json.dumps(b) for b in message["blocks"])


def test_alertmanager_annotation_names_from_link_names_are_valid() -> None:
    """A link configured as "run book" (a fine Slack button text) made the annotation
    `link_run book`: Alertmanager refuses the post with a 400, which is not retried."""
    links = {"run book": "https://wiki/rb", "Grafana (prod)": "https://g", "2nd": "https://x"}
    (posted,) = alertmanager_alerts(
        [alert(links=links)], now=T0, ends_after=timedelta(minutes=5), labels={}
    )
    names = [*posted["labels"], *posted["annotations"]]
    assert all(LABEL_NAME.fullmatch(n) for n in names), names
    assert sorted(v for k, v in posted["annotations"].items() if k.startswith(("link", "_"))) == (
        sorted(links.values())
    )


def test_alertmanager_receiver_refuses_invalid_label_names_at_load() -> None:
    for bad in ("team-name", "2tier", "__reserved", "with space"):
        with pytest.raises(ValidationError, match="not valid Alertmanager label names"):
            AlertmanagerReceiver.model_validate(
                {
                    "name": "am",
                    "kind": "alertmanager",
                    "url": "http://am:9093",
                    "labels": {bad: "x"},
                }
            )
    ok = {"team": "ml", "_tier": "1", "env2": "prod"}
    received = AlertmanagerReceiver.model_validate(
        {"name": "am", "kind": "alertmanager", "url": "http://am:9093", "labels": ok}
    )
    assert received.labels == ok


@pytest.mark.parametrize(
    ("details", "shown"),
    [
        ({"unit": "ratio"}, ["6.0%", "3.0%", "2.0%"]),
        ({"unit": "ms"}, ["0.06 ms", "0.03 ms", "0.02 ms"]),
        ({"unit": "tokens/call"}, ["0.06 tokens/call", "0.03 tokens/call", "0.02 tokens/call"]),
        ({}, ["0.06", "0.03", "0.02"]),
    ],
)
def test_slack_fields_print_numbers_as_the_headline_does(
    details: dict[str, Any], shown: list[str]
) -> None:
    """The headline said `6.0% (baseline 2.0%, threshold 3.0%)` and the fields `Value 0.06`,
    `Threshold 0.03` (an SRE's trial; the README says rates print as percentages)."""
    assert slack_fields(alert(details=details)) == shown


def test_slack_fields_keep_a_rate_under_a_tenth_of_a_percent() -> None:
    small = alert(details={"unit": "ratio"}).model_copy(
        update={"value": 0.0004, "threshold": 0.0003, "baseline": 0.0002}
    )
    assert slack_fields(small) == ["0.04%", "0.03%", "0.02%"]


def slack_fields(a: Alert) -> list[str]:
    message = slack_message([a])
    fields = {
        f["text"].split("\n")[0].strip("*"): f["text"].split("\n", 1)[1]
        for block in message["blocks"]
        for f in block.get("fields", [])
    }
    return [fields["Value"], fields["Threshold"], fields["Baseline"]]
