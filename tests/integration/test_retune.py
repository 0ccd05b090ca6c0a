"""The retune loop: sustained incidents publish one `RetuneRequest` to a real Pub/Sub emulator
topic — none for a one-window blip, none inside the cooldown — and the exported dataset."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest
import yaml
from google.cloud import pubsub_v1
from prometheus_client import CollectorRegistry

from alerts.retune.actions import RetuneActionError, run_action
from alerts.retune.export import ExportResult, export_dataset
from alerts.retune.guard import RetuneLog
from alerts.retune.request import RetuneRequest, TimeRange, request_id
from alerts.retune.trigger import RetuneTrigger
from alerts.state import Incident as StateIncident
from schemas.alert_config import AlertingConfig
from schemas.config import DetectorsConfig, DuckDBSinkConfig, EngineConfig, LookoutConfig
from schemas.detection import Detection
from schemas.retune_config import PubSubRetune, RetuneExport
from tests.e2e.conftest import assert_no_traceback, lookout
from tests.integration.pubsub_emulator import PubSubEmulator
from tests.integration.retune_stand_in import Blackhole
from worker.cli.pipeline import build_pipeline
from worker.sources.simulator import Incident, SimulationConfig, simulate_batches

T0 = datetime(2026, 1, 5, 6, 0, tzinfo=UTC)
MODEL = "gemini-1.5-flash"
PROJECT = "lookout-retune"
KEY = f"lookout:{MODEL}:safety:block_rate_above_baseline"


@pytest.fixture
def topic(
    pubsub_emulator: PubSubEmulator, unique_name: str, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[str, str]]:
    monkeypatch.setenv("PUBSUB_EMULATOR_HOST", pubsub_emulator.host)
    publisher, subscriber = pubsub_v1.PublisherClient(), pubsub_v1.SubscriberClient()
    topic_path = publisher.topic_path(PROJECT, unique_name)
    subscription = subscriber.subscription_path(PROJECT, unique_name)
    publisher.create_topic(name=topic_path)
    subscriber.create_subscription(name=subscription, topic=topic_path)
    publisher.transport.close()
    subscriber.close()
    yield unique_name, subscription


def pull_all(subscription: str, settle_seconds: float = 2.0) -> list[tuple[bytes, dict[str, str]]]:
    """Everything on the subscription: pulls until nothing new came for `settle_seconds`."""
    subscriber = pubsub_v1.SubscriberClient()
    out: list[tuple[bytes, dict[str, str]]] = []
    quiet_since = time.monotonic()
    try:
        while time.monotonic() - quiet_since < settle_seconds:
            response = subscriber.pull(subscription=subscription, max_messages=50, timeout=5)
            received = list(response.received_messages)
            if received:
                subscriber.acknowledge(
                    subscription=subscription, ack_ids=[m.ack_id for m in received]
                )
                out.extend((m.message.data, dict(m.message.attributes)) for m in received)
                quiet_since = time.monotonic()
    finally:
        subscriber.close()
    return out


def three_incidents() -> list[object]:
    """80 minutes: a one-window blip at minute 8, sustained spikes at 20-30 and 50-60."""
    config = SimulationConfig(
        start=T0,
        hours=80 / 60,
        models=(MODEL,),
        calls_per_minute=400,
        embedding_fraction=0.0,
        # seed 7 draws one quiet window at minute 16 with p = 8.7e-05 (a true false alarm at
        # alpha 1e-4) whose incident then absorbs the one at minute 20; 11 does not
        seed=11,
        incidents=(
            Incident("safety_spike", timedelta(minutes=8), timedelta(minutes=1), magnitude=6),
            Incident("safety_spike", timedelta(minutes=20), timedelta(minutes=10), magnitude=5),
            Incident("safety_spike", timedelta(minutes=50), timedelta(minutes=10), magnitude=5),
        ),
    )
    return list(simulate_batches(config, seconds_per_batch=20))


def test_sustained_incidents_publish_one_request_per_cooldown_and_blips_none(
    topic: tuple[str, str], tmp_path: Path
) -> None:
    topic_name, subscription = topic
    alerting = AlertingConfig.model_validate(
        {
            "notify_on_escalation": False,
            "routes": [{"receivers": ["log"], "detector": "safety", "retune": "retrain"}],
            "retune": {
                "actions": [
                    {
                        "name": "retrain",
                        "kind": "pubsub",
                        "project": PROJECT,
                        "topic": topic_name,
                        "detectors": ["safety"],
                        "consecutive_windows": 5,
                        "cooldown": "2h",
                    }
                ]
            },
        }
    )
    registry = CollectorRegistry()
    config = LookoutConfig(
        sink=DuckDBSinkConfig(path=str(tmp_path / "lookout.duckdb")),
        engine=EngineConfig(writer_id="w"),
        detectors=DetectorsConfig(enabled=("safety",)),
        alerting=alerting,
    )
    pipeline = build_pipeline(config, alert_stream=None, registry=registry)
    for batch in three_incidents():
        pipeline.engine.feed(batch)  # type: ignore[arg-type]
        pipeline.engine.tick()
    assert pipeline.engine.finish(end_of_input=True)
    fired = [a for a in pipeline.engine.stats.alerts if a.dedup_key == KEY]
    pipeline.close()  # waits for queued actions

    starts = [a.window_start - T0 for a in fired if a.status == "firing"]
    minutes = {s // timedelta(minutes=1) for s in starts}
    assert {8, 20, 50} <= minutes  # the blip and both sustained incidents paged
    messages = pull_all(subscription)
    assert len(messages) == 1, [m[1] for m in messages]
    data, attributes = messages[0]
    request = RetuneRequest.model_validate(orjson.loads(data))
    assert attributes == {
        "model": MODEL,
        "detector": "safety",
        "action": "retrain",
        "retune_request_id": request_id("retrain", request),
    }
    assert request.dedup_key == KEY and request.consecutive_windows == 5
    assert request.time_range.start == T0 + timedelta(minutes=20)
    assert request.time_range.end == T0 + timedelta(minutes=25)
    assert request.evidence["value"] > request.evidence["threshold"]
    assert request.evidence["sample_size"] > 100 and request.reason

    def count(outcome: str) -> float:
        labels = {"action": "retrain", "model": MODEL, "outcome": outcome}
        return registry.get_sample_value("lookout_retune_requests_total", labels) or 0.0

    assert (count("sent"), count("cooldown"), count("failed")) == (1, 1, 0)


SAMPLES = [
    {
        "request_id": f"r{i:03d}",
        "model": MODEL if i % 4 else "other",
        "prompt": f"question {i}",
        "response": f"answer {i}",
        "timestamp": (T0 + timedelta(minutes=i)).isoformat(),
    }
    for i in range(60)
]


def export_config(tmp_path: Path, **extra: object) -> RetuneExport:
    logs = tmp_path / "samples.ndjson"
    logs.write_bytes(b"".join(orjson.dumps(s) + b"\n" for s in SAMPLES))
    return RetuneExport.model_validate(
        {
            "query": f"SELECT request_id, prompt, response FROM read_ndjson_auto('{logs}') "
            "WHERE model = $model AND timestamp::TIMESTAMPTZ >= $start "
            "AND timestamp::TIMESTAMPTZ < $end",
            "uri": str(tmp_path / "datasets" / "{model}" / "{window_start}"),
            "instruction_template": "Answer the user's question.\n\nQuestion: {prompt}",
            "eval_fraction": 0.25,
            "seed": 7,
            **extra,
        }
    )


def read_jsonl(path: str) -> list[dict[str, str]]:
    return [orjson.loads(line) for line in Path(path).read_bytes().splitlines()]


def test_the_exported_dataset_has_the_lines_the_split_and_the_template(tmp_path: Path) -> None:
    config = export_config(tmp_path)
    start, end = T0 + timedelta(minutes=10), T0 + timedelta(minutes=50)
    result = export_dataset(config, model=MODEL, start=start, end=end)
    assert isinstance(result, ExportResult)
    expected = {f"r{i:03d}" for i in range(10, 50) if i % 4}
    train, evaluation = read_jsonl(result.train_uri), read_jsonl(result.eval_uri)
    assert (len(train), len(evaluation)) == (22, 8)  # 30 samples, 25% to eval
    assert {r["request_id"] for r in train + evaluation} == expected
    assert not {r["request_id"] for r in train} & {r["request_id"] for r in evaluation}
    for row in train + evaluation:
        number = row["request_id"][1:].lstrip("0")
        assert row["input_text"] == (f"Answer the user's question.\n\nQuestion: question {number}")
        assert row["output_text"] == f"answer {number}"
    assert Path(result.train_uri).parent == tmp_path / "datasets" / MODEL / "20260105T061000Z"

    again = export_dataset(config, model=MODEL, start=start, end=end)  # the same seed
    assert read_jsonl(again.eval_uri) == evaluation
    other = export_dataset(
        export_config(tmp_path, seed=8, uri=str(tmp_path / "seed8")),
        model=MODEL,
        start=start,
        end=end,
    )
    assert read_jsonl(other.eval_uri) != evaluation


def test_lookout_retune_export_writes_the_dataset_by_hand(tmp_path: Path) -> None:
    config = export_config(tmp_path)
    (tmp_path / "lookout.yaml").write_text(
        yaml.safe_dump({"alerting": {"retune": {"export": config.model_dump()}}})
    )
    result = lookout(
        "retune",
        "export",
        "--config",
        "lookout.yaml",
        "--model",
        MODEL,
        "--from",
        "2026-01-05T06:10:00Z",
        "--to",
        "2026-01-05T06:50:00Z",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.describe()
    train = tmp_path / "datasets" / MODEL / "20260105T061000Z" / "train.jsonl"
    assert f"train: {train} (22 lines)" in result.stdout
    assert len(read_jsonl(str(train))) == 22

    bad = lookout(
        "retune",
        "export",
        "--config",
        "lookout.yaml",
        "--model",
        MODEL,
        "--from",
        "yesterday",
        "--to",
        "2026-01-05T06:50:00Z",
        cwd=tmp_path,
    )
    assert bad.returncode == 2 and "--from 'yesterday' is not an ISO 8601 time" in bad.stderr
    assert_no_traceback(bad)
    empty = lookout(
        "retune",
        "export",
        "--config",
        "lookout.yaml",
        "--model",
        "nobody",
        "--from",
        "2026-01-05T06:10:00Z",
        "--to",
        "2026-01-05T06:50:00Z",
        cwd=tmp_path,
    )
    assert empty.returncode == 1 and "returned no samples for nobody" in empty.stderr
    assert_no_traceback(empty)
    unfillable = lookout(
        "retune", "export", "--config", "lookout.yaml", "--model", MODEL,
        "--from", "2026-01-05T06:10:00Z", "--to", "2026-01-05T06:50:00Z",
        "--uri", str(tmp_path / "x" / "{date}"), cwd=tmp_path,
    )  # fmt: skip
    assert_no_traceback(unfillable)
    assert unfillable.returncode == 2, unfillable.describe()
    assert "--uri" in unfillable.stderr and "{date}" in unfillable.stderr, unfillable.describe()
    assert not (tmp_path / "x").exists()


# -- Pub/Sub failures are bounded and say which action failed (found in review) ------------------


def pubsub_action(**extra: object) -> PubSubRetune:
    return PubSubRetune.model_validate(
        {"name": "safety-retune", "kind": "pubsub", "project": PROJECT, "topic": "lookout-retune"}
        | extra
    )


def a_request() -> RetuneRequest:
    return RetuneRequest(
        action="safety-retune",
        model=MODEL,
        detector="safety",
        condition="block_rate_above_baseline",
        dedup_key=KEY,
        reason="block rate up",
        time_range=TimeRange(start=T0, end=T0 + timedelta(minutes=5)),
        consecutive_windows=5,
    )


def test_a_publish_nobody_answers_fails_within_the_timeout_by_name(
    monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    """It said `publishing to lookout-retune: ` (a TimeoutError's text is empty) after 60 s,
    and closing the channel under the client's batch thread printed a traceback."""
    hole = Blackhole()
    monkeypatch.setenv("PUBSUB_EMULATOR_HOST", hole.address)
    try:
        began = time.monotonic()
        with pytest.raises(RetuneActionError) as failed:
            run_action(pubsub_action(timeout_seconds=1), a_request())
        assert time.monotonic() - began < 5
        assert str(failed.value) == (
            "publishing to lookout-retune: no answer within 1s (timeout_seconds)"
        )
        time.sleep(2)  # the client's own publish ends after its timeout too
    finally:
        hole.close()
    _, err = capfd.readouterr()
    assert "Traceback" not in err, err


def test_missing_credentials_fail_the_pubsub_action_by_name(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The client was built outside the action's error handling: the log line was the raw
    Application Default Credentials message, with no action in it."""
    monkeypatch.delenv("PUBSUB_EMULATOR_HOST", raising=False)
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "none.json"))
    alerting = AlertingConfig.model_validate(
        {
            "routes": [{"receivers": ["log"], "retune": "safety-retune"}],
            "retune": {"actions": [pubsub_action(consecutive_windows=1).model_dump()]},
        }
    )
    trigger = RetuneTrigger(
        alerting, RetuneLog(tmp_path / "retune.sqlite"), registry=CollectorRegistry()
    )
    trigger.start()
    detection = Detection(
        detector="safety",
        model=MODEL,
        window_start=T0,
        window_end=T0 + timedelta(minutes=1),
        verdict="alert",
        condition="block_rate_above_baseline",
        severity="critical",
        value=0.06,
        threshold=0.03,
        baseline=0.02,
        sample_size=400,
        reason="block rate up",
    )
    incident = StateIncident(
        dedup_key=KEY,
        model=MODEL,
        detector="safety",
        condition="block_rate_above_baseline",
        phase="firing",
        severity="critical",
        started_at=T0,
        windows=1,
        alert_windows=1,
        breach_windows=1,
    )
    try:
        trigger.consider(detection, incident)
        assert trigger.wait_idle(timeout=30)
    finally:
        trigger.close()
    (line,) = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert line.startswith(
        f"retune safety-retune for {MODEL} failed: publishing to lookout-retune: "
        "no Google credentials here ("
    ), line
    assert "\n" not in line
    assert trigger.shortfall() == [
        f"retune safety-retune: no tuning run started for {MODEL} (1 request(s) failed; "
        "see the errors above)"
    ]


def test_a_retried_publish_carries_the_same_request_id_for_the_consumer(
    topic: tuple[str, str],
) -> None:
    """A publish given up after `timeout_seconds` may be delivered all the same, and the retry
    at the next alerting window is a second message for the incident; the consumer could not
    tell they were one request. Both carry the request's id now; another incident's differs."""
    topic_name, subscription = topic
    action = pubsub_action(topic=topic_name)
    run_action(action, a_request())
    run_action(action, a_request().model_copy(update={"consecutive_windows": 6}))  # the retry
    later = TimeRange(start=T0 + timedelta(hours=3), end=T0 + timedelta(hours=3, minutes=5))
    run_action(action, a_request().model_copy(update={"time_range": later}))
    ids = [attributes.get("retune_request_id") for _, attributes in pull_all(subscription)]
    assert len(ids) == 3 and None not in ids, ids
    assert len(set(ids)) == 2 and ids.count(request_id("safety-retune", a_request())) == 2, ids
