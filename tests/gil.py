"""Does a compiled call let another Python thread run? Both compiled parts promise it: the
decoder parses and the id hash hashes without the GIL, so the engine folds meanwhile."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class Paced:
    """A counting thread's steps per second alone, and while `call` ran (and how long)."""

    alone: float
    during: float
    seconds: float


def pace_beside(call: Callable[[], T]) -> tuple[T, Paced]:
    """Run `call` on this thread while another thread counts as fast as it can."""
    done = threading.Event()
    ticks = [0]

    def count() -> None:
        while not done.is_set():
            ticks[0] += 1

    counter = threading.Thread(target=count)
    counter.start()
    try:
        while ticks[0] == 0:  # the counter runs
            time.sleep(0.001)
        start, started = ticks[0], time.perf_counter()
        time.sleep(0.05)  # this thread waits: the counter's own pace
        alone = (ticks[0] - start) / (time.perf_counter() - started)
        before, started = ticks[0], time.perf_counter()  # this thread holds the GIL here
        result = call()
        seconds = time.perf_counter() - started
        during = (ticks[0] - before) / seconds
    finally:
        done.set()
        counter.join(timeout=10)
    return result, Paced(alone, during, seconds)
