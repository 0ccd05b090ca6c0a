"""Synthetic prompt embeddings shaped like real ones, for tests, benchmarks and demos.

Calibration and power of the drift detectors are measured on these, so they mimic what
matters in sentence-encoder output: unit vectors, grouped by topic, anisotropic. No model has
to be downloaded to produce them.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import numpy.typing as npt

from schemas.batch import LogBatch

DIMENSION = 384


@dataclass(frozen=True)
class TopicWorld:
    """Unit vectors from a mixture of topic clusters; some topics only appear in a shift.

    Cluster centres share a common direction (real sentence embeddings are anisotropic, mean
    pairwise cosine ≈ 0.2); each point is its centre plus isotropic noise scaled so its cosine
    to the centre is 0.6–0.8. The last `n_new` clusters never appear in quiet traffic: a
    topic shift draws a fraction of calls from them.
    """

    centres: npt.NDArray[np.float32]
    noise: npt.NDArray[np.float32]
    weights: npt.NDArray[np.float64]
    n_new: int

    @classmethod
    def build(
        cls, seed: int = 7, n_topics: int = 20, n_new: int = 3, dim: int = DIMENSION
    ) -> TopicWorld:
        rng = np.random.default_rng(seed)
        common = rng.standard_normal(dim)
        common /= np.linalg.norm(common)
        raw = rng.standard_normal((n_topics + n_new, dim))
        raw /= np.linalg.norm(raw, axis=1, keepdims=True)
        centres = 0.45 * common + raw
        centres /= np.linalg.norm(centres, axis=1, keepdims=True)
        cosine = rng.uniform(0.6, 0.8, n_topics + n_new)
        noise = np.sqrt((1 / cosine**2 - 1) / dim)  # ‖noise‖² ≈ dim·s² = 1/cos² − 1
        weights = rng.dirichlet(np.full(n_topics, 2.0))
        return cls(centres.astype(np.float32), noise.astype(np.float32), weights, n_new)

    def sample(
        self, n: int, rng: np.random.Generator, shift: float = 0.0
    ) -> npt.NDArray[np.float32]:
        """n unit vectors; a fraction `shift` of them from the topics new to quiet traffic."""
        n_old = len(self.weights)
        n_shifted = round(shift * n)
        topic = np.concatenate(
            [
                rng.choice(n_old, size=n - n_shifted, p=self.weights),
                rng.integers(n_old, n_old + self.n_new, size=n_shifted),
            ]
        )
        x = rng.standard_normal((n, self.centres.shape[1]), dtype=np.float32)
        x *= self.noise[topic, None]
        x += self.centres[topic]
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        return x


def blank_columns(n: int) -> dict[str, Any]:
    """Every 1-d LogBatch column other than the keys, at length n, all missing."""
    out: dict[str, Any] = {}
    skip = {"request_id", "timestamp", "model", "embeddings", "embedding_rows", "safety_scores"}
    for f in fields(LogBatch):
        if f.name in skip:
            continue
        factory: Any = f.default_factory
        proto = np.asarray(factory())
        fill = {"f": np.nan, "O": None, "b": False}[proto.dtype.kind]
        out[f.name] = np.full(n, fill, dtype=proto.dtype)
    return out


def embedding_batch(
    x: npt.NDArray[np.float32], ids_from: int = 0, model: str = "m", **columns: Any
) -> LogBatch:
    """A LogBatch whose every row carries an embedding, with request ids `q{ids_from + i}`."""
    n = len(x)
    base = blank_columns(n)
    base.update(columns)
    return LogBatch(
        **base,
        request_id=np.array([f"q{i}" for i in range(ids_from, ids_from + n)], dtype=object),
        timestamp=np.zeros(n),
        model=np.full(n, model, dtype=object),
        embeddings=x,
        embedding_rows=np.arange(n, dtype=np.int64),
    )
