"""`--help` in an 80-column terminal names every option whole and fits the width: rich's
option table cut long names ("--dead-letter-…") and squeezed their help into a narrow column.
Each group's command list gives every command a whole summary: click shortens a docstring's
first sentence to fit and stops at the first period, so "(e.g. from …)" read as "(e.g."."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import typer.main
from typer.core import TyperGroup

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


def group_paths() -> list[tuple[str, ...]]:
    """Every command group, the top level `()` included, as the words that reach it."""
    found: list[tuple[str, ...]] = []

    def walk(group: TyperGroup, path: tuple[str, ...]) -> None:
        found.append(path)
        for name, command in group.commands.items():
            if isinstance(command, TyperGroup) and not command.hidden:
                walk(command, (*path, name))

    root = typer.main.get_command(app)
    assert isinstance(root, TyperGroup)
    walk(root, ())
    return found


def listed_commands(path: tuple[str, ...]) -> set[str]:
    group = typer.main.get_command(app)
    for name in path:
        group = group.commands[name]  # type: ignore[attr-defined]
    return {name for name, cmd in group.commands.items() if not cmd.hidden}  # type: ignore[attr-defined]


def command_summaries(help_text: str) -> dict[str, str]:
    """The `Commands:` section of plain click help as {name: summary}, wrapped lines joined."""
    lines = help_text.splitlines()
    start = lines.index("Commands:") + 1
    summaries: dict[str, str] = {}
    last = ""
    for line in lines[start:]:
        if not line.strip():
            break
        entry = re.match(r"^  (\S+)\s+(.*)$", line)
        if entry is not None:
            last = entry.group(1)
            summaries[last] = entry.group(2).strip()
        else:  # a summary wrapped onto the next line, indented past the names
            summaries[last] += " " + line.strip()
    return summaries


#: what a summary cut short ends with: click's "..." or an abbreviation it took for a full stop
CUT_ENDINGS = re.compile(r"(\.\.\.|…|\b(e\.g|i\.e|cf|viz)\.?)$", re.IGNORECASE)


def cut_summary(summary: str) -> str | None:
    """Why `summary` reads as an unfinished phrase, or None if it is whole."""
    if not summary:
        return "empty"
    if CUT_ENDINGS.search(summary):
        return "ends in a cut"
    if summary.count("(") != summary.count(")"):
        return "unbalanced parenthesis"
    return None


@pytest.mark.parametrize(
    ("summary", "whole"),
    [
        ("Publish a stream of prediction logs (e.g.", False),
        ("Publish a stream of prediction logs e.g.", False),
        ("Print it as it is, i.e.", False),
        ("Set up Cloud Pub/Sub resources for Lookout (honours...", False),
        ("Create the topic, the subscription (ack deadline", False),
        ("Set up Cloud Pub/Sub resources (honours PUBSUB_EMULATOR_HOST).", True),
        ("Check configuration files.", True),
    ],
)
def test_cut_summary_tells_a_cut_summary_from_a_whole_one(summary: str, whole: bool) -> None:
    assert (cut_summary(summary) is None) == whole


@pytest.mark.parametrize("path", group_paths(), ids=lambda path: " ".join(("lookout", *path)))
def test_command_list_at_80_columns_has_whole_summaries(
    path: tuple[str, ...], tmp_path: Path
) -> None:
    result = lookout(*path, "--help", cwd=tmp_path, env={"COLUMNS": "80"})
    assert_no_traceback(result)
    assert result.returncode == 0, result.describe()
    summaries = command_summaries(result.stdout)
    assert set(summaries) == listed_commands(path), result.stdout
    cut = {
        name: (summary, why) for name, summary in summaries.items() if (why := cut_summary(summary))
    }
    assert cut == {}, result.stdout


def test_top_level_help_names_both_sinks(tmp_path: Path) -> None:
    """`lookout --help` said aggregates land "in DuckDB" only; BigQuery is a sink too."""
    result = lookout("--help", cwd=tmp_path)
    assert result.returncode == 0, result.describe()
    text = " ".join(result.stdout.replace("│", " ").split())
    assert "lands window aggregates in DuckDB (the embedded default) or BigQuery," in text, text
