"""`lookout config check` never prints a secret, even one put under the wrong key or on a
line with a YAML syntax error."""

from __future__ import annotations

from pathlib import Path

from tests.e2e.conftest import assert_no_traceback, lookout


def test_a_yaml_syntax_error_does_not_print_the_secret_on_its_line(tmp_path: Path) -> None:
    path = tmp_path / "lookout.yaml"
    path.write_text(
        "alerting:\n  default_receiver: console\n"
        "slack: https://hooks.slack.com/services/T0A1B2C3D/B0E1F2G3H/Zq8s3cr3tW: x\n"
    )
    result = lookout("config", "check", path, cwd=tmp_path)
    assert result.returncode == 2, result.describe()
    assert_no_traceback(result)
    assert "s3cr3t" not in result.stdout + result.stderr, result.describe()


def test_a_secret_looking_value_under_an_ordinary_key_is_not_echoed(tmp_path: Path) -> None:
    path = tmp_path / "lookout.yaml"
    path.write_text("alerting:\n  default_receiver: https://hooks.example.com/h?token=s3cr3t\n")
    result = lookout("config", "check", path, cwd=tmp_path)
    assert result.returncode == 2, result.describe()
    assert "alerting.default_receiver" in result.stderr
    assert "s3cr3t" not in result.stdout + result.stderr, result.describe()
