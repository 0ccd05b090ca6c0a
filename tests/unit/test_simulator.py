"""The simulator: deterministic, realistic enough for the detectors, incidents where asked."""

from __future__ import annotations

from dataclasses import fields
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from schemas.batch import LogBatch
from worker.sources.simulator import (
    INCIDENT_KINDS,
    Incident,
    SimulationConfig,
    default_demo_incidents,
    parse_incident,
    simulate_batches,
    simulate_logs,
)

START = datetime(2024, 5, 1, 12, tzinfo=UTC)
MIN = timedelta(minutes=1)


def run(config: SimulationConfig, seconds: float = 10.0) -> LogBatch:
    return LogBatch.concat(list(simulate_batches(config, seconds_per_batch=seconds)))


def assert_same(a: LogBatch, b: LogBatch) -> None:
    for f in fields(LogBatch):
        x, y = getattr(a, f.name), getattr(b, f.name)
        if f.name == "safety_scores":
            assert x.keys() == y.keys()
            for k in x:
                np.testing.assert_array_equal(x[k], y[k], err_msg=f"safety_scores[{k}]")
        elif x.dtype == object:
            assert list(x) == list(y), f.name
        else:
            np.testing.assert_array_equal(x, y, err_msg=f.name)


@pytest.fixture(scope="module")
def incident_run() -> LogBatch:
    """40 min of traffic with one incident of each kind at minute 20, each on its own model."""
    incidents = (
        Incident("safety_spike", 20 * MIN, 10 * MIN, model="gemini-1.5-flash"),
        Incident("latency_regression", 20 * MIN, 10 * MIN, model="text-bison"),
        Incident("token_explosion", 20 * MIN, 10 * MIN, model="gpt-4o-mini"),
        Incident("topic_shift", 20 * MIN, 10 * MIN, model="text-bison"),
    )
    return run(SimulationConfig(start=START, hours=40 / 60, incidents=incidents), seconds=60)


def periods(batch: LogBatch, model: str) -> tuple[LogBatch, LogBatch]:
    """(10 quiet minutes just before the incidents, the 10 incident minutes) of one model."""
    t = batch.timestamp - START.timestamp()
    mine = batch.model == model
    before = batch.take(mine & (t >= 600) & (t < 1200))
    during = batch.take(mine & (t >= 1200) & (t < 1800))
    return before, during


def test_same_seed_same_stream_whatever_the_batch_size() -> None:
    config = SimulationConfig(start=START, hours=0.05, embedding_fraction=0.5)
    assert_same(run(config, seconds=7), run(config, seconds=60))
    other = run(SimulationConfig(start=START, hours=0.05, embedding_fraction=0.5, seed=8))
    assert not np.array_equal(other.latency_ms[:100], run(config).latency_ms[:100])


def test_logs_describe_the_same_calls_as_batches() -> None:
    config = SimulationConfig(
        start=START, hours=0.03, embedding_fraction=0.7, with_text=True,
        incidents=(Incident("safety_spike", MIN, MIN),),
    )  # fmt: skip
    logs = list(simulate_logs(config))
    assert_same(LogBatch.from_logs(logs), run(config))
    answered = [log for log in logs if log.response is not None]
    assert answered and all(log.prompt for log in logs)
    blocked_prompts = [log for log in logs if log.block_stage == "prompt"]
    assert blocked_prompts and all(log.response is None for log in blocked_prompts)


def test_batches_are_time_ordered_windows_with_unique_ids() -> None:
    config = SimulationConfig(start=START, hours=0.1)
    batches = list(simulate_batches(config, seconds_per_batch=10))
    t0 = START.timestamp()
    for i, b in enumerate(batches):
        assert np.all(np.diff(b.timestamp) >= 0)
        assert np.all((b.timestamp - t0) // 10 == i), "each batch covers one 10 s interval"
    ids = np.concatenate([b.request_id for b in batches])
    assert len(set(ids)) == len(ids)
    assert {"sim7-gemini-1.5-flash-0", "sim7-text-bison-0", "sim7-gpt-4o-mini-0"} <= set(ids)
    other_seed = SimulationConfig(start=START, hours=0.1, seed=8)
    other_ids = {i for b in simulate_batches(other_seed) for i in b.request_id}
    assert not other_ids & set(ids), "two seeds must never share request ids"


def test_traffic_looks_like_three_distinct_production_models(incident_run: LogBatch) -> None:
    minute = ((incident_run.timestamp - START.timestamp()) // 60).astype(int)
    medians = {}
    for model in ("gemini-1.5-flash", "text-bison", "gpt-4o-mini"):
        quiet, _ = periods(incident_run, model)
        assert np.bincount(minute[incident_run.model == model]).min() >= 500
        ok = ~quiet.blocked
        medians[model] = float(np.median(quiet.latency_ms[ok]))
        assert 500 <= medians[model] <= 1600
        p99 = np.percentile(quiet.latency_ms[ok], 99)
        assert p99 > 3 * medians[model], "latency has a heavy tail"
        assert np.nanmedian(quiet.time_to_first_token_ms) < medians[model] / 2
        assert 200 <= np.median(quiet.input_tokens) <= 400
        assert 180 <= np.median(quiet.output_tokens[ok]) <= 320
        corr = np.corrcoef(quiet.latency_ms[ok], quiet.output_tokens[ok])[0, 1]
        assert corr > 0.4, "long answers take longer"
        assert 0.005 <= quiet.blocked.mean() <= 0.05
        assert set(quiet.block_stage[quiet.blocked]) == {"prompt", "response"}
        assert set(quiet.finish_reason[~quiet.blocked]) <= {"stop", "length"}
        high = np.max(np.stack(list(quiet.safety_scores.values())), axis=0)
        assert np.median(high[quiet.blocked]) > 0.7 > np.percentile(high[~quiet.blocked], 99)
    assert medians["gemini-1.5-flash"] < medians["gpt-4o-mini"] < medians["text-bison"]
    assert sorted(incident_run.safety_scores) == [
        "dangerous_content", "harassment", "hate_speech", "sexually_explicit",
    ]  # fmt: skip
    e = incident_run.embeddings
    assert e.shape == (len(incident_run), 384) and e.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(e[:2000], axis=1), 1.0, atol=2e-3)


def test_embeddings_cluster_around_topics() -> None:
    e = run(SimulationConfig(start=START, hours=0.01, models=("text-bison",))).embeddings
    sims = e[:300] @ e[:300].T
    np.fill_diagonal(sims, 0)
    # same-topic pairs sit at cos ≈ 0.4–0.6 (two draws at 0.6–0.8 from one centre), others ≈ 0
    assert 0.3 < np.percentile(sims.max(axis=1), 50) < 0.75
    assert abs(np.median(sims)) < 0.05


def test_embedding_fraction_leaves_some_calls_without() -> None:
    b = run(SimulationConfig(start=START, hours=0.05, embedding_fraction=0.25))
    assert 0.2 < len(b.embedding_rows) / len(b) < 0.3


def test_each_incident_moves_its_own_signal(incident_run: LogBatch) -> None:
    quiet, spike = periods(incident_run, "gemini-1.5-flash")
    assert 2.2 < spike.blocked.mean() / quiet.blocked.mean() < 4.0

    quiet, slow = periods(incident_run, "text-bison")
    ratio = np.percentile(slow.latency_ms, 95) / np.percentile(quiet.latency_ms, 95)
    assert 1.7 < ratio < 2.3
    assert abs(np.mean(slow.output_tokens) / np.mean(quiet.output_tokens) - 1) < 0.1

    quiet, verbose = periods(incident_run, "gpt-4o-mini")
    assert 1.7 < np.median(verbose.output_tokens) / np.median(quiet.output_tokens) < 2.3
    assert (
        abs(np.percentile(verbose.latency_ms, 95) / np.percentile(quiet.latency_ms, 95) - 1) < 0.15
    )

    # gemini's quiet latency and tokens are untouched by the other models' incidents
    quiet, spike = periods(incident_run, "gemini-1.5-flash")
    assert abs(np.median(spike.latency_ms) / np.median(quiet.latency_ms) - 1) < 0.1


def test_topic_shift_moves_embeddings_off_the_reference(incident_run: LogBatch) -> None:
    quiet, shifted = periods(incident_run, "text-bison")
    reference = quiet.embeddings[: len(quiet.embeddings) // 2]
    later_quiet = quiet.embeddings[len(quiet.embeddings) // 2 :]

    def share_far(sample: np.ndarray) -> float:
        nearest = (sample[:1500] @ reference[:3000].T).max(axis=1)
        return float(np.mean(nearest < 0.3))

    assert share_far(later_quiet) < 0.02
    assert 0.2 < share_far(shifted.embeddings) < 0.4


def test_parse_incident_accepts_offsets_and_durations() -> None:
    assert parse_incident("safety_spike@90m") == Incident("safety_spike", 90 * MIN)
    assert parse_incident("latency_regression@2h").start_offset == timedelta(hours=2)
    shift = parse_incident("topic_shift@1h30m:20m")
    assert (shift.kind, shift.start_offset, shift.duration) == ("topic_shift", 90 * MIN, 20 * MIN)


def test_parse_incident_can_name_one_model() -> None:
    hit = parse_incident("latency_regression:text-bison@40m:15m")
    assert (hit.kind, hit.model, hit.start_offset, hit.duration) == (
        "latency_regression",
        "text-bison",
        40 * MIN,
        15 * MIN,
    )
    assert parse_incident("safety_spike@40m").model is None  # every model


@pytest.mark.parametrize(
    ("text", "names"),
    [
        ("safety_spkie@90m", "safety_spkie"),
        ("safety_spike", r"KIND\[:MODEL\]@OFFSET"),
        ("safety_spike:@5m", "no model name"),
        ("safety_spike@ninety", "ninety"),
        ("topic_shift@1h:0m", "duration"),
        ("token_explosion@10m:5x", "5x"),
    ],
)
def test_parse_incident_names_the_bad_part(text: str, names: str) -> None:
    with pytest.raises(ValueError, match=names) as caught:
        parse_incident(text)
    if "spkie" in text:
        assert all(kind in str(caught.value) for kind in INCIDENT_KINDS)


def test_default_demo_incidents_leave_room_for_baselines_and_resolves() -> None:
    incidents = default_demo_incidents()
    assert sorted(i.kind for i in incidents) == sorted(INCIDENT_KINDS)
    assert len({i.model for i in incidents}) == 3
    for inc in incidents:
        same_model = sorted(
            (i for i in incidents if i.model == inc.model), key=lambda i: i.start_offset
        )
        previous_end = max(
            [i.start_offset + i.duration for i in same_model if i.start_offset < inc.start_offset],
            default=timedelta(0),
        )
        assert inc.start_offset - previous_end >= 40 * MIN
        assert 10 * MIN <= inc.duration <= 15 * MIN
        assert inc.start_offset + inc.duration <= timedelta(hours=3) - 30 * MIN
    SimulationConfig(start=START, incidents=incidents)  # valid for the default models


def test_config_rejects_what_would_silently_do_nothing() -> None:
    with pytest.raises(ValueError, match="timezone"):
        SimulationConfig(start=datetime(2024, 5, 1))  # noqa: DTZ001
    with pytest.raises(ValueError, match="not simulated"):
        SimulationConfig(start=START, incidents=(Incident("safety_spike", MIN, model="gpt-5"),))
    with pytest.raises(ValueError, match="after the simulation ends"):
        SimulationConfig(start=START, hours=1, incidents=(Incident("safety_spike", 61 * MIN),))
