"""Token detector: sums and cost from real records, budget alerts, an EWMA that follows change."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

from detectors.base import Baseline, WindowRef
from detectors.tokens import TokensDetector, TokensState
from schemas.batch import LogBatch
from schemas.detector_config import TokenPrice, TokensConfig
from schemas.prediction_log import PredictionLog

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
PRICES = {"gpt-4o": TokenPrice(input_per_million=2.5, output_per_million=10.0)}
DET = TokensDetector(TokensConfig(prices=PRICES, budget_usd_per_window=5.0))


def window(model: str = "gpt-4o") -> WindowRef:
    return WindowRef(model, T0, T0 + timedelta(minutes=5))


def synthetic(calls: int, mean: float, sd: float) -> TokensState:
    """A window whose output tokens have this mean and standard deviation."""
    total = round(calls * mean)
    sq = round((calls - 1) * sd * sd + total * total / calls)
    return TokensState(calls, calls, calls * 500, calls * 500**2, calls, total, sq)


def test_sums_skip_missing_counts_and_cost_uses_the_model_price() -> None:
    logs = [
        PredictionLog(
            request_id="a", timestamp=T0, model="gpt-4o", input_tokens=1000, output_tokens=300
        ),
        PredictionLog(
            request_id="b", timestamp=T0, model="gpt-4o", input_tokens=3000, output_tokens=100
        ),
        PredictionLog(request_id="c", timestamp=T0, model="gpt-4o"),
    ]
    s = DET.add(DET.empty(), LogBatch.from_logs(logs))
    assert DET.to_row(s) == {
        "calls": 3,
        "input_calls": 2,
        "input_tokens": 4000,
        "input_tokens_sq": 10_000_000,
        "output_calls": 2,
        "output_tokens": 400,
        "output_tokens_sq": 100_000,
    }
    assert math.isclose(DET.cost_usd(s, "gpt-4o"), (4000 * 2.5 + 400 * 10.0) / 1e6)
    assert math.isclose(DET.cost_usd(s, "unlisted"), (4000 * 0.5 + 400 * 1.5) / 1e6)


def test_budget_alert_fires_without_a_baseline_and_names_the_cost() -> None:
    # 1M output tokens at $10 per million: $10 + input, double the $5 budget
    s = TokensState(2000, 2000, 200_000, 0, 2000, 1_000_000, 0)
    d = DET.evaluate(s, Baseline(), window())
    assert d.firing and d.condition == "cost_above_budget" and d.severity == "critical"
    assert d.value is not None and d.value > 10 and d.threshold == 5.0
    assert "$10.50" in d.reason and "$5.00 budget" in d.reason


def test_no_baseline_means_no_judgement() -> None:
    d = DET.evaluate(synthetic(100, 900, 200), Baseline(), window())
    assert d.verdict == "insufficient_data" and "baseline" in d.reason


def test_a_jump_in_output_tokens_alerts_with_both_means() -> None:
    history = tuple(synthetic(500, 300, 200) for _ in range(24))
    d = DET.evaluate(synthetic(500, 450, 300), Baseline(history=history), window())
    assert d.firing and d.condition == "output_tokens_above_baseline"
    assert d.baseline is not None and math.isclose(d.baseline, 300, rel_tol=1e-6)
    assert "450 output tokens per call" in d.reason and "vs 300" in d.reason


def test_the_test_knows_how_many_calls_a_mean_rests_on() -> None:
    """+40% on 20 calls with a wide spread is noise; on 2,000 calls it is an incident."""
    history = tuple(synthetic(2000, 300, 200) for _ in range(24))
    det = TokensDetector(TokensConfig(min_calls=10))
    few = det.evaluate(synthetic(20, 420, 400), Baseline(history=history), window())
    many = det.evaluate(synthetic(2000, 420, 200), Baseline(history=history), window())
    assert few.verdict == "ok" and many.firing


def test_the_baseline_follows_a_lasting_change() -> None:
    """After six hours at the new level, that level is normal, not an incident."""
    old = tuple(synthetic(500, 250, 150) for _ in range(12))
    new = tuple(synthetic(500, 400, 240) for _ in range(12))
    d = DET.evaluate(synthetic(500, 410, 240), Baseline(history=old + new), window())
    assert d.verdict == "ok"
    assert d.baseline is not None and d.baseline > 350  # most of the way from 250 to 400
