"""The process set-up `lookout` makes at start, for benchmarks that run Lookout in-process.

A benchmark that measures `lookout replay` or ingest inside its own interpreter must pay what
the command pays and save what it saves: one BLAS thread and a less eager garbage collector
(`worker/cpu_tuning.py`, done by `worker.cli.main`), and glibc's allocator and Arrow's pool
tuned (`worker/memory_tuning.py`, done by the CLI's callback). Call it first, before the
benchmark starts a thread; its baseline loops then run in the same process, set up alike.
"""

from __future__ import annotations

import os

from worker.cpu_tuning import collect_garbage_less_often, limit_blas_threads
from worker.memory_tuning import tune_malloc, use_system_arrow_pool


def start_as_lookout_does() -> None:
    limit_blas_threads()
    tune_malloc(os.environ)
    use_system_arrow_pool(os.environ)
    collect_garbage_less_often()
