"""`--help` in an 80-column terminal names every option whole and fits the width: rich's
option table cut long names ("--dead-letter-…") and squeezed their help into a narrow column."""

from __future__ import annotations

from pathlib import Path

import pytest
import typer.main

from tests.e2e.conftest import assert_no_traceback, lookout
from worker.cli import app

#: commands with the longest option names
COMMANDS = [("pubsub", "init"), ("replay",), ("simulate",), ("run",), ("publish",)]


def long_options(path: tuple[str, ...]) -> list[str]:
    command = typer.main.get_command(app)
    for name in path:
        command = command.commands[name]  # type: ignore[attr-defined]
    return [opt for param in command.params for opt in param.opts if opt.startswith("--")]


@pytest.mark.parametrize("path", COMMANDS, ids=" ".join)
def test_help_at_80_columns_names_every_option_whole(path: tuple[str, ...], tmp_path: Path) -> None:
    result = lookout(*path, "--help", cwd=tmp_path, env={"COLUMNS": "80"})
    assert_no_traceback(result)
    assert result.returncode == 0, result.describe()
    words = set(result.stdout.replace(",", " ").split())
    missing = [opt for opt in long_options(path) if opt not in words]
    assert missing == [], result.stdout
    assert "…" not in result.stdout, result.stdout
    assert max(len(line) for line in result.stdout.splitlines()) <= 80, result.stdout
