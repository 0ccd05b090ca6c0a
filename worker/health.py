"""/metrics, /healthz and /readyz on one port, for Prometheus and Kubernetes probes.

/healthz answers 200 while the main loop comes round, and 503 naming how long it has not once
that exceeds `metrics.stall_seconds` (a hung sink write, a deadlock): the liveness probe then
restarts the wedged worker, whose held messages come back to a live one;
/readyz answers 200 only when the source is connected and the sink accepts writes, with the
failing part named in the body, so `kubectl describe` shows why a pod is not ready.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

log = logging.getLogger("lookout.health")

ReadinessCheck = Callable[[], bool]
#: why a part is not ready, for the body ("subscription ... does not exist (3 failed attempts)")
ReadinessDetail = Callable[[], str]
#: "" while alive, else why not ("the main loop has not run for 700 s ...")
LivenessCheck = Callable[[], str]


class HealthServer:
    def __init__(
        self,
        registry: CollectorRegistry,
        checks: Mapping[str, ReadinessCheck],
        *,
        host: str = "0.0.0.0",
        port: int = 9464,
        details: Mapping[str, ReadinessDetail] | None = None,
        liveness: LivenessCheck | None = None,
    ) -> None:
        self._registry = registry
        self._checks = checks
        self._liveness = liveness
        self._details = dict(details or {})
        handler = self._handler()
        self._server = ThreadingHTTPServer((host, port), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def start(self) -> HealthServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        registry, checks, details = self._registry, self._checks, self._details
        liveness = self._liveness

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                if path == "/metrics":
                    self._send(200, generate_latest(registry), CONTENT_TYPE_LATEST)
                elif path == "/healthz":
                    stalled = liveness() if liveness is not None else ""
                    if stalled:
                        self._send(503, f"stalled: {stalled}\n".encode())
                    else:
                        self._send(200, b"ok\n")
                elif path == "/readyz":
                    failing = [
                        _explained(name, details.get(name))
                        for name, check in checks.items()
                        if not _safe(check)
                    ]
                    if failing:
                        self._send(503, ("not ready: " + "; ".join(failing) + "\n").encode())
                    else:
                        self._send(200, b"ready\n")
                else:
                    self._send(404, b"not found: try /metrics, /healthz or /readyz\n")

            def _send(self, status: int, body: bytes, content_type: str = "text/plain") -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                """Probes every few seconds would drown the worker's own log."""

        return Handler


def stall_check(idle_seconds: Callable[[], float], limit: float) -> LivenessCheck:
    """The liveness check of a loop that has been idle `idle_seconds()`: failing beyond
    `limit`, and saying so once in the log (a probe failure event in Kubernetes does not show
    the body, and the restart ends the process)."""
    said = threading.Event()

    def stalled() -> str:
        idle = idle_seconds()
        if idle <= limit:
            said.clear()
            return ""
        why = f"the main loop has not run for {idle:.0f} s (metrics.stall_seconds {limit:g})"
        if not said.is_set():
            said.set()
            log.error("/healthz fails from now on: %s; the liveness probe restarts the pod", why)
        return why

    return stalled


def _safe(check: ReadinessCheck) -> bool:
    try:
        return bool(check())
    except Exception:
        return False


def _explained(name: str, detail: ReadinessDetail | None) -> str:
    """`source` or `source (subscription ... does not exist)` when the part says why."""
    if detail is None:
        return name
    try:
        why = detail()
    except Exception:
        return name
    return f"{name} ({why})" if why else name
