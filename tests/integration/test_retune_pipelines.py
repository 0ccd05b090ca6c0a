"""The `vertex_pipeline` and `kfp` retune actions, through the real google-cloud-aiplatform and
kfp clients, against a loopback stand-in of the Vertex AI REST API (`api_endpoint`) and of
the Kubeflow Pipelines v2beta1 API; the exported dataset's URIs reach the pipeline."""

from __future__ import annotations

import importlib
import json
import logging
import re
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import orjson
import pytest
from kfp import compiler
from prometheus_client import CollectorRegistry, generate_latest

from alerts.retune.actions import (
    RetuneActionError,
    kfp_run_description,
    run_action,
    vertex_job_id,
)
from alerts.retune.guard import RetuneLog
from alerts.retune.request import RetuneRequest, TimeRange
from alerts.retune.trigger import RetuneTrigger
from alerts.state import Incident
from schemas.alert_config import AlertingConfig
from schemas.detection import Detection
from schemas.retune_config import KfpRetune, VertexPipelineRetune
from tests.integration.retune_stand_in import RestStandIn
from tests.integration.tune_template import tune_large_model

T0 = datetime(2026, 1, 5, 6, 0, tzinfo=UTC)
MODEL = "gemini-1.5-flash"
KEY = f"lookout:{MODEL}:safety:block_rate_above_baseline"
SERVICE_ACCOUNT = "tuner@ml-project.iam.gserviceaccount.com"


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
    job_id = vertex_job_id("vertex-tune", request())
    assert created == f"projects/ml-project/locations/us-central1/pipelineJobs/{job_id}"
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
    grants = [s.body for s in rest.requests if s.method == "PUT" and "/storage/v1/b/" in s.path]
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
        breach_windows=3,
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
        "lookout_retune_requests_total",
        {"action": "vertex-tune", "model": MODEL, "outcome": "sent"},
    )
    assert sent == 1


# -- timeouts, job ids, tokens, one-line failures (found in review) ------------------------------


def kfp_action(rest: RestStandIn, template: Path, **extra: Any) -> KfpRetune:
    return KfpRetune.model_validate(
        {
            "name": "kfp-tune",
            "kind": "kfp",
            "host": rest.url,
            "package_path": str(template),
            "experiment_id": "exp-1",
            "parameters": {k: v for k, v in PARAMETERS.items() if k not in ("project", "location")}
            | {"project": "ml-project", "location": "us-central1"},
            **extra,
        }
    )


#: what the pipeline reads without an export: the bucket a pipeline's own step fills
EXPORTED = {
    "{dataset_uri}": "gs://ml-data/{model}/{window_start}/train.jsonl",
    "{evaluation_data_uri}": "gs://ml-data/{model}/{window_start}/eval.jsonl",
}


def alerting_with(action: VertexPipelineRetune | KfpRetune, **extra: Any) -> AlertingConfig:
    """A config routing to `action`, with no export: its `{dataset_uri}`-style parameters
    (refused without one) become fixed bucket paths."""
    settings = action.model_dump()
    for key in ("parameter_values", "parameters"):
        if key in settings:
            settings[key] = {
                name: EXPORTED.get(value, value) if isinstance(value, str) else value
                for name, value in settings[key].items()
            }
    return AlertingConfig.model_validate(
        {
            "routes": [{"receivers": ["log"], "retune": action.name}],
            "retune": {"actions": [settings | {"consecutive_windows": 1, **extra}]},
        }
    )


def window(k: int, model: str = MODEL) -> tuple[Detection, Incident]:
    """The k-th alerting window (k from 1) of `model`'s incident that started at T0."""
    end = T0 + timedelta(minutes=k)
    judged = Detection(
        detector="safety",
        model=model,
        window_start=end - timedelta(minutes=1),
        window_end=end,
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
        dedup_key=f"lookout:{model}:safety:block_rate_above_baseline",
        model=model,
        detector="safety",
        condition="block_rate_above_baseline",
        phase="firing",
        severity="critical",
        started_at=T0,
        windows=k,
        alert_windows=k,
        breach_windows=k,
    )
    return judged, incident


def counted(registry: CollectorRegistry, action: str, outcome: str, model: str = MODEL) -> float:
    labels = {"action": action, "model": model, "outcome": outcome}
    return registry.get_sample_value("lookout_retune_requests_total", labels) or 0.0


@pytest.mark.parametrize("kind", ["vertex_pipeline", "kfp"])
def test_a_hung_endpoint_fails_the_action_within_its_timeout_in_one_line(
    rest: RestStandIn, template: Path, kind: str
) -> None:
    """A hung endpoint held the worker (and a replay) for minutes: the client calls had no
    timeout. Now the action gives up after `timeout_seconds` and says so."""
    rest.delay = 30
    if kind == "kfp":
        action: VertexPipelineRetune | KfpRetune = kfp_action(rest, template, timeout_seconds=1)
    else:
        action = vertex_action(rest, template).model_copy(update={"timeout_seconds": 1.0})
        # the first import of aiplatform in a process takes about a second of the action's
        # timeout (this test failed whenever it was the first Vertex test of its worker): the
        # hang of the endpoint is what is timed here
        importlib.import_module("google.cloud.aiplatform")
    began = time.monotonic()
    with pytest.raises(RetuneActionError) as failed:
        run_action(action, request())
    assert time.monotonic() - began < 5
    assert rest.asked.is_set()
    message = str(failed.value)
    assert message.endswith(": no answer within 1s (timeout_seconds)"), message
    assert "\n" not in message


def test_a_retry_whose_vertex_job_was_created_after_all_is_already_started(
    rest: RestStandIn, template: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The first attempt gives up before Vertex AI answers, which then creates the job. The
    retry at the next alerting window asks for the same job id, is told it exists, and says
    so: one tuning job, not two."""
    action = vertex_action(rest, template).model_copy(update={"timeout_seconds": 1.0})
    registry = CollectorRegistry()
    trigger = RetuneTrigger(
        alerting_with(action), RetuneLog(tmp_path / "retune.sqlite"), registry=registry
    )
    trigger.start()
    rest.delay = 2
    try:
        assert len(trigger.consider(*window(1))) == 1
        assert trigger.wait_idle(timeout=30)
        assert rest.made.wait(10)  # the late answer: the job now exists
        rest.delay = 0
        assert len(trigger.consider(*window(2))) == 1
        assert trigger.wait_idle(timeout=30)
    finally:
        trigger.close()
    ids = [parse_qs(urlsplit(s.path).query)["pipelineJobId"][0] for s in rest.created()]
    assert len(ids) == 2 and ids[0] == ids[1] == vertex_job_id("vertex-tune", request())
    assert len(rest.job_ids) == 1
    assert (
        counted(registry, "vertex-tune", "failed"),
        counted(registry, "vertex-tune", "sent"),
    ) == (
        1,
        1,
    )
    said = [r.getMessage() for r in caplog.records if r.name == "lookout.retune"]
    assert said[-1].startswith(
        f"retune vertex-tune for {MODEL} already started: projects/ml-project/locations/"
        f"us-central1/pipelineJobs/{ids[0]}"
    ), said


def test_models_alerting_in_the_same_second_get_a_vertex_job_each(
    rest: RestStandIn, template: Path
) -> None:
    """The client named jobs `<pipeline>-<wall-clock second>`: the second model's job in the
    same second was refused as already existing."""
    action = vertex_action(rest, template)
    first = run_action(action, request())
    second = run_action(action, request(model="text-bison", dedup_key="lookout:text-bison:x"))
    assert first != second
    assert len(rest.job_ids) == 2
    for job_id in rest.job_ids:
        assert re.fullmatch(r"[a-z][-a-z0-9]{0,127}", job_id), job_id


def test_kfp_sends_its_token_and_a_refusal_is_one_line_that_never_shows_it(
    rest: RestStandIn, template: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With `host` set the client sends no credentials of its own: an authenticated endpoint
    could not be used. A refusal printed five lines with the response's HTTP headers."""
    monkeypatch.setenv("KFP_TOKEN", "s3cret-token\n")
    action = kfp_action(rest, template, existing_token={"env": "KFP_TOKEN"})
    assert run_action(action, request(action="kfp-tune")) == "run-1"
    (run,) = rest.created()
    assert run.headers["authorization"] == "Bearer s3cret-token"
    rest.status = 403
    later = request(action="kfp-tune", dedup_key=f"{KEY}:later")  # another incident's run
    with pytest.raises(RetuneActionError) as refused:
        run_action(action, later)
    assert str(refused.value) == (
        f"creating the Kubeflow run on {rest.url}: 403 Forbidden: stand-in says 403"
    )
    monkeypatch.delenv("KFP_TOKEN")
    with pytest.raises(RetuneActionError) as unread:
        run_action(action, later)
    assert str(unread.value) == ("existing_token (env KFP_TOKEN): the variable is not set or empty")


def test_a_vertex_refusal_is_one_line_naming_action_and_model_and_nothing_else(
    rest: RestStandIn,
    template: Path,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    """A bucket it may not read made aiplatform print a traceback through its own logger, and
    a refusal carried the request's URL; now it is the trigger's one line."""
    rest.bucket_status = 403
    rest.status = 403
    registry = CollectorRegistry()
    trigger = RetuneTrigger(
        alerting_with(vertex_action(rest, template)),
        RetuneLog(tmp_path / "retune.sqlite"),
        registry=registry,
    )
    trigger.start()
    try:
        trigger.consider(*window(1))
        assert trigger.wait_idle(timeout=60)
    finally:
        trigger.close()
    failures = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert failures == [
        f"retune vertex-tune for {MODEL} failed: submitting the Vertex AI pipeline job: "
        "403 Forbidden: stand-in says 403"
    ]
    out, err = capfd.readouterr()
    assert "Traceback" not in out + err and "GCS bucket" not in out + err, out + err


# -- stdout, the model label, a KFP retry after a timeout (found in review) ----------------------


def test_a_kfp_run_prints_nothing_on_stdout_and_logs_its_link(
    rest: RestStandIn,
    template: Path,
    capfd: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The client printed `Experiment details: <url>` and `Run details: <url>` on stdout for
    every run: in the middle of the alert JSON of `--alerts-out /dev/stdout`. The link is in
    the log now, and the run still goes to the client's `Default` experiment, made once."""
    caplog.set_level(logging.INFO, logger="lookout.retune")
    action = kfp_action(rest, template, experiment_id=None)
    assert run_action(action, request(action="kfp-tune")) == "run-1"
    other = request(action="kfp-tune", model="text-bison", dedup_key="lookout:text-bison:x")
    assert run_action(action, other) == "run-2"
    out, _ = capfd.readouterr()
    assert out == ""
    said = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    assert f"retune kfp-tune for {MODEL}: Kubeflow run run-1: {rest.url}/#/runs/details/run-1" in (
        said
    ), said
    assert [e["display_name"] for e in rest.experiments] == ["Default"]
    assert [r["experiment_id"] for r in rest.runs] == ["exp-1", "exp-1"]


def test_the_retune_counter_tells_which_models_retunes_fail(
    rest: RestStandIn, template: Path, tmp_path: Path
) -> None:
    """`lookout_retune_requests_total` had action and outcome only: an SRE saw the action
    fail, not for which model. A model's series are there at 0 from its first alerting
    window, so Prometheus sees its first failure as an increase."""
    rest.refuse["lookout-retune-text-bison"] = 403
    registry = CollectorRegistry()
    trigger = RetuneTrigger(
        alerting_with(kfp_action(rest, template), consecutive_windows=2),
        RetuneLog(tmp_path / "retune.sqlite"),
        registry=registry,
    )
    trigger.start()

    def exposed() -> set[str]:
        text = generate_latest(registry).decode()
        return {line for line in text.splitlines() if line.startswith("lookout_retune_requests_")}

    def sample(model: str, outcome: str, value: float) -> str:
        return (
            f'lookout_retune_requests_total{{action="kfp-tune",model="{model}",'
            f'outcome="{outcome}"}} {value}'
        )

    try:
        for model in (MODEL, "text-bison"):
            assert trigger.consider(*window(1, model)) == []  # not sustained yet
        assert {sample(m, "failed", 0.0) for m in (MODEL, "text-bison")} <= exposed()
        for model in (MODEL, "text-bison"):
            assert len(trigger.consider(*window(2, model))) == 1
            assert trigger.wait_idle(timeout=30)
    finally:
        trigger.close()
    assert {
        sample(MODEL, "sent", 1.0),
        sample(MODEL, "failed", 0.0),
        sample("text-bison", "sent", 0.0),
        sample("text-bison", "failed", 1.0),
    } <= exposed()


def test_a_retry_whose_kfp_run_was_created_after_all_is_already_started(
    rest: RestStandIn, template: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The first attempt gives up before Kubeflow answers, which then creates the run. The
    retry at the next alerting window made a second run (a second tuning job for one
    incident); now it finds the first by its description and says so."""
    registry = CollectorRegistry()
    trigger = RetuneTrigger(
        alerting_with(kfp_action(rest, template, timeout_seconds=1)),
        RetuneLog(tmp_path / "retune.sqlite"),
        registry=registry,
    )
    trigger.start()
    rest.delay = 2
    try:
        assert len(trigger.consider(*window(1))) == 1
        assert trigger.wait_idle(timeout=30)
        assert rest.made.wait(10)  # the late answer: the run now exists
        rest.delay = 0
        assert len(trigger.consider(*window(2))) == 1
        assert trigger.wait_idle(timeout=30)
        assert len(trigger.consider(*window(2, "text-bison"))) == 1  # another incident
        assert trigger.wait_idle(timeout=30)
    finally:
        trigger.close()
    # the first attempt's run and the other model's: the retry made none
    other = request(dedup_key=window(1, "text-bison")[1].dedup_key)
    assert [(r["run_id"], r["description"]) for r in rest.runs] == [
        ("run-1", kfp_run_description("kfp-tune", request())),
        ("run-2", kfp_run_description("kfp-tune", other)),
    ]
    assert len(rest.created()) == 2
    assert (counted(registry, "kfp-tune", "failed"), counted(registry, "kfp-tune", "sent")) == (
        1,
        1,
    )
    said = [r.getMessage() for r in caplog.records if r.name == "lookout.retune"]
    assert (
        f"retune kfp-tune for {MODEL} already started: run-1 (created by an earlier attempt "
        "that got no answer in time)"
    ) in said, said


def test_a_kfp_failure_names_the_step_and_a_run_without_an_id_is_no_run(
    rest: RestStandIn, template: Path
) -> None:
    """An ML engineer's trial: a health check answered 500 said "creating the Kubeflow run …:
    500" although no run was asked for, and an endpoint answering 200 with `{}` to the create
    call (a proxy, a login page) was logged as "started: None" and counted as sent."""
    action = kfp_action(rest, template)
    rest.healthz_status = 500
    with pytest.raises(RetuneActionError) as unhealthy:
        run_action(action, request(action="kfp-tune"))
    assert str(unhealthy.value).startswith(
        f"reaching the Kubeflow Pipelines API on {rest.url} (health check): 500"
    )
    assert rest.created() == []
    rest.healthz_status = None
    rest.answer_without_run_id = True
    with pytest.raises(RetuneActionError) as empty:
        run_action(action, request(action="kfp-tune"))
    assert str(empty.value) == (
        f"creating the Kubeflow run on {rest.url}: the answer carried no run id; is "
        f"{rest.url} a Kubeflow Pipelines API (not a proxy or a login page)?"
    )
