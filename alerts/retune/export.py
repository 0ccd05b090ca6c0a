"""The tuning dataset: a configured query over the affected windows' prediction samples,
written as JSONL with `input_text` / `output_text` and split train / eval with a fixed seed.

The query runs in DuckDB, which reads the places samples usually land (NDJSON or Parquet
exports of the prediction logs, `read_ndjson(...)`, an attached database); `$model`,
`$start` and `$end` are bound, never pasted in. The split is reproducible: rows are put in a
stable order (request id, else the texts), shuffled with `seed`, and the first
`round(n * eval_fraction)` go to eval.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import orjson

from schemas.retune_config import RetuneExport

_PARAM = re.compile(r"\$(model|start|end)\b")


class ExportError(Exception):
    """The export could not run; the message says which step and why."""


@dataclass(frozen=True)
class ExportResult:
    train_uri: str
    eval_uri: str
    train_rows: int
    eval_rows: int


def dataset_rows(
    config: RetuneExport, *, model: str, start: datetime, end: datetime
) -> list[dict[str, Any]]:
    """`{"input_text", "output_text", "request_id"?}` rows from the query, in stable order."""
    values = {"model": model, "start": start, "end": end}
    params = {name: values[name] for name in set(_PARAM.findall(config.query))}
    try:
        with duckdb.connect() as con:
            cursor = con.execute(config.query, params)
            columns = [d[0] for d in cursor.description or ()]
            if not {"prompt", "response"} <= set(columns):
                msg = f"the export query must return prompt and response columns, got {columns}"
                raise ExportError(msg)
            rows = cursor.fetchmany(config.max_rows)
    except duckdb.Error as error:
        msg = f"the export query failed: {error}"
        raise ExportError(msg) from error
    out = []
    for row in rows:
        record = dict(zip(columns, row, strict=True))
        if record["prompt"] is None or record["response"] is None:
            continue
        item = {
            "input_text": config.instruction_template.replace("{prompt}", str(record["prompt"])),
            "output_text": str(record["response"]),
        }
        if record.get("request_id") is not None:
            item["request_id"] = str(record["request_id"])
        out.append(item)
    out.sort(key=lambda r: (r.get("request_id", ""), r["input_text"], r["output_text"]))
    return out


def split(
    rows: list[dict[str, Any]], *, eval_fraction: float, seed: int
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    shuffled = list(rows)
    random.Random(seed).shuffle(shuffled)
    n_eval = int(len(shuffled) * eval_fraction + 0.5)
    return shuffled[n_eval:], shuffled[:n_eval]


def export_dataset(
    config: RetuneExport, *, model: str, start: datetime, end: datetime
) -> ExportResult:
    rows = dataset_rows(config, model=model, start=start, end=end)
    if not rows:
        msg = f"the export query returned no samples for {model} between {start} and {end}"
        raise ExportError(msg)
    train, evaluation = split(rows, eval_fraction=config.eval_fraction, seed=config.seed)
    fields = {
        "model": model,
        # in UTC, as the Z says: `--from 08:30+02:00` and `06:30Z` are one folder
        "window_start": start.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ"),
        "window_end": end.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ"),
    }
    base = config.uri.format_map(fields).rstrip("/")
    if base.startswith("gs://"):
        msg = "gs:// export URIs are not supported yet: export to a local path and copy"
        raise ExportError(msg)
    directory = Path(base.removeprefix("file://"))
    try:
        directory.mkdir(parents=True, exist_ok=True)
        for name, part in (("train.jsonl", train), ("eval.jsonl", evaluation)):
            with (directory / name).open("wb") as out:
                for row in part:
                    out.write(orjson.dumps(row) + b"\n")
    except OSError as error:
        msg = f"writing the dataset under {directory}: {error.strerror}"
        raise ExportError(msg) from error
    return ExportResult(
        str(directory / "train.jsonl"), str(directory / "eval.jsonl"), len(train), len(evaluation)
    )
