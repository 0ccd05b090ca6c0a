"""Alerts: detections become incidents (`AlertTracker`), routed (`Router`) to notifiers.

Imports only `schemas`; the engine in `worker` wires a tracker, a router and named notifiers.
"""

from alerts.notifiers import (
    ConsoleNotifier,
    JsonLinesNotifier,
    Notifier,
    NotifierError,
    RecordingNotifier,
    RetryableNotifierError,
    TerminalNotifierError,
)
from alerts.routing import DeliveryFailure, DispatchResult, Router
from alerts.state import AlertTracker, Incident, dedup_key

__all__ = [
    "AlertTracker",
    "ConsoleNotifier",
    "DeliveryFailure",
    "DispatchResult",
    "Incident",
    "JsonLinesNotifier",
    "Notifier",
    "NotifierError",
    "RecordingNotifier",
    "RetryableNotifierError",
    "Router",
    "TerminalNotifierError",
    "dedup_key",
]
