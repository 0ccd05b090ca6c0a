"""The KS test behind descriptor drift: scipy's numbers without importing `scipy.stats`.

`detectors._ks` replaced `scipy.stats.ks_2samp(method="asymp")` to save start-up and per-call
overhead; descriptor-drift verdicts must not change. So the statistic must equal scipy's
exactly and the p-value to floating-point error, over the sample sizes the detector uses
(windows of 50–1,000 against references of 2,000–5,000) and small ones, with and without
ties, from no shift to an obvious one — and in the tail, where alerts are decided, exactly.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from detectors import _drift_math as dm
from detectors import _ks

SIZES = [(2, 2), (3, 7), (10, 50), (50, 2000), (50, 5000), (120, 300), (200, 2000), (1000, 5000)]
SHIFTS = [0.0, 0.05, 0.15, 0.3, 0.6, 1.5]


@pytest.mark.parametrize(("n_current", "n_reference"), SIZES)
@pytest.mark.parametrize("ties", [False, True])
def test_statistic_and_p_value_match_scipy(n_current: int, n_reference: int, ties: bool) -> None:
    rng = np.random.default_rng(n_current * 7919 + n_reference + ties)
    for shift in SHIFTS:
        for _ in range(4):
            cur = rng.normal(shift, 1.0, n_current)
            ref = rng.normal(0.0, 1.0, n_reference)
            if ties:  # rounded values, as token counts are
                cur, ref = np.round(cur * 4), np.round(ref * 4)
            expected = stats.ks_2samp(cur, ref, method="asymp")
            distance, p_value = dm.ks_test(cur, ref)
            assert distance == float(expected.statistic)
            assert p_value == pytest.approx(float(expected.pvalue), rel=1e-8, abs=1e-14)


@pytest.mark.parametrize("n", [30, 140, 141, 833, 5000])
def test_kolmogorov_tail_and_bulk_match_scipy_over_the_whole_range(n: int) -> None:
    """Every method the selection can pick (edges, Durbin, Pelz–Good, Smirnov's tail)."""
    for d in np.concatenate([np.linspace(0.2 / n, 1.0, 400), [1 / n, 1.5 / n, 1 - 1 / n]]):
        expected = float(stats.kstwo.sf(d, n))
        got = _ks.kolmogorov_sf(n, float(d))
        assert got == pytest.approx(expected, rel=1e-8, abs=1e-14), (n, d)
        tail = n * d * d > 4.0 if n <= 140 else n * d * d >= 2.2
        if tail and d < 1 - 1 / n:  # where alerts are decided: scipy's numbers to rounding
            # (Birnbaum & Tingey's sum in `detectors._special`, summed in logarithms)
            assert got == pytest.approx(expected, rel=1e-10, abs=1e-300), (n, d)


def test_a_replay_never_imports_scipy_stats() -> None:
    """Descriptor drift runs its KS tests during a replay, and `scipy.stats` stays unloaded."""
    script = textwrap.dedent(
        """
        import sys, tempfile, threading
        from pathlib import Path
        from bench.replay_bench import write_stream
        from detectors import _drift_math as dm
        from schemas.config import LookoutConfig
        from worker.cli.pipeline import build_pipeline
        from worker.runner import run
        from worker.sources.file_source import FileSource

        calls = []
        real = dm.ks_test
        dm.ks_test = lambda *a, **k: calls.append(1) or real(*a, **k)
        with tempfile.TemporaryDirectory() as tmp:
            stream = Path(tmp) / "s.ndjson"
            write_stream(stream, 0.2, 350.0, 0.0)
            config = LookoutConfig.model_validate(
                {"sink": {"path": str(Path(tmp) / "r.duckdb")}, "metrics": {"enabled": False}}
            )
            pipeline = build_pipeline(config, alert_stream=None)
            source = FileSource(stream)
            pipeline.engine.set_ack_handler(source.ack)
            run(source, pipeline.engine, limits=pipeline.limits, stop=threading.Event())
            pipeline.close()
        print(len(calls), "scipy.stats" in sys.modules)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        cwd=Path(__file__).parents[2],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    ks_calls, imported = done.stdout.split()
    assert int(ks_calls) > 0, "the replay ran no KS test: the check would prove nothing"
    assert imported == "False"
