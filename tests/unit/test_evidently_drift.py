"""evidently as the second opinion: its verdicts come back as plain numbers and booleans.

One test on purpose: importing evidently takes seconds, so every wrapper is exercised on the
same small arrays in a single run.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from detectors.evidently_drift import evidently_embedding_drift, evidently_value_drift
from detectors.synthetic_embeddings import TopicWorld


def test_evidently_wrappers_give_a_score_and_verdict_on_small_arrays():
    world = TopicWorld.build(seed=3, dim=32)
    rng = np.random.default_rng(0)
    reference = world.sample(150, rng)
    quiet, shifted = world.sample(120, rng), world.sample(120, rng, shift=1.0)

    for method in ("model", "mmd", "distance", "ratio"):
        verdict = evidently_embedding_drift(reference, quiet, method)
        assert verdict.method == method
        assert np.isfinite(verdict.score) and isinstance(verdict.drifted, bool)
    # a window made only of unseen topics is obvious even to fixed thresholds
    assert evidently_embedding_drift(reference, shifted, "model").drifted

    # the documented Report path agrees with calling the method directly, and keeps the report
    via_report = evidently_embedding_drift(reference, shifted, "distance", report=True)
    direct = evidently_embedding_drift(reference, shifted, "distance")
    assert via_report.score == direct.score and via_report.drifted == direct.drifted
    assert "<html" in via_report.snapshot.get_html_str(as_iframe=False).lower()

    ref_df = pd.DataFrame(
        {"output_tokens": rng.lognormal(5, 0.5, 300), "finish_reason": ["stop"] * 300}
    )
    cur_df = pd.DataFrame(
        {
            "output_tokens": rng.lognormal(5, 0.5, 200) * 2,
            "finish_reason": ["stop"] * 150 + ["length"] * 50,
        }
    )
    values = evidently_value_drift(
        ref_df, cur_df, ["output_tokens", "finish_reason"], categorical=["finish_reason"]
    )
    assert set(values) == {"output_tokens", "finish_reason"}
    assert values["output_tokens"].drifted and values["finish_reason"].drifted
    assert "K-S" in values["output_tokens"].stattest
