"""The compiled decoder keeps its buffers between calls; two threads decoding at once (a
replay's decode thread and anything else that decodes) must still each get their own columns."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

from schemas.decode.api import DecodedPoll, DecodeLimits, MessageBytes, decode_messages
from worker.sources.simulator import SimulationConfig, simulate_logs
from worker.sources.wire_encode import encode_mixed


def messages(seed: int, lines: int) -> list[MessageBytes]:
    config = SimulationConfig(
        start=datetime(2026, 1, 5, tzinfo=UTC),
        hours=0.05,
        embedding_fraction=0.3,
        with_text=True,
        seed=seed,
    )
    out = list(encode_mixed(simulate_logs(config), seed=seed))[:lines]
    return [MessageBytes(b"\n".join(out[i : i + 200]), None, i + 1) for i in range(0, lines, 200)]


def summary(poll: DecodedPoll) -> list[object]:
    return [
        (b.request_id.tolist(), b.timestamp.tolist(), b.embeddings.tobytes(), o.tolist())
        for b, o in zip(poll.batches, poll.origins, strict=True)
    ]


def test_polls_decoded_on_two_threads_at_once_are_those_decoded_alone() -> None:
    polls = [messages(seed, lines) for seed, lines in ((1, 1000), (2, 400), (3, 1400), (4, 200))]
    alone = [summary(decode_messages(p, limits=DecodeLimits())) for p in polls]
    barrier = threading.Barrier(2)

    def decode(index: int) -> list[list[object]]:
        barrier.wait(timeout=30)  # both start together, so their scans overlap
        out: list[list[object]] = []
        for _ in range(5):
            out.append(summary(decode_messages(polls[index], limits=DecodeLimits())))
        return out

    for first, second in ((0, 1), (2, 3), (0, 2)):
        with ThreadPoolExecutor(max_workers=2) as pool:
            a, b = pool.submit(decode, first), pool.submit(decode, second)
            results_a, results_b = a.result(timeout=120), b.result(timeout=120)
        assert all(r == alone[first] for r in results_a)
        assert all(r == alone[second] for r in results_b)
        barrier.reset()
