"""A loopback stand-in of the Vertex AI REST API (`api_endpoint`), the Cloud Storage bucket
lookups a Vertex AI submit makes first (`STORAGE_EMULATOR_HOST`) and the Kubeflow Pipelines
v2beta1 API, for the retune tests. It records every request (with its headers), and can be
told to answer job and run creation with an error status, or not at all for a while, and
answers a Vertex AI job id it has seen with 409 ALREADY_EXISTS, as Vertex AI does. And a
`Blackhole`: a port that takes connections and never answers."""

from __future__ import annotations

import json
import socket
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit


@dataclass(frozen=True)
class Seen:
    method: str
    path: str
    #: by lowercase name
    headers: dict[str, str]
    body: Any


class RestStandIn:
    """Answers Vertex AI pipelineJobs, GCS bucket lookups and KFP v2beta1; records requests."""

    def __init__(self) -> None:
        self.requests: list[Seen] = []
        #: answer job and run creation with this status (None: succeed)
        self.status: int | None = None
        #: hold job and run creation this long before answering (a hung endpoint)
        self.delay = 0.0
        #: answer the pipeline root's bucket lookup with this status (None: absent, created)
        self.bucket_status: int | None = None
        #: set once a job or run creation has arrived
        self.asked = threading.Event()
        self.job_ids: set[str] = set()
        self._lock = threading.Lock()
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                raw = self.rfile.read(length)
                body = json.loads(raw) if raw else None
                headers = {k.lower(): v for k, v in self.headers.items()}
                seen = Seen(self.command, self.path, headers, body)
                with stand_in._lock:
                    stand_in.requests.append(seen)
                status, out = stand_in.answer(seen)
                data = json.dumps(out).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except OSError:  # the client gave up waiting
                    return

            do_GET = do_POST = do_PUT = _answer

            def log_message(self, format: str, *args: Any) -> None:
                return

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"

    def answer(self, seen: Seen) -> tuple[int, dict[str, Any]]:
        path = urlsplit(seen.path).path
        if path.startswith("/storage/v1/b"):
            # the pipeline root's bucket: absent, so the client creates it and grants the
            # pipeline's service account access (all on loopback)
            if self.bucket_status is not None:
                return self.bucket_status, {"error": {"code": self.bucket_status, "message": "no"}}
            if path.endswith("/iam"):
                return 200, {"bindings": [], "etag": "CAE="}
            if seen.method == "GET":
                return 404, {"error": {"code": 404, "message": "Not Found"}}
            return 200, {"name": (seen.body or {}).get("name", "bucket"), "projectNumber": "1"}
        if path.startswith("/apis/v2beta1/healthz"):
            return 200, {"multi_user": False}
        creating = seen.method == "POST" and (
            path.endswith("/pipelineJobs") or path.startswith("/apis/v2beta1/runs")
        )
        if not creating:
            return 200, {}
        self.asked.set()
        if self.delay:
            threading.Event().wait(self.delay)
        if self.status is not None:
            message = f"stand-in says {self.status}"
            return self.status, {"error": {"code": self.status, "message": message}}
        if path.endswith("/pipelineJobs"):
            return self._create_job(path, seen)
        return 200, {"run_id": "run-1", "display_name": (seen.body or {}).get("display_name")}

    def _create_job(self, path: str, seen: Seen) -> tuple[int, dict[str, Any]]:
        job_id = parse_qs(urlsplit(seen.path).query).get("pipelineJobId", ["job-1"])[0]
        with self._lock:
            if job_id in self.job_ids:
                message = f"PipelineJob {job_id} already exists"
                return 409, {"error": {"code": 409, "message": message, "status": "ALREADY_EXISTS"}}
            self.job_ids.add(job_id)
        return 200, {"name": f"{path.removeprefix('/v1/')}/{job_id}", "state": "PENDING"}

    def posted(self, fragment: str) -> list[Any]:
        return [s.body for s in self.requests if s.method == "POST" and fragment in s.path]

    def created(self) -> list[Seen]:
        """Job and run creations, in order."""
        return [
            s
            for s in self.requests
            if s.method == "POST" and ("/pipelineJobs" in s.path or "/v2beta1/runs" in s.path)
        ]

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


class Blackhole:
    """A TCP port that takes connections and never answers: an endpoint that hangs."""

    def __init__(self) -> None:
        self._server = socket.create_server(("127.0.0.1", 0))
        self._server.settimeout(0.1)
        self.port = int(self._server.getsockname()[1])
        self.address = f"127.0.0.1:{self.port}"
        self.accepted = threading.Event()
        self._held: list[socket.socket] = []
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                conn, _ = self._server.accept()
            except TimeoutError:
                continue
            self._held.append(conn)
            self.accepted.set()

    def close(self) -> None:
        self._closed.set()
        self._thread.join()
        self._server.close()
        for conn in self._held:
            conn.close()
