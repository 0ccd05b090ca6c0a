"""A batch of prediction logs as columns: what decoders produce and detectors consume.

Detectors are vectorised (numpy over a whole batch), so the hot path never materialises one
pydantic object per record. Column names follow `PredictionLog` field names; missing numeric
values are NaN, missing strings are None.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np
import numpy.typing as npt

from schemas.prediction_log import PredictionLog

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]
ObjectArray = npt.NDArray[np.object_]
IntArray = npt.NDArray[np.int64]

#: codes of `block_stage`: 0 = not blocked, 1 = prompt, 2 = response
BLOCK_STAGE_CODES: Mapping[str | None, int] = {None: 0, "prompt": 1, "response": 2}


def _empty_float(n: int = 0) -> FloatArray:
    return np.full(n, np.nan, dtype=np.float64)


def _empty_object(n: int = 0) -> ObjectArray:
    return np.full(n, None, dtype=object)


#: the "absent" value of a column by numpy dtype kind
_MISSING: Mapping[str, Any] = {"O": None, "f": np.nan, "b": False}


@dataclass(frozen=True)
class LogBatch:
    """Columns of n prediction logs. Every 1-d array has length n.

    `timestamp` is seconds since the Unix epoch (UTC). `safety_scores` maps a normalised
    category name to an array of probability scores (NaN where the record had none for it).
    `embeddings` holds only the rows that carried an embedding; `embedding_rows` says which.
    `response_length` is the response's length in characters (NaN when there was none), kept
    instead of the text so a batch stays small.
    """

    request_id: ObjectArray
    timestamp: FloatArray
    model: ObjectArray
    model_version: ObjectArray = field(default_factory=_empty_object)
    #: who made the call (a customer or team) and where it was served: analysts slice by them
    tenant: ObjectArray = field(default_factory=_empty_object)
    endpoint: ObjectArray = field(default_factory=_empty_object)
    latency_ms: FloatArray = field(default_factory=_empty_float)
    time_to_first_token_ms: FloatArray = field(default_factory=_empty_float)
    input_tokens: FloatArray = field(default_factory=_empty_float)
    output_tokens: FloatArray = field(default_factory=_empty_float)
    blocked: BoolArray = field(default_factory=lambda: np.zeros(0, dtype=bool))
    block_stage: ObjectArray = field(default_factory=_empty_object)
    block_reason: ObjectArray = field(default_factory=_empty_object)
    finish_reason: ObjectArray = field(default_factory=_empty_object)
    citation_count: FloatArray = field(default_factory=_empty_float)
    response_length: FloatArray = field(default_factory=_empty_float)
    error: ObjectArray = field(default_factory=_empty_object)
    safety_scores: Mapping[str, FloatArray] = field(default_factory=dict)
    embeddings: npt.NDArray[np.float32] = field(
        default_factory=lambda: np.zeros((0, 0), dtype=np.float32)
    )
    embedding_rows: IntArray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))

    def __post_init__(self) -> None:
        n = len(self.request_id)
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in ("embeddings", "embedding_rows", "safety_scores"):
                continue
            if len(value) == 0 and n:
                # a column the producer did not give: absent for every row
                absent = np.full(n, _MISSING[value.dtype.kind], value.dtype)
                object.__setattr__(self, f.name, absent)
                continue
            if len(value) != n:
                msg = f"LogBatch column {f.name!r} has {len(value)} rows, expected {n}"
                raise ValueError(msg)
        for name, scores in self.safety_scores.items():
            if len(scores) != n:
                msg = f"LogBatch safety_scores[{name!r}] has {len(scores)} rows, expected {n}"
                raise ValueError(msg)
        if len(self.embeddings) != len(self.embedding_rows):
            msg = "LogBatch embeddings and embedding_rows differ in length"
            raise ValueError(msg)

    def __len__(self) -> int:
        return len(self.request_id)

    @property
    def embedding_dim(self) -> int:
        return int(self.embeddings.shape[1]) if self.embeddings.ndim == 2 else 0

    @classmethod
    def empty(cls) -> LogBatch:
        return cls(request_id=_empty_object(), timestamp=_empty_float(), model=_empty_object())

    def take(self, index: npt.NDArray[np.bool_] | IntArray) -> LogBatch:
        """The rows selected by a boolean mask or an index array, in that order."""
        positions = np.flatnonzero(index) if index.dtype == np.bool_ else np.asarray(index)
        columns: dict[str, Any] = {}
        for f in fields(self):
            if f.name in ("embeddings", "embedding_rows", "safety_scores"):
                continue
            columns[f.name] = getattr(self, f.name)[positions]
        columns["safety_scores"] = {k: v[positions] for k, v in self.safety_scores.items()}
        # map old row numbers to new ones for the rows that carried embeddings
        new_row_of_old = np.full(len(self), -1, dtype=np.int64)
        new_row_of_old[positions] = np.arange(len(positions), dtype=np.int64)
        if len(self.embedding_rows):
            mapped = new_row_of_old[self.embedding_rows]
            keep = mapped >= 0
            order = np.argsort(mapped[keep], kind="stable")
            columns["embeddings"] = self.embeddings[keep][order]
            columns["embedding_rows"] = mapped[keep][order]
        else:
            columns["embeddings"] = self.embeddings[:0]
            columns["embedding_rows"] = self.embedding_rows[:0]
        return LogBatch(**columns)

    @classmethod
    def concat(cls, batches: Sequence[LogBatch]) -> LogBatch:
        """One batch of all rows, in order. Embedding dimensions must agree."""
        batches = [b for b in batches if len(b)]
        if not batches:
            return cls.empty()
        if len(batches) == 1:
            return batches[0]
        columns: dict[str, Any] = {}
        for f in fields(cls):
            if f.name in ("embeddings", "embedding_rows", "safety_scores"):
                continue
            columns[f.name] = np.concatenate([getattr(b, f.name) for b in batches])
        categories = sorted({k for b in batches for k in b.safety_scores})
        columns["safety_scores"] = {
            c: np.concatenate([b.safety_scores.get(c, _empty_float(len(b))) for b in batches])
            for c in categories
        }
        with_emb = [b for b in batches if len(b.embedding_rows)]
        dims = {b.embedding_dim for b in with_emb}
        if len(dims) > 1:
            msg = f"cannot concatenate batches with embedding dimensions {sorted(dims)}"
            raise ValueError(msg)
        offsets = np.cumsum([0] + [len(b) for b in batches[:-1]])
        if with_emb:
            columns["embeddings"] = np.concatenate([b.embeddings for b in with_emb])
            columns["embedding_rows"] = np.concatenate(
                [
                    b.embedding_rows + off
                    for b, off in zip(batches, offsets, strict=True)
                    if len(b.embedding_rows)
                ]
            )
        else:
            columns["embeddings"] = np.zeros((0, 0), dtype=np.float32)
            columns["embedding_rows"] = np.zeros(0, dtype=np.int64)
        return cls(**columns)

    @classmethod
    def from_logs(cls, logs: Iterable[PredictionLog]) -> LogBatch:
        """Columns from pydantic records: for tests, `lookout decode` and small inputs.

        The hot path decodes wire bytes straight into columns instead (schemas.decode).
        """
        logs = list(logs)
        n = len(logs)

        def floats(values: Iterable[float | int | None]) -> FloatArray:
            return np.array([np.nan if v is None else float(v) for v in values], dtype=np.float64)

        def objects(values: Iterable[Any]) -> ObjectArray:
            out = np.empty(n, dtype=object)
            out[:] = list(values)
            return out

        categories = sorted({c for log in logs for c in log.safety_scores})
        emb_rows = [i for i, log in enumerate(logs) if log.embedding is not None]
        embeddings = (
            np.array([logs[i].embedding for i in emb_rows], dtype=np.float32)
            if emb_rows
            else np.zeros((0, 0), dtype=np.float32)
        )
        return cls(
            request_id=objects(log.request_id for log in logs),
            timestamp=floats(log.timestamp.timestamp() for log in logs),
            model=objects(log.model for log in logs),
            model_version=objects(log.model_version for log in logs),
            tenant=objects(log.tenant for log in logs),
            endpoint=objects(log.endpoint for log in logs),
            latency_ms=floats(log.latency_ms for log in logs),
            time_to_first_token_ms=floats(log.time_to_first_token_ms for log in logs),
            input_tokens=floats(log.input_tokens for log in logs),
            output_tokens=floats(log.output_tokens for log in logs),
            blocked=np.array([log.blocked for log in logs], dtype=bool),
            block_stage=objects(log.block_stage for log in logs),
            block_reason=objects(log.block_reason for log in logs),
            finish_reason=objects(log.finish_reason for log in logs),
            citation_count=floats(log.citation_count for log in logs),
            response_length=floats(
                None if log.response is None else len(log.response) for log in logs
            ),
            error=objects(log.error for log in logs),
            safety_scores={c: floats(log.safety_scores.get(c) for log in logs) for c in categories},
            embeddings=embeddings,
            embedding_rows=np.array(emb_rows, dtype=np.int64),
        )
