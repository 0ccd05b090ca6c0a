"""Tune glibc's allocator once at start-up, so resident memory follows what the worker holds.

Measured while the engine folded 200k simulated records (glibc 2.36): with glibc's defaults
malloc's arenas grew from 48 MB at 10k records to 147 MB, of which 79 MB were free, while the
live allocations stayed near 70 MB: glibc raises its mmap threshold dynamically (up to 32 MB)
after the first large buffer is freed, so every later numpy column of a poll comes from an
arena, and an arena's top cannot be returned while a small object sits above the freed holes.
A fixed mmap threshold keeps those buffers in their own mappings, handed back to the kernel
when freed (now those over 8 MiB: see below); a fixed trim threshold returns the heap's free
top beyond it; two arenas stop each
thread (DuckDB's, the reader, the HTTP server) from keeping a heap of its own. Tuned (then at
a 128 KiB threshold), the arenas held 65 MB with 3-7 MB free, and over 1M records, with
Arrow's pool below, peak RSS was 338 MB against 435 MB untuned (`python -m bench.memory_bench`
compares both in one run).

The price is CPU: a buffer with a mapping of its own is mapped, faulted in and zeroed afresh
each time. At 128 KiB that cost about 0.4 s of system time per 100k replayed lines. At 1 MiB
the buffers of a poll's columns (up to a few hundred KiB) come from the arenas again, while
messages and blocks of embeddings keep their own mappings. Whole processes, runs alternating
with 128 KiB on the 2-core development machine (medians of the pairs): the memory benchmark's
1M records 0.89x the CPU, peak 304 against 294 MiB (6 pairs); a 6-hour replay (224k lines, all
with embeddings) 0.90x, 314 against 309 MiB (5 pairs); two replayed hours (121k lines) 0.94x,
283 against 277 MiB (8 pairs). Folding 5M records at the memory benchmark's rate (one run
each, the same day), RSS every 500k records was 281, 292, 292, 319, 310, 341, 334, 350, 339
and 346 MiB at 1 MiB against 243, 273, 276, 293, 311, 327, 328, 338, 337 and 323 at 128 KiB
(peaks 373 and 364 MiB; CPU 35 against 45 s): both settle from about 3M records, 10-20 MiB
apart.

At 8 MiB (threshold and trim, December 2026) a replay's messages, reads, embedding blocks and
feature matrices come from the arenas too, and are reused instead of faulted in afresh: a 2-hour
replay (121k lines, all with embeddings) took 178k page faults instead of 326k and 0.7 s of system
time instead of 1.3, a 6-hour one 1.5 s instead of 2.7. Whole processes in alternating pairs
against 1 MiB and 128 KiB (medians): 6 hours with embeddings 0.87-0.93x the CPU, 0.86-0.96x the
wall time, peak 299-302 against 280-282 MiB (4 and 6 pairs); two hours with 20% embeddings 0.92x
the CPU, 0.95x the wall, 265 against 254 MiB (8 pairs). The memory benchmark's 3M records peaked at
279 against 281 MiB and stayed within 1.08 from 1M records on. A long-lived worker's arenas may
keep up to 8 MiB free at their top: that is the price.

Arrow's default pool (mimalloc in the pyarrow wheels) keeps the segments it once used: with
the tuned glibc underneath, Arrow's system pool held 18-22 MB less from the first checkpoints
on (`use_system_arrow_pool`). Arrow reads that choice when it first allocates, so it is made
through the environment before pyarrow is used.

Must run before the process starts threads (arenas are created per thread on first use), so
the CLI calls it first thing. On a C library that is not glibc (musl, macOS) it does nothing.
An operator who tunes malloc through the environment (`MALLOC_ARENA_MAX`, `GLIBC_TUNABLES`,
...) keeps those values: the environment wins over these defaults.
"""

from __future__ import annotations

import ctypes
import platform
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass

#: mallopt parameter numbers from glibc's <malloc.h>
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
M_ARENA_MAX = -8

#: which environment variables already set each parameter (glibc reads them at start-up)
_ENV_NAMES = {
    M_TRIM_THRESHOLD: ("MALLOC_TRIM_THRESHOLD_", "glibc.malloc.trim_threshold"),
    M_MMAP_THRESHOLD: ("MALLOC_MMAP_THRESHOLD_", "glibc.malloc.mmap_threshold"),
    M_ARENA_MAX: ("MALLOC_ARENA_MAX", "glibc.malloc.arena_max"),
}


@dataclass(frozen=True)
class MallocTuning:
    """The values applied (see the module docstring for what each was measured at)."""

    #: allocations at least this large get their own mapping, returned to the OS when freed
    #: (a fixed value also switches off glibc's dynamic threshold, which grows to 32 MB);
    #: smaller ones come from the arenas, whose pages are reused without faulting
    mmap_threshold: int = 8 * 1024 * 1024
    #: free memory at the top of the heap beyond this is returned to the OS
    trim_threshold: int = 8 * 1024 * 1024
    #: at most this many malloc arenas, whatever the number of threads
    arena_max: int = 2

    def parameters(self) -> dict[int, int]:
        return {
            M_MMAP_THRESHOLD: self.mmap_threshold,
            M_TRIM_THRESHOLD: self.trim_threshold,
            M_ARENA_MAX: self.arena_max,
        }


def _set_by_environment(parameter: int, environ: Mapping[str, str]) -> bool:
    variable, tunable = _ENV_NAMES[parameter]
    return variable in environ or tunable in environ.get("GLIBC_TUNABLES", "")


def tune_malloc(
    environ: Mapping[str, str], tuning: MallocTuning = MallocTuning()
) -> dict[int, int]:
    """Apply `tuning` with `mallopt` where glibc is the C library and the environment did not
    already choose a value. Returns the parameters applied (empty off glibc)."""
    if platform.libc_ver()[0] != "glibc":
        return {}
    # the interpreter's own symbols include glibc's (find_library would run ldconfig: 25 ms)
    mallopt = ctypes.CDLL(None).mallopt
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    applied: dict[int, int] = {}
    for parameter, value in tuning.parameters().items():
        if _set_by_environment(parameter, environ):
            continue
        if mallopt(parameter, value) == 1:  # mallopt returns 1 on success
            applied[parameter] = value
    return applied


#: Arrow reads this when it first allocates; "system" is glibc's malloc, tuned above
ARROW_POOL_VARIABLE = "ARROW_DEFAULT_MEMORY_POOL"


def use_system_arrow_pool(environ: MutableMapping[str, str]) -> bool:
    """Ask Arrow for its system (malloc) pool unless the environment already names a pool.
    Returns whether this call chose it. Effective only before pyarrow's first allocation."""
    if ARROW_POOL_VARIABLE in environ:
        return False
    environ[ARROW_POOL_VARIABLE] = "system"
    return True
