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

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

from alerts.notifiers import redact_secrets
from schemas.detection import Alert

HEADER_MAX = 150
FIELD_MAX = 2000
SECTION_TEXT_MAX = 3000
BUTTON_TEXT_MAX = 75
MAX_BLOCKS = 50
PAGERDUTY_SUMMARY_MAX = 1024


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _num(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4g}"


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
    """One Block Kit message for a group of alerts (firing and resolved say which)."""
    firing = [a for a in alerts if a.status == "firing"]
    status = "FIRING" if firing else "RESOLVED"
    first = alerts[0]
    count = f":{len(alerts)}" if len(alerts) > 1 else ""
    again = " (still firing)" if repeat and firing else ""
    title = f"[{status}{count}] {first.model} {first.detector}{again}"
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": _clip(title, HEADER_MAX)}}
    ]
    buttons: dict[str, str] = {}
    for alert in alerts:
        if len(blocks) >= MAX_BLOCKS - 3:
            break
        word = "Firing" if alert.status == "firing" else "Resolved"
        fields = [
            f"*Status*\n{word} ({alert.severity})",
            f"*Value*\n{_num(alert.value)}",
            f"*Threshold*\n{_num(alert.threshold)}",
            f"*Baseline*\n{_num(alert.baseline)}",
            f"*Sample size*\n{alert.sample_size:,}",
            f"*Window*\n{_iso(alert.window_start)} – {_iso(alert.window_end)}",
            *(f"*{label}*\n{text}" for label, text in explaining(alert)),
        ]
        blocks.append(
            {
                "type": "section",
                "text": {
                    "type": "mrkdwn",
                    "text": _clip(redact_secrets(alert.summary), SECTION_TEXT_MAX),
                },
                "fields": [{"type": "mrkdwn", "text": _clip(f, FIELD_MAX)} for f in fields],
            }
        )
        for name, url in alert.links.items():
            buttons.setdefault(name, url)
    blocks.append(
        {
            "type": "context",
            "elements": [
                {
                    "type": "mrkdwn",
                    "text": _clip(f"Lookout · {first.dedup_key} · {reason_of(first)}", FIELD_MAX),
                }
            ],
        }
    )
    if buttons:
        blocks.append(
            {
                "type": "actions",
                "elements": [
                    {
                        "type": "button",
                        "text": {"type": "plain_text", "text": _clip(name, BUTTON_TEXT_MAX)},
                        "url": url,
                        "action_id": f"lookout-link-{i}",
                    }
                    for i, (name, url) in enumerate(list(buttons.items())[:25])
                ],
            }
        )
    text = title + ": " + _without_prefix(first, status)
    return {"text": _clip(redact_secrets(text), 3000), "blocks": blocks}


def _without_prefix(alert: Alert, title_status: str) -> str:
    """The summary after its own `[STATUS] model detector: ` when the title already says that;
    a group titled FIRING whose first alert resolved keeps its `[RESOLVED] …` (a review found
    a resolve reading as a firing alert in the push preview)."""
    prefix = f"[{title_status}] {alert.model} {alert.detector}: "
    return alert.summary.removeprefix(prefix)


# -- PagerDuty ---------------------------------------------------------------------------------


def pagerduty_event(
    alert: Alert, *, routing_key: str, source: str | None, group: str
) -> dict[str, Any]:
    """One Events API v2 event: `trigger` for a firing alert, `resolve` for a resolved one."""
    if alert.status == "resolved":
        return {"routing_key": routing_key, "event_action": "resolve", "dedup_key": alert.dedup_key}
    event: dict[str, Any] = {
        "routing_key": routing_key,
        "event_action": "trigger",
        "dedup_key": alert.dedup_key,
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
                **{label.lower().replace(" ", "_"): text for label, text in explaining(alert)},
                **{f"link_{name}": url for name, url in alert.links.items()},
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
