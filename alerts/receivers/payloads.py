"""The wire formats, as pure functions of alerts (no I/O, no secrets held).

- Slack incoming webhook: a Block Kit message — `header`, a `section` per alert with `fields`
  for the evidence, a `context` line, an `actions` block of link buttons — and a plain `text`
  fallback for notifications. Slack's documented limits are respected (header 150 chars,
  10 fields per section, 25 elements per actions block, 50 blocks per message).
- PagerDuty Events API v2: `trigger` with `payload.summary/source/severity/component/group/
  class/custom_details`, `resolve` with the same `dedup_key`.
- Alertmanager API v2: a list of `{labels, annotations, startsAt, endsAt, generatorURL}`.
- Generic webhook: a JSON document with every alert's fields and its evidence.

Every alert carries its evidence (`evidence`): value vs threshold and baseline, sample size,
window, the one-line reason and the links built from configured URL templates.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

from alerts.notifiers import redact_secrets
from alerts.state import format_number
from schemas.detection import Alert

HEADER_MAX = 150
FIELD_MAX = 2000
SECTION_TEXT_MAX = 3000
BUTTON_TEXT_MAX = 75
MAX_BLOCKS = 50
MAX_BUTTONS = 25
#: Slack answers 400 (the whole message lost) for an `actions` button URL longer than this
BUTTON_URL_MAX = 3000
PAGERDUTY_SUMMARY_MAX = 1024
#: PagerDuty answers 400 (the page lost) for a longer `dedup_key`
PAGERDUTY_DEDUP_KEY_MAX = 255


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _escape(text: str) -> str:
    """Slack mrkdwn text as literal text: Slack's documented rule escapes exactly `&`, `<`, `>`,
    so a `<!channel>` or `<https://x|click>` in a model name or summary cannot ping a channel or
    disguise a link. `&` first, or the other two entities would be escaped twice."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _clip_escaped(text: str, limit: int) -> str:
    """`_clip` for already-escaped text (clipping after escaping keeps Slack's limits, as
    escaping lengthens text); a cut never leaves half an entity such as `&am` behind."""
    if len(text) <= limit:
        return text
    kept = text[: limit - 1]
    amp = kept.rfind("&")
    if amp != -1 and ";" not in kept[amp:]:  # every `&` in escaped text starts an entity
        kept = kept[:amp]
    return kept + "…"


def _mrkdwn(text: str, limit: int) -> str:
    """User-controlled text for a Slack mrkdwn field: escaped, then clipped to `limit`."""
    return _clip_escaped(_escape(text), limit)


def _num(value: float | None, alert: Alert | None = None) -> str:
    """A number as the summary line prints it (`5.0%` for a block rate, not `0.05023`)."""
    if value is None:
        return "n/a"
    unit = alert.details.get("unit") if alert is not None else None
    if isinstance(unit, str):
        return format_number(value, unit)
    return f"{value:.4g}"


def reason_of(alert: Alert) -> str:
    """The one-line reason: the alert's own, else what the summary says after the dash."""
    if alert.reason:
        return alert.reason
    _, _, tail = alert.summary.partition(" — ")
    return tail or alert.summary


def render_links(alert: Alert, templates: Mapping[str, str]) -> dict[str, str]:
    """`{name: url}` from URL templates; values are URL-quoted so a model name cannot break out."""
    values = {
        "model": alert.model,
        "detector": alert.detector,
        "condition": alert.condition,
        "dedup_key": alert.dedup_key,
        "window_start": _iso(alert.window_start),
        "window_end": _iso(alert.window_end),
        "status": alert.status,
    }
    quoted = {k: quote(v, safe="") for k, v in values.items()}
    return {name: template.format_map(quoted) for name, template in templates.items()}


#: detector details that explain an alert at a glance: (key in details, label)
EXPLAINING_DETAILS = (("top_reasons", "Top block reasons"), ("finish_reasons", "Finish reasons"))


def explaining(alert: Alert) -> list[tuple[str, str]]:
    """`[("Top block reasons", "SAFETY 41 · RECITATION 3")]` from the alert's details."""
    out = []
    for key, label in EXPLAINING_DETAILS:
        counts = alert.details.get(key)
        if isinstance(counts, dict) and counts:
            top = sorted(counts.items(), key=lambda kv: -float(kv[1]) if _is_number(kv[1]) else 0)
            out.append((label, " · ".join(f"{name} {value}" for name, value in top[:5])))
    return out


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def evidence(alert: Alert) -> dict[str, Any]:
    """What a responder needs to judge the alert without opening anything."""
    out: dict[str, Any] = {
        "status": alert.status,
        "severity": alert.severity,
        "model": alert.model,
        "detector": alert.detector,
        "condition": alert.condition,
        "value": alert.value,
        "threshold": alert.threshold,
        "baseline": alert.baseline,
        "sample_size": alert.sample_size,
        "window_start": _iso(alert.window_start),
        "window_end": _iso(alert.window_end),
        "reason": redact_secrets(reason_of(alert)),
        "summary": redact_secrets(alert.summary),
        "dedup_key": alert.dedup_key,
    }
    for name in ("model_version", "tenant"):
        if getattr(alert, name) is not None:
            out[name] = getattr(alert, name)
    if alert.details:
        out["details"] = alert.details
    if alert.links:
        out["links"] = dict(alert.links)
    return out


# -- Slack -------------------------------------------------------------------------------------


def slack_message(alerts: Sequence[Alert], *, repeat: bool = False) -> dict[str, Any]:
    """One Block Kit message for a group of alerts (firing and resolved say which).

    Every user-controlled piece of mrkdwn is escaped (the header and buttons are `plain_text`);
    a group too large for Slack's 50 blocks ends with a note of how many alerts it left out."""
    firing = [a for a in alerts if a.status == "firing"]
    status = "FIRING" if firing else "RESOLVED"
    first = alerts[0]
    count = f":{len(alerts)}" if len(alerts) > 1 else ""
    again = " (still firing)" if repeat and firing else ""
    title = f"[{status}{count}] {first.model} {first.detector}{again}"
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": _clip(title, HEADER_MAX)}}
    ]
    # room for the "more alerts" note, the context line and the buttons after the sections
    shown = list(alerts[: MAX_BLOCKS - len(blocks) - 3])
    blocks += [_slack_section(alert) for alert in shown]
    left_out = alerts[len(shown) :]
    if left_out:
        blocks.append(_context(_left_out_note(left_out)))
    context = f"Lookout · {_escape(first.dedup_key)} · {_escape(redact_secrets(reason_of(first)))}"
    blocks.append(_context(_clip_escaped(context, FIELD_MAX)))
    buttons = _slack_buttons(shown)
    if buttons:
        blocks.append({"type": "actions", "elements": buttons})
    text = title + ": " + _without_prefix(first, status)
    return {"text": _mrkdwn(redact_secrets(text), 3000), "blocks": blocks}


def _slack_section(alert: Alert) -> dict[str, Any]:
    """One alert: its summary and its evidence as fields; `*Label*` is Lookout's own markup,
    every value after it is escaped."""
    word = "Firing" if alert.status == "firing" else "Resolved"
    fields = [
        ("Status", f"{word} ({alert.severity})"),
        ("Value", _num(alert.value, alert)),
        ("Threshold", _num(alert.threshold, alert)),
        ("Baseline", _num(alert.baseline, alert)),
        ("Sample size", f"{alert.sample_size:,}"),
        ("Window", f"{_iso(alert.window_start)} – {_iso(alert.window_end)}"),
        *explaining(alert),
    ]
    return {
        "type": "section",
        "text": {
            "type": "mrkdwn",
            "text": _mrkdwn(redact_secrets(alert.summary), SECTION_TEXT_MAX),
        },
        "fields": [
            {"type": "mrkdwn", "text": _clip_escaped(f"*{label}*\n{_escape(value)}", FIELD_MAX)}
            for label, value in fields
        ],
    }


def _context(text: str) -> dict[str, Any]:
    """A context block of one mrkdwn line (`text` already escaped and clipped)."""
    return {"type": "context", "elements": [{"type": "mrkdwn", "text": text}]}


def _left_out_note(left_out: Sequence[Alert]) -> str:
    """Says what the message could not show, so no alert of the group vanishes silently."""
    firing = sum(1 for a in left_out if a.status == "firing")
    noun = "alert" if len(left_out) == 1 else "alerts"
    return (
        f"…and {len(left_out)} more {noun} in this group "
        f"(firing: {firing}, resolved: {len(left_out) - firing})"
    )


def _slack_buttons(alerts: Sequence[Alert]) -> list[dict[str, Any]]:
    """Link buttons, the first URL per name. A URL over Slack's 3000 characters is left out
    (Slack would reject the whole message; a cut URL would point somewhere wrong)."""
    urls: dict[str, str] = {}
    for alert in alerts:
        for name, url in alert.links.items():
            if len(url) <= BUTTON_URL_MAX:
                urls.setdefault(name, url)
    return [
        {
            "type": "button",
            "text": {"type": "plain_text", "text": _clip(name, BUTTON_TEXT_MAX)},
            "url": url,
            "action_id": f"lookout-link-{i}",
        }
        for i, (name, url) in enumerate(list(urls.items())[:MAX_BUTTONS])
    ]


def _without_prefix(alert: Alert, title_status: str) -> str:
    """The summary after its own `[STATUS] model detector: ` when the title already says that;
    a group titled FIRING whose first alert resolved keeps its `[RESOLVED] …` (a review found
    a resolve reading as a firing alert in the push preview)."""
    prefix = f"[{title_status}] {alert.model} {alert.detector}: "
    return alert.summary.removeprefix(prefix)


# -- PagerDuty ---------------------------------------------------------------------------------


def pagerduty_dedup_key(key: str) -> str:
    """The key PagerDuty accepts (at most 255 characters, else HTTP 400 and the page is lost).

    A key that fits is sent unchanged, so incidents opened before this rule still resolve; a
    longer one becomes its prefix plus the SHA-256 of the whole key: deterministic, so a
    resolve from another replica or after a restart closes the same incident."""
    if len(key) <= PAGERDUTY_DEDUP_KEY_MAX:
        return key
    digest = hashlib.sha256(key.encode()).hexdigest()
    return key[: PAGERDUTY_DEDUP_KEY_MAX - len(digest) - 1] + ":" + digest


def pagerduty_event(
    alert: Alert, *, routing_key: str, source: str | None, group: str
) -> dict[str, Any]:
    """One Events API v2 event: `trigger` for a firing alert, `resolve` for a resolved one.
    The full dedup key stays in `custom_details` when the event's own is shortened."""
    key = pagerduty_dedup_key(alert.dedup_key)
    if alert.status == "resolved":
        return {"routing_key": routing_key, "event_action": "resolve", "dedup_key": key}
    event: dict[str, Any] = {
        "routing_key": routing_key,
        "event_action": "trigger",
        "dedup_key": key,
        "payload": {
            "summary": _clip(redact_secrets(alert.summary), PAGERDUTY_SUMMARY_MAX),
            "source": source or alert.model,
            "severity": alert.severity,  # info|warning|critical are valid PagerDuty severities
            "timestamp": _iso(alert.window_end),
            "component": alert.detector,
            "group": group,
            "class": alert.condition,
            "custom_details": evidence(alert),
        },
        "client": "Lookout",
    }
    if alert.links:
        event["links"] = [{"href": url, "text": name} for name, url in alert.links.items()]
        event["client_url"] = next(iter(alert.links.values()))
    return event


# -- Alertmanager ------------------------------------------------------------------------------


def annotation_name(text: str) -> str:
    """`text` as a valid Alertmanager annotation name: a configured link named "run book"
    made `link_run book`, which Alertmanager refuses with a 400, losing every alert."""
    name = re.sub(r"[^a-zA-Z0-9_]", "_", text.lower())
    return name if name[:1].isalpha() or name[:1] == "_" else f"_{name}"


def alertmanager_alerts(
    alerts: Sequence[Alert], *, now: datetime, ends_after: timedelta, labels: Mapping[str, str]
) -> list[dict[str, Any]]:
    """API v2 postable alerts. Firing: `endsAt` a little ahead (re-posted before it passes);
    resolved: `endsAt` now (or the window end, if event time is behind the wall clock)."""
    out = []
    for alert in alerts:
        starts = alert.window_start
        if alert.status == "firing":
            ends = max(now, starts) + ends_after
        else:
            ends = min(now, alert.window_end)
            if ends <= starts:
                ends = alert.window_end
        item: dict[str, Any] = {
            "labels": {
                **labels,
                "alertname": f"Lookout_{alert.detector}_{alert.condition}",
                "model": alert.model,
                "detector": alert.detector,
                "condition": alert.condition,
                "severity": alert.severity,
                "dedup_key": alert.dedup_key,
            },
            "annotations": {
                "summary": redact_secrets(alert.summary),
                "reason": redact_secrets(reason_of(alert)),
                "value": _num(alert.value),
                "threshold": _num(alert.threshold),
                "baseline": _num(alert.baseline),
                "sample_size": str(alert.sample_size),
                "window": f"{_iso(alert.window_start)}/{_iso(alert.window_end)}",
                **{annotation_name(label): text for label, text in explaining(alert)},
                **{annotation_name(f"link_{name}"): url for name, url in alert.links.items()},
            },
            "startsAt": _iso(starts),
            "endsAt": _iso(ends),
        }
        for name in ("model_version", "tenant"):
            if getattr(alert, name) is not None:
                item["labels"][name] = getattr(alert, name)
        if alert.links:
            item["generatorURL"] = next(iter(alert.links.values()))
        out.append(item)
    return out


# -- generic webhook ---------------------------------------------------------------------------


def webhook_body(
    alerts: Sequence[Alert], *, receiver: str, group_key: str, repeat: bool
) -> dict[str, Any]:
    return {
        "version": "1",
        "receiver": receiver,
        "status": "firing" if any(a.status == "firing" for a in alerts) else "resolved",
        "group_key": group_key,
        "repeat": repeat,
        "alerts": [evidence(a) for a in alerts],
    }
