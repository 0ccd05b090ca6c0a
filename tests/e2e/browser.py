"""A headless Chromium driven over the DevTools protocol, for looking at the HTML report as a
person would: load the page, collect console errors and uncaught exceptions, evaluate
JavaScript in it.

Chromium is the Debian package (scripts/install-test-tools installs it); nothing is downloaded.
It starts with no network services of its own, a throw-away profile and port 0, and prints the
DevTools address it chose on stderr. The protocol is JSON over one websocket; each page is a
flattened session of the browser connection.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from websockets.sync.client import ClientConnection, connect

CHROMIUM_NAMES = ("chromium", "chromium-browser")
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--disable-default-apps",
    "--no-first-run",
    "--no-default-browser-check",
    "--mute-audio",
    "--remote-debugging-address=127.0.0.1",
    "--remote-debugging-port=0",
)
_LISTENING = re.compile(r"DevTools listening on (ws://\S+)")


def chromium_path() -> str | None:
    for name in CHROMIUM_NAMES:
        found = shutil.which(name)
        if found:
            return found
    return None


@dataclass
class PageReport:
    """What a loaded page said: console errors, uncaught exceptions, failed loads."""

    errors: list[str] = field(default_factory=list)


class DevTools:
    """One websocket to the browser; commands and events of flattened page sessions."""

    def __init__(self, ws: ClientConnection) -> None:
        self._ws = ws
        self._ids = itertools.count(1)
        self._events: list[dict[str, Any]] = []

    def send(
        self,
        method: str,
        params: dict[str, Any] | None = None,
        *,
        session: str | None = None,
        timeout: float = 30.0,
    ) -> dict[str, Any]:
        """Send a command and wait for its answer; events that arrive meanwhile are kept."""
        ident = next(self._ids)
        message: dict[str, Any] = {"id": ident, "method": method, "params": params or {}}
        if session is not None:
            message["sessionId"] = session
        self._ws.send(json.dumps(message))
        deadline = time.monotonic() + timeout
        while True:
            reply = json.loads(self._ws.recv(timeout=max(deadline - time.monotonic(), 0.01)))
            if reply.get("id") == ident:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return dict(reply.get("result", {}))
            self._events.append(reply)

    def wait_event(self, method: str, session: str, timeout: float) -> dict[str, Any]:
        """The first event `method` of `session`, kept or still to come."""
        deadline = time.monotonic() + timeout
        while True:
            for event in self._events:
                if event.get("method") == method and event.get("sessionId") == session:
                    return event
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no {method} within {timeout:.0f} s")
            self._events.append(json.loads(self._ws.recv(timeout=left)))

    def events(self, session: str) -> list[dict[str, Any]]:
        return [e for e in self._events if e.get("sessionId") == session]


@contextmanager
def chromium(timeout: float = 60.0) -> Iterator[DevTools]:
    """A running headless Chromium and a DevTools connection; stopped and cleaned up after."""
    binary = chromium_path()
    if binary is None:
        raise FileNotFoundError("chromium is not installed (run scripts/install-test-tools)")
    profile = tempfile.mkdtemp(prefix="lookout-chromium-")
    proc = subprocess.Popen(
        [binary, *FLAGS, f"--user-data-dir={profile}", "about:blank"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env={**os.environ, "HOME": profile},
    )
    try:
        url = _devtools_url(proc, timeout)
        with connect(url, max_size=None, open_timeout=timeout) as ws:
            yield DevTools(ws)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stderr is not None:
            proc.stderr.close()
        shutil.rmtree(profile, ignore_errors=True)


def _devtools_url(proc: subprocess.Popen[bytes], timeout: float) -> str:
    """Read stderr until Chromium says where DevTools listens (a thread, so a silent browser
    cannot block the test past `timeout`); the rest of stderr is drained and dropped."""
    assert proc.stderr is not None
    found: list[str] = []
    seen: list[str] = []
    ready = threading.Event()

    def read() -> None:
        assert proc.stderr is not None
        for raw in proc.stderr:
            line = raw.decode("utf-8", errors="replace")
            if not found:
                seen.append(line)
                match = _LISTENING.search(line)
                if match:
                    found.append(match.group(1))
                    ready.set()
        ready.set()

    threading.Thread(target=read, daemon=True).start()
    if not ready.wait(timeout) or not found:
        raise RuntimeError("chromium did not start DevTools:\n" + "".join(seen[-20:]))
    return found[0]


def load(devtools: DevTools, page: Path, timeout: float = 60.0) -> tuple[str, PageReport]:
    """Open `page` in a new tab and wait for its load event; returns the tab's session and
    every console error, uncaught exception and failed resource load it reported."""
    target = devtools.send("Target.createTarget", {"url": "about:blank"})["targetId"]
    session = devtools.send("Target.attachToTarget", {"targetId": target, "flatten": True})[
        "sessionId"
    ]
    for domain in ("Page", "Runtime", "Log", "Network"):
        devtools.send(f"{domain}.enable", session=session)
    devtools.send("Page.navigate", {"url": page.resolve().as_uri()}, session=session)
    devtools.wait_event("Page.loadEventFired", session, timeout)
    # let scripts that run on load (plotly draws after it) finish
    devtools.send(
        "Runtime.evaluate",
        {
            "expression": "new Promise(r => requestAnimationFrame(() => setTimeout(r, 50)))",
            "awaitPromise": True,
        },
        session=session,
    )
    report = PageReport()
    for event in devtools.events(session):
        method, params = event.get("method"), event.get("params", {})
        if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
            args = params.get("args", [])
            report.errors.append("console: " + " ".join(str(a.get("value", a)) for a in args))
        elif method == "Runtime.exceptionThrown":
            details = params.get("exceptionDetails", {})
            report.errors.append(f"exception: {details.get('exception', details)}")
        elif method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
            report.errors.append(f"log: {params['entry'].get('text')}")
        elif method == "Network.loadingFailed":
            report.errors.append(f"load failed: {params.get('errorText')}")
    return session, report


def evaluate(devtools: DevTools, session: str, expression: str) -> Any:
    """The JSON value of a JavaScript expression in the page."""
    result = devtools.send(
        "Runtime.evaluate",
        {"expression": expression, "returnByValue": True, "awaitPromise": True},
        session=session,
    )
    if "exceptionDetails" in result:
        raise RuntimeError(f"page script failed: {result['exceptionDetails']}")
    return result["result"].get("value")
