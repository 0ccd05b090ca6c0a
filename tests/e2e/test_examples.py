"""The sample configurations in examples/: each passes `lookout config check`, each header's
`lookout` commands name real commands and options, all of them and the README use the same
project name, and the file-replay sample runs as its header says."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import typer.main
import yaml

from tests.e2e.conftest import REPLAY_TIMEOUT, assert_no_traceback, lookout, query
from worker.cli import app

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
PROJECT = "my-project"
#: each way to run, with the source kind its sample must use
SAMPLES = {
    "file-replay.yaml": "file",
    "pubsub-emulator.yaml": "pubsub",
    "pubsub-production.yaml": "pubsub",
}


def header_commands(path: Path) -> list[list[str]]:
    """The shell commands in a sample's comment header (continuation lines joined)."""
    text = "\n".join(
        line.removeprefix("#")
        for line in path.read_text().splitlines()
        if line.startswith("#   ") or line.startswith("#       ")
    )
    commands = []
    for line in text.replace("\\\n", " ").splitlines():
        words = shlex.split(line, comments=True)
        if words and words[-1] == "&":
            words.pop()
        if words:
            commands.append(words)
    return commands


def test_there_is_a_sample_for_each_way_to_run() -> None:
    assert sorted(p.name for p in EXAMPLES.glob("*.yaml")) == sorted(SAMPLES)


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_each_sample_passes_config_check(name: str, workdir: Path) -> None:
    result = lookout("config", "check", EXAMPLES / name, cwd=workdir)
    assert_no_traceback(result)
    assert result.returncode == 0, result.describe()
    assert result.stdout.splitlines()[0] == f"{EXAMPLES / name}: ok"
    effective = yaml.safe_load(result.stdout.split("\n", 1)[1])
    assert effective["source"]["kind"] == SAMPLES[name]
    if SAMPLES[name] == "pubsub":
        assert effective["source"]["project"] == PROJECT


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_each_sample_header_names_real_commands(name: str) -> None:
    root = typer.main.get_command(app)
    commands = [c for c in header_commands(EXAMPLES / name) if c[0] == "lookout"]
    assert commands, f"{name} says how to run it"
    for words in commands:
        args = words[1:]
        while args and args[0].startswith("--log-"):  # options of `lookout` itself
            args = args[2:]
        command, path = root, ["lookout"]
        while hasattr(command, "commands") and args and args[0] in command.commands:
            command = command.commands[args[0]]
            path.append(args.pop(0))
        command.make_context(" ".join(path), list(args))
        if "--project" in words:
            assert words[words.index("--project") + 1] == PROJECT, words


def test_the_readme_uses_the_same_project_name() -> None:
    readme = (ROOT / "README.md").read_text()
    projects = set(re.findall(r"--project (\S+)", readme))
    projects |= set(re.findall(r"^\s*project: (\S+)", readme, flags=re.MULTILINE))
    # `project: "{project}"` in a retune action's parameter_values is a template placeholder
    assert {p for p in projects if not p.startswith('"{')} == {PROJECT}


def test_the_production_sample_has_no_key_file_and_no_emulator() -> None:
    text = (EXAMPLES / "pubsub-production.yaml").read_text()
    config = yaml.safe_load(text)
    keys = re.findall(r"^\s*([a-z_]+):", text, flags=re.MULTILINE)
    assert not [k for k in keys if "credential" in k or "key_file" in k], keys
    assert "GOOGLE_APPLICATION_CREDENTIALS" not in text
    assert "PUBSUB_EMULATOR_HOST must NOT be set" in text
    assert config["metrics"]["host"] == "0.0.0.0", "Prometheus and the probes reach the pod"


def test_the_file_sample_runs_as_its_header_says(workdir: Path) -> None:
    made = lookout(
        "simulate",
        "--out",
        "logs.ndjson",
        "--hours",
        "0.1",
        "--rate",
        "120",
        cwd=workdir,
        timeout=REPLAY_TIMEOUT,
    )
    assert made.returncode == 0, made.describe()
    ran = lookout(
        "run",
        "--config",
        EXAMPLES / "file-replay.yaml",
        cwd=workdir,
        env={"LOOKOUT_METRICS__PORT": "0"},  # a free port: tests run side by side
        timeout=REPLAY_TIMEOUT,
    )
    assert_no_traceback(ran)
    assert ran.returncode == 0, ran.describe()
    (calls,) = query(workdir / "lookout.duckdb", "SELECT sum(calls) FROM window_metrics_merged")
    assert calls[0] > 0
    shown = lookout("sql", "SELECT count(*) AS n FROM window_metrics_merged", cwd=workdir)
    assert shown.returncode == 0 and "1 row(s)" in shown.stdout, shown.describe()
