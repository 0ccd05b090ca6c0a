"""`LOOKOUT_…` overrides `lookout config check` got wrong:

- a list given as `a,b` (not JSON) ended in `lookout: SettingsError: error parsing value for
  field "metrics"`, exit 1, naming no variable and not saying the value must be JSON;
- a misspelt variable (`LOOKOUT_ENGINE_WINDOW_SECONDS` with one underscore, `LOOKOUT_ALERT_OUT`,
  a lowercase `lookout_engin__…`) was ignored and the file's value silently stayed in force;
- `LOOKOUT_SOURCE__KIND=pubsub` blamed the file for the keys the new kind lacks, and suggested
  `path` for `path`.

Each is now one line naming the variable (never its value), exit status 2. Variables Lookout
reads elsewhere, the chart's `LOOKOUT_SECRET_…` and secrets the file's `{env: NAME}` names are
never reported; any other unknown `LOOKOUT_…` variable is a warning, not a refusal.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from worker.cli.app import app

BASE = "source: {kind: file, path: '-'}\nengine: {window_seconds: 60}\n"
SECRET = "s3cr3t-never-printed"


@pytest.fixture(autouse=True)
def _no_lookout_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [n for n in os.environ if n.upper().startswith("LOOKOUT_")]:
        monkeypatch.delenv(name)


def config_check(
    tmp_path: Path, env: dict[str, str], text: str = BASE
) -> tuple[int, str, list[str]]:
    path = tmp_path / "base.yaml"
    path.write_text(text)
    result = CliRunner().invoke(app, ["config", "check", str(path)], env={"COLUMNS": "200", **env})
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result.exit_code, result.stdout, result.stderr.splitlines()


# -- a value that must be JSON -------------------------------------------------------------


def test_a_list_that_is_not_json_names_the_variable_and_the_form(tmp_path: Path) -> None:
    status, out, err = config_check(tmp_path, {"LOOKOUT_METRICS__MODELS": "gemini,bison"})
    assert status == 2
    assert out == ""
    assert err == [
        "environment LOOKOUT_METRICS__MODELS (metrics.models): not valid JSON; a value of this "
        """kind is given as JSON, e.g. LOOKOUT_METRICS__MODELS='["a", "b"]' """
        "(the value is not shown)"
    ]
    status, out, err = config_check(tmp_path, {"LOOKOUT_METRICS__MODELS": '["gemini","bison"]'})
    assert status == 0, err
    assert "- gemini" in out


def test_a_section_that_is_not_json_names_the_variable(tmp_path: Path) -> None:
    status, _, err = config_check(tmp_path, {"LOOKOUT_ENGINE": SECRET})
    assert status == 2
    assert len(err) == 1
    assert err[0].startswith("environment LOOKOUT_ENGINE (engine): not valid JSON")
    assert SECRET not in "\n".join(err)


# -- variables that set nothing --------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "line"),
    [
        (
            "LOOKOUT_ENGINE_WINDOW_SECONDS",
            "environment LOOKOUT_ENGINE_WINDOW_SECONDS: no such setting (nested keys take a "
            "double underscore); did you mean LOOKOUT_ENGINE__WINDOW_SECONDS?",
        ),
        (
            "LOOKOUT_ALERT_OUT",
            "environment LOOKOUT_ALERT_OUT: no such setting; did you mean LOOKOUT_ALERTS_OUT?",
        ),
        (
            "lookout_engin__window_seconds",
            "environment lookout_engin__window_seconds: unknown section 'engin'; did you mean "
            "LOOKOUT_ENGINE__WINDOW_SECONDS? (expected one of alerting, alerts_out, decode, "
            "detectors, engine, metrics, report, sink, source)",
        ),
        (
            "LOOKOUT_WINDOW_SECONDS",
            "environment LOOKOUT_WINDOW_SECONDS: no such setting (nested keys take a double "
            "underscore); did you mean LOOKOUT_ENGINE__WINDOW_SECONDS?",
        ),
        (
            "LOOKOUT_ENGINE__WINDOW_SECONDS__X",
            "environment LOOKOUT_ENGINE__WINDOW_SECONDS__X (engine.window_seconds.x): no such "
            "key; did you mean LOOKOUT_ENGINE__WINDOW_SECONDS?",
        ),
    ],
)
def test_a_misspelt_variable_is_refused_with_a_suggestion(
    tmp_path: Path, name: str, line: str
) -> None:
    status, out, err = config_check(tmp_path, {name: SECRET})
    assert status == 2
    assert out == ""
    assert err == [line]


def test_variables_read_elsewhere_and_named_secrets_are_never_reported(tmp_path: Path) -> None:
    """Only the typo is reported: not the decoder's, the build's or the CLI's variables, the
    chart's receiver secrets, nor the secret the file's `{env: NAME}` names (nor its value)."""
    text = BASE + (
        "alerting:\n  receivers:\n"
        "    - {name: team-slack, kind: slack, webhook_url: {env: LOOKOUT_SLACK_WEBHOOK_URL}}\n"
    )
    env = {
        "LOOKOUT_DECODER": "python",
        "LOOKOUT_PURE_PYTHON": "1",
        "LOOKOUT_KEYHASH": "pandas",
        "LOOKOUT_BLAS_THREADS": "1",
        "LOOKOUT_LOG_FORMAT": "text",
        "LOOKOUT_SECRET_ONCALL_PAGERDUTY_ROUTING_KEY": SECRET,
        "LOOKOUT_SLACK_WEBHOOK_URL": f"https://hooks.slack.com/services/{SECRET}",
        "LOOKOUT_ENGINE_WINDOW_SECONDS": "30",
    }
    status, out, err = config_check(tmp_path, env, text)
    assert status == 2
    assert len(err) == 1 and err[0].startswith("environment LOOKOUT_ENGINE_WINDOW_SECONDS:")
    assert SECRET not in out + "\n".join(err)
    del env["LOOKOUT_ENGINE_WINDOW_SECONDS"]
    status, out, err = config_check(tmp_path, env, text)
    assert status == 0, err
    assert err == []
    assert SECRET not in out


def test_an_unknown_variable_like_no_setting_is_a_warning(tmp_path: Path) -> None:
    """`LOOKOUT_OPSGENIE_KEY` reads as nothing of the file (it may be a secret for a receiver
    this file does not have): the check passes and says it is ignored, without its value."""
    status, out, err = config_check(tmp_path, {"LOOKOUT_OPSGENIE_KEY": SECRET})
    assert status == 0
    assert "ok" in out
    warned = [line for line in err if "WARNING lookout.config:" in line]
    assert len(warned) == 1, err
    assert warned[0].endswith(
        "environment LOOKOUT_OPSGENIE_KEY: ignored, not a setting (LOOKOUT_<SECTION>__<KEY>) "
        "and named by no {env: ...} reference of this configuration"
    )
    assert SECRET not in out + "\n".join(err)


# -- a union's kind set by a variable --------------------------------------------------------


def test_the_variable_that_set_the_kind_is_blamed(tmp_path: Path) -> None:
    status, out, err = config_check(tmp_path, {"LOOKOUT_SOURCE__KIND": "pubsub"})
    assert status == 2
    assert out == ""
    assert err == [
        "environment LOOKOUT_SOURCE__KIND (source.kind: pubsub): source.project: Field required",
        "environment LOOKOUT_SOURCE__KIND (source.kind: pubsub): source.subscription: "
        "Field required",
        "environment LOOKOUT_SOURCE__KIND (source.kind: pubsub): source.path: unknown key for "
        "kind 'pubsub' (a key of kind 'file')",
    ]


def test_a_misspelt_kind_in_a_variable_is_blamed_on_it(tmp_path: Path) -> None:
    status, _, err = config_check(tmp_path, {"LOOKOUT_SOURCE__KIND": "pubsb"})
    assert status == 2
    assert err == [
        "environment LOOKOUT_SOURCE__KIND (source.kind): unknown value; expected one of file, "
        "pubsub, simulator (did you mean 'pubsub'?)"
    ]


def test_an_unknown_key_is_never_its_own_suggestion(tmp_path: Path) -> None:
    text = "source: {kind: pubsub, project: p, subscription: s, path: x.ndjson}\n"
    status, _, err = config_check(tmp_path, {}, text)
    assert status == 2
    assert err == [
        f"{tmp_path / 'base.yaml'}: source.path: unknown key for kind 'pubsub' "
        "(a key of kind 'file')"
    ]
