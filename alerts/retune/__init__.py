"""The loop back to tuning: a sustained incident becomes a `RetuneRequest`, guarded (chosen
detectors, N windows in a row at the incident's level, a cooldown per model, dry run),
optionally after exporting a tuning dataset, and is handed to an action (Pub/Sub, Vertex AI,
Kubeflow)."""

from alerts.retune.request import RetuneRequest
from alerts.retune.trigger import RetuneTrigger

__all__ = ["RetuneRequest", "RetuneTrigger"]
