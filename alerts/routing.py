"""Which receivers get an alert, and delivering a batch to them.

Rules (`schemas.alert_config.Route`) are tried in order, like Alertmanager routes: the first
match wins unless it says `continue`, then later rules are tried too. An alert no rule takes
goes to `default_receiver`; an `info` alert no rule explicitly takes (rules default to
`min_severity: warning`) goes to `info_receiver` instead, so descriptor drift lands in the
report and the log and never pages anyone.

Delivery never raises: one receiver failing must not keep the alert from the others, and the
evaluator must keep running. Failures come back in the `DispatchResult`, with the alerts that
did not arrive, so the caller can re-send the retryable ones (safe: dedup keys are stable).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase

from alerts.notifiers import Notifier, NotifierError, TerminalNotifierError, notifier_error
from schemas.alert_config import SEVERITY_RANK, AlertingConfig, Route
from schemas.detection import Alert


@dataclass(frozen=True)
class DeliveryFailure:
    """One receiver did not get these alerts."""

    receiver: str
    alerts: tuple[Alert, ...]
    error: NotifierError

    @property
    def retryable(self) -> bool:
        return self.error.retryable


@dataclass(frozen=True)
class DispatchResult:
    """What a dispatch did: alerts delivered per receiver, and what failed."""

    delivered: Mapping[str, int]
    failures: tuple[DeliveryFailure, ...] = ()

    @property
    def ok(self) -> bool:
        return not self.failures


class Router:
    """Routes alerts to receiver names and delivers them through named notifiers."""

    def __init__(self, config: AlertingConfig) -> None:
        self._config = config

    def receivers_for(self, alert: Alert) -> tuple[str, ...]:
        """The receivers of `alert`, in rule order, each once."""
        chosen: list[str] = []
        for route in self._config.routes:
            if not _matches(route, alert):
                continue
            chosen.extend(r for r in route.receivers if r not in chosen)
            if not route.continue_:
                break
        if chosen:
            return tuple(chosen)
        if alert.severity == "info":
            return (self._config.info_receiver,)
        return (self._config.default_receiver,)

    def receiver_names(self) -> frozenset[str]:
        """Every receiver the config can route to: check at start-up that each has a notifier."""
        names = {self._config.default_receiver, self._config.info_receiver}
        names.update(r for route in self._config.routes for r in route.receivers)
        return frozenset(names)

    def dispatch(
        self, alerts: Sequence[Alert], notifiers: Mapping[str, Notifier]
    ) -> DispatchResult:
        """Send each receiver its alerts in one batch, in the order given."""
        batches: dict[str, list[Alert]] = {}
        for alert in alerts:
            for receiver in self.receivers_for(alert):
                batches.setdefault(receiver, []).append(alert)
        delivered: dict[str, int] = {}
        failures: list[DeliveryFailure] = []
        for receiver, batch in batches.items():
            notifier = notifiers.get(receiver)
            error: NotifierError | None = None
            if notifier is None:
                error = TerminalNotifierError(receiver, "no notifier is configured for it")
            else:
                try:
                    notifier.send(batch)
                except NotifierError as exc:
                    error = exc
                except Exception as exc:  # a notifier broke its contract; keep evaluating
                    error = notifier_error(receiver, "sending alerts", exc)
            if error is None:
                delivered[receiver] = len(batch)
            else:
                failures.append(DeliveryFailure(receiver, tuple(batch), error))
        return DispatchResult(delivered=delivered, failures=tuple(failures))


def _matches(route: Route, alert: Alert) -> bool:
    if SEVERITY_RANK[alert.severity] < SEVERITY_RANK[route.min_severity]:
        return False
    if route.detector is not None and not fnmatchcase(alert.detector, route.detector):
        return False
    return route.model is None or fnmatchcase(alert.model, route.model)
