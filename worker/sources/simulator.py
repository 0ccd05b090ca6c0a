"""Synthetic LLM traffic with injected incidents, for `lookout demo` and `lookout simulate`.

Traffic is generated in fixed 60 s blocks per model, each from its own seeded random stream
(`seed`, a hash of the model name, the block number). So the stream depends only on the
configuration, never on how it is cut into batches, on wall-clock time or on which other
models are simulated; `simulate_logs` is `simulate_batches` turned into records, so both
describe the same calls. Everything is vectorised numpy per block: memory stays bounded by one
block and a few hours of traffic take seconds.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import numpy.typing as npt

from schemas.batch import LogBatch
from schemas.prediction_log import PredictionLog

INCIDENT_KINDS = ("safety_spike", "latency_regression", "token_explosion", "topic_shift")
#: block-rate factor, latency factor, output-token factor, share of calls from new topics
DEFAULT_MAGNITUDES = dict(zip(INCIDENT_KINDS, (3.0, 2.0, 2.0, 0.3), strict=True))
DEFAULT_INCIDENT_DURATION = timedelta(minutes=15)
DEFAULT_MODELS = ("gemini-1.5-flash", "text-bison", "gpt-4o-mini")
SAFETY_CATEGORIES = ("dangerous_content", "harassment", "hate_speech", "sexually_explicit")

_BLOCK_US = 60_000_000  # generation block: one minute of traffic per model
_TOPICS = 20
_SHIFT_TOPICS = 3
_DIURNAL_AMPLITUDE = 0.15  # keeps every minute ≥ 500 calls at the default 700/min
_US = 1_000_000


@dataclass(frozen=True)
class Incident:
    """A period when one model (or all, when `model` is None) misbehaves in one way.

    `magnitude` defaults per kind (`DEFAULT_MAGNITUDES`): a factor on the block rate, latency or
    output tokens, or for `topic_shift` the share of calls drawn from three unseen topics.
    """

    kind: str
    start_offset: timedelta
    duration: timedelta = DEFAULT_INCIDENT_DURATION
    model: str | None = None
    magnitude: float | None = None

    def __post_init__(self) -> None:
        if self.kind not in INCIDENT_KINDS:
            msg = (
                f"unknown incident kind {self.kind!r}; expected one of {', '.join(INCIDENT_KINDS)}"
            )
            raise ValueError(msg)
        if self.start_offset < timedelta(0) or self.duration <= timedelta(0):
            msg = f"incident {self.kind}: start must be ≥ 0 and duration > 0"
            raise ValueError(msg)
        if self.magnitude is not None and not self.magnitude > 0:
            msg = f"incident {self.kind}: magnitude must be > 0 (got {self.magnitude})"
            raise ValueError(msg)

    @property
    def end_offset(self) -> timedelta:
        return self.start_offset + self.duration

    @property
    def effective_magnitude(self) -> float:
        return DEFAULT_MAGNITUDES[self.kind] if self.magnitude is None else self.magnitude


_DURATION_RE = re.compile(r"(\d+(?:\.\d+)?)([hms])")


def parse_duration(text: str) -> timedelta:
    """`90m`, `2h`, `1h30m`, `45s` → timedelta; ValueError naming the text otherwise."""
    if not text or _DURATION_RE.sub("", text) != "":
        msg = f"bad duration {text!r}: expected e.g. 90m, 2h, 1h30m or 45s"
        raise ValueError(msg)
    units = {"h": 3600.0, "m": 60.0, "s": 1.0}
    return timedelta(seconds=sum(float(n) * units[u] for n, u in _DURATION_RE.findall(text)))


def parse_incident(text: str) -> Incident:
    """`KIND[:MODEL]@OFFSET[:DURATION]`, e.g. `safety_spike@90m`, `topic_shift@1h30m:20m` or
    `latency_regression:text-bison@40m` (only that model; without MODEL every model)."""
    head, at, rest = text.strip().partition("@")
    kind, colon, model = head.partition(":")
    if not at:
        msg = (
            f"bad incident {text!r}: expected KIND[:MODEL]@OFFSET[:DURATION], "
            "e.g. safety_spike@90m or safety_spike:text-bison@90m"
        )
        raise ValueError(msg)
    if kind not in INCIDENT_KINDS:
        msg = f"bad incident {text!r}: unknown kind {kind!r}; allowed: {', '.join(INCIDENT_KINDS)}"
        raise ValueError(msg)
    if colon and not model:
        msg = f"bad incident {text!r}: no model name after {kind + ':'!r}"
        raise ValueError(msg)
    offset_text, _, duration_text = rest.partition(":")
    try:
        offset = parse_duration(offset_text)
        duration = parse_duration(duration_text) if duration_text else DEFAULT_INCIDENT_DURATION
        return Incident(kind, offset, duration, model=model or None)
    except ValueError as e:
        msg = f"bad incident {text!r}: {e}"
        raise ValueError(msg) from e


def default_demo_incidents(models: Sequence[str] = DEFAULT_MODELS) -> tuple[Incident, ...]:
    """One incident of each kind, spread over models and time.

    Each starts after ≥ 45 min of quiet for its model (so baselines exist), lasts 12–15 min and
    is followed by ≥ 45 min of quiet within a 3 h run (so resolves can be seen).
    """
    m = [models[i % len(models)] for i in range(3)]
    minutes = timedelta(minutes=1)
    return (
        Incident("safety_spike", 45 * minutes, 12 * minutes, model=m[0]),
        Incident("latency_regression", 55 * minutes, 12 * minutes, model=m[1]),
        Incident("token_explosion", 65 * minutes, 12 * minutes, model=m[2]),
        Incident("topic_shift", 110 * minutes, 15 * minutes, model=m[0]),
    )


@dataclass(frozen=True)
class SimulationConfig:
    """What to simulate. `start` must be timezone-aware; incidents must name simulated models."""

    start: datetime
    hours: float = 3.0
    models: tuple[str, ...] = DEFAULT_MODELS
    calls_per_minute: float = 700.0  # mean per model
    embedding_dim: int = 384
    embedding_fraction: float = 1.0
    incidents: tuple[Incident, ...] = ()
    seed: int = 7
    with_text: bool = False  # prompt/response strings (slower; for NDJSON)
    #: tenants the calls are spread over (deterministically, without touching the random
    #: stream, so a stream with tenants has the same numbers as one without); () = none
    tenants: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        problems = []
        if self.start.tzinfo is None:
            problems.append("start must be timezone-aware (UTC)")
        if not self.hours > 0:
            problems.append(f"hours must be > 0 (got {self.hours})")
        if not self.models or len(set(self.models)) != len(self.models):
            problems.append(f"models must be non-empty and distinct (got {self.models})")
        if not self.calls_per_minute > 0:
            problems.append(f"calls_per_minute must be > 0 (got {self.calls_per_minute})")
        if self.embedding_dim < 2:
            problems.append(f"embedding_dim must be ≥ 2 (got {self.embedding_dim})")
        if not 0.0 <= self.embedding_fraction <= 1.0:
            problems.append(f"embedding_fraction must be in [0, 1] (got {self.embedding_fraction})")
        for inc in self.incidents:
            if inc.model is not None and inc.model not in self.models:
                problems.append(
                    f"incident {inc.kind} names model {inc.model!r}, not simulated "
                    f"(models: {', '.join(self.models)})"
                )
            if inc.start_offset >= timedelta(hours=self.hours):
                problems.append(f"incident {inc.kind} starts after the simulation ends")
        if len(set(self.tenants)) != len(self.tenants) or not all(self.tenants):
            problems.append(f"tenants must be non-empty names and distinct (got {self.tenants})")
        if problems:
            msg = "invalid simulation config: " + "; ".join(problems)
            raise ValueError(msg)


@dataclass(frozen=True)
class ModelProfile:
    """How one model behaves when healthy. Latency ≈ ttft + output tokens × ms per token."""

    version: str
    ttft_median_ms: float
    ms_per_token: float
    input_median: float
    output_median: float
    output_cap: int
    block_rate: float
    citation_rate: float | None  # None: the API reports no citations


_PROFILES = {
    "gemini-1.5-flash": ModelProfile("gemini-1.5-flash-002", 190, 1.65, 300, 250, 8192, 0.02, 0.06),
    "text-bison": ModelProfile("text-bison@002", 340, 3.6, 320, 220, 1024, 0.025, 0.1),
    "gpt-4o-mini": ModelProfile("gpt-4o-mini-2024-07-18", 280, 2.6, 280, 270, 4096, 0.015, None),
}


def model_profile(model: str) -> ModelProfile:
    """The profile of a known model, or a stable variation of one for any other name."""
    if model in _PROFILES:
        return _PROFILES[model]
    h = zlib.crc32(model.encode())
    base = list(_PROFILES.values())[h % len(_PROFILES)]
    scale = 0.7 + (h >> 8) % 61 / 100  # 0.7 … 1.3
    return ModelProfile(
        model, base.ttft_median_ms * scale, base.ms_per_token * scale, base.input_median,
        base.output_median, base.output_cap, base.block_rate, base.citation_rate,
    )  # fmt: skip


@dataclass(frozen=True)
class _Topics:
    centres: npt.NDArray[np.float32]  # (k, d) unit vectors
    weights: npt.NDArray[np.float64]  # (k,) mixture weights
    noise: npt.NDArray[np.float32]  # (k,) per-dimension noise: cosine to centre ≈ 0.6–0.8


def _topics(seed: int, salt: list[int], k: int, dim: int) -> _Topics:
    rng = np.random.default_rng([seed, *salt])
    centres = rng.standard_normal((k, dim)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    cosine = rng.uniform(0.6, 0.8, k)
    noise = np.sqrt((1 / cosine**2 - 1) / dim).astype(np.float32)
    return _Topics(centres, rng.dirichlet(np.full(k, 2.0)), noise)


def _lognormal(rng: np.random.Generator, median: float, sigma: float, n: int) -> Any:
    return median * np.exp(sigma * rng.standard_normal(n))


class _ModelStream:
    """Generates one model's calls block by block; keeps the running request sequence."""

    def __init__(self, config: SimulationConfig, model: str) -> None:
        self.config, self.model, self.profile = config, model, model_profile(model)
        self.key = zlib.crc32(model.encode())
        self.topics = _topics(config.seed, [self.key, 0], _TOPICS, config.embedding_dim)
        start_us = _epoch_us(config.start)
        self.incidents = [
            (i, inc, start_us + _td_us(inc.start_offset), start_us + _td_us(inc.end_offset))
            for i, inc in enumerate(config.incidents)
            if inc.model in (None, model)
        ]  # fmt: skip
        self.shift_topics = {
            i: _topics(config.seed, [self.key, 1, i], _SHIFT_TOPICS, config.embedding_dim)
            for i, inc, _, _ in self.incidents
            if inc.kind == "topic_shift"
        }
        self.sequence = 0
        # the seed is part of the id: two different simulated streams never share request ids
        # (dedup would silently drop the second one's records)
        self.id_prefix = f"sim{config.seed}-{model}-"

    def _factor(self, kind: str, us: npt.NDArray[np.int64]) -> npt.NDArray[np.float64]:
        out = np.ones(len(us))
        for _, inc, lo, hi in self.incidents:
            if inc.kind == kind:
                out[(us >= lo) & (us < hi)] *= inc.effective_magnitude
        return out

    def block(self, index: int, lo_us: int, hi_us: int) -> dict[str, Any]:
        cfg, p = self.config, self.profile
        rng = np.random.default_rng([cfg.seed, self.key, 2, index])
        mid_hour = ((lo_us + hi_us) / 2 / _US / 3600.0) % 24
        rate = cfg.calls_per_minute * (1 + _DIURNAL_AMPLITUDE * np.sin((mid_hour - 8) * np.pi / 12))
        n = int(rng.poisson(rate * (hi_us - lo_us) / _BLOCK_US))
        us = np.sort(lo_us + (rng.random(n) * (hi_us - lo_us)).astype(np.int64))

        blocked = rng.random(n) < np.minimum(p.block_rate * self._factor("safety_spike", us), 1.0)
        prompt_block = blocked & (rng.random(n) < 0.45)
        response_block = blocked & ~prompt_block
        input_tokens = np.maximum(1, np.round(_lognormal(rng, p.input_median, 0.7, n)))
        # latency follows the healthy token count: a token explosion alone must not page latency
        healthy = np.where(prompt_block, 0, _lognormal(rng, p.output_median, 0.6, n))
        wanted = np.maximum(1, np.round(healthy * self._factor("token_explosion", us)))
        output_tokens = np.where(prompt_block, 0, np.minimum(wanted, p.output_cap))
        ttft = _lognormal(rng, p.ttft_median_ms, 0.35, n)
        decode = np.minimum(healthy, p.output_cap) * p.ms_per_token * _lognormal(rng, 1.0, 0.2, n)
        tail = np.where(rng.random(n) < 0.02, _lognormal(rng, 3.0, 0.5, n), 1.0)  # slow calls
        slow = self._factor("latency_regression", us)
        latency = (
            np.where(prompt_block, _lognormal(rng, 120.0, 0.4, n), ttft + decode) * tail * slow
        )
        ttft = np.where(prompt_block, np.nan, ttft * tail * slow)

        finish = np.full(n, "stop", dtype=object)
        finish[output_tokens >= p.output_cap] = "length"
        finish[response_block] = "safety"
        finish[prompt_block] = None
        reason = np.full(n, None, dtype=object)
        reason[response_block] = "SAFETY"
        reason[prompt_block] = np.where(
            rng.random(int(prompt_block.sum())) < 0.75, "SAFETY", "PROHIBITED_CONTENT"
        )
        stage = np.full(n, None, dtype=object)
        stage[prompt_block], stage[response_block] = "prompt", "response"

        scores = rng.beta(1.2, 25.0, (len(SAFETY_CATEGORIES), n))
        culprit = rng.integers(0, len(SAFETY_CATEGORIES), n)
        high = rng.uniform(0.75, 0.99, n)
        rows = np.flatnonzero(blocked)
        scores[culprit[rows], rows] = high[rows]
        scores = np.round(scores, 5)

        if p.citation_rate is None:
            citations = np.full(n, np.nan)
        else:
            cited = rng.random(n) < p.citation_rate
            citations = np.where(cited, 1 + rng.poisson(0.8, n), 0).astype(np.float64)
            citations[response_block] = 0
            citations[prompt_block] = np.nan  # no answer, so nothing the API could cite
        response_length = np.round(output_tokens * rng.uniform(3.6, 4.4, n))
        response_length[blocked] = np.nan

        emb_rows = np.flatnonzero(rng.random(n) < cfg.embedding_fraction)
        embeddings = self._embeddings(rng, us[emb_rows])

        ids = np.empty(n, dtype=object)
        ids[:] = [f"{self.id_prefix}{self.sequence + i}" for i in range(n)]
        tenant = np.full(n, None, dtype=object)
        if cfg.tenants:
            # a multiplicative hash of the call's sequence number: stable, and no rng draw
            mixed = (np.arange(self.sequence, self.sequence + n, dtype=np.uint64) * 2654435761) >> 7
            tenant[:] = np.asarray(cfg.tenants, dtype=object)[mixed % len(cfg.tenants)]
        self.sequence += n
        return {
            "us": us, "request_id": ids, "model": np.full(n, self.model, dtype=object),
            "model_version": np.full(n, p.version, dtype=object), "tenant": tenant,
            "endpoint": np.full(n, f"simulator/{self.model}", dtype=object),
            "latency_ms": np.round(latency, 1), "time_to_first_token_ms": np.round(ttft, 1),
            "input_tokens": input_tokens, "output_tokens": output_tokens, "blocked": blocked,
            "block_stage": stage, "block_reason": reason, "finish_reason": finish,
            "citation_count": citations, "response_length": response_length,
            "error": np.full(n, None, dtype=object),
            "safety_scores": dict(zip(SAFETY_CATEGORIES, scores, strict=True)),
            "embeddings": embeddings, "embedding_rows": emb_rows,
        }  # fmt: skip

    def _embeddings(self, rng: np.random.Generator, us: npt.NDArray[np.int64]) -> Any:
        """Unit vectors near a topic centre, 4 decimals (what a JSON log would carry)."""
        t, k = self.topics, len(us)
        cluster = rng.choice(len(t.weights), k, p=t.weights)
        centres, noise = t.centres[cluster], t.noise[cluster]
        for i, _, lo, hi in self.incidents:
            if i in self.shift_topics:
                s = self.shift_topics[i]
                inc = self.config.incidents[i]
                moved = (us >= lo) & (us < hi) & (rng.random(k) < inc.effective_magnitude)
                new = rng.choice(_SHIFT_TOPICS, int(moved.sum()), p=s.weights)
                centres[moved], noise[moved] = s.centres[new], s.noise[new]
        # uniform noise of the same variance: 3× faster than normals, same cosine spread in 384-d
        vectors = rng.random((k, self.config.embedding_dim), dtype=np.float32)
        vectors -= np.float32(0.5)
        vectors *= (noise * np.float32(2 * np.sqrt(3)))[:, None]
        vectors += centres
        vectors /= np.sqrt(np.einsum("ij,ij->i", vectors, vectors))[:, None]
        return np.round(vectors, 4, out=vectors)


def _epoch_us(moment: datetime) -> int:
    return _td_us(moment - datetime(1970, 1, 1, tzinfo=UTC))


def _td_us(delta: timedelta) -> int:
    return (delta.days * 86_400 + delta.seconds) * _US + delta.microseconds


_ROW_COLUMNS = (
    "us", "request_id", "model", "model_version", "tenant", "endpoint", "latency_ms",
    "time_to_first_token_ms", "input_tokens", "output_tokens", "blocked", "block_stage",
    "block_reason", "finish_reason", "citation_count", "response_length", "error",
)  # fmt: skip


def _blocks(config: SimulationConfig) -> Iterator[dict[str, Any]]:
    """Columns per minute of traffic, all models merged in event-time order."""
    streams = [_ModelStream(config, m) for m in config.models]
    start_us = _epoch_us(config.start)
    end_us = start_us + round(config.hours * 3600 * _US)
    for index, lo in enumerate(range(start_us, end_us, _BLOCK_US)):
        parts = [s.block(index, lo, min(lo + _BLOCK_US, end_us)) for s in streams]
        offsets = np.cumsum([0] + [len(p["us"]) for p in parts])
        order = np.argsort(np.concatenate([p["us"] for p in parts]), kind="stable")
        merged: dict[str, Any] = {
            c: np.concatenate([p[c] for p in parts])[order] for c in _ROW_COLUMNS
        }
        merged["safety_scores"] = {
            c: np.concatenate([p["safety_scores"][c] for p in parts])[order]
            for c in SAFETY_CATEGORIES
        }
        new_row = np.empty(len(order), dtype=np.int64)
        new_row[order] = np.arange(len(order))
        shifted = [p["embedding_rows"] + o for p, o in zip(parts, offsets[:-1], strict=True)]
        rows = new_row[np.concatenate(shifted)]
        emb_order = np.argsort(rows, kind="stable")
        merged["embedding_rows"] = rows[emb_order]
        merged["embeddings"] = np.concatenate([p["embeddings"] for p in parts])[emb_order]
        yield merged


def _rows(block: dict[str, Any], lo: int, hi: int) -> LogBatch:
    """Rows lo:hi of a block as a batch of views (no copies)."""
    e_lo, e_hi = np.searchsorted(block["embedding_rows"], [lo, hi])
    columns = {c: block[c][lo:hi] for c in _ROW_COLUMNS if c != "us"}
    return LogBatch(
        timestamp=block["us"][lo:hi] / _US,
        safety_scores={c: v[lo:hi] for c, v in block["safety_scores"].items()},
        embeddings=block["embeddings"][e_lo:e_hi],
        embedding_rows=block["embedding_rows"][e_lo:e_hi] - lo,
        **columns,
    )


def simulate_batches(
    config: SimulationConfig, *, seconds_per_batch: float = 10.0
) -> Iterator[LogBatch]:
    """Columns straight from numpy, in event-time order, for the in-process demo (fast path).

    Batch `i` holds the calls of [start + i·seconds_per_batch, start + (i+1)·seconds_per_batch);
    empty intervals yield no batch. `response_length` is filled even without text, because
    descriptor drift reads it. Arrays may be views of a shared block: treat them as read-only.
    """
    if not seconds_per_batch > 0:
        msg = f"seconds_per_batch must be > 0 (got {seconds_per_batch})"
        raise ValueError(msg)
    step = round(seconds_per_batch * _US)
    edge = _epoch_us(config.start) + step
    pending: list[LogBatch] = []
    for block in _blocks(config):
        us, pos = block["us"], 0
        while pos < len(us):
            cut = int(np.searchsorted(us, edge, side="left"))
            if cut >= len(us):
                pending.append(_rows(block, pos, len(us)))
                break
            if cut > pos:
                pending.append(_rows(block, pos, cut))
            if pending:
                yield LogBatch.concat(pending)
            pending = []
            edge += step
            pos = max(pos, cut)
    if pending:
        yield LogBatch.concat(pending)


_WORDS = (
    "the model returns a short answer about pricing latency regions quotas billing account setup "
    "cluster nodes storage bucket policy query table schema index cache request retry error "
    "timeout token budget summary report customer order invoice shipping refund travel booking"
)
_PROMPTS = (
    "Summarise this support ticket", "Explain the error in this stack trace",
    "Draft a reply to the customer", "Translate the paragraph into French",
    "List the steps to reset a password", "Write a SQL query for monthly revenue",
    "What is the refund policy", "Suggest a title for this article",
)  # fmt: skip


def _corpus(seed: int) -> str:
    rng = np.random.default_rng([seed, 3])
    return " ".join(rng.choice(_WORDS.split(), 40_000).tolist()) + "."


def simulate_logs(config: SimulationConfig) -> Iterator[PredictionLog]:
    """The same stream as records (slow path, for NDJSON output).

    Values equal `simulate_batches`' columns row for row. With `with_text`, `prompt` and
    `response` are synthetic strings and `len(response)` equals the batch's `response_length`;
    without, both are None.
    """
    corpus = _corpus(config.seed) if config.with_text else ""
    span = len(corpus) // 2
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    for batch in simulate_batches(config, seconds_per_batch=60.0):
        emb_of_row = {row: e for e, row in enumerate(batch.embedding_rows.tolist())}
        us = np.round(batch.timestamp * _US).astype(np.int64).tolist()
        scores = {c: v.tolist() for c, v in batch.safety_scores.items()}
        for i in range(len(batch)):
            rid = str(batch.request_id[i])
            e = emb_of_row.get(i)
            prompt = response = None
            if config.with_text:
                h = zlib.crc32(rid.encode())
                prompt = f"{_PROMPTS[h % len(_PROMPTS)]} (#{h % 10_000})."
                if not np.isnan(batch.response_length[i]):
                    start = h % span
                    response = corpus[start : start + int(batch.response_length[i])]
            yield PredictionLog(
                request_id=rid,
                timestamp=epoch + timedelta(microseconds=us[i]),
                model=str(batch.model[i]),
                model_version=batch.model_version[i],
                endpoint=batch.endpoint[i],
                tenant=batch.tenant[i],
                labels={"source": "simulator"},
                latency_ms=_num(batch.latency_ms[i]),
                time_to_first_token_ms=_num(batch.time_to_first_token_ms[i]),
                input_tokens=_int(batch.input_tokens[i]),
                output_tokens=_int(batch.output_tokens[i]),
                blocked=bool(batch.blocked[i]),
                block_stage=batch.block_stage[i],
                block_reason=batch.block_reason[i],
                safety_scores={c: v[i] for c, v in scores.items()},
                finish_reason=batch.finish_reason[i],
                citation_count=_int(batch.citation_count[i]),
                prompt=prompt,
                response=response,
                embedding=None if e is None else _embedding_list(batch.embeddings[e]),
            )


def _num(value: np.float64) -> float | None:
    return None if np.isnan(value) else float(value)


def _int(value: np.float64) -> int | None:
    return None if np.isnan(value) else int(value)


def _embedding_list(vector: npt.NDArray[np.float32]) -> list[float]:
    """The 4-decimal values the float32 row was rounded from (short JSON, same float32)."""
    values: list[float] = np.round(vector.astype(np.float64), 4).tolist()
    return values
