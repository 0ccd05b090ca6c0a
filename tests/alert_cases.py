"""Alerts as the tracker builds them, for tests of what receivers get."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from schemas.detection import Alert, Severity

T0 = datetime(2026, 1, 5, 6, 0, tzinfo=UTC)


def make_alert(
    status: str = "firing",
    *,
    model: str = "m",
    detector: str = "safety",
    condition: str = "c",
    severity: Severity = "warning",
    dedup_key: str | None = None,
    start: datetime = T0,
    minutes: int = 5,
    summary: str | None = None,
    **extra: Any,
) -> Alert:
    """A firing or resolved alert with plausible evidence; the summary says what it is."""
    return Alert(
        dedup_key=dedup_key or f"lookout:{model}:{detector}:{condition}",
        status="firing" if status == "firing" else "resolved",
        severity=severity,
        detector=detector,
        model=model,
        condition=condition,
        window_start=start,
        window_end=start + timedelta(minutes=minutes),
        value=0.06,
        threshold=0.03,
        baseline=0.02,
        sample_size=500,
        summary=summary
        if summary is not None
        else f"[{status.upper()}] {model} {detector}: {condition} — why",
        **extra,
    )
