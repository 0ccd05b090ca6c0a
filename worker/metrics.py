"""Prometheus metrics of a worker, on an explicit registry (tests pass a fresh one).

Label values are bounded (promise 6): model names come from the configured set, or the first
`max_models` seen when none is configured; everything else is reported as `other`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timedelta

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from schemas.detection import Alert, Detection

OTHER = "other"
#: a model's value gauges go once the newest judged window of any model is this many of its
#: windows past its own newest
STALE_WINDOWS = 10


class ModelLabels:
    """Folds unbounded model names into a bounded label set."""

    def __init__(self, configured: Iterable[str] = (), max_models: int = 20) -> None:
        self._fixed = frozenset(configured)
        self._seen: set[str] = set()
        self._max = max_models

    @property
    def configured(self) -> frozenset[str]:
        """The model names given in `metrics.models` (empty: first seen, first labelled)."""
        return self._fixed

    def __call__(self, model: str) -> str:
        if self._fixed:
            return model if model in self._fixed else OTHER
        if model in self._seen:
            return model
        if len(self._seen) < self._max:
            self._seen.add(model)
            return model
        return OTHER


class EngineMetrics:
    def __init__(
        self,
        registry: CollectorRegistry,
        labels: ModelLabels,
        min_calls: Mapping[str, int] | None = None,
    ) -> None:
        self.registry = registry
        self._label = labels
        #: per detector: the calls a window needs to be tested alone; smaller windows' values
        #: stay out of the value gauges
        self._min_calls = dict(min_calls or {})
        #: per model label: the end and length of its newest judged window
        self._last_window: dict[str, tuple[datetime, timedelta]] = {}
        self.records = Counter(
            "lookout_records", "Records folded into windows.", ["model"], registry=registry
        )
        self.duplicates = Counter(
            "lookout_records_duplicate",
            "Records dropped because their request_id was already counted in the window.",
            ["model"],
            registry=registry,
        )
        self.late = Counter(
            "lookout_records_late",
            "Records that arrived after their window was evaluated (counted, no re-alert).",
            ["model"],
            registry=registry,
        )
        self.quarantined_records = Counter(
            "lookout_records_quarantined",
            "Records not folded because their event time was too far ahead of (future) or "
            "behind (past) the stream's: a producer with a broken clock.",
            ["model", "kind"],
            registry=registry,
        )
        self.invalid = Counter(
            "lookout_records_invalid",
            "Records that could not be decoded and were dead-lettered or reported.",
            ["reason"],
            registry=registry,
        )
        self.checkpoint_seconds = Histogram(
            "lookout_checkpoint_duration_seconds",
            "Time to write one checkpoint to the sink.",
            registry=registry,
            # up to a BigQuery write retried for its timeout on each of the tables of a
            # checkpoint (30 s each by default): slow sinks are what this is read for
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
        )
        self.checkpoint_failures = Counter(
            "lookout_checkpoint_failures", "Checkpoints the sink refused.", registry=registry
        )
        self.windows_open = Gauge(
            "lookout_windows_open", "(model, window) states held in memory.", registry=registry
        )
        self.block_rate = Gauge(
            "lookout_block_rate_ratio",
            "Share of calls blocked by safety filters in the last evaluated window.",
            ["model"],
            registry=registry,
        )
        self.latency = Gauge(
            "lookout_latency_seconds",
            "Latency quantiles of the last evaluated window.",
            ["model", "quantile"],
            registry=registry,
        )
        self.tokens = Gauge(
            "lookout_output_tokens_per_call",
            "Mean output tokens per call in the last evaluated window.",
            ["model"],
            registry=registry,
        )
        self.drift = Gauge(
            "lookout_embedding_drift_score",
            "Embedding drift statistic of the last evaluated window against the reference.",
            ["model"],
            registry=registry,
        )
        self.detections = Counter(
            "lookout_detections",
            "Window verdicts by detector and verdict.",
            ["model", "detector", "verdict"],
            registry=registry,
        )
        self.alerts = Counter(
            "lookout_alerts",
            "Alert state changes sent to receivers.",
            ["model", "detector", "status", "severity"],
            registry=registry,
        )
        # the configured models' counters exist from the start at 0: a series that appears
        # only at its first increment made `rate()` panels "no data" and rules on them silent
        for model in sorted(labels.configured):
            for counter in (self.records, self.duplicates, self.late):
                counter.labels(model)
            for kind in ("future", "past"):
                self.quarantined_records.labels(model, kind)

    def folded(self, model: str, added: int, duplicates: int, late: int) -> None:
        label = self._label(model)
        if added:
            self.records.labels(label).inc(added)
        if duplicates:
            self.duplicates.labels(label).inc(duplicates)
        if late:
            self.late.labels(label).inc(late)

    def quarantined(self, model: str, kind: str) -> None:
        self.quarantined_records.labels(self._label(model), kind).inc()

    def invalid_records(self, reason: str, count: int = 1) -> None:
        self.invalid.labels(reason).inc(count)

    def checkpointed(self, seconds: float, windows_open: int) -> None:
        self.checkpoint_seconds.observe(seconds)
        self.windows_open.set(windows_open)

    def checkpoint_failed(self, seconds: float, windows_open: int) -> None:
        self.checkpoint_failures.inc()
        self.checkpoint_seconds.observe(seconds)
        self.windows_open.set(windows_open)

    def evaluated(self, detections: Sequence[Detection]) -> None:
        for d in detections:
            label = self._label(d.model)
            self.detections.labels(label, d.detector, d.verdict).inc()
            seen = self._last_window.get(label)
            if seen is None or d.window_end > seen[0]:
                self._last_window[label] = (d.window_end, d.window_end - d.window_start)
            if d.value is None or label == OTHER:
                # a gauge is one model's last window: "other" stands for many models, and
                # each window set it to another model's value, which meant nothing
                continue
            if d.verdict == "insufficient_data" and d.sample_size < self._min_calls.get(
                d.detector, 0
            ):
                # nor a window too small to judge, even with the windows before it: a quiet
                # model's 3-call window put a 33% block rate in the gauge, and a dashboard or
                # a rule on it saw an incident no test had found. Its gauge goes: the last
                # judged value stayed in it for as long as the model stayed that quiet
                self._drop_gauge(label, d.detector)
                continue
            if d.detector == "safety":
                self.block_rate.labels(label).set(d.value)
            elif d.detector == "latency":
                for q, quantile in (("p50", "0.5"), ("p95", "0.95"), ("p99", "0.99")):
                    ms = d.details.get(f"{q}_ms")
                    if isinstance(ms, int | float):
                        self.latency.labels(label, quantile).set(ms / 1000.0)
            elif d.detector == "tokens":
                # the detection's value is the cost when the budget decided the window
                mean = d.details.get("mean_output_tokens")
                if isinstance(mean, int | float):
                    self.tokens.labels(label).set(mean)
            elif d.detector == "embedding_drift":
                self.drift.labels(label).set(d.value)

        self._drop_stale_models()

    def _drop_gauge(self, label: str, detector: str) -> None:
        """Remove a model's value gauge(s) of one detector, if it has any."""
        gauges = {"safety": self.block_rate, "tokens": self.tokens, "embedding_drift": self.drift}
        if detector in gauges:
            with contextlib.suppress(KeyError):
                gauges[detector].remove(label)
        elif detector == "latency":
            for quantile in ("0.5", "0.95", "0.99"):
                with contextlib.suppress(KeyError):
                    self.latency.remove(label, quantile)

    def _drop_stale_models(self) -> None:
        """A model with no window judged for `STALE_WINDOWS` windows loses its value gauges:
        they said its last window's value for ever after it stopped sending, and a rule on
        `lookout_block_rate_ratio > x` kept firing for a model that was gone."""
        if not self._last_window:
            return
        newest = max(end for end, _ in self._last_window.values())
        for label, (end, length) in list(self._last_window.items()):
            if newest - end <= STALE_WINDOWS * length:
                continue
            del self._last_window[label]
            for detector in ("safety", "latency", "tokens", "embedding_drift"):
                self._drop_gauge(label, detector)

    def alerts_sent(self, alerts: Sequence[Alert]) -> None:
        for a in alerts:
            self.alerts.labels(self._label(a.model), a.detector, a.status, a.severity).inc()
