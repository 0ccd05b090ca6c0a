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
from datetime import timedelta
from fnmatch import fnmatchcase

from alerts.notifiers import Notifier, NotifierError, TerminalNotifierError, notifier_error
from schemas.alert_config import SEVERITY_RANK, AlertingConfig, GroupLabel, Route
from schemas.detection import Alert

#: the severities an incident can page at, and move between while it lasts
PAGING_SEVERITIES = ("warning", "critical")


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


@dataclass(frozen=True)
class Grouping:
    """How one receiver's notifications for an alert are batched and repeated (Alertmanager's
    group_by / group_wait / group_interval / repeat_interval), resolved from the matching route
    with the `alerting:` section as the root route's defaults."""

    group_by: tuple[GroupLabel, ...]
    group_wait: timedelta
    group_interval: timedelta
    repeat_interval: timedelta

    def key(self, alert: Alert) -> str:
        """The group an alert belongs to, e.g. `model=gemini,detector=safety`."""
        return ",".join(f"{label}={alert_label(alert, label)}" for label in self.group_by)


def alert_label(alert: Alert, label: GroupLabel) -> str:
    value = getattr(alert, label)
    return "" if value is None else str(value)


class Router:
    """Routes alerts to receiver names and delivers them through named notifiers."""

    def __init__(self, config: AlertingConfig) -> None:
        self._config = config

    @property
    def config(self) -> AlertingConfig:
        return self._config

    def receivers_for(self, alert: Alert) -> tuple[str, ...]:
        """The receivers of `alert`, in rule order, each once."""
        return tuple(name for name, _ in self.routes_for(alert))

    def routes_for(self, alert: Alert) -> tuple[tuple[str, Route | None], ...]:
        """Each receiver of `alert` with the first rule that chose it (None: the default).

        A resolve goes where the alert went at any paging severity: an incident that escalated
        from warning to critical was paged by the warning's route first, and a resolve routed
        by its last severity alone never reached that receiver, which kept repeating "still
        firing". A receiver that never got the page drops the resolve (`Dispatcher.submit`)."""
        if alert.status == "firing" or alert.severity not in PAGING_SEVERITIES:
            return self._routes(alert)
        chosen = dict(self._routes(alert))
        for severity in PAGING_SEVERITIES:
            if severity != alert.severity:
                as_then = alert.model_copy(update={"severity": severity})
                for receiver, route in self._routes(as_then):
                    chosen.setdefault(receiver, route)
        return tuple(chosen.items())

    def _routes(self, alert: Alert) -> tuple[tuple[str, Route | None], ...]:
        chosen: dict[str, Route | None] = {}
        for route in self._config.routes:
            if not _matches(route, alert):
                continue
            for receiver in route.receivers:
                chosen.setdefault(receiver, route)
            if not route.continue_:
                break
        if chosen:
            return tuple(chosen.items())
        if alert.severity == "info":
            return ((self._config.info_receiver, None),)
        return ((self._config.default_receiver, None),)

    def grouping(self, alert: Alert, receiver: str) -> Grouping:
        """The grouping for `receiver`'s copy of `alert`: its route's, else the root's."""
        route = dict(self.routes_for(alert)).get(receiver)
        root = self._config
        if route is None:
            return Grouping(
                root.group_by, root.group_wait, root.group_interval, root.repeat_interval
            )

        def pick(own: timedelta | None, default: timedelta) -> timedelta:
            return default if own is None else own

        return Grouping(
            group_by=root.group_by if route.group_by is None else route.group_by,
            group_wait=pick(route.group_wait, root.group_wait),
            group_interval=pick(route.group_interval, root.group_interval),
            repeat_interval=pick(route.repeat_interval, root.repeat_interval),
        )

    def retune_actions_for(self, alert: Alert) -> tuple[str, ...]:
        """Retune actions named by the rules that match `alert` (first match / continue)."""
        actions: list[str] = []
        for route in self._config.routes:
            if not _matches(route, alert):
                continue
            if route.retune is not None and route.retune not in actions:
                actions.append(route.retune)
            if not route.continue_:
                break
        return tuple(actions)

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
    """Every pattern the rule sets must match (a route sets no model_version or tenant: an
    alert is a whole model's, see `schemas.alert_config.NOT_PER_SLICE`)."""
    if SEVERITY_RANK[alert.severity] < SEVERITY_RANK[route.effective_min_severity]:
        return False
    patterns = (
        (route.detector, alert.detector),
        (route.model, alert.model),
        (route.severity, alert.severity),
    )
    return all(pattern is None or fnmatchcase(value, pattern) for pattern, value in patterns)
