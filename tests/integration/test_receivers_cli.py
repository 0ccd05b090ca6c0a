"""Receivers as a user meets them: `lookout config check` and `lookout run` with receivers in
the config file (secrets from env and mounted files), and the README's examples."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import yaml

from schemas.alert_config import AlertingConfig
from schemas.config import LookoutConfig
from tests.e2e.conftest import assert_no_traceback, lookout
from tests.integration.receiver_stand_ins import StandIn
from tests.integration.test_receivers import (
    HOOK_PATH,
    ROUTING_KEY,
    SECRETS,
    SLACK_PATH,
    servers,
)

__all__ = ["servers"]  # the loopback receivers fixture, shared with test_receivers


CONTRACT_CONFIG = """\
source: {kind: file, path: logs.ndjson}
sink: {kind: duckdb, path: ./lookout.duckdb}
alerting:
  receivers:
    - name: oncall-pagerduty
      kind: pagerduty
      routing_key: {env: LOOKOUT_PAGERDUTY_ROUTING_KEY}
    - name: team-slack
      kind: slack
      webhook_url: {env: LOOKOUT_SLACK_WEBHOOK_URL}
    - name: platform-alertmanager
      kind: alertmanager
      url: http://alertmanager.monitoring:9093
    - name: audit-hook
      kind: webhook
      url: {env: LOOKOUT_WEBHOOK_URL}
      hmac_secret: {file: /var/run/secrets/lookout/hmac}
  routes:
    - {receivers: [oncall-pagerduty], severity: critical}
"""
SECRET_ENV = {
    "LOOKOUT_PAGERDUTY_ROUTING_KEY": ROUTING_KEY,
    "LOOKOUT_SLACK_WEBHOOK_URL": "https://hooks.slack.com" + SLACK_PATH,
    "LOOKOUT_WEBHOOK_URL": "https://audit.example" + HOOK_PATH,
}


def test_config_check_shows_where_secrets_live_never_their_values(tmp_path: Path) -> None:
    (tmp_path / "lookout.yaml").write_text(CONTRACT_CONFIG)
    result = lookout("config", "check", "lookout.yaml", cwd=tmp_path, env=SECRET_ENV)
    assert result.returncode == 0, result.describe()
    assert "env: LOOKOUT_PAGERDUTY_ROUTING_KEY" in result.stdout
    assert "file: /var/run/secrets/lookout/hmac" in result.stdout
    for secret in SECRETS:
        assert secret not in result.stdout + result.stderr

    literal = CONTRACT_CONFIG.replace("{env: LOOKOUT_PAGERDUTY_ROUTING_KEY}", ROUTING_KEY)
    (tmp_path / "literal.yaml").write_text(literal)
    result = lookout("config", "check", "literal.yaml", cwd=tmp_path, env=SECRET_ENV)
    assert result.returncode == 2, result.describe()
    assert "secrets come from env or a mounted file" in result.stderr
    assert ROUTING_KEY not in result.stdout + result.stderr
    assert_no_traceback(result)


def test_run_with_a_missing_secret_says_which_in_one_line(tmp_path: Path) -> None:
    (tmp_path / "lookout.yaml").write_text(CONTRACT_CONFIG)
    (tmp_path / "logs.ndjson").write_text("")
    env = {k: v for k, v in SECRET_ENV.items() if k != "LOOKOUT_SLACK_WEBHOOK_URL"}
    result = lookout("run", "--config", "lookout.yaml", cwd=tmp_path, env=env)
    assert result.returncode == 2, result.describe()
    assert "team-slack" in result.stderr and "env LOOKOUT_SLACK_WEBHOOK_URL" in result.stderr
    # every secret it cannot read, not the first, and not in the words of a crash
    assert "'audit-hook' hmac_secret (file /var/run/secrets/lookout/hmac)" in result.stderr
    assert "SecretError" not in result.stderr and "LOOKOUT_DEBUG" not in result.stderr
    for secret in SECRETS:
        assert secret not in result.stdout + result.stderr
    assert_no_traceback(result)


def test_the_readme_receivers_example_is_a_valid_config() -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme.split("## Alert receivers", 1)[1].split("\n## ", 1)[0]
    examples = [part.split("```", 1)[0] for part in section.split("```text\n")[1:]]
    assert len(examples) == 2
    config = LookoutConfig.model_validate(yaml.safe_load(examples[0]))
    # the retune example continues the first one (its route names a receiver declared there)
    retune = AlertingConfig.model_validate(yaml.safe_load(examples[1])["alerting"]).retune
    assert [a.kind for a in retune.actions] == ["pubsub", "vertex_pipeline", "kfp"]
    assert retune.export is not None and "$model" in retune.export.query
    names = {r.name for r in config.alerting.receivers}
    assert {r for route in config.alerting.routes for r in route.receivers} <= names
    assert {r.kind for r in config.alerting.receivers} == {
        "pagerduty",
        "slack",
        "alertmanager",
        "webhook",
    }


def test_lookout_run_pages_pagerduty_and_slack_once_per_incident(
    servers: dict[str, StandIn], tmp_path: Path
) -> None:
    """As a user runs it: simulated logs with a safety spike, `lookout run --config`, receivers
    from the config file; a second run over the same database pages nobody again."""
    simulated = lookout(
        "simulate",
        "--out",
        "logs.ndjson",
        "--hours",
        "0.6",
        "--rate",
        "300",
        "--incident",
        "safety_spike@15m:10m",
        "--format",
        "native",
        cwd=tmp_path,
    )
    assert simulated.returncode == 0, simulated.describe()
    config = {
        "source": {"kind": "file", "path": "logs.ndjson"},
        "sink": {"kind": "duckdb", "path": "lookout.duckdb"},
        "detectors": {"enabled": ["safety"]},
        "metrics": {"enabled": False},
        "alerting": {
            "receivers": [
                {
                    "name": "oncall-pagerduty",
                    "kind": "pagerduty",
                    "routing_key": {"env": "LOOKOUT_PAGERDUTY_ROUTING_KEY"},
                    "url": servers["pd"].url + "/v2/enqueue",
                },
                {
                    "name": "team-slack",
                    "kind": "slack",
                    "webhook_url": {"file": str(tmp_path / "slack-url")},
                },
            ],
            "routes": [{"receivers": ["oncall-pagerduty", "team-slack"], "detector": "safety"}],
        },
    }
    (tmp_path / "lookout.yaml").write_text(yaml.safe_dump(config))
    (tmp_path / "slack-url").write_text(servers["slack"].url + SLACK_PATH + "\n")
    env = {"LOOKOUT_PAGERDUTY_ROUTING_KEY": ROUTING_KEY, "LOOKOUT_LOG_LEVEL": "DEBUG"}
    run = lookout("run", "--config", "lookout.yaml", cwd=tmp_path, env=env, timeout=300)
    assert run.returncode == 0, run.describe()
    pd, slack = servers["pd"], servers["slack"]
    triggers = [r.body for r in pd.accepted() if r.body["event_action"] == "trigger"]
    resolves = [r.body for r in pd.accepted() if r.body["event_action"] == "resolve"]
    keys = sorted(e["dedup_key"] for e in triggers)
    assert keys and len(keys) == len(set(keys)), run.describe()  # one trigger per incident
    assert all(":safety:" in k for k in keys)
    assert sorted(e["dedup_key"] for e in resolves) == keys  # each resolved once, same key
    assert len(slack.accepted()) == 2 * len(keys)
    assert pd.problems == slack.problems == []
    assert not [s for s in SECRETS if s in run.stdout + run.stderr]  # even at DEBUG

    again = lookout("run", "--config", "lookout.yaml", cwd=tmp_path, env=env, timeout=300)
    assert again.returncode == 0, again.describe()
    assert len(pd.accepted()) == len(triggers) + len(resolves)  # a restart re-pages nobody


def _safety_spike_to_slack(
    tmp_path: Path, route: dict[str, Any], **receiver: Any
) -> dict[str, Any]:
    """logs.ndjson with a safety spike, and lookout.yaml routing it to Slack at $SLACK
    (`receiver`: more keys of the Slack receiver); returns the configuration written."""
    simulated = lookout(
        "simulate",
        *("--out", "logs.ndjson", "--hours", "0.6", "--rate", "300"),
        *("--incident", "safety_spike@15m:10m", "--format", "native"),
        cwd=tmp_path,
    )
    assert simulated.returncode == 0, simulated.describe()
    config = {
        "detectors": {"enabled": ["safety"]},
        "metrics": {"enabled": False},
        "alerting": {
            "receivers": [
                {"name": "team-slack", "kind": "slack", "webhook_url": {"env": "SLACK"}, **receiver}
            ],
            "routes": [route],
        },
    }
    (tmp_path / "lookout.yaml").write_text(yaml.safe_dump(config))
    return config


def test_a_replay_sends_grouped_notifications_before_it_exits(
    servers: dict[str, StandIn], tmp_path: Path
) -> None:
    """A route that groups by model and waits 30 s before a group's first message: a replay
    of past logs ends long before that, and nothing more will join the group. Its page and
    resolve must reach Slack before `lookout replay` returns, not wait for a next start."""
    _safety_spike_to_slack(
        tmp_path,
        {
            "receivers": ["team-slack"],
            "group_by": ["model"],
            "group_wait": "30s",
            "group_interval": "5m",
        },
    )
    env = {"SLACK": servers["slack"].url + SLACK_PATH}
    started = time.monotonic()
    replay = lookout(
        "replay", "logs.ndjson", "--config", "lookout.yaml", "--db", "r.duckdb",
        cwd=tmp_path, env=env, timeout=300,
    )  # fmt: skip
    assert replay.returncode == 0, replay.describe()
    assert time.monotonic() - started < 30  # sent at the end of the input, not after group_wait
    texts = [r.body["text"] for r in servers["slack"].accepted()]
    assert any(t.startswith("[FIRING") for t in texts), replay.describe()
    assert any(t.startswith("[RESOLVED") for t in texts), replay.describe()
    assert servers["slack"].problems == []
    assert "not sent yet" not in replay.stderr
    # routed only to Slack: nothing printed, and the summary says so rather than "2 info, not
    # printed" as if the other changes had been printed above
    assert "FIRING" not in replay.stdout, replay.describe()
    summary = next(line for line in replay.stderr.splitlines() if "replayed logs.ndjson" in line)
    counts = re.search(
        r"(\d+) alert changes \(not printed: (\d+) routed to receivers(?:, (\d+) info)?; all",
        summary,
    )
    assert counts, summary
    changes, routed, info = (int(n or 0) for n in counts.groups())
    assert routed >= len(texts) and routed + info == changes, summary


def test_config_check_warns_about_secrets_it_cannot_read_here(tmp_path: Path) -> None:
    """Not an error (this may not be the machine it runs on), but said before a deploy rather
    than by a worker that will not start; a route's `continue` is printed as it is written."""
    text = CONTRACT_CONFIG.replace("severity: critical}", "severity: critical, continue: true}")
    (tmp_path / "lookout.yaml").write_text(text)
    (tmp_path / "logs.ndjson").write_text("")  # the input is there: no warning for it
    env = {k: v for k, v in SECRET_ENV.items() if k != "LOOKOUT_SLACK_WEBHOOK_URL"}
    result = lookout("config", "check", "lookout.yaml", cwd=tmp_path, env=env)
    assert result.returncode == 0, result.describe()
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning: ")]
    assert len(warnings) == 2, result.describe()  # the unset variable, the unmounted file
    assert "'team-slack' webhook_url (env LOOKOUT_SLACK_WEBHOOK_URL)" in warnings[0]
    assert "'audit-hook' hmac_secret (file /var/run/secrets/lookout/hmac)" in warnings[1]
    assert "continue: true" in result.stdout and "continue_" not in result.stdout
    assert not [s for s in SECRETS if s in result.stdout + result.stderr]
    assert_no_traceback(result)


def test_a_replay_whose_pages_were_refused_says_so_and_fails(tmp_path: Path) -> None:
    """Found in review: every page refused, `giving up` logged among other lines, and the
    replay exited 0 with a summary that said nothing of it."""
    refusing = StandIn(validate=lambda _: [], ok_status=404, ok_body=b"no_service").start()
    try:
        _safety_spike_to_slack(tmp_path, {"receivers": ["team-slack"]})
        replay = lookout(
            "replay", "logs.ndjson", "--config", "lookout.yaml", "--db", "r.duckdb",
            cwd=tmp_path, env={"SLACK": refusing.url + SLACK_PATH}, timeout=300,
        )  # fmt: skip
    finally:
        refusing.stop()
    assert refusing.requests, replay.describe()  # the pages were tried
    assert replay.returncode == 1, replay.describe()
    refused = len(refusing.requests)
    assert f"notifications did not reach team-slack ({refused} given up)" in replay.stderr
    assert_no_traceback(replay)


def test_a_replay_waits_for_a_rate_limited_receiver_that_takes_every_notification(
    servers: dict[str, StandIn], tmp_path: Path
) -> None:
    """Found in review: a replay gave deliveries a third of the grace period, and
    notifications waiting for the receiver's rate limit were 'still queued': a healthy run
    exited 1. Now it waits while the receiver keeps taking them."""
    config = _safety_spike_to_slack(
        tmp_path, {"receivers": ["team-slack"]}, rate_limit_per_minute=240, rate_limit_burst=1
    )
    config["engine"] = {"grace_period_seconds": 3}  # one second for in-flight pages
    (tmp_path / "lookout.yaml").write_text(yaml.safe_dump(config))
    replay = lookout(
        "replay", "logs.ndjson", "--config", "lookout.yaml", "--db", "r.duckdb",
        cwd=tmp_path, env={"SLACK": servers["slack"].url + SLACK_PATH}, timeout=300,
    )  # fmt: skip
    assert replay.returncode == 0, replay.describe()
    sent = servers["slack"].accepted()
    assert len(sent) >= 6, replay.describe()  # at 4 a second, well over the second's drain
    assert "did not reach" not in replay.stderr
