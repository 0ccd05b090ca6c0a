"""The one list of detectors Lookout runs, and how they are built from configuration.

Adding a detector is one line in `DETECTORS`. Each class there takes its frozen config as its
only constructor argument (`__init__(self, config: SomeConfig)`), and `SomeConfig()` must be a
valid default so the shared contract test can build every detector. The config type is the
class's `config_type` attribute when it has one, else the annotation of that argument.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, get_type_hints

from pydantic import BaseModel

from detectors.base import Detector
from detectors.descriptor_drift import DescriptorDriftDetector
from detectors.embedding_drift import EmbeddingDriftDetector
from detectors.latency import LatencyDetector
from detectors.safety import SafetyDetector
from detectors.tokens import TokensDetector

DETECTORS: dict[str, type[Any]] = {
    "safety": SafetyDetector,
    "latency": LatencyDetector,
    "tokens": TokensDetector,
    "embedding_drift": EmbeddingDriftDetector,
    "descriptor_drift": DescriptorDriftDetector,
}


def config_type_of(cls: type[Any]) -> type[BaseModel]:
    """The pydantic config class a detector class is built from."""
    declared = getattr(cls, "config_type", None)
    if declared is None:
        declared = get_type_hints(cls.__init__).get("config")
    if not (isinstance(declared, type) and issubclass(declared, BaseModel)):
        msg = f"detector class {cls.__name__} must take a pydantic config as `config`"
        raise TypeError(msg)
    return declared


class UnknownDetectorError(ValueError):
    """A configuration names a detector that is not in `DETECTORS`, or gives it the wrong config."""


def build_detectors(configs: Mapping[str, BaseModel | None]) -> dict[str, Detector[Any]]:
    """One detector per configured name; a None config means that detector's defaults.

    Rejects unknown names and configs of the wrong type instead of silently skipping them.
    """
    built: dict[str, Detector[Any]] = {}
    for name, config in configs.items():
        cls = DETECTORS.get(name)
        if cls is None:
            msg = f"unknown detector {name!r}; known detectors: {sorted(DETECTORS)}"
            raise UnknownDetectorError(msg)
        expected = config_type_of(cls)
        if config is None:
            config = expected()
        elif not isinstance(config, expected):
            msg = f"detector {name!r} needs a {expected.__name__}, got {type(config).__name__}"
            raise UnknownDetectorError(msg)
        built[name] = cls(config)
    return built
