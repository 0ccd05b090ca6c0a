"""The `vertex_pipeline` and `kfp` retune actions, through the real google-cloud-aiplatform and
kfp clients, against a loopback stand-in of the Vertex AI REST API (`api_endpoint`) and of
the Kubeflow Pipelines v2beta1 API; the exported dataset's URIs reach the pipeline."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import orjson
import pytest
from kfp import compiler
from prometheus_client import CollectorRegistry

from alerts.retune.actions import run_action
from alerts.retune.guard import RetuneLog
from alerts.retune.request import RetuneRequest, TimeRange
from alerts.retune.trigger import RetuneTrigger
from alerts.state import Incident
from schemas.alert_config import AlertingConfig
from schemas.detection import Detection
from schemas.retune_config import KfpRetune, VertexPipelineRetune
from tests.integration.tune_template import tune_large_model

T0 = datetime(2026, 1, 5, 6, 0, tzinfo=UTC)
MODEL = "gemini-1.5-flash"
KEY = f"lookout:{MODEL}:safety:block_rate_above_baseline"
SERVICE_ACCOUNT = "tuner@ml-project.iam.gserviceaccount.com"


class RestStandIn:
    """Answers Vertex AI pipelineJobs, GCS bucket lookups and KFP v2beta1; records requests."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str, Any]] = []
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                raw = self.rfile.read(length)
                body = json.loads(raw) if raw else None
                stand_in.requests.append((self.command, self.path, body))
                out: dict[str, Any] = {}
                status = 200
                path = self.path.split("?")[0]
                if path.startswith("/storage/v1/b"):
                    # the pipeline root's bucket: absent, so the client creates it and grants
                    # the pipeline's service account access (all on loopback)
                    if path.endswith("/iam"):
                        out = {"bindings": [], "etag": "CAE="}
                    elif self.command == "GET":
                        status, out = 404, {"error": {"code": 404, "message": "Not Found"}}
                    else:
                        out = {"name": (body or {}).get("name", "bucket"), "projectNumber": "1"}
                elif "/pipelineJobs" in self.path:
                    name = self.path.split("?")[0].removeprefix("/v1/") + "/job-1"
                    out = {"name": name, "state": "PIPELINE_STATE_PENDING"}
                elif self.path.startswith("/apis/v2beta1/healthz"):
                    out = {"multi_user": False}
                elif self.path.startswith("/apis/v2beta1/runs"):
                    out = {"run_id": "run-1", "display_name": (body or {}).get("display_name")}
                data = json.dumps(out).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PUT = _answer

            def log_message(self, format: str, *args: Any) -> None:
                return

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"

    def posted(self, fragment: str) -> list[Any]:
        return [b for m, p, b in self.requests if m == "POST" and fragment in p]

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def rest(monkeypatch: pytest.MonkeyPatch) -> Iterator[RestStandIn]:
    server = RestStandIn()
    # the client checks the pipeline root's bucket through google-cloud-storage first
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", server.url)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A compiled stand-in of the published `tune-large-model` template's interface."""
    path = tmp_path_factory.mktemp("pipelines") / "tune-large-model.yaml"
    compiler.Compiler().compile(tune_large_model, str(path))
    return path


PARAMETERS = {
    "project": "{project}",
    "location": "{location}",
    "large_model_reference": "text-bison@002",
    "model_display_name": "{model}-retuned",
    "dataset_uri": "{dataset_uri}",
    "evaluation_data_uri": "{evaluation_data_uri}",
    "train_steps": 300,
}


def vertex_action(rest: RestStandIn, template: Path) -> VertexPipelineRetune:
    return VertexPipelineRetune(
        name="vertex-tune",
        kind="vertex_pipeline",
        project="ml-project",
        location="us-central1",
        template_path=str(template),
        pipeline_root="gs://ml-project-pipelines/lookout",
        parameter_values=PARAMETERS,
        enable_caching=False,
        service_account=SERVICE_ACCOUNT,
        api_endpoint=rest.url,
    )


def request(**update: Any) -> RetuneRequest:
    fields: dict[str, Any] = {
        "action": "vertex-tune",
        "model": MODEL,
        "detector": "safety",
        "condition": "block_rate_above_baseline",
        "dedup_key": KEY,
        "reason": "block rate above baseline",
        "time_range": TimeRange(start=T0, end=T0 + timedelta(minutes=3)),
        "consecutive_windows": 3,
        "dataset_uri": "gs://data/train.jsonl",
        "evaluation_data_uri": "gs://data/eval.jsonl",
    }
    return RetuneRequest(**(fields | update))


def test_vertex_pipeline_action_submits_the_pipeline_job(rest: RestStandIn, template: Path) -> None:
    created = run_action(vertex_action(rest, template), request())
    assert created == "projects/ml-project/locations/us-central1/pipelineJobs/job-1"
    (job,) = rest.posted("/v1/projects/ml-project/locations/us-central1/pipelineJobs")
    assert job["displayName"] == f"lookout-retune-{MODEL}"
    assert job["serviceAccount"] == SERVICE_ACCOUNT
    assert job["runtimeConfig"]["gcsOutputDirectory"] == "gs://ml-project-pipelines/lookout"
    assert job["runtimeConfig"]["parameterValues"] == {
        "project": "ml-project",
        "location": "us-central1",
        "large_model_reference": "text-bison@002",
        "model_display_name": f"{MODEL}-retuned",
        "dataset_uri": "gs://data/train.jsonl",
        "evaluation_data_uri": "gs://data/eval.jsonl",
        "train_steps": 300.0,  # the REST API carries numbers as floats
    }
    assert job["pipelineSpec"]["pipelineInfo"]["name"] == "tune-large-model"
    assert job.get("enableCaching") in (None, False)
    (bucket,) = rest.posted("/storage/v1/b")  # the pipeline root's bucket, created first
    assert bucket["name"] == "ml-project-pipelines"
    grants = [b for m, p, b in rest.requests if m == "PUT" and p.startswith("/storage/v1/b/")]
    assert f"serviceAccount:{SERVICE_ACCOUNT}" in json.dumps(grants)


def test_kfp_action_creates_a_run_from_the_package(rest: RestStandIn, template: Path) -> None:
    action = KfpRetune(
        name="kfp-tune",
        kind="kfp",
        host=rest.url,
        package_path=str(template),
        experiment_id="exp-1",
        namespace="ml",
        parameters={k: v for k, v in PARAMETERS.items() if k not in ("project", "location")}
        | {"project": "ml-project", "location": "us-central1"},
    )
    assert run_action(action, request(action="kfp-tune")) == "run-1"
    (run,) = rest.posted("/apis/v2beta1/runs")
    assert run["display_name"] == f"lookout-retune-{MODEL}"
    assert run["experiment_id"] == "exp-1"
    assert run["runtime_config"]["parameters"]["model_display_name"] == f"{MODEL}-retuned"
    assert run["runtime_config"]["parameters"]["dataset_uri"] == "gs://data/train.jsonl"
    assert run["pipeline_spec"]["pipelineInfo"]["name"] == "tune-large-model"


def test_a_sustained_incident_exports_its_dataset_then_submits_it_to_vertex(
    rest: RestStandIn, template: Path, tmp_path: Path
) -> None:
    samples = tmp_path / "samples.ndjson"
    samples.write_bytes(
        b"".join(
            orjson.dumps({"model": MODEL, "prompt": f"q{i}", "response": f"a{i}"}) + b"\n"
            for i in range(20)
        )
    )
    config = AlertingConfig.model_validate(
        {
            "routes": [{"receivers": ["log"], "retune": "vertex-tune"}],
            "retune": {
                "actions": [
                    vertex_action(rest, template).model_dump() | {"consecutive_windows": 3}
                ],
                "export": {
                    "query": f"SELECT prompt, response FROM read_ndjson_auto('{samples}') "
                    "WHERE model = $model",
                    "uri": str(tmp_path / "datasets" / "{model}"),
                    "eval_fraction": 0.2,
                },
            },
        }
    )
    registry = CollectorRegistry()
    trigger = RetuneTrigger(config, RetuneLog(tmp_path / "retune.sqlite"), registry=registry)
    trigger.start()
    detection = Detection(
        detector="safety",
        model=MODEL,
        window_start=T0 + timedelta(minutes=2),
        window_end=T0 + timedelta(minutes=3),
        verdict="alert",
        condition="block_rate_above_baseline",
        severity="critical",
        value=0.06,
        threshold=0.03,
        baseline=0.02,
        sample_size=400,
        reason="block rate 6.0% above baseline 2.0%",
    )
    incident = Incident(
        dedup_key=KEY,
        model=MODEL,
        detector="safety",
        condition="block_rate_above_baseline",
        phase="firing",
        severity="critical",
        started_at=T0,
        windows=3,
        alert_windows=3,
    )
    try:
        assert len(trigger.consider(detection, incident)) == 1
        assert trigger.consider(detection, incident) == []  # the same incident asks once
        trigger.wait_idle()
    finally:
        trigger.close()
    (job,) = rest.posted("/pipelineJobs")
    values = job["runtimeConfig"]["parameterValues"]
    train = tmp_path / "datasets" / MODEL / "train.jsonl"
    assert values["dataset_uri"] == str(train)
    assert values["evaluation_data_uri"] == str(train.with_name("eval.jsonl"))
    assert len(train.read_bytes().splitlines()) == 16
    sent = registry.get_sample_value(
        "lookout_retune_requests_total", {"action": "vertex-tune", "outcome": "sent"}
    )
    assert sent == 1
