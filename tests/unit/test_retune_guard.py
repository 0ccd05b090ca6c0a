"""A retune request that started nothing does not count as made: a failed one is tried again
at the incident's next alerting window, and a dry run leaves no cooldown for real requests."""

from __future__ import annotations

import sqlite3
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from alerts.retune.guard import STOPPED_UNANSWERED, RetuneLog, read_history
from alerts.retune.request import RetuneRequest
from alerts.retune.trigger import GIVEN_UP, RetuneTrigger
from alerts.state import Incident
from schemas.alert_config import AlertingConfig
from schemas.config import LookoutConfig
from schemas.detection import Detection
from schemas.retune_config import RetuneAction
from tests.sink_cases import detection

T0 = datetime(2026, 1, 5, 6, 0, tzinfo=UTC)
KEY = "lookout:m:safety:block_rate_above_baseline"


def alerting(*, dry_run: bool = False) -> AlertingConfig:
    return AlertingConfig.model_validate(
        {
            "routes": [{"receivers": ["log"], "retune": "retrain"}],
            "retune": {
                "actions": [
                    {
                        "name": "retrain",
                        "kind": "pubsub",
                        "project": "p",
                        "topic": "t",
                        "consecutive_windows": 2,
                        "cooldown": "24h",
                        "dry_run": dry_run,
                    }
                ]
            },
        }
    )


def window(k: int) -> tuple[Detection, Incident]:
    """The incident's k-th alerting window (k from 1)."""
    end = T0 + timedelta(minutes=5 * k)
    judged = detection(model="m", start=int(end.timestamp()) - 60)
    incident = Incident(
        dedup_key=KEY,
        model="m",
        detector="safety",
        condition="block_rate_above_baseline",
        phase="firing",
        severity="critical",
        started_at=T0,
        windows=k,
        alert_windows=k,
        breach_windows=k,
    )
    return judged, incident


class FlakyRunner:
    """Refuses the first `failures` requests, then starts runs."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.started: list[RetuneRequest] = []

    def __call__(self, action: RetuneAction, request: RetuneRequest) -> str:
        if self.failures:
            self.failures -= 1
            raise RuntimeError("503 Service Unavailable")
        self.started.append(request)
        return f"run-{len(self.started)}"


def trigger(config: AlertingConfig, log: RetuneLog, runner: Any) -> RetuneTrigger:
    made = RetuneTrigger(config, log, registry=CollectorRegistry(), runner=runner)
    made.start()
    return made


def test_a_failed_request_is_tried_again_at_the_next_alerting_window(tmp_path: Path) -> None:
    runner = FlakyRunner(failures=1)
    retune = trigger(alerting(), RetuneLog(tmp_path / "retune.sqlite"), runner)
    try:
        asked = []
        for k in range(1, 6):
            asked.append(len(retune.consider(*window(k))))
            retune.wait_idle()
        # window 2 is sustained and fails; window 3 tries again and starts the run; then
        # the incident has its request
        assert asked == [0, 1, 1, 0, 0]
        assert len(runner.started) == 1
        failed = retune.total.labels("retrain", "m", "failed")._value.get()
        sent = retune.total.labels("retrain", "m", "sent")._value.get()
        assert (failed, sent) == (1, 1)
    finally:
        retune.close()


def test_a_dry_run_leaves_no_cooldown_for_the_real_requests(tmp_path: Path) -> None:
    path = tmp_path / "retune.sqlite"
    dry = trigger(alerting(dry_run=True), RetuneLog(path), FlakyRunner(failures=0))
    try:
        assert len(dry.consider(*window(2))) == 1
        dry.wait_idle()
    finally:
        dry.close()
    runner = FlakyRunner(failures=0)
    real = trigger(alerting(), RetuneLog(path), runner)  # the operator turned dry_run off
    try:
        assert len(real.consider(*window(3))) == 1
        real.wait_idle()
        assert len(runner.started) == 1
        assert real.consider(*window(4)) == []  # and the real one counts from now on
    finally:
        real.close()


def test_a_retune_action_whose_client_is_not_installed_stops_the_start(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Found by a newcomer: without the retune extra, `config check` said ok and `lookout
    run` started; the first incident long enough to retune failed in the log, and the run
    exited 0. Now config check warns and run refuses to start, naming the action."""
    import importlib.util

    from worker.cli.app import start_problems

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: (
            None if name.startswith(("kfp", "google.cloud.aiplatform")) else real(name, *a)
        ),
    )
    config = LookoutConfig.model_validate(
        {
            "sink": {"path": str(tmp_path / "x.duckdb")},
            "alerting": {
                "retune": {
                    "actions": [
                        {
                            "name": "vertex-tune",
                            "kind": "vertex_pipeline",
                            "project": "p",
                            "location": "us-central1",
                            "template_path": "gs://b/t.yaml",
                            "pipeline_root": "gs://b/root",
                        }
                    ]
                },
                "routes": [{"receivers": ["log"], "retune": "vertex-tune"}],
            },
        }
    )
    [problem] = start_problems(config)
    assert problem.startswith("retune action 'vertex-tune' (vertex_pipeline) needs the retune")
    assert "requirements-retune.lock" in problem
    ingest = config.model_copy(
        update={"engine": config.engine.model_copy(update={"role": "ingest"})}
    )
    assert start_problems(ingest) == []  # an ingest replica never retunes
    # an action no route names never runs: staged, it needs nothing installed (found in review)
    unrouted = config.alerting.model_copy(update={"routes": ()})
    assert start_problems(config.model_copy(update={"alerting": unrouted})) == []


# -- requests are pending until answered (found in review) ---------------------------------------

OTHER = "lookout:m:safety:block_rate_above_ceiling"


def other_window(k: int) -> tuple[Detection, Incident]:
    """The k-th alerting window of a second incident of the same model, started later."""
    judged, incident = window(k)
    start = T0 + timedelta(minutes=1)
    return judged, incident.model_copy(
        update={"dedup_key": OTHER, "condition": "block_rate_above_ceiling", "started_at": start}
    )


class GatedRunner:
    """Holds every request until `release` is set (an endpoint that takes its time), then
    refuses the first `failures` of them."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.release = threading.Event()
        self.asked = threading.Event()
        self.calls: list[RetuneRequest] = []

    def __call__(self, action: RetuneAction, request: RetuneRequest) -> str:
        self.calls.append(request)
        self.asked.set()
        self.release.wait(30)
        if self.failures:
            self.failures -= 1
            raise RuntimeError("503 Service Unavailable")
        return f"run-{len(self.calls)}"


def counts(retune: RetuneTrigger) -> tuple[float, ...]:
    return tuple(
        retune.total.labels("retrain", "m", outcome)._value.get()
        for outcome in ("sent", "failed", "cooldown")
    )


def test_a_window_judged_while_a_failed_request_ran_tries_again(tmp_path: Path) -> None:
    """Windows judged faster than the action runs (a replay): they saw the pending request as
    made (`already requested`), and when it failed the incident had no window left to try
    again. Now the latest of them is offered again once the failure is known."""
    runner = GatedRunner(failures=1)
    retune = trigger(alerting(), RetuneLog(tmp_path / "retune.sqlite"), runner)
    try:
        asked = [len(retune.consider(*window(k))) for k in range(1, 7)]  # no wait between
        assert asked == [0, 1, 0, 0, 0, 0]
        runner.release.set()
        assert retune.wait_idle(timeout=10)
    finally:
        retune.close()
    ends = [r.time_range.end for r in runner.calls]
    assert ends == [window(2)[0].window_end, window(6)[0].window_end]
    assert counts(retune) == (1, 1, 0)
    assert retune.shortfall() == []  # the incident's request was sent in the end


@pytest.mark.parametrize("first_sent", [False, True])
def test_only_a_sent_request_holds_another_incident_of_the_model_back(
    tmp_path: Path, first_sent: bool, caplog: pytest.LogCaptureFixture
) -> None:
    """A second incident was "held back by its cooldown" while the first one's request was
    pending, and stayed so though that request failed (failed 1, cooldown 1, nothing sent)."""
    runner = GatedRunner(failures=0 if first_sent else 1)
    retune = trigger(alerting(), RetuneLog(tmp_path / "retune.sqlite"), runner)
    try:
        assert len(retune.consider(*window(2))) == 1
        assert runner.asked.wait(10)
        assert retune.consider(*other_window(2)) == []  # waits for the first one's answer
        assert retune.consider(*other_window(3)) == []
        runner.release.set()
        assert retune.wait_idle(timeout=10)
    finally:
        retune.close()
    held = [r for r in caplog.records if "held back by its cooldown" in r.getMessage()]
    if first_sent:
        assert [r.dedup_key for r in runner.calls] == [KEY]
        assert counts(retune) == (1, 0, 1) and len(held) == 1
    else:
        assert [r.dedup_key for r in runner.calls] == [KEY, OTHER]
        assert counts(retune) == (1, 1, 0) and held == []


def test_a_request_unanswered_at_shutdown_is_given_up_said_and_asked_again(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A hung endpoint held the shutdown 120 s (past the grace period), then the request
    stayed recorded as made: the next run said "already requested" and sent nothing."""
    path = tmp_path / "retune.sqlite"
    hung = GatedRunner(failures=0)
    first = trigger(alerting(), RetuneLog(path), hung)
    try:
        assert len(first.consider(*window(2))) == 1
        assert hung.asked.wait(10)
        began = time.monotonic()
        first.close(drain_seconds=0.2)
        assert time.monotonic() - began < 2
        given_up = [r for r in caplog.records if r.name == "lookout.retune"]
        assert [(r.levelname, r.getMessage()) for r in given_up] == [
            (
                "WARNING",
                "retune retrain for m given up at shutdown before it was answered: not counted "
                "as made, asked again at the next start",
            )
        ]
        assert first.total.labels("retrain", "m", "failed")._value.get() == 1
        assert [(e.outcome, e.result) for e in read_history(path)] == [("failed", GIVEN_UP)]
        assert first.shortfall() == [
            "retune retrain: no tuning run started for m (1 request(s) failed; see the errors "
            "above)"
        ]
        runner = FlakyRunner(failures=0)
        second = trigger(alerting(), RetuneLog(path), runner)  # asks again as it starts
        try:
            assert second.wait_idle(timeout=10)
            assert len(runner.started) == 1
            assert second.consider(*window(3)) == []  # the incident's request is made
            [entry] = read_history(path)
            assert (entry.outcome, entry.result) == ("sent", "started: run-1")
        finally:
            second.close()
        assert len(runner.started) == 1
    finally:
        hung.release.set()


def test_a_failed_request_of_an_incident_that_ended_is_asked_again_at_the_next_start(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """An ML engineer's trial: the Kubeflow endpoint answered 500 and the replay exited 1; with
    the endpoint fixed, the same replay again sent the queued notifications but never the two
    retunes (their incidents had ended, so no alerting window asked again), and said nothing.
    A new process now asks again; a request superseded by a later one sent for the same model
    and action, or made by an action no longer configured, is left alone."""
    path = tmp_path / "retune.sqlite"
    refused = FlakyRunner(failures=10)
    first = trigger(alerting(), RetuneLog(path), refused)
    try:
        assert len(first.consider(*window(2))) == 1
        assert first.wait_idle(timeout=10)
    finally:
        first.close()
    assert refused.started == [] and first.shortfall()
    fixed = FlakyRunner(failures=0)
    second = trigger(alerting(), RetuneLog(path), fixed)
    try:
        assert second.wait_idle(timeout=10)
    finally:
        second.close()
    (request,) = fixed.started
    assert (request.model, request.dedup_key, request.time_range.start) == ("m", KEY, T0)
    assert second.shortfall() == []
    said = [r.getMessage() for r in caplog.records if "asking again" in r.getMessage()]
    assert said == [
        "retune retrain for m: asking again for the request an earlier run could not send "
        "(incident since 2026-01-05 06:00Z)"
    ]
    third = trigger(alerting(), RetuneLog(path), fixed)  # sent now: nothing more to ask
    try:
        assert third.wait_idle(timeout=10)
    finally:
        third.close()
    assert len(fixed.started) == 1
    other = AlertingConfig.model_validate(
        {
            "routes": [{"receivers": ["log"], "retune": "other"}],
            "retune": {
                "actions": [{"name": "other", "kind": "pubsub", "project": "p", "topic": "t"}]
            },
        }
    )
    refused_again = FlakyRunner(failures=10)
    fourth = trigger(alerting(), RetuneLog(tmp_path / "second.sqlite"), refused_again)
    try:
        assert len(fourth.consider(*window(2))) == 1
        assert fourth.wait_idle(timeout=10)
    finally:
        fourth.close()
    renamed = FlakyRunner(failures=0)
    fifth = trigger(other, RetuneLog(tmp_path / "second.sqlite"), renamed)
    try:
        assert fifth.wait_idle(timeout=10)
    finally:
        fifth.close()
    assert renamed.started == []


def test_a_request_pending_when_the_process_died_is_asked_again(tmp_path: Path) -> None:
    """Killed while its action ran, a process left the row: pending is not made."""
    path = tmp_path / "retune.sqlite"
    action = alerting().retune.actions[0]
    died = RetuneLog(path)
    died.record("retrain", model="m", dedup_key=KEY, incident_start=T0, at=T0)
    died.close()
    assert [(e.outcome, e.result) for e in read_history(path)] == [("pending", None)]
    again = RetuneLog(path)
    [entry] = read_history(path)  # what `lookout retune list` says of it
    assert (entry.outcome, entry.result) == ("failed", STOPPED_UNANSWERED)
    try:
        decided = again.decide(
            action, model="m", detector="safety", dedup_key=KEY, incident_start=T0,
            alert_windows=5, at=T0 + timedelta(minutes=30),
        )  # fmt: skip
        assert decided == "go"
    finally:
        again.close()


def test_a_log_from_before_outcomes_keeps_its_requests_made(tmp_path: Path) -> None:
    path = tmp_path / "retune.sqlite"
    old = sqlite3.connect(path)
    old.execute(
        "CREATE TABLE retune_requests (action TEXT NOT NULL, model TEXT NOT NULL, dedup_key "
        "TEXT NOT NULL, incident_start TEXT NOT NULL, at TEXT NOT NULL)"
    )
    old.execute(
        "INSERT INTO retune_requests VALUES (?,?,?,?,?)",
        ("retrain", "m", KEY, T0.isoformat(), T0.isoformat()),
    )
    old.commit()
    old.close()
    # `lookout retune list` reads such a log as it is (read-only): made, nothing more known
    [entry] = read_history(path)
    assert (entry.model, entry.outcome, entry.result, entry.request) == ("m", "sent", None, None)
    upgraded = RetuneLog(path)
    try:
        decided = upgraded.decide(
            alerting().retune.actions[0], model="m", detector="safety", dedup_key=KEY,
            incident_start=T0, alert_windows=5, at=T0 + timedelta(minutes=30),
        )  # fmt: skip
        assert decided == "already_requested"
    finally:
        upgraded.close()


# -- a dry run tests everything but the call (found in review) ----------------------------------

PIPELINE = """\
pipelineInfo: {name: tune}
root:
  inputDefinitions:
    parameters:
      dataset_uri: {parameterType: STRING}
      steps: {parameterType: NUMBER_INTEGER, isOptional: true, defaultValue: 300}
"""


def dry_alerting(tmp_path: Path, **action: Any) -> AlertingConfig:
    samples = tmp_path / "samples.ndjson"
    samples.write_text(
        "".join(f'{{"model": "m", "prompt": "q{i}", "response": "a{i}"}}\n' for i in range(10))
    )
    package = tmp_path / "tune.yaml"
    package.write_text(PIPELINE)
    settings: dict[str, Any] = {
        "name": "retrain",
        "kind": "kfp",
        "host": "http://kfp.example:8888",
        "package_path": str(package),
        "existing_token": {"env": "KFP_TOKEN"},
        "parameters": {"dataset_uri": "{dataset_uri}", "steps": 3},
        "consecutive_windows": 2,
        "dry_run": True,
    }
    return AlertingConfig.model_validate(
        {
            "routes": [{"receivers": ["log"], "retune": "retrain"}],
            "retune": {
                "actions": [settings | action],
                "export": {
                    "query": f"SELECT prompt, response FROM read_ndjson_auto('{samples}') "
                    "WHERE model = $model",
                    "uri": str(tmp_path / "datasets" / "{model}"),
                    "eval_fraction": 0.2,
                },
            },
        }
    )


def never(action: RetuneAction, request: RetuneRequest) -> str:
    raise AssertionError("a dry run called the action")


def dry_run(config: AlertingConfig, tmp_path: Path) -> RetuneTrigger:
    retune = trigger(config, RetuneLog(tmp_path / "retune.sqlite"), never)
    try:
        retune.consider(*window(2))
        assert retune.wait_idle(timeout=30)
    finally:
        retune.close()
    return retune


def test_a_dry_run_exports_renders_and_says_what_it_would_send(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """It returned before the export and the rendering: a broken query or template passed."""
    monkeypatch.setenv("KFP_TOKEN", "s3cret-token")
    retune = dry_run(dry_alerting(tmp_path), tmp_path)
    train = tmp_path / "datasets" / "m" / "train.jsonl"
    assert len(train.read_text().splitlines()) == 8
    [line] = [r.getMessage() for r in caplog.records if r.name == "lookout.retune"]
    assert line == (
        "retune retrain for m (dry run): would create Kubeflow run 'lookout-retune-m' on "
        f"http://kfp.example:8888, token from env KFP_TOKEN from {tmp_path / 'tune.yaml'} "
        f"(dataset_uri='{train}', steps=3); exported 8 train, 2 eval lines"
    )
    assert "s3cret" not in caplog.text
    assert retune.total.labels("retrain", "m", "dry_run")._value.get() == 1


@pytest.mark.parametrize(
    ("change", "said"),
    [
        ({"parameters": {"dataset_uri": "{dataset_uri}", "stepz": 3}}, "takes no stepz"),
        ({"parameters": {"steps": 3}}, "needs dataset_uri, which the action does not give"),
        ({"package_path": "/nowhere/tune.yaml"}, "/nowhere/tune.yaml: No such file"),
        ({"query": "SELECT nope FROM nowhere"}, "the export query failed"),
    ],
)
def test_a_dry_run_fails_as_the_real_request_would(
    tmp_path: Path, change: dict[str, Any], said: str, caplog: pytest.LogCaptureFixture
) -> None:
    config = dry_alerting(tmp_path, **{k: v for k, v in change.items() if k != "query"})
    if "query" in change:
        export = config.retune.export
        assert export is not None
        retune_config = config.retune.model_copy(
            update={"export": export.model_copy(update={"query": change["query"]})}
        )
        config = config.model_copy(update={"retune": retune_config})
    retune = dry_run(config, tmp_path)
    [line] = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert line.startswith("retune retrain for m failed (dry run): ") and said in line, line
    assert retune.total.labels("retrain", "m", "failed")._value.get() == 1
    assert retune.total.labels("retrain", "m", "dry_run")._value.get() == 0


def test_config_check_warns_and_run_refuses_a_pipeline_or_token_it_cannot_use(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A missing local package and an unreadable token passed `config check` and failed at
    the first sustained incident."""
    from worker.cli.app import start_problems

    monkeypatch.delenv("KFP_TOKEN", raising=False)
    alerting_config = dry_alerting(tmp_path, package_path=str(tmp_path / "gone.yaml"))
    action = alerting_config.retune.actions[0].model_copy(update={"dry_run": False})
    config = LookoutConfig.model_validate(
        {
            "sink": {"path": str(tmp_path / "x.duckdb")},
            "alerting": alerting_config.model_copy(
                update={"retune": alerting_config.retune.model_copy(update={"actions": (action,)})}
            ).model_dump(),
        }
    )
    assert start_problems(config) == [
        f"retune action 'retrain': package_path {tmp_path / 'gone.yaml'}: No such file or "
        "directory",
        "retune action 'retrain': existing_token (env KFP_TOKEN): the variable is not set or empty",
    ]


def test_the_retune_counter_s_model_label_is_bounded_like_every_per_model_series(
    tmp_path: Path,
) -> None:
    """Found in review: the counter's `model` label took every alerting model's raw name, so a
    stream of many models made four series each; the worker's bounded label set folds the
    ones beyond `metrics.models` into `other`, as on every other per-model series."""
    from worker.metrics import ModelLabels

    runner = FlakyRunner(failures=0)
    registry = CollectorRegistry()
    retune = RetuneTrigger(
        alerting(),
        RetuneLog(tmp_path / "retune.sqlite"),
        registry=registry,
        runner=runner,
        model_label=ModelLabels(("a",)),
    )
    retune.start()
    try:
        assert len(retune.consider(*window(2))) == 1  # model "m", not among metrics.models
        retune.wait_idle()
    finally:
        retune.close()
    sent = {"action": "retrain", "outcome": "sent"}
    assert (
        registry.get_sample_value("lookout_retune_requests_total", {**sent, "model": "other"}) == 1
    )
    assert (
        registry.get_sample_value("lookout_retune_requests_total", {**sent, "model": "m"}) is None
    )


def iso(moment: datetime) -> str:
    """As the payloads write a time."""
    return moment.isoformat().replace("+00:00", "Z")


def test_a_request_carries_the_page_s_evidence_when_it_was_decided_over_several_windows(
    tmp_path: Path,
) -> None:
    """A review found the page saying 3.4% over 2,000 calls while the retune request built for
    the same window said the window's own 2.6% over 500, under the threshold beside it."""
    retune = trigger(alerting(), RetuneLog(tmp_path / "retune.sqlite"), FlakyRunner(failures=0))
    try:
        requests = []
        for k in (1, 2):
            judged, incident = window(k)
            pooled = judged.model_copy(
                update={
                    "value": 0.026,
                    "threshold": 0.03,
                    "sample_size": 500,
                    "details": {"span_windows": 4, "span_value": 0.034, "span_calls": 2000},
                }
            )
            requests += retune.consider(pooled, incident)
            retune.wait_idle()
        (request,) = requests
        assert request.evidence["value"] == 0.034 and request.evidence["sample_size"] == 2000
        # the window those figures were measured over: the 4 pooled windows, not the incident
        # from its start (that is the request's time_range)
        judged, _ = window(2)
        length = judged.window_end - judged.window_start
        assert request.evidence["window_start"] == iso(judged.window_end - 4 * length)
        assert request.evidence["window_end"] == iso(judged.window_end)
        assert request.time_range.start == T0
    finally:
        retune.close()


def test_a_request_s_evidence_is_the_deciding_window_s_when_it_was_not_pooled(
    tmp_path: Path,
) -> None:
    """The trial's request said window 07:00-07:05 beside "37 of 717 calls blocked in this
    window": the evidence's window is now the one its value and sample size are of."""
    retune = trigger(alerting(), RetuneLog(tmp_path / "retune.sqlite"), FlakyRunner(failures=0))
    try:
        requests = []
        for k in (1, 2):
            requests += retune.consider(*window(k))
            retune.wait_idle()
        (request,) = requests
        judged, _ = window(2)
        assert request.evidence["window_start"] == iso(judged.window_start)
        assert request.evidence["sample_size"] == judged.sample_size
    finally:
        retune.close()


def test_a_blip_held_open_for_many_windows_starts_no_tuning_job(tmp_path: Path) -> None:
    """A one-window spike at low traffic can keep its incident open for many windows while the
    return is unproven (`details["cleared"]` False): an ML engineer's trial saw 18 such windows
    and a Kubeflow run started on a blip, since every held window counted towards
    `consecutive_windows`. Only windows that alert on their own count now; a sustained incident
    still asks once it has that many."""
    from alerts.tracking import EvidenceTracker

    config = alerting()
    tracker = EvidenceTracker(config)
    runner = FlakyRunner(failures=0)
    retune = trigger(config, RetuneLog(tmp_path / "retune.sqlite"), runner)
    tracker.on_alerting = retune.consider

    def judged(k: int, *, held: bool) -> Detection:
        start = int((T0 + timedelta(minutes=k)).timestamp())
        if not held:
            return detection(model="m", start=start)  # 0.5 against a threshold of 0.25
        held_open = detection(model="m", start=start, cleared=False, clear_evidence=2.8)
        # back at the baseline's rate, under the threshold, on most windows; over it on some
        value = 0.3 if k % 4 == 0 else 0.15
        return held_open.model_copy(update={"value": value})

    try:
        tracker.observe(judged(0, held=False))  # the spike
        for k in range(1, 19):
            tracker.observe(judged(k, held=True))  # held open, not yet back
            retune.wait_idle()
        assert runner.started == [], "a blip held open started a tuning job"
        # it rises again for real: windows at the incident's level, held open or alerting
        tracker.observe(judged(19, held=True).model_copy(update={"value": 0.4}))
        retune.wait_idle()
        assert runner.started == []
        tracker.observe(judged(20, held=False))
        retune.wait_idle()
        (request,) = runner.started
        assert request.consecutive_windows == 2
    finally:
        retune.close()
