"""What `lookout` does at start so its CPU goes to records (worker/cpu_tuning.py).

Each probe runs a fresh interpreter, since BLAS sizes its thread pools when its library loads
and the collector's settings are process-wide.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

#: loads both OpenBLAS copies as a replay with `--report` does (numpy's at import, scipy's when
#: the report's second opinion imports scipy.linalg)
BLAS_POOLS = """
import numpy
import scipy.linalg
from threadpoolctl import threadpool_info
print(sorted({pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"}),
      len([pool for pool in threadpool_info() if pool["user_api"] == "blas"]))
"""


def _run(code: str, tmp_path: Path, **environ: str) -> tuple[str, str]:
    """`code` in a fresh interpreter with a clean environment: its last line of output, and
    what it wrote on stderr."""
    script = tmp_path / "probe.py"
    script.write_text(code)
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(Path(__file__).parents[2]), **environ}
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()[-1], done.stderr


CLI_START = "import worker.cli\nworker.cli.limit_blas_threads()\n"


def test_without_the_cli_scipys_blas_copy_starts_a_thread_per_core(tmp_path: Path) -> None:
    """The baseline the tuning fixes: numpy and scipy each load an OpenBLAS (PyPI's wheels),
    and scipy's, loaded after a threadpoolctl limit, keeps its default pool (a thread per
    processor this process may run on)."""
    code = (
        "from threadpoolctl import threadpool_limits\n"
        "threadpool_limits(limits=1, user_api='blas')\n" + BLAS_POOLS
    )
    counts, pools = _run(code, tmp_path)[0].rsplit(" ", 1)
    if int(pools) < 2 or len(os.sched_getaffinity(0)) < 2:
        pytest.skip("one BLAS library for both, or one processor: nothing to size apart")
    assert counts != "[1]"


def test_the_cli_gives_every_blas_copy_one_thread(tmp_path: Path) -> None:
    counts, _ = _run(CLI_START + BLAS_POOLS, tmp_path)
    assert counts.startswith("[1] ")


def test_lookout_blas_threads_sizes_every_copy(tmp_path: Path) -> None:
    counts, _ = _run(CLI_START + BLAS_POOLS, tmp_path, LOOKOUT_BLAS_THREADS="2")
    assert counts.startswith("[2] ")


def test_an_operators_openblas_setting_wins_for_every_copy(tmp_path: Path) -> None:
    environ = {"OPENBLAS_NUM_THREADS": "2", "LOOKOUT_BLAS_THREADS": "1"}
    counts, _ = _run(CLI_START + BLAS_POOLS, tmp_path, **environ)
    assert counts.startswith("[2] ")


def test_a_count_that_is_no_number_is_said_and_replaced_by_one(tmp_path: Path) -> None:
    counts, stderr = _run(CLI_START + BLAS_POOLS, tmp_path, LOOKOUT_BLAS_THREADS="auto")
    assert counts.startswith("[1] ")
    assert "LOOKOUT_BLAS_THREADS='auto' is not a positive whole number" in stderr


@pytest.mark.parametrize("command", [["--help"], ["config", "check", "--help"]])
def test_the_cli_collects_young_garbage_less_often(command: list[str], tmp_path: Path) -> None:
    code = (
        "import gc, sys\n"
        "import worker.cli\n"
        f"sys.argv = ['lookout', *{command!r}]\n"
        "try:\n"
        "    worker.cli.main()\n"
        "except SystemExit:\n"
        "    pass\n"
        "print(gc.get_threshold()[0], gc.get_freeze_count() > 10_000)\n"
    )
    assert _run(code, tmp_path)[0] == "20000 True"
