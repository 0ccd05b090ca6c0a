"""Retune strings that cannot be filled in are refused when the configuration loads, not when
an incident is sustained (which used up its one retune and started a 24 h cooldown), and an
export folder's time says UTC and is in UTC."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from pydantic import ValidationError

from alerts.retune.actions import render_parameters, vertex_job_id
from alerts.retune.export import export_dataset
from alerts.retune.request import RetuneRequest, TimeRange, request_id
from schemas.retune_config import KfpRetune, RetuneConfig, RetuneExport, VertexPipelineRetune

KFP = {"kind": "kfp", "name": "kfp", "host": "http://kfp:8888", "package_path": "p.yaml"}
VERTEX = {
    "kind": "vertex_pipeline",
    "name": "vertex",
    "project": "ml-project",
    "template_path": "t.yaml",
    "pipeline_root": "gs://bucket/root",
}


@pytest.mark.parametrize("field", ["{project}", "{location}"])
def test_kfp_strings_cannot_use_what_only_vertex_fills_in(field: str) -> None:
    with pytest.raises(ValidationError, match=r"which is not filled in"):
        KfpRetune.model_validate({**KFP, "parameters": {"where": field}})
    with pytest.raises(ValidationError, match=r"which is not filled in"):
        KfpRetune.model_validate({**KFP, "run_name": f"retune-{field}"})
    vertex = VertexPipelineRetune.model_validate({**VERTEX, "parameter_values": {"p": field}})
    assert vertex.parameter_values == {"p": field}


@pytest.mark.parametrize("uri", ["/data/{model}/{date}", "/data/{model}}", "/data/{dataset_uri}"])
def test_an_export_uri_that_cannot_be_filled_in_is_refused_at_load(uri: str) -> None:
    with pytest.raises(ValidationError, match="uri"):
        RetuneExport.model_validate({"query": "SELECT 1", "uri": uri})


def test_the_export_folder_is_named_in_utc_whatever_offset_the_times_carry(tmp_path: Path) -> None:
    export = RetuneExport.model_validate(
        {
            "query": "SELECT 'q' || i AS prompt, 'a' || i AS response FROM range(20) t(i)",
            "uri": str(tmp_path / "{model}" / "{window_start}"),
        }
    )
    plus_two = timezone(timedelta(hours=2))
    start = datetime(2026, 1, 5, 8, 30, tzinfo=plus_two)
    local = export_dataset(export, model="m", start=start, end=start + timedelta(minutes=15))
    assert Path(local.train_uri).parent == tmp_path / "m" / "20260105T063000Z"
    utc = export_dataset(
        export,
        model="m",
        start=start.astimezone(UTC),
        end=start.astimezone(UTC) + timedelta(minutes=15),
    )
    assert utc.train_uri == local.train_uri


# -- what the configuration refuses, and the Vertex AI job id (found in review) ------------------


def test_a_misspelt_detector_is_refused_naming_the_likely_one() -> None:
    """`detectors: [saftey]` passed `config check` and then matched no detection: the action
    never ran, and nothing said why."""
    with pytest.raises(
        ValidationError, match=r"'saftey' names no detector .*did you mean 'safety'"
    ):
        KfpRetune.model_validate({**KFP, "detectors": ["saftey"]})
    with pytest.raises(ValidationError, match=r"'nothing\*' names no detector"):
        KfpRetune.model_validate({**KFP, "detectors": ["nothing*"]})
    patterns = KfpRetune.model_validate({**KFP, "detectors": ["safety", "*_drift"]}).detectors
    assert patterns == ("safety", "*_drift")


def test_the_kfp_token_is_a_secret_reference_never_a_value() -> None:
    with pytest.raises(ValidationError, match="secrets come from env or a mounted file"):
        KfpRetune.model_validate({**KFP, "existing_token": "eyJhbGciOi..."})
    action = KfpRetune.model_validate({**KFP, "existing_token": {"file": "/var/run/kfp/token"}})
    assert action.existing_token is not None
    assert action.existing_token.describe() == "file /var/run/kfp/token"


def test_every_action_has_a_timeout() -> None:
    assert KfpRetune.model_validate(KFP).timeout_seconds == 60
    with pytest.raises(ValidationError, match="timeout_seconds"):
        VertexPipelineRetune.model_validate({**VERTEX, "timeout_seconds": 0})


def retune_request(dedup_key: str, start: datetime, model: str = "m") -> RetuneRequest:
    return RetuneRequest(
        action="vertex",
        model=model,
        detector="safety",
        condition="c",
        dedup_key=dedup_key,
        reason="r",
        time_range=TimeRange(start=start, end=start + timedelta(minutes=5)),
        consecutive_windows=5,
    )


@pytest.mark.parametrize(
    "dedup_key",
    [
        "lookout:gemini-1.5-flash:safety:block_rate_above_baseline",
        "9-TENANT/Model_X:safety",
        "lookout:" + "very-long-model-name-" * 20 + ":safety",
        "::",
    ],
)
def test_a_vertex_job_id_is_valid_and_one_per_action_and_incident(dedup_key: str) -> None:
    """Vertex AI named jobs `<pipeline>-<wall-clock second>`: two models in one second
    collided, and a retry was a new job. The id is the incident's, and valid for Vertex AI."""
    start = datetime(2026, 1, 5, 6, 0, tzinfo=UTC)
    job_id = vertex_job_id("vertex", retune_request(dedup_key, start))
    assert re.fullmatch(r"[a-z][-a-z0-9]{0,127}", job_id), job_id
    assert vertex_job_id("vertex", retune_request(dedup_key, start)) == job_id  # a retry
    others = {
        vertex_job_id("other-action", retune_request(dedup_key, start)),
        vertex_job_id("vertex", retune_request(dedup_key + "x", start)),
        vertex_job_id("vertex", retune_request(dedup_key, start + timedelta(minutes=1))),
    }
    assert job_id not in others and len(others) == 3


@pytest.mark.parametrize(
    ("action", "values"),
    [
        (KFP, {"parameters": {"data": "{dataset_uri}", "steps": 3}}),
        (VERTEX, {"parameter_values": {"eval": "gs://b/{evaluation_data_uri}"}}),
        (KFP, {"run_name": "tune-{dataset_uri}"}),
    ],
)
def test_a_dataset_uri_parameter_without_an_export_is_refused_at_load(
    action: dict[str, str], values: dict[str, object]
) -> None:
    """The pipeline got an empty string for its dataset and failed, or trained on nothing."""
    retune = {"actions": [{**action, **values}]}
    with pytest.raises(ValidationError, match=r"only alerting\.retune\.export fills in"):
        RetuneConfig.model_validate(retune)
    export = {"query": "SELECT prompt, response FROM t", "uri": "/data/{model}"}
    assert RetuneConfig.model_validate({**retune, "export": export}).export is not None


def test_a_pipeline_parameter_can_carry_why_it_was_started_and_the_request_s_id() -> None:
    """A trial's ML engineer could not pass the page's reason or the request's id to the
    pipeline (`{reason}` was refused as not filled in), so a run said nothing of its cause."""
    values = {"why": "{reason}", "key": "{dedup_key}", "out": "gs://b/{request_id}/model"}
    action = KfpRetune.model_validate({**KFP, "parameters": values, "run_name": "{request_id}"})
    start = datetime(2026, 1, 5, 6, 0, tzinfo=UTC)
    request = retune_request("lookout:m:safety:c", start).model_copy(update={"action": "kfp"})
    rendered = render_parameters(action.parameters, request)
    assert rendered["why"] == "r" and rendered["key"] == "lookout:m:safety:c"
    # the id a retry finds its first attempt's run by: the same at every attempt
    assert rendered["out"] == f"gs://b/{request_id('kfp', request)}/model"
    assert request.render(action.run_name) == request_id("kfp", request)
