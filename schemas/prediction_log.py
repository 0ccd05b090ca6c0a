"""The canonical prediction log: one LLM call, whatever wire format it arrived in.

Field names are a public contract: they become BigQuery/DuckDB columns and `lookout decode`
output. This pydantic model is the single definition of the fields; the hot-path decoder builds
columns (`schemas.batch.LogBatch`) named after the same fields instead of building one pydantic
object per record, which would cost twice the time of parsing the JSON.
"""

from __future__ import annotations

import hashlib
import math
from datetime import UTC, datetime
from typing import Annotated, Literal

import orjson
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator

BlockStage = Literal["prompt", "response"]


def _require_utc(value: datetime) -> datetime:
    """Naive timestamps are ambiguous across replicas in different zones; reject them."""
    if value.tzinfo is None:
        msg = "timestamp must carry a timezone (e.g. a trailing 'Z' for UTC)"
        raise ValueError(msg)
    return value.astimezone(UTC)


UtcDatetime = Annotated[datetime, AfterValidator(_require_utc)]
NonNegativeFloat = Annotated[float, Field(ge=0, allow_inf_nan=False)]
NonNegativeInt = Annotated[int, Field(ge=0)]


class PredictionLog(BaseModel):
    """One model call as Lookout sees it (see README "Canonical record")."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    request_id: str = Field(min_length=1, max_length=256)
    timestamp: UtcDatetime
    model: str = Field(min_length=1, max_length=256)
    model_version: str | None = None
    endpoint: str | None = None
    tenant: str | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    latency_ms: NonNegativeFloat | None = None
    time_to_first_token_ms: NonNegativeFloat | None = None
    input_tokens: NonNegativeInt | None = None
    output_tokens: NonNegativeInt | None = None
    blocked: bool = False
    block_stage: BlockStage | None = None
    block_reason: str | None = None
    safety_scores: dict[str, Annotated[float, Field(ge=0, le=1, allow_inf_nan=False)]] = Field(
        default_factory=dict
    )
    finish_reason: str | None = None
    citation_count: NonNegativeInt | None = None
    prompt: str | None = None
    response: str | None = None
    embedding: list[Annotated[float, Field(allow_inf_nan=False)]] | None = None
    error: str | None = None

    @field_validator("embedding")
    @classmethod
    def _embedding_not_empty(cls, value: list[float] | None) -> list[float] | None:
        if value is not None and len(value) == 0:
            msg = "embedding must be null or a non-empty list of floats"
            raise ValueError(msg)
        return value


def deterministic_request_id(raw: bytes) -> str:
    """An id for records that arrive without one, stable across redeliveries of the same bytes.

    Redelivery dedup keys on request_id, so the id must depend only on the record's content.
    """
    return "sha1:" + hashlib.sha1(raw, usedforsecurity=False).hexdigest()[:24]


def canonical_json(log: PredictionLog) -> bytes:
    """Stable JSON of a record (what `lookout decode` prints)."""
    return orjson.dumps(log.model_dump(mode="json"))


def is_finite(value: float) -> bool:
    return not (math.isnan(value) or math.isinf(value))
