"""The allocator tuning `lookout` applies at start-up (worker/memory_tuning.py).

What a user notices is memory handed back to the system: with glibc's defaults, freeing one
large buffer raises the mmap threshold, and later buffers up to its size stay in the heap after
they are freed. The tuned process gives buffers above its fixed threshold their own mappings.
Each check runs in a fresh interpreter, since the tuning changes the whole process. Lookout's
machines and image run glibc (Debian), so these tests expect it.
"""

from __future__ import annotations

import platform
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from worker.memory_tuning import (
    M_ARENA_MAX,
    M_MMAP_THRESHOLD,
    M_TRIM_THRESHOLD,
    tune_malloc,
    use_system_arrow_pool,
)

#: after a 16 MiB buffer is freed, is a fresh 12 MiB buffer (above the tuned threshold) a
#: mapping of its own? Prints "mapped" or "heap". glibc's mallinfo2 counts bytes in mmapped
#: chunks as `hblkhd`.
PROBE = textwrap.dedent(
    """
    import ctypes, sys

    class Info(ctypes.Structure):
        _fields_ = [(n, ctypes.c_size_t) for n in
                    "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost"
                    .split()]

    libc = ctypes.CDLL("libc.so.6")
    libc.mallinfo2.restype = Info
    libc.malloc.restype = ctypes.c_void_p
    libc.malloc.argtypes = (ctypes.c_size_t,)
    libc.free.argtypes = (ctypes.c_void_p,)
    {start}
    libc.free(libc.malloc(16 << 20))  # with defaults this raises the mmap threshold to 16 MiB
    before = libc.mallinfo2().hblkhd
    block = libc.malloc(12 << 20)
    print("mapped" if libc.mallinfo2().hblkhd - before >= 12 << 20 else "heap")
    libc.free(block)
    """
)


def _run(code: str, tmp_path: Path) -> str:
    """Run `code` in a fresh interpreter with a clean environment; its last line of output."""
    script = tmp_path / "probe.py"
    script.write_text(code)
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(Path(__file__).parents[2])}
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()[-1]


def _probe(start: str, tmp_path: Path) -> str:
    return _run(PROBE.format(start=start), tmp_path)


def _cli_start(tmp_path: Path) -> str:
    """Python that runs one quick `lookout` command in-process, as the entry point does."""
    config = tmp_path / "lookout.yaml"
    config.write_text("engine:\n  window_seconds: 60\n")
    return (
        "from worker.cli.app import app\n"
        f"app(['config', 'check', {str(config)!r}], standalone_mode=False)\n"
    )


def test_without_tuning_a_freed_large_buffer_keeps_later_buffers_in_the_heap(
    tmp_path: Path,
) -> None:
    """The baseline the tuning fixes (if glibc changes this, the tuning may be obsolete)."""
    assert _probe("", tmp_path) == "heap"


def test_the_cli_start_up_gives_large_buffers_their_own_mappings(tmp_path: Path) -> None:
    assert _probe(_cli_start(tmp_path), tmp_path) == "mapped"


def test_the_cli_start_up_keeps_a_replays_buffers_of_a_few_mib_in_the_heap(
    tmp_path: Path,
) -> None:
    """A 2 MB message or a 3 MB block of embeddings is reused from the arenas: with its own
    mapping (the 1 MiB threshold before) every one was zeroed and faulted in afresh, 2.7 s of
    system time in a 6-hour replay against 1.5 s."""
    probe = PROBE.replace("12 << 20", "4 << 20").format(start=_cli_start(tmp_path))
    assert _run(probe, tmp_path) == "heap"


def test_after_the_cli_start_up_arrow_allocates_through_malloc(tmp_path: Path) -> None:
    code = _cli_start(tmp_path) + (
        "import pyarrow\nprint(pyarrow.default_memory_pool().backend_name)\n"
    )
    assert _run(code, tmp_path) == "system"


def test_an_operators_arrow_pool_wins() -> None:
    environ = {"ARROW_DEFAULT_MEMORY_POOL": "jemalloc"}
    assert not use_system_arrow_pool(environ)
    assert environ == {"ARROW_DEFAULT_MEMORY_POOL": "jemalloc"}


def test_every_parameter_is_applied_when_the_environment_sets_none() -> None:
    applied = tune_malloc({})
    assert set(applied) == {M_MMAP_THRESHOLD, M_TRIM_THRESHOLD, M_ARENA_MAX}


def test_an_operators_environment_wins_over_the_defaults() -> None:
    applied = tune_malloc(
        {"MALLOC_ARENA_MAX": "4", "GLIBC_TUNABLES": "glibc.malloc.mmap_threshold=65536"}
    )
    assert set(applied) == {M_TRIM_THRESHOLD}


def test_nothing_is_applied_off_glibc(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(platform, "libc_ver", lambda: ("", ""))
    assert tune_malloc({}) == {}
