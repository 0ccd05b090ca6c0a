"""The compiled fast path of `decode_messages`, merged back with the Python reference.

`schemas.decode._fastdecode` (Cython over yyjson, GIL released while it parses) reads the lines
it fully understands straight into columns. Everything else goes to the Python decoder, the
reference and the only source of errors, so the result is the reference's by construction:

- a message the compiled scan leaves whole (a format hint, a pretty-printed document, an array
  line, embeddings of two widths) is decoded by the reference as it is;
- any other line it does not read is decoded by the reference as a one-line message with its
  own line number, which gives that line's records and errors exactly as inside its message
  (the Python decoder judges NDJSON lines one by one), except for the message-wide embedding
  width rule and an internal error: a message where either matters is redone whole;
- the good rows of both are put back in poll order (message, line) and grouped by embedding
  width as the reference groups them.

`LOOKOUT_DECODER=python` forces the reference (for debugging). If the extension was not built,
the reference runs and one logged warning says so (tests/unit/test_decode_compiled_agreement.py
fails on it with CI=true).
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from schemas.batch import LogBatch

if TYPE_CHECKING:
    from schemas.decode.api import DecodedPoll, DecodeLimits, MessageBytes

    Reference = Callable[[Sequence[MessageBytes], DecodeLimits], DecodedPoll]

IntArray = npt.NDArray[np.int64]
log = logging.getLogger("lookout.decode")

_module: ModuleType | None = None
_tried = False


def compiled_module() -> ModuleType | None:
    """The extension, or None (with one warning) when the install could not compile it."""
    global _module, _tried  # a cache of an import, not a setting
    if not _tried:
        _tried = True
        try:
            from schemas.decode import _fastdecode  # type: ignore[attr-defined]
        except ImportError as e:
            log.warning(
                "the compiled decoder is not built (%s); decoding in pure Python, several "
                "times slower (reinstall where a C compiler is found: pip install .)",
                e,
            )
        else:
            _module = _fastdecode
    return _module


def enabled() -> bool:
    """Whether `decode_messages` takes the fast path (`LOOKOUT_DECODER=python` turns it off)."""
    if os.environ.get("LOOKOUT_DECODER", "").lower() == "python":
        return False
    return compiled_module() is not None


class _Piece:
    """Good rows from one source, as a batch, with each row's message, line and order."""

    def __init__(self, batch: LogBatch, origin: IntArray, line: IntArray) -> None:
        self.batch, self.origin, self.line = batch, origin, line


def decode_messages(
    messages: Sequence[MessageBytes], limits: DecodeLimits, reference: Reference
) -> DecodedPoll:
    """The reference's `DecodedPoll` for `messages`, most of it computed in C.

    A failure of this merging (a bug of ours) must not stop the stream: the poll is decoded by
    the reference instead, with a warning (an error under pytest, so tests see it).
    """
    try:
        return _decode(messages, limits, reference)
    except Exception as e:
        warnings.warn(
            f"compiled decoder failed ({type(e).__name__}: {e}); poll decoded in Python",
            RuntimeWarning,
            stacklevel=2,
        )
        return reference(messages, limits)


def _decode(
    messages: Sequence[MessageBytes], limits: DecodeLimits, reference: Reference
) -> DecodedPoll:
    fast_module = compiled_module()
    assert fast_module is not None
    want_dim = -1 if limits.expected_embedding_dim is None else limits.expected_embedding_dim
    columns, others, left = fast_module.scan(
        [m.data for m in messages],
        [m.first_line for m in messages],
        [m.format_hint is None for m in messages],
        limits.max_record_bytes,
        limits.max_depth,
        want_dim,
    )
    whole = set(left)
    widths = _fast_widths(columns, whole)
    whole |= {i for i, w in widths.items() if len(w) > 1}
    # first round: whole messages as they are, every other line as a one-line message
    sub, owner = _sub_poll(messages, others, whole)
    first = reference(sub, limits)
    redo = _needing_whole(first, owner, whole, widths, limits.expected_embedding_dim)
    if redo:
        whole |= redo
        sub, owner = _sub_poll(messages, others, whole)
        first = reference(sub, limits)
    from schemas.decode.api import DecodedPoll

    errors: list[list[Any]] = [[] for _ in messages]
    for k, errs in enumerate(first.errors):
        errors[owner[k]].extend(errs)
    pieces = _reference_pieces(first, owner)
    keep = ~np.isin(columns["origin"], sorted(whole))
    pieces.extend(_fast_pieces(columns, keep))
    batches, origins, lines = _assemble(pieces)
    return DecodedPoll(
        tuple(batches),
        tuple(origins),
        tuple(lines),
        tuple(tuple(sorted(errs, key=lambda err: err.line)) for errs in errors),
    )


def _fast_widths(columns: dict[str, Any], whole: set[int]) -> dict[int, set[int]]:
    """Per message, the embedding widths of its fast rows (one, by the scan's own rule)."""
    out: dict[int, set[int]] = {}
    width, origin = columns["width"], columns["origin"]
    has = width > 0
    if not has.any():
        return out
    widths = width[has]
    if (widths == widths[0]).all():  # one width in the poll (nearly always): no 2-d unique
        w = int(widths[0])
        return {msg: {w} for msg in np.unique(origin[has]).tolist() if msg not in whole}
    pairs = np.unique(np.stack([origin[has], widths]), axis=1)
    for msg, w in pairs.T.tolist():
        if msg not in whole:
            out.setdefault(msg, set()).add(w)
    return out


def _sub_poll(
    messages: Sequence[MessageBytes], others: list[tuple[int, int, int, int, bool]], whole: set[int]
) -> tuple[list[MessageBytes], list[int]]:
    """The reference's input: whole messages as they are, and the other lines of each split
    message as one message with the fast lines left blank (same line numbers, blank lines are
    skipped). That is safe when its first line is valid JSON on its own: then the lines cannot
    join into one multi-line document. Otherwise each line goes alone."""
    from schemas.decode.api import MessageBytes

    by_message: dict[int, list[tuple[int, int, int, bool]]] = {}
    for msg, line, start, end, valid in others:
        if msg not in whole:
            by_message.setdefault(msg, []).append((line, start, end, valid))
    sub: list[MessageBytes] = []
    owner: list[int] = []
    for msg in sorted(whole | set(by_message)):
        message = messages[msg]
        lines = by_message.get(msg)
        if lines is None:
            sub.append(message)
            owner.append(msg)
        elif len(lines) > 1 and lines[0][3]:
            parts: list[bytes] = []
            previous = lines[0][0]
            for line, start, end, _ in lines:
                parts.append(b"\n" * (line - previous))
                parts.append(message.data[start:end])
                previous = line
            sub.append(MessageBytes(b"".join(parts), None, lines[0][0]))
            owner.append(msg)
        else:
            for line, start, end, _ in lines:
                sub.append(MessageBytes(message.data[start:end], None, line))
                owner.append(msg)
    return sub, owner


def _needing_whole(
    poll: DecodedPoll,
    owner: list[int],
    whole: set[int],
    widths: dict[int, set[int]],
    want: int | None,
) -> set[int]:
    """Split messages whose lines cannot be judged apart after all: an internal error (the
    reference dead-letters the whole message), or, with no configured width, embeddings whose
    widths differ across lines (the width rule is then the message's majority)."""
    redo = {owner[k] for k, errs in enumerate(poll.errors) if _internal(errs)}
    if want is None:
        seen = {msg: set(ws) for msg, ws in widths.items()}
        for batch, origin in zip(poll.batches, poll.origins, strict=True):
            if len(batch.embedding_rows):
                for k in np.unique(origin[batch.embedding_rows]).tolist():
                    seen.setdefault(owner[k], set()).add(batch.embedding_dim)
        redo |= {msg for msg, ws in seen.items() if len(ws) > 1}
    return redo - whole


def _internal(errs: Sequence[Any]) -> bool:
    return any(e.error_type == "internal_error" for e in errs)


def _reference_pieces(poll: DecodedPoll, owner: list[int]) -> list[_Piece]:
    owners = np.asarray(owner, dtype=np.int64)
    return [
        _Piece(batch, owners[origin], line)
        for batch, origin, line in zip(poll.batches, poll.origins, poll.lines, strict=True)
    ]


_OBJECT_COLUMNS = (
    "request_id",
    "model",
    "model_version",
    "tenant",
    "endpoint",
    "block_stage",
    "block_reason",
    "finish_reason",
    "error",
)
_FLOAT_COLUMNS = (
    "timestamp",
    "latency_ms",
    "time_to_first_token_ms",
    "input_tokens",
    "output_tokens",
    "citation_count",
    "response_length",
)


def _fast_pieces(columns: dict[str, Any], keep: npt.NDArray[np.bool_]) -> list[_Piece]:
    """The fast rows as batches, one per embedding width (rows without one in the first)."""
    width: IntArray = columns["width"]
    n = len(width)
    if n == 0 or not keep.any():
        return []
    has = width > 0
    starts = np.cumsum(width) - width  # each row's offset into the flat float32 values
    values = columns["embedding_values"]
    dims = sorted(set(width[has & keep].tolist()))
    groups: list[tuple[npt.NDArray[np.bool_], int | None]] = []
    if len(dims) <= 1:
        groups.append((keep, dims[0] if dims else None))
    else:
        groups.append((keep & ~has, None))
        groups.extend((keep & (width == d), d) for d in dims)
    pieces = []
    for mask, dim in groups:
        if not mask.any():
            continue
        everything = len(groups) == 1 and bool(mask.all())
        rows = np.flatnonzero(mask)
        emb_at = np.flatnonzero(has[rows])
        if dim is None or not len(emb_at):
            embeddings = np.zeros((0, 0), dtype=np.float32)
        elif len(emb_at) == int(has.sum()) and len(dims) == 1:
            embeddings = values.reshape(-1, dim)  # every fast embedding, in row order
        else:
            take = starts[rows[emb_at]][:, None] + np.arange(dim)
            embeddings = values[take]

        def pick(column: Any, rows: IntArray = rows, everything: bool = everything) -> Any:
            return column if everything else column[rows]  # no copy in the common case

        scores = {c: pick(col) for c, col in columns["safety_scores"].items()}
        batch = LogBatch(
            **{name: pick(columns[name]) for name in (*_OBJECT_COLUMNS, *_FLOAT_COLUMNS)},
            blocked=pick(columns["blocked"]),
            safety_scores={c: col for c, col in scores.items() if not np.isnan(col).all()},
            embeddings=embeddings,
            embedding_rows=emb_at.astype(np.int64),
        )
        pieces.append(_Piece(batch, pick(columns["origin"]), pick(columns["line"])))
    return pieces


def _assemble(pieces: list[_Piece]) -> tuple[list[LogBatch], list[IntArray], list[IntArray]]:
    """All good rows in poll order, grouped by embedding width as the reference groups them."""
    pieces = [p for p in pieces if len(p.batch)]
    if not pieces:
        return [], [], []
    if len(pieces) == 1:
        p = pieces[0]
        return [p.batch], [p.origin], [p.line]
    if len(pieces) == 2:
        merged = _insert_rows(*pieces)
        if merged is not None:
            return [merged.batch], [merged.origin], [merged.line]
    origin = np.concatenate([p.origin for p in pieces])
    line = np.concatenate([p.line for p in pieces])
    # a row's width: 0 without an embedding
    width = np.concatenate([_row_widths(p.batch) for p in pieces])
    order = np.lexsort((np.arange(len(origin)), line, origin))
    whole = LogBatch.concat([_without_embeddings(p.batch) for p in pieces])
    ordered_width = width[order]
    first_seen: dict[int, None] = {}
    for w in ordered_width[ordered_width > 0].tolist():
        first_seen.setdefault(w, None)
    dims = list(first_seen)
    if len(dims) <= 1:
        groups = [order]
    else:
        groups = [order[ordered_width == d] for d in dims]
        groups[0] = order[(ordered_width == dims[0]) | (ordered_width == 0)]
    where, blocks = _embedding_index(pieces)
    batches, origins, lines = [], [], []
    for rows in groups:
        part = whole.take(rows)
        emb_at = np.flatnonzero(width[rows] > 0)
        if len(emb_at):
            dim = int(width[rows[emb_at[0]]])
            embeddings = blocks[dim][where[rows[emb_at]]]
        else:
            embeddings = np.zeros((0, 0), dtype=np.float32)
        scores = {c: v for c, v in part.safety_scores.items() if not np.isnan(v).all()}
        batches.append(
            LogBatch(
                **{name: getattr(part, name) for name in (*_OBJECT_COLUMNS, *_FLOAT_COLUMNS)},
                blocked=part.blocked,
                safety_scores=scores,
                embeddings=embeddings,
                embedding_rows=emb_at.astype(np.int64),
            )
        )
        origins.append(origin[rows])
        lines.append(line[rows])
    return batches, origins, lines


def _insert_rows(a: _Piece, b: _Piece) -> _Piece | None:
    """The common case of `_assemble` in one pass: the fast rows and a few rows the reference
    decoded, of one embedding width, each piece already in poll order. The few are inserted
    into the many (one copy of each column) instead of concatenating, sorting and taking every
    column of the poll. None when the case does not hold (the general merge then decides)."""
    big, small = (a, b) if len(a.batch) >= len(b.batch) else (b, a)
    with_emb = [p.batch for p in (big, small) if len(p.batch.embedding_rows)]
    if len({(e.embedding_dim, e.embeddings.dtype) for e in with_emb}) > 1:
        return None
    if max(int(big.line.max()), int(small.line.max())) >= 1 << 32:
        return None
    big_key = (big.origin << 32) + big.line
    small_key = (small.origin << 32) + small.line
    if (np.diff(big_key) < 0).any() or (np.diff(small_key) < 0).any():
        return None
    at = np.searchsorted(big_key, small_key)
    if (big_key[np.minimum(at, len(big_key) - 1)] == small_key).any():
        return None  # a line in both pieces: the general merge orders it
    x, y = big.batch, small.batch
    columns: dict[str, Any] = {
        name: np.insert(getattr(x, name), at, getattr(y, name))
        for name in (*_OBJECT_COLUMNS, *_FLOAT_COLUMNS, "blocked")
    }
    scores = {}
    for category in sorted({*x.safety_scores, *y.safety_scores}):
        many = x.safety_scores.get(category, np.full(len(x), np.nan))
        few = y.safety_scores.get(category, np.full(len(y), np.nan))
        column = np.insert(many, at, few)
        if not np.isnan(column).all():
            scores[category] = column
    if not with_emb:
        embeddings = np.zeros((0, 0), dtype=np.float32)
    elif not len(y.embedding_rows):
        embeddings = x.embeddings
    elif not len(x.embedding_rows):
        embeddings = y.embeddings
    else:
        emb_at = np.searchsorted(x.embedding_rows, at[y.embedding_rows])
        embeddings = np.insert(x.embeddings, emb_at, y.embeddings, axis=0)
    width = np.insert(_row_widths(x), at, _row_widths(y))
    batch = LogBatch(
        **columns,
        safety_scores=scores,
        embeddings=embeddings,
        embedding_rows=np.flatnonzero(width > 0).astype(np.int64),
    )
    origin = np.insert(big.origin, at, small.origin)
    return _Piece(batch, origin, np.insert(big.line, at, small.line))


def _row_widths(batch: LogBatch) -> IntArray:
    out = np.zeros(len(batch), dtype=np.int64)
    out[batch.embedding_rows] = batch.embedding_dim
    return out


def _without_embeddings(batch: LogBatch) -> LogBatch:
    return LogBatch(
        **{name: getattr(batch, name) for name in (*_OBJECT_COLUMNS, *_FLOAT_COLUMNS)},
        blocked=batch.blocked,
        safety_scores=batch.safety_scores,
    )


def _embedding_index(
    pieces: list[_Piece],
) -> tuple[IntArray, dict[int, npt.NDArray[np.float32]]]:
    """Per global row, its index in the stacked embeddings of its width; the stacks by width."""
    total = sum(len(p.batch) for p in pieces)
    where = np.full(total, -1, dtype=np.int64)
    stacks: dict[int, list[npt.NDArray[np.float32]]] = {}
    counts: dict[int, int] = {}
    offset = 0
    for p in pieces:
        if len(p.batch.embedding_rows):
            dim = p.batch.embedding_dim
            start = counts.get(dim, 0)
            where[offset + p.batch.embedding_rows] = start + np.arange(len(p.batch.embedding_rows))
            counts[dim] = start + len(p.batch.embedding_rows)
            stacks.setdefault(dim, []).append(p.batch.embeddings)
        offset += len(p.batch)
    return where, {dim: np.concatenate(blocks) for dim, blocks in stacks.items()}
