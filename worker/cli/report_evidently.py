"""evidently's second opinion on windows the native embedding-drift test flagged.

The alert comes from Lookout's calibrated test; evidently's model-based method on the window's
sample against the reference's sample is shown beside it in the report, so an ML engineer
deciding whether to retune sees both. Only the stored samples are used (bounded by config).
"""

from __future__ import annotations

import logging
from datetime import datetime

import numpy as np

from detectors import reservoir as rs
from worker.sinks.duckdb_sink import DuckDBSink
from worker.sinks.state_codec import decode_states

log = logging.getLogger("lookout.report")


def evidently_second_opinion(sink: DuckDBSink, model: str, window_start: datetime) -> str | None:
    """One line: evidently's verdict for `model`'s window, or None when there is no sample."""
    # states are compact bytes (`state_codec`), not JSON: decoded here, not with json_extract
    rows = sink.query(
        "SELECT states FROM window_metrics WHERE model = ? AND window_start = ?",
        [model, window_start],
    )
    references = sink.query(
        "SELECT state FROM detector_references WHERE model = ? AND detector = 'embedding_drift'",
        [model],
    )
    sample_rows = [decode_states(r).get("embedding_drift", {}).get("sample") for (r,) in rows]
    samples = [rs.from_row(r) for r in sample_rows if r is not None]
    samples = [s for s in samples if len(s)]
    reference = decode_states(references[0][0]).get("sample") if references else None
    if not samples or reference is None:
        return None
    current = np.concatenate([s.rows for s in samples]).astype(np.float32)
    ref = rs.from_row(reference).rows.astype(np.float32)
    if len(current) < 20 or len(ref) < 20:
        return None
    from detectors.evidently_drift import evidently_embedding_drift

    try:
        verdict = evidently_embedding_drift(ref, current, "model")
    except Exception as error:  # a second opinion must not break the report
        log.warning("evidently could not judge %s %s: %s", model, window_start, error)
        return None
    word = "drift" if verdict.drifted else "no drift"
    return (
        f"evidently ({verdict.method} method, {len(current)} vs {len(ref)} sampled embeddings): "
        f"score {verdict.score:.3f}, {word}"
    )
