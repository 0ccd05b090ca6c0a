"""Lookout's data contract: the canonical record, its columnar batch, decoders, detections."""

from schemas.batch import LogBatch
from schemas.detection import Alert, Detection
from schemas.errors import DecodeError
from schemas.prediction_log import PredictionLog

__all__ = ["Alert", "DecodeError", "Detection", "LogBatch", "PredictionLog"]
