"""evidently's drift methods as a second opinion and a report, never the paging verdict.

evidently 0.7.23's thresholds are fixed rather than sample-size aware (its model method flags
a sizeable share of quiet 200-call windows, its MMD and distance thresholds miss a 20% topic
shift), so Lookout pages on its own calibrated tests and shows these beside them.

evidently is imported lazily: the import alone takes seconds, and the hot path never needs it.

Two ways to get the embedding verdict:
- ``evidently_embedding_drift(..., report=False)`` (default) calls the same drift-method
  object that evidently's ``EmbeddingsDrift`` metric calls, on the same DataFrames. It is
  the verdict evidently would give, without the t-SNE projection that the metric always
  computes for its chart (about 90% of a report's time at 5,000 rows).
- ``report=True`` runs the documented path, ``Report([EmbeddingsDrift(embeddings_name=...,
  drift_method=...)]).run(current_data=..., reference_data=...)`` on ``Dataset.from_pandas``
  with ``DataDefinition(embeddings=...)``, and returns the snapshot for ``save_html``. That
  result exposes only the score; with no bootstrap every method decides ``score > threshold``
  (see ``evidently/legacy/metrics/data_drift/embedding_drift_methods.py``), so the verdict is
  rebuilt from the method's own threshold.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import pandas as pd

EmbeddingMethod = Literal["model", "mmd", "distance", "ratio"]

_EMBEDDINGS_NAME = "emb"


@dataclass(frozen=True)
class EvidentlyVerdict:
    """evidently's score and verdict for one method; `snapshot` is its Report when asked for."""

    score: float
    drifted: bool
    method: str
    snapshot: Any = None


@dataclass(frozen=True)
class ValueDriftResult:
    """evidently's value drift of one column: which test it chose, its score and verdict."""

    stattest: str
    score: float
    drifted: bool


@contextmanager
def _quiet_evidently() -> Iterator[None]:
    """Run evidently single-threaded, silencing only the warning categories it emits.

    Single-threaded: its t-SNE (scikit-learn's Barnes–Hut, OpenMP) oversubscribes shared
    cores; a 270-point report took 24–39 s with default threads and 2 s with one.

    The test suite turns warnings into errors; a library's deprecation notices must not fail
    a second opinion, but our own code's warnings outside this block still do.
    """
    from threadpoolctl import threadpool_limits

    with warnings.catch_warnings(), threadpool_limits(limits=1):
        for category in (DeprecationWarning, FutureWarning, PendingDeprecationWarning):
            warnings.simplefilter("ignore", category)
        warnings.filterwarnings("ignore", category=RuntimeWarning, module=r"(sklearn|scipy)\.")
        warnings.filterwarnings("ignore", category=UserWarning, module=r"(evidently|sklearn)\.")
        yield


def _drift_method(method: EmbeddingMethod) -> Any:
    from evidently.metrics.embeddings import (
        DistanceDriftMethod,
        MMDDriftMethod,
        ModelDriftMethod,
        RatioDriftMethod,
    )

    factories = {
        "model": ModelDriftMethod,
        "mmd": MMDDriftMethod,
        "distance": DistanceDriftMethod,
        "ratio": RatioDriftMethod,
    }
    if method not in factories:
        msg = f"evidently embedding drift method {method!r} is not one of {sorted(factories)}"
        raise ValueError(msg)
    return factories[method]()


def _embedding_frame(x: npt.NDArray[np.floating[Any]]) -> pd.DataFrame:
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[0] == 0:
        msg = f"embeddings must be a non-empty 2-d array, got shape {arr.shape}"
        raise ValueError(msg)
    return pd.DataFrame(arr, columns=[f"e{i}" for i in range(arr.shape[1])])


def evidently_embedding_drift(
    reference: npt.NDArray[np.floating[Any]],
    current: npt.NDArray[np.floating[Any]],
    method: EmbeddingMethod = "model",
    *,
    report: bool = False,
) -> EvidentlyVerdict:
    """evidently's embedding-drift score and verdict of `current` against `reference`."""
    ref, cur = _embedding_frame(reference), _embedding_frame(current)
    if ref.shape[1] != cur.shape[1]:
        msg = f"reference has dimension {ref.shape[1]}, current {cur.shape[1]}"
        raise ValueError(msg)
    with _quiet_evidently():  # evidently's own imports warn, too
        drift_method = _drift_method(method)
        if not report:
            score, drifted, name = drift_method(cur, ref)
            return EvidentlyVerdict(float(score), bool(drifted), str(name))
        from evidently import DataDefinition, Dataset, Report
        from evidently.metrics import EmbeddingsDrift

        definition = DataDefinition(embeddings={_EMBEDDINGS_NAME: list(ref.columns)})
        snapshot = Report(
            [EmbeddingsDrift(embeddings_name=_EMBEDDINGS_NAME, drift_method=drift_method)]
        ).run(
            current_data=Dataset.from_pandas(cur, data_definition=definition),
            reference_data=Dataset.from_pandas(ref, data_definition=definition),
        )
    score = float(snapshot.dict()["metrics"][0]["value"])
    return EvidentlyVerdict(score, score > float(drift_method.threshold), method, snapshot)


def evidently_value_drift(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    columns: Sequence[str],
    *,
    categorical: Sequence[str] = (),
) -> dict[str, ValueDriftResult]:
    """evidently's per-column value drift (its automatic test choice) for the report.

    Columns named in `categorical` are declared categorical, the others numerical; the
    verdict is evidently's own test status for each column.
    """
    missing = [c for c in columns if c not in reference.columns or c not in current.columns]
    if missing:
        msg = f"value drift columns {missing} are missing from the reference or current frame"
        raise ValueError(msg)
    cats = [c for c in columns if c in categorical]
    nums = [c for c in columns if c not in categorical]
    with _quiet_evidently():
        from evidently import DataDefinition, Dataset, Report
        from evidently.metrics import ValueDrift

        definition = DataDefinition(numerical_columns=nums, categorical_columns=cats)
        snapshot = Report([ValueDrift(column=c) for c in columns], include_tests=True).run(
            current_data=Dataset.from_pandas(current[list(columns)], data_definition=definition),
            reference_data=Dataset.from_pandas(
                reference[list(columns)], data_definition=definition
            ),
        )
    result = snapshot.dict()
    failed = {t["metric_config"]["metric_id"] for t in result["tests"] if t.get("status") == "FAIL"}
    out: dict[str, ValueDriftResult] = {}
    for metric in result["metrics"]:
        config = metric["config"]
        out[str(config["column"])] = ValueDriftResult(
            stattest=str(config["method"]),
            score=float(metric["value"]),
            drifted=metric["id"] in failed,
        )
    return out
