"""Flat, summable columns of a partial row, and the view that merges partial rows.

Detector states travel as JSON (exact, mergeable by the engine); analysts want plain numbers
they can SUM in SQL. These columns are read out of the detectors' own rows, so there is one
definition of each count: the detector's.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

#: (column, SQL type): every one is a sum over the partial rows of a window
ANALYST_COLUMNS: tuple[tuple[str, str], ...] = (
    ("calls", "BIGINT"),
    ("blocked", "BIGINT"),
    ("prompt_blocks", "BIGINT"),
    ("response_blocks", "BIGINT"),
    ("latency_count", "BIGINT"),
    ("latency_sum_ms", "DOUBLE"),
    ("token_calls", "BIGINT"),
    ("input_tokens", "DOUBLE"),
    ("output_tokens", "DOUBLE"),
    ("cost_usd", "DOUBLE"),
)

# (column, detector, key in that detector's row)
_SOURCES: tuple[tuple[str, str, str], ...] = (
    ("calls", "safety", "calls"),
    ("blocked", "safety", "blocked"),
    ("prompt_blocks", "safety", "prompt_blocks"),
    ("response_blocks", "safety", "response_blocks"),
    ("latency_count", "latency", "count"),
    ("latency_sum_ms", "latency", "sum_ms"),
    ("token_calls", "tokens", "output_calls"),
    ("input_tokens", "tokens", "input_tokens"),
    ("output_tokens", "tokens", "output_tokens"),
    # not in the detector's state (it depends on the price table): see PartialRow.extras
    ("cost_usd", "", "cost_usd"),
)


def analyst_values(
    states: Mapping[str, Mapping[str, Any]], extras: Mapping[str, float] | None = None
) -> dict[str, float | int | None]:
    """The flat columns of a partial row. `extras` holds values a detector derives for analysts
    from its state and the model (`analyst_values(state, model)`, e.g. the tokens cost)."""
    out: dict[str, float | int | None] = {}
    for column, detector, key in _SOURCES:
        row = states.get(detector) if detector else extras
        value = row.get(key) if row is not None else None
        out[column] = value if isinstance(value, int | float) else None
    return out


_SUMS = ",\n    ".join(f"sum({name}) AS {name}" for name, _ in ANALYST_COLUMNS)

MERGED_VIEW_SQL = f"""
CREATE OR REPLACE VIEW window_metrics_merged AS
SELECT
    model,
    window_start,
    any_value(window_end) AS window_end,
    sum(records) AS records,
    sum(late_records) AS late_records,
    count(*) AS partial_rows,
    {_SUMS},
    sum(blocked) / nullif(sum(calls), 0) AS block_rate,
    sum(latency_sum_ms) / nullif(sum(latency_count), 0) AS latency_mean_ms,
    sum(output_tokens) / nullif(sum(token_calls), 0) AS output_tokens_per_call
FROM window_metrics
GROUP BY model, window_start;
"""
