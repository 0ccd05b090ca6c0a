"""Detections of consecutive one-minute windows, for tests that build a report's input."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from schemas.detection import Detection

MINUTE = timedelta(minutes=1)


def minute_detection(start: datetime, i: int, **fields: Any) -> Detection:
    """The detection of the `i`-th one-minute window from `start`; `fields` give the rest."""
    return Detection(window_start=start + i * MINUTE, window_end=start + (i + 1) * MINUTE, **fields)
