"""Decode throughput of `decode_message` against a bare `orjson.loads` loop, same run, same lines.

~30,000 mixed lines built from the wire fixtures and the recorded provider corpus (each wrapped
in an envelope), with a few percent carrying 384-float embeddings, decoded in messages of 1,000
lines as the engine receives them. Best of 3 for both sides; the ratio is what to compare.

    .venv/bin/python -m bench.decode_bench
"""

from __future__ import annotations

import random
import time
from pathlib import Path

import orjson

from schemas.decode import decode_message

ROOT = Path(__file__).resolve().parents[1]
WIRE = ROOT / "tests" / "fixtures" / "wire"
CORPUS = ROOT.parent / "shared" / "payloads" / "responses.ndjson"
N_LINES = 30_000
MESSAGE_LINES = 1_000
EMBEDDING_SHARE = 0.03


def sample_lines() -> list[bytes]:
    """Good records of every format, one per line (bad-line fixture excluded)."""
    lines: list[bytes] = []
    for path in sorted(WIRE.glob("*.json")):
        lines.append(orjson.dumps(orjson.loads(path.read_bytes())))
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


def best_of(runs: int, fn: object) -> float:
    assert callable(fn)
    best = float("inf")
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    lines = build(N_LINES)
    messages = [b"\n".join(lines[i : i + MESSAGE_LINES]) for i in range(0, N_LINES, MESSAGE_LINES)]
    decoded_rows = sum(len(decode_message(m).batch) for m in messages)  # also warms up

    def parse_only() -> None:
        for line in lines:
            orjson.loads(line)

    def decode_all() -> None:
        for message in messages:
            decode_message(message)

    t_orjson = best_of(3, parse_only)
    t_decode = best_of(3, decode_all)
    print(
        f"lines: {N_LINES} in {len(messages)} messages, {decoded_rows} records decoded, "
        f"{sum(map(len, lines)) / 1e6:.1f} MB"
    )
    print(f"orjson.loads loop : {N_LINES / t_orjson:>10,.0f} lines/s")
    print(f"decode_message    : {N_LINES / t_decode:>10,.0f} lines/s")
    print(f"ratio decode/orjson: {t_orjson / t_decode:.2f}x")


if __name__ == "__main__":
    main()
