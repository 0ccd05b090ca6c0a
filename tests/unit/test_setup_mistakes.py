"""Set-up mistakes a newcomer made while following the README, each caught before any work.

Before: a misspelt detector in `detectors.enabled` and a `sink.memory_limit` DuckDB cannot read
both passed `lookout config check` and failed later with an AttributeError or a DuckDB parser
error naming no key; `--db` pointing at an existing NDJSON file replayed everything into an
in-memory database (DuckDB opens a file it does not recognise by name that way), exit 0,
nothing stored. A retune template with a field it cannot fill in failed only when an incident
was sustained.
"""

from __future__ import annotations

from pathlib import Path

import pydantic
import pytest

from schemas.config import LookoutConfig
from schemas.retune_config import VertexPipelineRetune
from worker.errors import SetupError
from worker.sinks.duckdb_sink import DuckDBSink


def test_a_misspelt_detector_is_named_with_the_known_ones() -> None:
    with pytest.raises(pydantic.ValidationError) as caught:
        LookoutConfig.model_validate({"detectors": {"enabled": ["safety", "latncy"]}})
    assert "unknown detector(s) latncy; known: safety, latency" in str(caught.value)


@pytest.mark.parametrize("size", ["lots", "12", "1.5 parsecs", ""])
def test_a_memory_limit_duckdb_cannot_read_is_refused_with_an_example(size: str) -> None:
    with pytest.raises(pydantic.ValidationError) as caught:
        LookoutConfig.model_validate({"sink": {"kind": "duckdb", "memory_limit": size}})
    assert "expected a size such as 256MB" in str(caught.value)


@pytest.mark.parametrize("size", ["256MB", "1GB", "512MiB", "1gib", "1.5GB"])
def test_sizes_duckdb_reads_are_accepted(size: str, tmp_path: Path) -> None:
    config = LookoutConfig.model_validate({"sink": {"kind": "duckdb", "memory_limit": size}})
    assert config.sink.memory_limit == size  # type: ignore[union-attr]
    DuckDBSink(tmp_path / "ok.duckdb", memory_limit=size).close()


def test_a_sink_path_that_is_another_kind_of_file_is_refused_and_left_alone(
    tmp_path: Path,
) -> None:
    logs = tmp_path / "logs.ndjson"
    logs.write_bytes(b'{"request_id": "a", "model": "m"}\n')
    with pytest.raises(SetupError, match="is not a DuckDB database file"):
        DuckDBSink(logs)
    assert logs.read_bytes() == b'{"request_id": "a", "model": "m"}\n'
    # a real one (and a new path) still open
    DuckDBSink(tmp_path / "new.ndjson.duckdb").close()
    DuckDBSink(tmp_path / "new.ndjson.duckdb").close()


VERTEX = {
    "name": "tune",
    "kind": "vertex_pipeline",
    "project": "p",
    "template_path": "tune.yaml",
    "pipeline_root": "gs://bucket/root",
}


@pytest.mark.parametrize(
    ("values", "says"),
    [
        ({"dataset": "{dataset}"}, "uses {dataset}, which is not filled in; known: {condition}"),
        ({"hyper": '{"epochs": 3}'}, 'uses {"epochs"}, which is not filled in'),
        ({"broken": "{model"}, "write a literal brace as {{ or }}"),
    ],
)
def test_a_retune_template_that_cannot_render_fails_config_check(
    values: dict[str, str], says: str
) -> None:
    """Found by a bug hunt: these passed `config check` and raised KeyError when an incident was
    sustained, after the request had been recorded, so the incident never got its retune."""
    with pytest.raises(pydantic.ValidationError) as caught:
        VertexPipelineRetune.model_validate(VERTEX | {"parameter_values": values})
    assert says in str(caught.value)


def test_retune_templates_with_known_fields_and_literal_braces_load() -> None:
    values = {"data": "{dataset_uri}", "name": "{{json}}-{model}", "epochs": 3}
    action = VertexPipelineRetune.model_validate(VERTEX | {"parameter_values": values})
    assert action.parameter_values == values
