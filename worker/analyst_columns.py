"""Flat, summable columns of a partial row, and the view that merges partial rows.

Detector states travel as JSON (exact, mergeable by the engine); analysts want plain numbers
they can SUM in SQL. These columns are read out of the detectors' own rows, so there is one
definition of each count: the detector's.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from worker.sink import PartialRow

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


#: detectors whose state the analyst columns read: the only ones kept per (version, tenant) slice
SLICE_DETECTORS: tuple[str, ...] = tuple(dict.fromkeys(d for _, d, _ in _SOURCES if d))


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


def latency_histogram(states: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """The latency state as typed columns: non-empty buckets as (bucket, count) pairs, in index
    order, and the bucket mapping that turns an index back into milliseconds. SQL merges
    partial rows by summing counts per bucket (see `merged_view_sql`)."""
    row = states.get("latency")
    if not row or "buckets" not in row:
        return {
            "latency_histogram": [],
            "latency_bucket_gamma": None,
            "latency_bucket_min_ms": None,
        }
    pairs = sorted((int(k), int(v)) for k, v in row["buckets"].items())
    return {
        "latency_histogram": [{"bucket": k, "count": n} for k, n in pairs],
        "latency_bucket_gamma": float(row["bucket_gamma"]),
        "latency_bucket_min_ms": float(row["bucket_min_ms"]),
    }


def slice_rows(partial: PartialRow) -> list[dict[str, Any]]:
    """The rows one partial row becomes in `window_metrics`: one per (model_version, tenant)
    slice with that slice's flat columns and histogram. Detector states (what the evaluator
    merges) go with the first row only; a sink stores an empty state on the others."""
    if not partial.slices:
        return [
            {
                "model_version": None,
                "tenant": None,
                "records": partial.records,
                "late_records": partial.late_records,
                **analyst_values(partial.states, partial.extras),
                **latency_histogram(partial.states),
            }
        ]
    return [
        {
            "model_version": s.model_version,
            "tenant": s.tenant,
            "records": s.records,
            "late_records": s.late_records,
            **analyst_values(s.states, s.extras),
            **latency_histogram(s.states),
        }
        for s in partial.slices
    ]


#: (name, quantile) of the latency columns every merged view computes from the histogram
QUANTILE_COLUMNS: tuple[tuple[str, float], ...] = (
    ("latency_p50_ms", 0.5),
    ("latency_p95_ms", 0.95),
    ("latency_p99_ms", 0.99),
)


#: what `window_metrics_merged` groups by: one row per slice of a window
SLICE_KEYS: tuple[str, ...] = ("model", "model_version", "tenant", "window_start")
#: what `model_windows` groups by: one row per window of a model, as the detectors judge it
MODEL_WINDOW_KEYS: tuple[str, ...] = ("model", "window_start")


def merged_view_sql(
    dialect: str,
    table: str,
    view: str,
    *,
    dedup: bool = False,
    keys: tuple[str, ...] = SLICE_KEYS,
) -> str:
    """`window_metrics_merged`: partial rows summed per (model, model_version, tenant, window),
    and p50/p95/p99 from the summed latency histogram, in DuckDB's or BigQuery's SQL (`dialect`
    "duckdb" | "bigquery"); with `keys=MODEL_WINDOW_KEYS`, `model_windows`, the same per
    (model, window) over every version and tenant, the window the detectors judge (its p95 is
    the latency detector's; a slice's p95 over 20 calls is not). Rows that carry no record (a
    held sample written at close) are left out, so no empty slice appears.

    The quantile is the detector's own rule (`LogBuckets.quantiles`): the first bucket whose
    running count exceeds floor(q·(n − 1)), reported as 2·min·γ^k/(1 + γ) (min for bucket 0), so
    the view and the engine agree exactly. With `dedup`, only the newest row of each `row_id`
    counts (BigQuery: a retried write may land a partial row twice)."""
    source = f"(SELECT * FROM {table} WHERE records > 0)"
    if dedup:
        source = (
            f"(SELECT * FROM {table} WHERE TRUE "
            "QUALIFY ROW_NUMBER() OVER (PARTITION BY row_id ORDER BY written_at DESC) = 1)"
        )
        source = f"(SELECT * FROM {source} WHERE records > 0)"
    unnest = (
        "CROSS JOIN UNNEST(t.latency_histogram) AS hb"
        if dialect == "bigquery"
        else "CROSS JOIN UNNEST(t.latency_histogram) AS u(hb)"
    )
    grouped = keys
    keys_sql = ", ".join(grouped)
    t_keys = ", ".join(f"t.{k}" for k in grouped)
    w_keys = ", ".join(f"w.{k}" for k in grouped)
    same_slice = " AND ".join(f"q.{k} IS NOT DISTINCT FROM m.{k}" for k in grouped)
    sums = ",\n    ".join(f"SUM(w.{name}) AS {name}" for name, _ in ANALYST_COLUMNS)
    picks = ",\n        ".join(
        f"MIN(IF(c > FLOOR({q} * (total - 1)), bucket, NULL)) AS {name}_bucket"
        for name, q in QUANTILE_COLUMNS
    )
    values = ",\n    ".join(
        f"IF(q.{name}_bucket <= 0, q.min_ms, "
        f"2 * q.min_ms * POW(q.gamma, q.{name}_bucket) / (1 + q.gamma)) AS {name}"
        for name, _ in QUANTILE_COLUMNS
    )
    return f"""CREATE OR REPLACE VIEW {view} AS
WITH w AS (SELECT * FROM {source} AS rows_),
hist AS (
    SELECT {t_keys}, hb.bucket AS bucket, SUM(hb.count) AS n,
        ANY_VALUE(t.latency_bucket_gamma) AS gamma, ANY_VALUE(t.latency_bucket_min_ms) AS min_ms
    FROM w AS t {unnest}
    GROUP BY {t_keys}, hb.bucket
),
cum AS (
    SELECT {keys_sql}, bucket, gamma, min_ms,
        SUM(n) OVER (PARTITION BY {keys_sql} ORDER BY bucket
            ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS c,
        SUM(n) OVER (PARTITION BY {keys_sql}) AS total
    FROM hist
),
q AS (
    SELECT {keys_sql}, ANY_VALUE(gamma) AS gamma, ANY_VALUE(min_ms) AS min_ms,
        {picks}
    FROM cum GROUP BY {keys_sql}
),
m AS (
    SELECT {w_keys}, ANY_VALUE(w.window_end) AS window_end,
    SUM(w.records) AS records, SUM(w.late_records) AS late_records, COUNT(*) AS partial_rows,
    {sums}
    FROM w GROUP BY {w_keys}
)
SELECT m.*,
    m.blocked / NULLIF(m.calls, 0) AS block_rate,
    m.latency_sum_ms / NULLIF(m.latency_count, 0) AS latency_mean_ms,
    m.output_tokens / NULLIF(m.token_calls, 0) AS output_tokens_per_call,
    {values}
FROM m LEFT JOIN q ON {same_slice}
"""


def model_daily_sql(dialect: str, model_windows: str, view: str) -> str:
    """`model_daily`: per model and UTC day, its windows (`model_windows`, one row per window
    over all versions and tenants) summed (the same columns in both). The worst p95 is the
    worst window's as the detectors judged it: taken over (version, tenant) slices of a few
    dozen calls it read 5,005 ms where no window's p95 passed 3,112, and moved when a fifth of
    the calls were relabelled with another version.

    The day is UTC's in both: DuckDB casts a TIMESTAMPTZ to the session's time zone's date, so
    on a host in Los Angeles every UTC day was split in two (34,775 and 18,328 calls for one
    model's 53,103), and the README's per-day query disagreed with BigQuery's."""
    day = (
        "CAST(timezone('UTC', window_start) AS DATE)"
        if dialect == "duckdb"
        else "DATE(window_start)"
    )
    return f"""CREATE OR REPLACE VIEW {view} AS
SELECT model, {day} AS day, COUNT(*) AS windows,
    SUM(records) AS records, SUM(calls) AS calls, SUM(blocked) AS blocked,
    SUM(blocked) / NULLIF(SUM(calls), 0) AS block_rate,
    SUM(input_tokens) AS input_tokens, SUM(output_tokens) AS output_tokens,
    SUM(cost_usd) AS cost_usd, MAX(latency_p95_ms) AS worst_window_p95_ms
FROM {model_windows}
GROUP BY model, {day}
"""


MERGED_VIEW_SQL = (
    merged_view_sql("duckdb", "window_metrics", "window_metrics_merged")
    + ";\n"
    + merged_view_sql("duckdb", "window_metrics", "model_windows", keys=MODEL_WINDOW_KEYS)
    + ";\n"
    + model_daily_sql("duckdb", "model_windows", "model_daily")
    + ";\n"
)
