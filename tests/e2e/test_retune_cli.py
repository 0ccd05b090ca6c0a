"""The retune loop through the CLI, as an ML engineer meets it: the README's example passes
`config check`, a misspelt detector does not, `lookout replay` exits 1 naming the retune
action whose requests failed, and a `lookout run` stopped while an endpoint hangs exits within
its grace period, gives the request up (saying so), and the next run asks again."""

from __future__ import annotations

import json
import re
import signal
import time
from pathlib import Path

import yaml

from tests.e2e.conftest import REPLAY_TIMEOUT, RunningLookout, assert_no_traceback, lookout
from tests.integration.retune_stand_in import Blackhole, RestStandIn
from tests.integration.tune_template import tune_large_model

MODEL = "gemini-1.5-flash"
README = Path(__file__).resolve().parents[2] / "README.md"


def readme_retune_example() -> str:
    """The first code block of the README's `### Retuning` section."""
    section = README.read_text().split("\n### Retuning\n", 1)[1].split("\n## ", 1)[0]
    found = re.search(r"^```[a-z]*\n(.*?)^```", section, re.MULTILINE | re.DOTALL)
    assert found is not None, "the Retuning section has no example"
    return found.group(1)


def test_the_readme_retuning_example_passes_config_check(tmp_path: Path) -> None:
    """It routed to an undeclared receiver, and passed Vertex AI the pod's own path."""
    example = readme_retune_example()
    (tmp_path / "retune.yaml").write_text(example)
    checked = lookout("config", "check", "retune.yaml", cwd=tmp_path)
    assert checked.returncode == 0, checked.describe()
    assert_no_traceback(checked)
    actions = yaml.safe_load(example)["alerting"]["retune"]["actions"]
    for action in actions:  # a pipeline reads Cloud Storage, not the pod's disk
        values = action.get("parameter_values") or action.get("parameters") or {}
        for name in ("dataset_uri", "evaluation_data_uri"):
            assert values.get(name, "gs://").startswith("gs://"), (action["name"], values)


def test_config_check_refuses_a_misspelt_retune_detector(tmp_path: Path) -> None:
    (tmp_path / "typo.yaml").write_text(
        "alerting:\n"
        "  routes: [{receivers: [log], retune: safety-retune}]\n"
        "  retune:\n"
        "    actions:\n"
        "      - {name: safety-retune, kind: pubsub, project: p, topic: t, detectors: [saftey]}\n"
    )
    checked = lookout("config", "check", "typo.yaml", cwd=tmp_path)
    assert checked.returncode == 2, checked.describe()
    assert checked.stderr.strip().splitlines() == [
        "typo.yaml: alerting.retune.actions[0].detectors: 'saftey' names no detector Lookout "
        "has (did you mean 'safety'?); known: safety, latency, tokens, embedding_drift, "
        "descriptor_drift"
    ]


def retune_config(tmp_path: Path, action: str, *, db: str, extra: str = "") -> Path:
    path = tmp_path / f"{db}.yaml"
    path.write_text(
        f"sink: {{kind: duckdb, path: {tmp_path / db}.duckdb}}\n"
        f"metrics: {{enabled: false}}\n{extra}"
        "alerting:\n"
        f"  outbox_path: {tmp_path / 'outbox.sqlite'}\n"
        "  routes: [{receivers: [log], detector: safety, retune: tune}]\n"
        "  retune:\n"
        f"    actions: [{{name: tune, consecutive_windows: 2, {action}}}]\n"
    )
    return path


def test_replay_exits_1_naming_the_retune_action_whose_requests_failed(
    small_incident_stream: Path, tmp_path: Path
) -> None:
    """Every retune failed and the replay exited 0, its summary silent; a receiver failing
    the same way made it exit 1, named."""
    config = retune_config(tmp_path, "kind: pubsub, project: p, topic: lookout-retune", db="r")
    # no credentials here, deterministically (and never a real project's)
    env = {
        "GOOGLE_APPLICATION_CREDENTIALS": str(tmp_path / "none.json"),
        "PUBSUB_EMULATOR_HOST": "",
    }
    replayed = lookout(
        "replay", small_incident_stream, "--config", config, cwd=tmp_path, env=env,
        timeout=REPLAY_TIMEOUT,
    )  # fmt: skip
    assert replayed.returncode == 1, replayed.describe()
    assert_no_traceback(replayed)
    failed = [line for line in replayed.stderr.splitlines() if " failed: " in line]
    assert failed and all(
        re.search(r"retune tune for \S+ failed: publishing to lookout-retune: no Google", line)
        for line in failed
    ), replayed.describe()
    named = [line for line in replayed.stderr.splitlines() if line.startswith("retune tune:")]
    assert len(named) == 1, replayed.describe()
    assert named[0].startswith("retune tune: no tuning run started for ") and MODEL in named[0]
    # and afterwards the ML engineer can see which, and why, without the replay's log
    listed = lookout("retune", "list", "--config", config, cwd=tmp_path)
    assert listed.returncode == 0, listed.describe()
    header, *rows = listed.stdout.splitlines()
    assert header.split()[:3] == ["ASKED", "ACTION", "MODEL"] and header.endswith("RESULT")
    # one row per incident, its last attempt: failed, with the reason
    models = {re.findall(r"retune tune for (\S+) failed", line)[0] for line in failed}
    assert sorted(row.split()[3] for row in rows) == sorted(models), listed.describe()
    for row in rows:
        assert re.search(
            r"  tune  +\S+  +safety  .*  failed  +failed: publishing to lookout-retune: no Google",
            row,
        ), listed.describe()
    # `lookout run` on the same finite file owes them too (it exited 0)
    source = f"source: {{kind: file, path: {small_incident_stream}}}\n"
    run_config = retune_config(
        tmp_path, "kind: pubsub, project: p, topic: lookout-retune", db="run", extra=source
    )
    ran = lookout("run", "--config", run_config, cwd=tmp_path, env=env, timeout=REPLAY_TIMEOUT)
    assert ran.returncode == 1, ran.describe()
    assert_no_traceback(ran)
    assert any(
        line.startswith("lookout run: retune tune: no tuning run started for ")
        for line in ran.stderr.splitlines()
    ), ran.describe()


#: the `parameters` of a kfp action running `tune_large_model`
KFP_PARAMETERS = (
    "parameters: {project: p, location: l, large_model_reference: m, "
    "model_display_name: '{model}-retuned', dataset_uri: '{window_start}'}"
)


def kfp_package(tmp_path: Path) -> Path:
    """`tune_large_model` compiled, as a kfp action's `package_path`."""
    from kfp import compiler

    package = tmp_path / "tune.yaml"
    compiler.Compiler().compile(tune_large_model, str(package))
    return package


def test_a_run_stopped_while_the_endpoint_hangs_gives_the_request_up_and_the_next_asks_again(
    small_incident_stream: Path, tmp_path: Path
) -> None:
    """SIGTERM took 122 s (the grace period is 25) with the request recorded as made, so the
    next run, with the endpoint working again, sent nothing ("already requested")."""
    package = kfp_package(tmp_path)
    parameters = KFP_PARAMETERS
    hole = Blackhole()
    grace = 9
    hung = retune_config(
        tmp_path,
        f"kind: kfp, host: 'http://{hole.address}', package_path: {package}, {parameters}",
        db="hung",
        extra=f"source: {{kind: file, path: '-'}}\nengine: {{grace_period_seconds: {grace}}}\n",
    )
    run = RunningLookout("run", "--config", hung, cwd=tmp_path, stdin=True)
    try:
        run.write(small_incident_stream.read_bytes())  # stdin left open: the run goes on
        assert hole.accepted.wait(REPLAY_TIMEOUT), run.stderr
        run.proc.send_signal(signal.SIGTERM)
        began = time.monotonic()
        stopped = run.wait(timeout=3 * grace)
        took = time.monotonic() - began
    finally:
        run.kill()
        hole.close()
    assert stopped.returncode == 0, stopped.describe()
    assert took < grace, f"exited {took:.1f} s after SIGTERM (grace {grace} s)"
    # one line per request given up: the one in flight and those queued behind it
    given_up = re.findall(
        r"WARNING lookout\.retune: retune tune for (\S+) given up at shutdown", stopped.stderr
    )
    assert MODEL in given_up and len(given_up) == len(set(given_up)), stopped.describe()

    rest = RestStandIn()
    try:
        working = retune_config(
            tmp_path,
            f"kind: kfp, host: '{rest.url}', package_path: {package}, {parameters}",
            db="working",
        )
        replayed = lookout(
            "replay", small_incident_stream, "--config", working, cwd=tmp_path,
            timeout=REPLAY_TIMEOUT,
        )  # fmt: skip
    finally:
        rest.stop()
    assert replayed.returncode == 0, replayed.describe()
    started = re.findall(r"retune tune for (\S+) started: run-\d+", replayed.stderr)
    # every request given up is asked again, once; a model whose incident the stopped run had
    # not judged yet (SIGTERM lands as the first request reaches the endpoint) starts its
    # first request here
    assert set(given_up) <= set(started), replayed.describe()
    assert len(started) == len(set(started)), replayed.describe()
    assert len(rest.created()) == len(started)
    # the log shows each request once, as what became of it last: the run it started
    listed = lookout("retune", "list", "--config", working, "--json", cwd=tmp_path)
    assert listed.returncode == 0, listed.describe()
    entries = [json.loads(line) for line in listed.stdout.splitlines()]
    assert sorted(e["model"] for e in entries) == sorted(started), listed.describe()
    for entry in entries:
        assert (entry["action"], entry["outcome"], entry["detector"]) == ("tune", "sent", "safety")
        assert re.fullmatch(r"started: run-\d+", entry["result"]), entry
        assert entry["request"]["dedup_key"].startswith(f"lookout:{entry['model']}:safety:")
    only = lookout("retune", "list", "--config", working, "--model", MODEL, cwd=tmp_path)
    assert [line.split()[3] for line in only.stdout.splitlines()[1:]] == [MODEL], only.describe()


def test_alerts_out_on_stdout_holds_only_the_alerts_while_kfp_retunes_start(
    small_incident_stream: Path, tmp_path: Path
) -> None:
    """The Kubeflow client printed `Experiment details: <url>` and `Run details: <url>` on
    stdout for every run it made: `--alerts-out /dev/stdout` then carried lines that are not
    alerts, or (stdout a file) alert lines overwritten by them."""
    rest = RestStandIn()
    try:
        config = retune_config(
            tmp_path,
            f"kind: kfp, host: '{rest.url}', package_path: {kfp_package(tmp_path)}, "
            f"{KFP_PARAMETERS}",
            db="stdout",
        )
        replayed = lookout(
            "replay", small_incident_stream, "--config", config, "--alerts-out", "/dev/stdout",
            cwd=tmp_path, timeout=REPLAY_TIMEOUT,
        )  # fmt: skip
    finally:
        rest.stop()
    assert replayed.returncode == 0, replayed.describe()
    assert_no_traceback(replayed)
    started = re.findall(r"retune tune for \S+ started: (run-\d+)", replayed.stderr)
    assert started and len(started) == len(rest.runs), replayed.describe()
    changes = re.search(r"(\d+) alert changes", replayed.stderr)
    assert changes is not None, replayed.describe()
    lines = replayed.stdout.splitlines()
    assert len(lines) == int(changes.group(1)) > 0, replayed.describe()
    for line in lines:
        assert line.startswith("{"), replayed.describe()
        assert json.loads(line)["dedup_key"].startswith("lookout:"), line


def test_retune_list_without_a_retune_log_says_where_it_looked(tmp_path: Path) -> None:
    config = retune_config(tmp_path, "kind: pubsub, project: p, topic: t", db="none")
    listed = lookout("retune", "list", "--config", config, cwd=tmp_path)
    assert listed.returncode == 1, listed.describe()
    assert listed.stderr.strip().splitlines() == [
        f"lookout: no retune log at {tmp_path / 'outbox.sqlite'}: no worker has run with this "
        "configuration's outbox (alerting.outbox_path, else beside sink.path) here"
    ]


def test_retune_list_without_retune_actions_is_an_empty_list_that_says_why(
    tmp_path: Path,
) -> None:
    """A newcomer's config has no retune actions: `retune list` said "no worker has run with
    this configuration's outbox" and exited 1 right after a worker had run with it."""
    config = tmp_path / "lookout.yaml"
    config.write_text(f"sink:\n  kind: duckdb\n  path: {tmp_path / 'l.duckdb'}\n")
    listed = lookout("retune", "list", "--config", config, cwd=tmp_path)
    assert listed.returncode == 0, listed.describe()
    assert listed.stdout == ""
    assert listed.stderr.strip().splitlines() == [
        "no retune requests: this configuration has no retune actions "
        f"(alerting.retune.actions), so it keeps no retune log ({tmp_path / 'l.duckdb'}"
        ".outbox.sqlite)"
    ]


def test_retune_list_keeps_a_row_per_request_when_the_reason_spans_lines(tmp_path: Path) -> None:
    """Found in review: a failed export's DuckDB error (`Binder Error ...\\n\\nLINE 1: ...`) broke
    the table over several unaligned lines."""
    from datetime import UTC, datetime

    from alerts.retune.guard import RetuneLog

    config = retune_config(tmp_path, "kind: pubsub, project: p, topic: t", db="multi")
    at = datetime(2026, 1, 5, 7, 0, tzinfo=UTC)
    log = RetuneLog(tmp_path / "outbox.sqlite")
    log.record("tune", model="m", dedup_key="lookout:m:safety:c", incident_start=at, at=at)
    reason = 'failed: exporting: Binder Error: no column "prompt"\n\nLINE 1: SELECT prompt\n   ^'
    log.settle(
        "tune", dedup_key="lookout:m:safety:c", incident_start=at, outcome="failed", result=reason
    )
    log.close()
    listed = lookout("retune", "list", "--config", config, cwd=tmp_path)
    assert listed.returncode == 0, listed.describe()
    header, row = listed.stdout.splitlines()
    assert header.endswith("OUTCOME  RESULT")
    assert row.endswith('failed   failed: exporting: Binder Error: no column "prompt"'), row
    whole = lookout("retune", "list", "--config", config, "--json", cwd=tmp_path)
    assert json.loads(whole.stdout)["result"] == reason
