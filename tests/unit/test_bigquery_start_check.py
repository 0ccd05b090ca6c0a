"""The BigQuery sink's start-up check tells a BigQuery that answered "no" from one that did
not answer (a unit test: the client is a fake that raises what google-cloud-bigquery raises)."""

from __future__ import annotations

from typing import Any

import pytest
from google.api_core import exceptions

from worker.sinks.bigquery_sink import BigQuerySinkError, check_schema


class Refusing:
    def __init__(self, error: Exception) -> None:
        self.error = error

    def get_table(self, ref: str, **_: Any) -> Any:
        raise self.error


def test_an_answer_is_reported_as_a_refusal_not_as_silence() -> None:
    with pytest.raises(BigQuerySinkError) as caught:
        refused = exceptions.Unauthorized("token expired")  # type: ignore[no-untyped-call]
        check_schema(Refusing(refused), "p", "d")
    assert str(caught.value) == (
        "BigQuery refused reading table p.d.window_metrics: Unauthorized: token expired"
    )


def test_no_answer_names_the_endpoint_to_check() -> None:
    retry_gave_up = exceptions.RetryError(  # type: ignore[no-untyped-call]
        "Timeout of 3.0s exceeded", OSError("unreachable")
    )
    with pytest.raises(BigQuerySinkError) as caught:
        check_schema(Refusing(retry_gave_up), "p", "d", timeout=3, endpoint="host:1 (X)")
    assert str(caught.value) == (
        "BigQuery did not answer for table p.d.window_metrics within 3 s "
        "(sink.write_timeout_seconds): OSError: unreachable; check network access to host:1 (X) "
        "and the credentials"
    )
