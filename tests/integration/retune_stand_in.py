"""A loopback stand-in of the Vertex AI REST API (`api_endpoint`), the Cloud Storage bucket
lookups a Vertex AI submit makes first (`STORAGE_EMULATOR_HOST`) and the Kubeflow Pipelines
v2beta1 API, for the retune tests. It records every request (with its headers), and can be
told to answer job and run creation with an error status (all of them, or those of given
display names), or not at all for a while, and answers a Vertex AI job id it has seen with
409 ALREADY_EXISTS, as Vertex AI does. Kubeflow runs and experiments it keeps, with ids of its
own, and lists them filtered by a field's value, as Kubeflow Pipelines does. And a
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
        #: answer KFP's health check with this status (None: healthy)
        self.healthz_status: int | None = None
        #: answer KFP run creation with 200 and an empty object
        self.answer_without_run_id = False
        #: answer the creation of a job or run of this display name with this status
        self.refuse: dict[str, int] = {}
        #: set once a job or run creation has arrived
        self.asked = threading.Event()
        #: set once a job or run exists (after `delay`: also when the client gave up waiting)
        self.made = threading.Event()
        self.job_ids: set[str] = set()
        #: the Kubeflow runs and experiments created, as their API shows them
        self.runs: list[dict[str, Any]] = []
        self.experiments: list[dict[str, Any]] = []
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
            if self.healthz_status is not None:
                code = self.healthz_status
                return code, {"error": {"code": code, "message": f"stand-in says {code}"}}
            return 200, {"multi_user": False}
        if path == "/apis/v2beta1/experiments":
            return self._experiments(seen)
        if seen.method == "GET" and path == "/apis/v2beta1/runs":
            runs = self._listed(self.runs, seen)
            return 200, {"runs": runs, "total_size": len(runs)} if runs else {}
        creating = seen.method == "POST" and (
            path.endswith("/pipelineJobs") or path.startswith("/apis/v2beta1/runs")
        )
        if not creating:
            return 200, {}
        self.asked.set()
        if self.delay:
            threading.Event().wait(self.delay)
        body = seen.body or {}
        name = str(body.get("displayName", body.get("display_name")))
        status: int | None = self.refuse.get(name, self.status)
        if status is not None:
            message = f"stand-in says {status}"
            return status, {"error": {"code": status, "message": message}}
        if path.endswith("/pipelineJobs"):
            return self._create_job(path, seen)
        if self.answer_without_run_id:  # a proxy or a login page that answers 200 to anything
            return 200, {}
        return 200, self._create_run(body)

    def _create_run(self, body: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            run = {
                "run_id": f"run-{len(self.runs) + 1}",
                "experiment_id": body.get("experiment_id"),
                "display_name": body.get("display_name"),
                "description": body.get("description"),
            }
            self.runs.append(run)
        self.made.set()
        return run

    def _experiments(self, seen: Seen) -> tuple[int, dict[str, Any]]:
        if seen.method == "GET":
            found = self._listed(self.experiments, seen)
            return 200, {"experiments": found, "total_size": len(found)} if found else {}
        with self._lock:
            experiment = {
                "experiment_id": f"exp-{len(self.experiments) + 1}",
                "display_name": (seen.body or {}).get("display_name"),
                "namespace": (seen.body or {}).get("namespace"),
            }
            self.experiments.append(experiment)
        return 200, experiment

    def _listed(self, items: list[dict[str, Any]], seen: Seen) -> list[dict[str, Any]]:
        """`items` that match the request's `experiment_id` and `filter` (EQUALS predicates,
        the only kind the clients here send)."""
        query = parse_qs(urlsplit(seen.path).query)
        wanted: dict[str, Any] = {}
        if "experiment_id" in query:
            wanted["experiment_id"] = query["experiment_id"][0]
        for predicate in json.loads(query.get("filter", ["{}"])[0]).get("predicates", []):
            assert predicate["operation"] in ("EQUALS", 1), predicate
            wanted[predicate["key"]] = predicate.get("stringValue", predicate.get("string_value"))
        with self._lock:
            return [i for i in items if all(i.get(k) == v for k, v in wanted.items())]

    def _create_job(self, path: str, seen: Seen) -> tuple[int, dict[str, Any]]:
        job_id = parse_qs(urlsplit(seen.path).query).get("pipelineJobId", ["job-1"])[0]
        with self._lock:
            if job_id in self.job_ids:
                message = f"PipelineJob {job_id} already exists"
                return 409, {"error": {"code": 409, "message": message, "status": "ALREADY_EXISTS"}}
            self.job_ids.add(job_id)
        self.made.set()
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
