"""Decoded rows → one `LogBatch`, checking numeric bounds a whole column at a time.

msgspec already checked types and declared bounds while parsing; what is left are the values a
body or span computed (token counts, scores, latencies from span times) and the embedding
rules, checked here with numpy over the message instead of record by record.

Embeddings: with `expected_embedding_dim` set, every embedding must have that many numbers.
Without it, all embeddings of one message must agree: the most common dimension wins (the first
seen on a tie) and the rows that differ are rejected — a model's embedder does not change
dimension mid-message, so the minority rows are the broken ones.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
import orjson

from schemas.batch import FloatArray, LogBatch, ObjectArray
from schemas.decode.wire import Wire
from schemas.errors import DecodeError


def embedding_problems(
    embeddings: Sequence[list[float] | None], expected_dim: int | None
) -> dict[int, str]:
    """Row → reason, for the embeddings that break the rules above (shared by both paths)."""
    problems: dict[int, str] = {}
    counts: dict[int, int] = {}
    for i, emb in enumerate(embeddings):
        if emb is None:
            continue
        if not emb:
            problems[i] = "must be null or a non-empty list of numbers, got []"
        else:
            counts[len(emb)] = counts.get(len(emb), 0) + 1
    if not counts:
        return problems
    want = expected_dim if expected_dim is not None else max(counts, key=counts.__getitem__)
    for i, emb in enumerate(embeddings):
        if emb and len(emb) != want:
            if expected_dim is not None:
                problems[i] = f"must have {want} dimensions (expected), got {len(emb)}"
            else:
                problems[i] = (
                    f"must have {want} dimensions like the other embeddings in this message, "
                    f"got {len(emb)}"
                )
    return problems


_NAN = float("nan")


def _floats(values: Sequence[float | int | None]) -> FloatArray:
    # numpy turns None into NaN for a float dtype, which is how a batch says "missing"
    return np.array(values, dtype=np.float64)


def _objects(values: list[object]) -> ObjectArray:
    out = np.empty(len(values), dtype=object)
    out[:] = values
    return out


def _show(value: float) -> str:
    return orjson.dumps(int(value) if float(value).is_integer() else value).decode()


def build_batch(
    rows: list[Wire], lines: list[int], raws: list[bytes], expected_dim: int | None
) -> tuple[LogBatch, npt.NDArray[np.int64], list[DecodeError]]:
    """The good rows as columns, their lines, and an error for each row that broke a bound."""
    n = len(rows)
    problems: dict[int, tuple[str, str]] = {}

    def reject(mask: npt.NDArray[np.bool_], field: str, words: str, values: FloatArray) -> None:
        for i in np.flatnonzero(mask):
            problems.setdefault(int(i), (field, f"must be {words}, got {_show(values[i])}"))

    latency = _floats([r.latency_ms for r in rows])
    ttft = _floats([r.time_to_first_token_ms for r in rows])
    tokens_in = _floats([r.input_tokens for r in rows])
    tokens_out = _floats([r.output_tokens for r in rows])
    citations = _floats([r.citation_count for r in rows])
    with np.errstate(invalid="ignore"):
        for name, col, words in (
            ("latency_ms", latency, "a non-negative number"),
            ("time_to_first_token_ms", ttft, "a non-negative number"),
            ("input_tokens", tokens_in, "a non-negative integer"),
            ("output_tokens", tokens_out, "a non-negative integer"),
            ("citation_count", citations, "a non-negative integer"),
        ):
            reject((col < 0) | np.isinf(col), name, words, col)

        # plain lists while filling (a numpy element store costs ~10× a list store)
        score_lists: dict[str, list[float]] = {}
        for i, r in enumerate(rows):
            if r.safety_scores:
                for category, score in r.safety_scores.items():
                    values = score_lists.get(category)
                    if values is None:
                        values = score_lists[category] = [_NAN] * n  # all floats: fast
                    values[i] = score
        scores = {c: np.array(values, dtype=np.float64) for c, values in score_lists.items()}
        for category, column in scores.items():
            bad = (column < 0) | (column > 1) | np.isinf(column)
            reject(bad, f"safety_scores.{category}", "a probability between 0 and 1", column)

    embeddings = [r.embedding for r in rows]
    for i, reason in embedding_problems(embeddings, expected_dim).items():
        problems.setdefault(i, ("embedding", reason))
    # msgspec already refused non-finite numbers while parsing (and bodies and spans carry no
    # embeddings), so no finiteness pass here; one float32 conversion for the whole message
    emb_rows = [i for i, e in enumerate(embeddings) if e and i not in problems]

    good = np.ones(n, dtype=bool)
    good[list(problems)] = False
    errors = [
        DecodeError(lines[i], reason, raws[i], field) for i, (field, reason) in problems.items()
    ]
    keep = np.flatnonzero(good)
    kept_rows = [rows[i] for i in keep]
    new_index = np.cumsum(good) - 1
    emb_keep = [i for i in emb_rows if good[i]]
    batch = LogBatch(
        request_id=_objects([r.request_id for r in kept_rows]),
        timestamp=_floats([r.timestamp.timestamp() for r in kept_rows]),  # type: ignore[union-attr]
        model=_objects([r.model for r in kept_rows]),
        model_version=_objects([r.model_version for r in kept_rows]),
        latency_ms=latency[keep],
        time_to_first_token_ms=ttft[keep],
        input_tokens=tokens_in[keep],
        output_tokens=tokens_out[keep],
        blocked=np.array([bool(r.blocked) for r in kept_rows], dtype=bool),
        block_stage=_objects([r.block_stage for r in kept_rows]),
        block_reason=_objects([r.block_reason for r in kept_rows]),
        finish_reason=_objects([r.finish_reason for r in kept_rows]),
        citation_count=citations[keep],
        response_length=_floats(
            [None if r.response is None else len(r.response) for r in kept_rows]
        ),
        error=_objects([r.error for r in kept_rows]),
        safety_scores={
            c: col[keep]
            for c, col in sorted(scores.items())
            if good.all() or not np.isnan(col[keep]).all()
        },
        embeddings=(
            np.array([embeddings[i] for i in emb_keep], dtype=np.float32)
            if emb_keep
            else np.zeros((0, 0), dtype=np.float32)
        ),
        embedding_rows=new_index[emb_keep].astype(np.int64),
    )
    line_array = np.array(lines, dtype=np.int64)[keep]
    return batch, line_array, errors
