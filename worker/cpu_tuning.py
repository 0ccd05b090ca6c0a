"""CPU a worker spends on nothing: idle BLAS threads and the garbage collector's young passes.

Importing this module sets the BLAS thread count in the environment; the CLI imports it before
anything loads numpy (`worker/cli/__init__.py`), and calls `limit_blas_threads` and
`collect_garbage_less_often` at start. Measured on `lookout replay` of two simulated hours
(121k lines, 350 calls a minute per model), the whole process over 6 paired runs on the 2-core
development machine: each change alone took the median CPU seconds to 0.94 of the run without it.

**BLAS threads.** A worker is one single-threaded engine per core and its matrices are small (a
window's embeddings), where OpenBLAS's thread hand-off costs more than the product: on a busy
two-core machine a call was 13 times slower with the default threads than with one. OpenBLAS
sizes its thread pool when its library loads, from `OPENBLAS_NUM_THREADS` (default: a thread per
core). numpy loads one copy of the library when imported and scipy another, later, when a
detector first uses `scipy.special`; threadpoolctl limits only the copies already loaded, so
scipy's pool kept its two threads, and both copies' server threads showed in a profile of the
replay (5% of its CPU samples). Set before either copy loads, the variable sizes both.
`LOOKOUT_BLAS_THREADS` chooses another count; an `OPENBLAS_NUM_THREADS` the operator set wins,
for both copies.

**Garbage collector.** Judging a window, folding a poll and writing a checkpoint each build and
drop thousands of small containers; at CPython's default (a young-generation pass every 700
allocations net of frees) the collector took 4% of the replay's CPU samples. The young
generation is now collected every 20,000 allocations, and what the CLI's imports made is
frozen (`gc.freeze`; never walked again, which alone changed nothing measurable). Reference
counting frees everything that is not in a cycle at once, as before; what a cycle holds waits
for the next young pass, at most 20,000 allocations later instead of 700. Peak RSS did not move
(275-280 MiB either way on the replay).
"""

from __future__ import annotations

import gc
import os
import sys
from collections.abc import MutableMapping

#: a young-generation pass after this many allocations net of frees (CPython's default: 700)
YOUNG_GENERATION_THRESHOLD = 20_000


def blas_threads(environ: MutableMapping[str, str]) -> int:
    """`OPENBLAS_NUM_THREADS` when an operator set it, else `LOOKOUT_BLAS_THREADS`, else 1; a
    value that is not a positive whole number counts as 1 (`limit_blas_threads` says so)."""
    for name in ("OPENBLAS_NUM_THREADS", "LOOKOUT_BLAS_THREADS"):
        if name in environ:
            value = environ[name].strip()
            return int(value) if value.isdigit() and int(value) > 0 else 1
    return 1


def size_blas_pools(environ: MutableMapping[str, str]) -> None:
    """Before a BLAS library loads: the size of its thread pool (see the module docstring)."""
    environ.setdefault("OPENBLAS_NUM_THREADS", str(blas_threads(environ)))


def limit_blas_threads() -> None:
    """Every BLAS library, loaded already or later, uses `blas_threads`; a count that cannot
    be read is said on stderr (logging is not set up this early) and replaced by 1."""
    for name in ("OPENBLAS_NUM_THREADS", "LOOKOUT_BLAS_THREADS"):
        value = os.environ.get(name)
        if value is not None and not (value.strip().isdigit() and int(value) > 0):
            print(
                f"lookout: {name}={value!r} is not a positive whole number; BLAS uses 1 thread",
                file=sys.stderr,
            )
            os.environ[name] = "1"
    size_blas_pools(os.environ)
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=blas_threads(os.environ), user_api="blas")


def collect_garbage_less_often() -> None:
    """After start-up: what lives for the whole run is never walked again, and the young
    generation is collected less often (see the module docstring)."""
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG_GENERATION_THRESHOLD, middle, old)


size_blas_pools(os.environ)
