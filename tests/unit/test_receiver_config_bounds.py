"""`lookout config check` accepted receiver and alerting settings that lose or flood pages,
and refused sensible ones:

- Alertmanager `ends_after: -3600` (every firing alert posted already ended, so resolved at
  once), `give_up_after: -5` / `0s` (every page that failed once dropped), `resend_interval:
  0s` (a re-post every tick), `ends_after` no longer than `resend_interval` (the alert flaps
  resolved between re-posts); a retune action's `cooldown: -3600` (a tuning job per window);
- `alerting.sustained_after: 6h` / `cooldown: 30m` refused as "not a valid timedelta" while
  sibling keys took `6h`, and a negative value shown as `-1 day, 23:59:55`;
- `{file: "https://hooks.slack.com/services/..."}` (the secret where its path belongs)
  accepted, then printed by `config check` and in the "cannot read the file" error.

Each is now one line naming the key, exit status 2, the value shown as it is written.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from alerts.receivers.secrets import unreadable_secrets
from schemas.alert_config import AlertingConfig, SecretRef
from worker.cli.app import app

SLACK_SECRET = "https://hooks.slack.com/services/T0/B0/SECRET3"


def config_check(tmp_path: Path, text: str) -> tuple[int, str, str]:
    """`lookout config check` on `text`: (exit status, stdout, stderr)."""
    path = tmp_path / "lookout.yaml"
    path.write_text(text)
    result = CliRunner().invoke(app, ["config", "check", str(path)], env={"COLUMNS": "200"})
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result.exit_code, result.stdout, result.stderr


def alertmanager(tmp_path: Path, settings: str) -> tuple[int, str, str]:
    text = (
        "alerting:\n  receivers:\n"
        "    - {name: am, kind: alertmanager, url: 'http://am.example:9093', " + settings + "}\n"
    )
    return config_check(tmp_path, text)


@pytest.mark.parametrize(
    ("settings", "line"),
    [
        (
            "ends_after: -3600",
            "alerting.receivers[0] (am).ends_after: must be a positive duration, got -1h",
        ),
        (
            "give_up_after: -5",
            "alerting.receivers[0] (am).give_up_after: must be a positive duration, got -5s",
        ),
        (
            "give_up_after: 0s",
            "alerting.receivers[0] (am).give_up_after: must be a positive duration, got 0s",
        ),
        (
            "resend_interval: 0s",
            "alerting.receivers[0] (am).resend_interval: must be a positive duration, got 0s",
        ),
        (
            "timeout: '-5s'",
            "alerting.receivers[0] (am).timeout: must be a positive duration, got -5s",
        ),
        (
            "resend_interval: 1m, ends_after: 1m",
            "alerting.receivers[0] (am).ends_after: must be at least 2x resend_interval (2m for a "
            "resend_interval of 1m), got 1m: Alertmanager resolves a firing alert whose "
            "endsAt passes before the next re-post",
        ),
        (
            "resend_interval: 5m",  # the default ends_after, 5m, is now too short
            "alerting.receivers[0] (am).ends_after: must be at least 2x resend_interval (10m for a "
            "resend_interval of 5m), got 5m: Alertmanager resolves a firing alert whose "
            "endsAt passes before the next re-post",
        ),
        (
            "backoff_initial: 10s, backoff_max: 5s",
            "alerting.receivers[0] (am).backoff_max: must be at least backoff_initial (10s), "
            "got 5s",
        ),
    ],
)
def test_alertmanager_settings_that_lose_or_flood_pages_are_one_line_each(
    tmp_path: Path, settings: str, line: str
) -> None:
    status, out, err = alertmanager(tmp_path, settings)
    assert (status, out) == (2, "")
    # `(got -5)`: config check adds a number it was given as written
    assert [e.split(" (got ")[0] for e in err.splitlines()] == [
        f"{tmp_path / 'lookout.yaml'}: {line}"
    ]


def test_ends_after_of_exactly_two_resends_is_the_shortest_that_passes(tmp_path: Path) -> None:
    status, out, err = alertmanager(tmp_path, "resend_interval: 30s, ends_after: 1m")
    assert (status, err) == (0, "")
    assert "ends_after: PT1M" in out
    status, out, err = alertmanager(tmp_path, "resend_interval: 30s, ends_after: 59s")
    assert (status, out) == (2, "")
    assert (
        "ends_after: must be at least 2x resend_interval (1m for a resend_interval of 30s)" in err
    )


def test_a_retune_cooldown_must_be_positive(tmp_path: Path) -> None:
    text = (
        "alerting:\n  retune:\n    actions:\n"
        "      - {name: r, kind: pubsub, project: p, topic: t, cooldown: -3600}\n"
    )
    status, out, err = config_check(tmp_path, text)
    assert (status, out) == (2, "")
    assert err.splitlines()[0].startswith(
        f"{tmp_path / 'lookout.yaml'}: alerting.retune.actions[0].cooldown: "
        "must be a positive duration, got -1h"
    )


def test_alerting_horizons_take_durations_like_their_siblings(tmp_path: Path) -> None:
    text = "alerting: {sustained_after: 6h, cooldown: 30m, accept_after: 1d}\n"
    status, out, err = config_check(tmp_path, text)
    assert (status, err) == (0, ""), err
    assert "sustained_after: PT6H" in out and "cooldown: PT30M" in out
    config = AlertingConfig.model_validate({"sustained_after": "6h", "cooldown": "30m"})
    assert config.sustained_after is not None and config.sustained_after.total_seconds() == 21600
    assert config.cooldown.total_seconds() == 1800


@pytest.mark.parametrize(
    ("text", "line"),
    [
        (
            "alerting: {sustained_after: '-5s'}",
            "alerting.sustained_after: must be a positive duration (or null to switch it off), "
            "got -5s",
        ),
        (
            "alerting: {accept_after: 0s}",
            "alerting.accept_after: must be a positive duration (or null to switch it off), got 0s",
        ),
        (
            "alerting: {cooldown: '-30m'}",
            "alerting.cooldown: must be zero or a positive duration, got -30m",
        ),
    ],
)
def test_a_negative_alerting_duration_is_shown_as_written(
    tmp_path: Path, text: str, line: str
) -> None:
    status, out, err = config_check(tmp_path, text + "\n")
    assert (status, out) == (2, "")
    assert err.splitlines() == [f"{tmp_path / 'lookout.yaml'}: {line}"]
    assert "day" not in err


def test_a_secret_file_that_is_a_url_is_refused_without_echoing_it(tmp_path: Path) -> None:
    text = (
        "alerting:\n  receivers:\n"
        f"    - {{name: s, kind: slack, webhook_url: {{file: '{SLACK_SECRET}'}}}}\n"
    )
    status, out, err = config_check(tmp_path, text)
    assert (status, out) == (2, "")
    assert err.splitlines() == [
        f"{tmp_path / 'lookout.yaml'}: alerting.receivers[0] (s).webhook_url.file: a file path, "
        "not the secret itself: write the path of a mounted file that holds it, or "
        "{env: VAR} (the value is not shown)"
    ]
    assert "SECRET3" not in out + err and "hooks.slack.com" not in out + err


def test_a_secret_reference_never_describes_a_url_even_unvalidated() -> None:
    """`describe()` goes into every secret error line; a reference built without validation
    (`model_construct`) must not put the secret there either."""
    ref = SecretRef.model_construct(env=None, file=SLACK_SECRET)
    assert "SECRET3" not in ref.describe()
    receiver = AlertingConfig.model_validate(
        {"receivers": [{"name": "s", "kind": "slack", "webhook_url": {"file": "/nowhere/x"}}]}
    ).receivers[0]
    broken = receiver.model_copy(update={"webhook_url": ref})
    (problem,) = unreadable_secrets([broken], environ={})
    assert "SECRET3" not in problem and "receiver 's' webhook_url" in problem
