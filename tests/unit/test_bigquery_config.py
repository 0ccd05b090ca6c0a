"""The BigQuery sink's configuration and start-up cost, without BigQuery."""

from __future__ import annotations

import subprocess
import sys

import pytest
from pydantic import ValidationError

from schemas.config import BigQuerySinkConfig, DuckDBSinkConfig, LookoutConfig


def test_sink_kind_picks_the_bigquery_config_with_its_defaults() -> None:
    config = LookoutConfig.model_validate({"sink": {"kind": "bigquery", "project": "p"}})
    assert isinstance(config.sink, BigQuerySinkConfig)
    assert (config.sink.project, config.sink.dataset, config.sink.location) == (
        "p",
        "llm_monitoring",
        None,
    )
    assert isinstance(LookoutConfig().sink, DuckDBSinkConfig)  # the default stays DuckDB


@pytest.mark.parametrize(
    ("sink", "error"),
    [
        ({"kind": "bigquery"}, "project"),
        ({"kind": "bigquery", "project": "p", "dataset": "llm-monitoring"}, "dataset"),
        ({"kind": "bigquery", "project": "p", "path": "x.duckdb"}, "path"),
        ({"kind": "bigquery", "project": "p", "write_timeout_seconds": 0}, "write_timeout"),
    ],
)
def test_a_bad_bigquery_sink_config_names_the_field(sink: dict[str, object], error: str) -> None:
    with pytest.raises(ValidationError, match=error):
        LookoutConfig.model_validate({"sink": sink})


def test_the_cli_does_not_import_the_bigquery_client_until_a_bigquery_sink_is_built() -> None:
    code = (
        "import sys, worker.cli, worker.cli.pipeline; "
        "assert 'google.cloud.bigquery' not in sys.modules, 'imported eagerly'"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_a_sink_without_kind_is_still_the_duckdb_file() -> None:
    config = LookoutConfig.model_validate({"sink": {"path": "x.duckdb"}})
    assert isinstance(config.sink, DuckDBSinkConfig) and config.sink.path == "x.duckdb"
