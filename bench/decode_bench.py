"""Decode throughput of `decode_message` against a bare `orjson.loads` loop, same run, same lines.

Four inputs, each decoded in messages of 1,000 lines as the engine receives them:

- `corpus`: ~30,000 mixed lines built from the wire fixtures and the recorded provider corpus
  (each wrapped in an envelope), a few percent carrying 384-float embeddings. Long stream
  bodies dominate it: a worst case, not what production looks like.
- `simulated`: ~20,000 lines of `lookout simulate` traffic (`simulate_logs` + `encode_mixed`,
  with text, 20% of calls carrying a 384-float embedding): non-stream bodies in the mix of
  formats production sends. This is the one the decode target (≥ 1.0×) is about.
- `simulated, no embeddings`: the same traffic with no embeddings, to separate the cost of
  parsing 384 numbers per embedding (paid alike by orjson and msgspec) from the rest.
- `streams`: 20,000 envelopes around Gemini and OpenAI streamed responses (JSON arrays of 1-7
  chunks, `tests/stream_bodies.py`), which the compiled decoder reads since December 2026.

Each input is decoded twice: by the compiled fast path (`schemas.decode.compiled`, the
default) and by the Python reference alone (`LOOKOUT_DECODER=python`), so the ratio before and
after the compiled decoder comes out of one run. Each input also prints a ceiling: msgspec
decoding every line into the `Wire` structs and nothing else.

The three loops run interleaved, round after round, and each keeps its best round (7 by default):
on these shared, noisy machines a load spike then hits all of them alike, and the ratio is what
to compare.

    .venv/bin/python -m bench.decode_bench
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import orjson

from schemas.decode import decode_message
from schemas.decode.wire import WIRE_DECODER
from tests.stream_bodies import envelope, stream_body
from worker.sources.simulator import SimulationConfig, simulate_logs
from worker.sources.wire_encode import encode_mixed

ROOT = Path(__file__).resolve().parents[1]
WIRE = ROOT / "tests" / "fixtures" / "wire"
CORPUS = ROOT / "tests" / "fixtures" / "payloads" / "responses.ndjson"
N_LINES = 30_000
SIMULATED_LINES = 20_000
MESSAGE_LINES = 1_000
EMBEDDING_SHARE = 0.03
SIMULATED_EMBEDDING_SHARE = 0.2


def sample_lines() -> list[bytes]:
    """Good records of every format, one per line (bad-line fixture excluded)."""
    lines: list[bytes] = []
    for path in sorted(WIRE.glob("*.json")):
        record = orjson.loads(path.read_bytes())
        # the native fixture's 4-float embedding beside the 384-float lines would put two
        # widths in every message, which the reference decodes whole (the width rule is the
        # message's): the input would then measure that rule, not the decoding of bodies
        record.pop("embedding", None)
        lines.append(orjson.dumps(record))
    if CORPUS.exists():
        for raw in CORPUS.read_bytes().splitlines():
            entry = orjson.loads(raw)
            body = entry["response_body"]
            first = body[0] if isinstance(body, list) else body
            model = entry["request_model"] or first.get("model") or first.get("modelVersion")
            envelope = {
                "timestamp": "2025-01-01T00:00:00Z",
                "model": model or "unknown",
                "latency_ms": 321.0,
                "response_body": body,
            }
            lines.append(orjson.dumps(envelope))
    return lines


def build(n: int, seed: int = 7) -> list[bytes]:
    rng = random.Random(seed)
    base = sample_lines()
    out = []
    for i in range(n):
        if rng.random() < EMBEDDING_SHARE:
            record = {
                "request_id": f"r{i}",
                "timestamp": "2025-01-01T00:00:00Z",
                "model": "gemini-1.5-flash",
                "latency_ms": rng.random() * 900,
                "input_tokens": 10,
                "output_tokens": 20,
                "embedding": [rng.gauss(0, 1) for _ in range(384)],
            }
            out.append(orjson.dumps(record))
        else:
            out.append(rng.choice(base))
    return out


def simulated(n: int, embedding_fraction: float, seed: int = 7) -> list[bytes]:
    """The first n lines `lookout simulate` would write (three models, ~2,100 calls/minute)."""
    config = SimulationConfig(
        start=datetime(2025, 1, 1, tzinfo=UTC),
        hours=n / (3 * 700 * 60) * 1.2 + 0.01,
        embedding_fraction=embedding_fraction,
        seed=seed,
        with_text=True,
    )
    out: list[bytes] = []
    for line in encode_mixed(simulate_logs(config), seed=seed):
        out.append(line)
        if len(out) == n:
            break
    return out


def best_of_interleaved(rounds: int, *fns: Callable[[], object]) -> list[tuple[float, float]]:
    """Best wall time and best CPU time (this thread) of each function, running them in turn
    every round (noise hits all alike; CPU time is the steadier of the two on a busy machine)."""
    best = [(float("inf"), float("inf"))] * len(fns)
    for _ in range(rounds):
        for i, fn in enumerate(fns):
            start, cpu = time.perf_counter(), time.thread_time()
            fn()
            wall, cpu = time.perf_counter() - start, time.thread_time() - cpu
            best[i] = (min(best[i][0], wall), min(best[i][1], cpu))
    return best


def measure(name: str, lines: list[bytes], rounds: int = 7) -> float:
    """Print both speeds on `lines` and return the ratio decode/orjson (higher is better)."""
    n = len(lines)
    messages = [b"\n".join(lines[i : i + MESSAGE_LINES]) for i in range(0, n, MESSAGE_LINES)]
    decoded = [decode_message(m) for m in messages]  # also warms up
    rows = sum(len(d.batch) for d in decoded)
    errors = sum(len(d.errors) for d in decoded)

    def parse_only() -> None:
        for line in lines:
            orjson.loads(line)

    def decode_all() -> None:
        for message in messages:
            decode_message(message)

    def decode_python() -> None:
        os.environ["LOOKOUT_DECODER"] = "python"
        try:
            decode_all()
        finally:
            del os.environ["LOOKOUT_DECODER"]

    def msgspec_only() -> None:
        for line in lines:
            WIRE_DECODER.decode(line)

    timings = best_of_interleaved(rounds, parse_only, decode_all, decode_python, msgspec_only)
    t_orjson, t_decode, t_python, t_msgspec = (wall for wall, _ in timings)
    c_orjson, c_decode, c_python, _ = (cpu for _, cpu in timings)
    ratio = t_orjson / t_decode
    print(
        f"[{name}] {n} lines in {len(messages)} messages, {rows} records, {errors} errors, "
        f"{sum(map(len, lines)) / 1e6:.1f} MB"
    )
    print(f"  orjson.loads loop  : {n / t_orjson:>10,.0f} lines/s")
    print(f"  decode_message     : {n / t_decode:>10,.0f} lines/s  (compiled fast path)")
    print(f"  ... Python only    : {n / t_python:>10,.0f} lines/s  (LOOKOUT_DECODER=python)")
    print(f"  ratio decode/orjson: {ratio:.2f}x  (Python only: {t_orjson / t_python:.2f}x)")
    print(
        f"  CPU s per 1k lines : orjson {1000 * c_orjson / n:.4f}, decode {1000 * c_decode / n:.4f}"
        f" (ratio {c_orjson / c_decode:.2f}x), Python only {1000 * c_python / n:.4f}"
    )
    # the ceiling: parsing each record into the wire structs, nothing else
    print(f"  ceiling (msgspec Wire decode alone)/orjson: {t_orjson / t_msgspec:.2f}x")
    return ratio


def main() -> None:
    measure("corpus", build(N_LINES))
    measure("simulated", simulated(SIMULATED_LINES, SIMULATED_EMBEDDING_SHARE))
    measure("simulated, no embeddings", simulated(SIMULATED_LINES, 0.0))
    rng = random.Random(5)
    measure("streams", [envelope(i, stream_body(rng)) for i in range(SIMULATED_LINES)])


if __name__ == "__main__":
    main()
