"""`lookout config check`: ok for a good file, exit 2 naming the key's path for a bad one,
`LOOKOUT_…` overrides in the effective configuration, and no secret value in any output."""

from __future__ import annotations

import gzip
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.e2e.conftest import (
    Result,
    assert_no_traceback,
    clean_env,
    lookout,
    lookout_executable,
)

GOOD = """\
source:
  kind: file
  path: logs.ndjson
sink:
  kind: duckdb
  path: ./lookout.duckdb
engine:
  window_seconds: 60
  allowed_lateness_seconds: 30
  checkpoint_seconds: 5
  grace_period_seconds: 25
decode:
  embedding_dim: 384
detectors:
  safety: {min_calls: 100, alpha: 0.0001}
  latency: {slo: {threshold_ms: 3000, objective: 0.99}}
alerting:
  resolve_after_ok_windows: 2
  routes:
    - receivers: [log]
      detector: safety
      min_severity: critical
metrics:
  port: 9464
  models: [gemini-1.5-flash, text-bison, gpt-4o-mini]
alerts_out: alerts.jsonl
"""

#: values shaped like the secrets Lookout's receivers use; none may ever be printed
SLACK_WEBHOOK = "https://hooks.slack.com/services/T0A1B2C3D/B0E1F2G3H/Zq8s3cr3tW3bh00kT0k3n"
ROUTING_KEY = "R0UT1NGK3Ys3cr3t0123456789abcdef"


def check(tmp_path: Path, text: str | None, env: dict[str, str] | None = None) -> Result:
    path = tmp_path / "lookout.yaml"
    if text is not None:
        path.write_text(text)
    result = lookout(
        "config", "check", path if text is not None else "/dev/null", cwd=tmp_path, env=env
    )
    assert_no_traceback(result)
    return result


def effective(result: Result) -> dict[str, Any]:
    """The configuration `config check` printed after its `…: ok` line."""
    first, _, rest = result.stdout.partition("\n")
    assert first.endswith(": ok"), result.describe()
    data = yaml.safe_load(rest)
    assert isinstance(data, dict)
    return data


def test_a_good_file_is_ok_and_prints_the_effective_configuration(tmp_path: Path) -> None:
    (tmp_path / "logs.ndjson").write_text("")  # the input it reads is there: no warning
    result = check(tmp_path, GOOD)
    assert result.returncode == 0, result.describe()
    assert result.stdout.startswith(f"{tmp_path / 'lookout.yaml'}: ok\n")
    assert result.stderr == ""
    config = effective(result)
    assert config["engine"]["window_seconds"] == 60
    assert config["metrics"]["models"] == ["gemini-1.5-flash", "text-bison", "gpt-4o-mini"]
    assert config["alerting"]["routes"][0]["receivers"] == ["log"]
    assert config["detectors"]["latency"]["slo"]["threshold_ms"] == 3000


def test_an_unknown_key_exits_2_naming_its_path(tmp_path: Path) -> None:
    result = check(tmp_path, "engine:\n  windw_seconds: 30\n")
    assert result.returncode == 2, result.describe()
    assert result.stdout == ""
    (line,) = result.stderr.splitlines()
    assert "engine.windw_seconds" in line and "unknown key" in line, line


#: (YAML, the key path its error must name): one file holding all of them, so this also shows
#: that every problem is reported, not just the first
BAD_VALUES = [
    ("engine:\n  window_seconds: -5\n", "engine.window_seconds"),
    ("metrics:\n  port: abc\n", "metrics.port"),
    ("detectors:\n  safety:\n    alpha: 2\n", "detectors.safety.alpha"),
    ("alerting:\n  routes:\n    - receivers: []\n", "alerting.routes[0].receivers"),
    ("source:\n  kind: kafka\n", "source.kind"),
]


def test_bad_values_exit_2_naming_each_key_path(tmp_path: Path) -> None:
    result = check(tmp_path, "".join(text for text, _ in BAD_VALUES))
    assert result.returncode == 2, result.describe()
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    for _, key_path in BAD_VALUES:
        named = [line for line in lines if f": {key_path}:" in line]
        assert len(named) == 1, f"{key_path} not reported once:\n{result.stderr}"
    assert len(lines) == len(BAD_VALUES), "one line per problem"


def test_an_environment_override_shows_in_the_effective_configuration(tmp_path: Path) -> None:
    result = check(tmp_path, GOOD, env={"LOOKOUT_ENGINE__WINDOW_SECONDS": "30"})
    assert result.returncode == 0, result.describe()
    config = effective(result)
    assert config["engine"]["window_seconds"] == 30  # the environment beats the file
    assert config["engine"]["grace_period_seconds"] == 25  # the rest of the file still holds
    assert config["metrics"]["port"] == 9464


def test_a_bad_environment_override_exits_2_naming_the_key(tmp_path: Path) -> None:
    result = check(tmp_path, GOOD, env={"LOOKOUT_ENGINE__WINDOW_SECONDS": "half a minute"})
    assert result.returncode == 2, result.describe()
    assert "engine.window_seconds" in result.stderr


def test_an_environment_override_naming_no_section_exits_2_naming_it(tmp_path: Path) -> None:
    secret = "s3cr3t-value-never-printed"
    result = check(tmp_path, GOOD, env={"LOOKOUT_ENGIN__WINDOW_SECONDS": secret})
    assert result.returncode == 2, result.describe()
    assert "LOOKOUT_ENGIN__WINDOW_SECONDS: unknown section 'engin'" in result.stderr
    assert secret not in result.stderr + result.stdout


def test_a_missing_file_exits_2_in_one_line(tmp_path: Path) -> None:
    result = lookout("config", "check", tmp_path / "nope.yaml", cwd=tmp_path)
    assert result.returncode == 2, result.describe()
    assert_no_traceback(result)
    assert len(result.stderr.splitlines()) == 1 and "nope.yaml" in result.stderr


@pytest.mark.parametrize(
    ("content", "kind"),
    [
        (gzip.compress(b'{"model": "m"}\n' * 50), "gzip-compressed"),
        (b"\x00\x01\xff\xfe binary", "not UTF-8"),
    ],
    ids=["gzip", "binary"],
)
def test_a_binary_file_is_one_line_naming_it(tmp_path: Path, content: bytes, kind: str) -> None:
    """A gzip of logs passed where the config goes: one line, not a UnicodeDecodeError."""
    path = tmp_path / "logs.ndjson.gz"
    path.write_bytes(content)
    result = lookout("config", "check", path, cwd=tmp_path)
    assert_no_traceback(result)
    assert result.returncode == 2, result.describe()
    assert len(result.stderr.splitlines()) == 1, result.describe()
    assert result.stderr.startswith(f"{path}: not a text YAML file ({kind}"), result.describe()
    assert "UnicodeDecodeError" not in result.stderr


@pytest.mark.parametrize(
    ("text", "env"),
    [
        # a webhook URL pasted into the file under a key that does not exist, and as a value
        # of the wrong type
        (
            f"alerting:\n  slack_webhook_url: {SLACK_WEBHOOK}\n"
            f"sink:\n  path: {{url: '{SLACK_WEBHOOK}'}}\n",
            {},
        ),
        # a routing key set through an override that names no setting
        (GOOD, {"LOOKOUT_ALERTING__PAGERDUTY_ROUTING_KEY": ROUTING_KEY}),
        # the secrets where they belong, in the environment of a valid configuration
        (GOOD, {"SLACK_WEBHOOK_URL": SLACK_WEBHOOK, "PAGERDUTY_ROUTING_KEY": ROUTING_KEY}),
    ],
    ids=["in-the-file", "unknown-env-override", "valid-with-env-secrets"],
)
def test_no_secret_value_in_the_output(tmp_path: Path, text: str, env: dict[str, str]) -> None:
    result = check(tmp_path, text, env=env)
    assert result.returncode == (0 if text == GOOD and not any("LOOKOUT" in k for k in env) else 2)
    for secret in (SLACK_WEBHOOK, ROUTING_KEY, "s3cr3t"):
        assert secret not in result.stdout and secret not in result.stderr, result.describe()


def test_a_route_to_a_receiver_nobody_declared_is_refused(tmp_path: Path) -> None:
    """Its alerts would be lost at the first page with one log line: refuse the file."""
    text = "alerting:\n  routes: [{receivers: [nosuch], model: gemini-*}]\n"
    result = check(tmp_path, text)
    assert result.returncode == 2, result.describe()
    assert "alerting.routes[0].receivers: 'nosuch'" in result.stderr
    assert "not declared in alerting.receivers (console, log)" in result.stderr


def test_an_ingest_replica_may_carry_routes_without_their_receivers(tmp_path: Path) -> None:
    """The chart gives ingest pods `config.alerting` (routes included) but no receivers:
    an ingest replica never notifies, so its file is valid; the same file as `all` is not."""
    text = "alerting:\n  routes: [{receivers: [team-slack]}]\n  default_receiver: team-slack\n"
    result = check(tmp_path, text + "engine: {role: ingest}\n")
    assert result.returncode == 0, result.describe()
    result = check(tmp_path, text)
    assert result.returncode == 2, result.describe()
    assert "alerting.default_receiver: 'team-slack'" in result.stderr
    # the same file run as `--role ingest` (the role given on the command line, not in it)
    (tmp_path / "logs.ndjson").write_text("")
    text += "source: {kind: file, path: logs.ndjson}\nmetrics: {enabled: false}\n"
    (tmp_path / "ingest.yaml").write_text(text)
    run = lookout("run", "--config", "ingest.yaml", "--role", "ingest", cwd=tmp_path)
    assert run.returncode == 0, run.describe()
    assert run.stderr.splitlines()[-1].startswith("lookout run: 0 records"), run.describe()
    # --role beats a LOOKOUT_ENGINE__ROLE a Deployment may set, in validation as at run time
    env = {"LOOKOUT_ENGINE__ROLE": "all"}
    run = lookout("run", "--config", "ingest.yaml", "--role", "ingest", cwd=tmp_path, env=env)
    assert run.returncode == 0, run.describe()


def test_a_misspelt_key_gets_the_key_it_was_probably_meant_to_be(tmp_path: Path) -> None:
    text = "engine:\n  window_secs: 60\ndetectors:\n  safety: {min_call: 5, zzz: 1}\n"
    result = check(tmp_path, text)
    assert result.returncode == 2, result.describe()
    lines = result.stderr.splitlines()
    assert lines[0].endswith("engine.window_secs: unknown key (did you mean 'window_seconds'?)")
    assert lines[1].endswith("detectors.safety.min_call: unknown key (did you mean 'min_calls'?)")
    assert lines[2].endswith("detectors.safety.zzz: unknown key")  # nothing close: no guess


def test_a_reader_that_stops_early_is_not_an_error(tmp_path: Path) -> None:
    """`lookout config check FILE | head -1` exited 1 when head closed the pipe first (a
    newcomer's `set -o pipefail` script failed on it); other commands say 0 there."""
    config = tmp_path / "lookout.yaml"
    config.write_text(GOOD)
    (tmp_path / "logs.ndjson").write_text("")
    read_end, write_end = os.pipe()
    process = subprocess.Popen(
        [lookout_executable(), "config", "check", str(config)],
        stdout=write_end,
        stderr=subprocess.PIPE,
        cwd=tmp_path,
        env=clean_env(),
    )
    os.close(write_end)
    os.close(read_end)  # the reader is gone before the first line is written
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 0, stderr.decode()
    assert "Traceback" not in stderr.decode()
