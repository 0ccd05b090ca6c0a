"""Receivers that reach people: Slack, PagerDuty Events API v2, Alertmanager API v2 and a
signed generic webhook, behind one persisted, bounded outbox (`Dispatcher`).

Imports only `schemas` and `alerts`; `build_dispatcher` is what the CLI calls.
"""

from alerts.receivers.build import build_dispatcher
from alerts.receivers.dispatcher import Dispatcher

__all__ = ["Dispatcher", "build_dispatcher"]
