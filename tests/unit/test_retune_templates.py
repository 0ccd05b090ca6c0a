"""Retune strings that cannot be filled in are refused when the configuration loads, not when
an incident is sustained (which used up its one retune and started a 24 h cooldown), and an
export folder's time says UTC and is in UTC."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from pydantic import ValidationError

from alerts.retune.export import export_dataset
from schemas.retune_config import KfpRetune, RetuneExport, VertexPipelineRetune

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
