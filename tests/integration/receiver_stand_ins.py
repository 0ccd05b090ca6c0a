"""Loopback HTTP stand-ins for Slack, PagerDuty and a signed webhook that check every request
against the published formats, so a test fails on a payload the real service would reject.

- PagerDuty Events API v2 (`POST /v2/enqueue`): top-level keys, `event_action` in
  trigger|resolve|acknowledge, `dedup_key` ≤ 255 chars, and for a trigger `payload.summary`
  (≤ 1024), `source`, `severity` in critical|error|warning|info, optional `timestamp`
  (ISO 8601), `component`, `group`, `class`, `custom_details` (object). Answers 202 as the
  service does.
- Slack incoming webhook: Block Kit `blocks` (≤ 50) of known types with their documented
  limits (header plain_text ≤ 150; section text ≤ 3000, ≤ 10 fields of ≤ 2000; context ≤ 10
  elements; actions ≤ 25 elements, button text ≤ 75, url ≤ 3000). Answers 200 `ok`.
- Webhook: `X-Lookout-Signature: sha256=<hex HMAC-SHA256 of the body>` with the shared secret.

Each stand-in can be scripted to answer with given statuses first (500, 429 + Retry-After).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

PD_TOP = {
    "routing_key",
    "event_action",
    "dedup_key",
    "payload",
    "images",
    "links",
    "client",
    "client_url",
}
PD_PAYLOAD = {
    "summary",
    "source",
    "severity",
    "timestamp",
    "component",
    "group",
    "class",
    "custom_details",
}
PD_SEVERITIES = {"critical", "error", "warning", "info"}
SLACK_BLOCKS = {"header", "section", "context", "actions", "divider", "image", "rich_text"}


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    raw: bytes
    body: Any
    at: float
    status: int


@dataclass
class StandIn:
    """A loopback HTTP server; `respond` scripts the first answers, `problems` collects every
    format violation seen."""

    validate: Callable[[Received], list[str]]
    ok_status: int = 200
    ok_body: bytes = b"ok"
    respond: list[tuple[int, dict[str, str]]] = field(default_factory=list)
    requests: list[Received] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    _server: ThreadingHTTPServer | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        assert self._server is not None
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def accepted(self) -> list[Received]:
        with self._lock:
            return [r for r in self.requests if 200 <= r.status < 300]

    def start(self) -> StandIn:
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                raw = self.rfile.read(length)
                try:
                    body = json.loads(raw)
                except ValueError:
                    body = None
                with stand_in._lock:
                    status, headers = (
                        stand_in.respond.pop(0) if stand_in.respond else (stand_in.ok_status, {})
                    )
                    got = Received(
                        self.path, dict(self.headers), raw, body, time.monotonic(), status
                    )
                    stand_in.requests.append(got)
                    if body is None:
                        stand_in.problems.append(f"{self.path}: body is not JSON")
                    else:
                        stand_in.problems.extend(stand_in.validate(got))
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                payload = stand_in.ok_body if 200 <= status < 300 else b"error"
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, format: str, *args: Any) -> None:
                return

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()


def wait_for(condition: Callable[[], bool], timeout: float = 15.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout}s waiting for {what or condition}")


# -- validators --------------------------------------------------------------------------------


def _is_iso8601(text: Any) -> bool:
    if not isinstance(text, str):
        return False
    try:
        datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return False
    return True


def pagerduty_problems(got: Received) -> list[str]:
    body, out = got.body, []
    if got.path != "/v2/enqueue":
        out.append(f"path {got.path} is not /v2/enqueue")
    if not isinstance(body, dict):
        return [*out, "event is not an object"]
    out += [f"unknown top-level key {k}" for k in set(body) - PD_TOP]
    if not isinstance(body.get("routing_key"), str) or not body["routing_key"]:
        out.append("routing_key missing")
    action = body.get("event_action")
    if action not in {"trigger", "resolve", "acknowledge"}:
        out.append(f"event_action {action!r}")
    key = body.get("dedup_key")
    if action != "trigger" and not isinstance(key, str):
        out.append("resolve without dedup_key")
    if key is not None and (not isinstance(key, str) or len(key) > 255):
        out.append("dedup_key not a string of at most 255 chars")
    if action == "trigger":
        payload = body.get("payload")
        if not isinstance(payload, dict):
            return [*out, "trigger without payload"]
        out += [f"unknown payload key {k}" for k in set(payload) - PD_PAYLOAD]
        summary = payload.get("summary")
        if not isinstance(summary, str) or not 0 < len(summary) <= 1024:
            out.append("payload.summary missing or longer than 1024")
        if not isinstance(payload.get("source"), str) or not payload["source"]:
            out.append("payload.source missing")
        if payload.get("severity") not in PD_SEVERITIES:
            out.append(f"payload.severity {payload.get('severity')!r}")
        if "timestamp" in payload and not _is_iso8601(payload["timestamp"]):
            out.append("payload.timestamp not ISO 8601")
        for name in ("component", "group", "class"):
            if name in payload and not isinstance(payload[name], str):
                out.append(f"payload.{name} not a string")
        if "custom_details" in payload and not isinstance(payload["custom_details"], dict):
            out.append("payload.custom_details not an object")
        for link in body.get("links", []):
            if not isinstance(link, dict) or not isinstance(link.get("href"), str):
                out.append("links[] without href")
    return out


def _text(obj: Any, limit: int, kinds: set[str], where: str) -> list[str]:
    if not isinstance(obj, dict) or obj.get("type") not in kinds:
        return [f"{where}: not a text object of type {sorted(kinds)}"]
    text = obj.get("text")
    if not isinstance(text, str) or not 0 < len(text) <= limit:
        return [f"{where}: text empty or longer than {limit}"]
    return []


def slack_problems(got: Received) -> list[str]:
    body = got.body
    if not isinstance(body, dict) or not isinstance(body.get("blocks"), list):
        return ["no blocks"]
    blocks, out = body["blocks"], []
    if not 0 < len(blocks) <= 50:
        out.append(f"{len(blocks)} blocks (1..50 allowed)")
    if "text" in body and not isinstance(body["text"], str):
        out.append("text is not a string")
    for i, block in enumerate(blocks):
        kind = block.get("type") if isinstance(block, dict) else None
        where = f"blocks[{i}] ({kind})"
        if kind not in SLACK_BLOCKS:
            out.append(f"{where}: unknown block type")
        elif kind == "header":
            out += _text(block.get("text"), 150, {"plain_text"}, where)
        elif kind == "section":
            if "text" not in block and "fields" not in block:
                out.append(f"{where}: neither text nor fields")
            if "text" in block:
                out += _text(block["text"], 3000, {"mrkdwn", "plain_text"}, where)
            fields = block.get("fields", [])
            if len(fields) > 10:
                out.append(f"{where}: {len(fields)} fields (max 10)")
            for f in fields:
                out += _text(f, 2000, {"mrkdwn", "plain_text"}, where + ".fields")
        elif kind == "context":
            elements = block.get("elements", [])
            if not 0 < len(elements) <= 10:
                out.append(f"{where}: {len(elements)} elements (1..10)")
            for e in elements:
                out += _text(e, 3000, {"mrkdwn", "plain_text"}, where + ".elements")
        elif kind == "actions":
            elements = block.get("elements", [])
            if not 0 < len(elements) <= 25:
                out.append(f"{where}: {len(elements)} elements (1..25)")
            for e in elements:
                if e.get("type") != "button":
                    continue
                out += _text(e.get("text"), 75, {"plain_text"}, where + ".button")
                url = e.get("url")
                if url is not None and (not isinstance(url, str) or len(url) > 3000):
                    out.append(f"{where}: button url longer than 3000")
                if len(e.get("action_id", "")) > 255:
                    out.append(f"{where}: action_id longer than 255")
    return out


def webhook_problems(secret: bytes) -> Callable[[Received], list[str]]:
    def check(got: Received) -> list[str]:
        signature = got.headers.get("X-Lookout-Signature", "")
        expected = "sha256=" + hmac.new(secret, got.raw, hashlib.sha256).hexdigest()
        out = [] if hmac.compare_digest(signature, expected) else ["bad or missing signature"]
        if not isinstance(got.body, dict) or not isinstance(got.body.get("alerts"), list):
            out.append("no alerts list")
        return out

    return check


def pagerduty() -> StandIn:
    ok = b'{"status":"success","message":"Event processed"}'
    return StandIn(pagerduty_problems, ok_status=202, ok_body=ok).start()


def slack() -> StandIn:
    return StandIn(slack_problems).start()


def webhook(secret: bytes) -> StandIn:
    return StandIn(webhook_problems(secret)).start()
