"""The README's examples, executed: its ```console blocks, its YAML configuration, its SQL.

Every line of a console block is accounted for. The `lookout` examples that run locally and end
(simulate, replay, decode, config check) are run in order, as a shell runs them, in one temporary
directory that holds what a fresh clone holds beside them (examples/) and nothing else: the
`lookout.yaml` they name must be made by a README line, as a newcomer has to make it. Then the
README's SQL runs on the DuckDB file the replay wrote, and the README's YAML configuration is
checked on its own. The rest are not run here, each for a
stated reason, but their commands and options are still parsed by the CLI, so the README cannot
name a command or an option that does not exist.

The README's SQL runs through `lookout sql`, as it tells analysts to.

One change is made to what the README says, to keep the suite fast: 45 simulated minutes at 120
calls per minute per model instead of an hour at 700 (the incident at 40 minutes still fits).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import typer.main

from tests.e2e.conftest import REPLAY_TIMEOUT, clean_env, query
from worker.cli import app

README = Path(__file__).resolve().parents[2] / "README.md"
BLOCK = re.compile(r"^```(?P<lang>[a-z]*)\n(?P<body>.*?)^```", re.MULTILINE | re.DOTALL)

#: (what the README says, what the test runs instead); each must match exactly once
SCALE = [("--hours 1 ", "--hours 0.75 --rate 120 ")]
#: examples that run here, by their first words
RUN = (
    "lookout simulate",
    "lookout replay",
    "lookout decode",
    "cp examples/",
    "lookout config check",
    "lookout sql",
)
#: examples that do not, and why
NOT_RUN = {
    "make demo": "`lookout demo` itself; slower than this suite's budget",
    "make test": "the suite this test is part of",
    "lookout bq init": "needs the BigQuery emulator; tests/integration run it",
    "lookout run": "the long-running worker; tests/e2e/test_run_metrics.py runs it",
    "lookout pubsub init": "needs the Pub/Sub emulator; tests/integration run it",
    "lookout publish": "needs the Pub/Sub emulator; tests/integration run it",
    "lookout baseline accept": "needs an open incident; tests/e2e/test_baseline_cli.py runs it",
    ".venv/bin/python -m bench.": "benchmarks take minutes; `make bench` runs them",
    "docker build": "no Docker engine here; tests/chart/test_image.py checks the Dockerfile",
    "kubectl": "no cluster here",
    "helm install": "no cluster here; tests/chart renders and validates these values",
    "LOOKOUT_FUZZ_EXAMPLES=": "the long fuzz run for a release; `make test` runs tests/fuzz short",
}


def blocks(lang: str) -> list[str]:
    return [m["body"] for m in BLOCK.finditer(README.read_text()) if m["lang"] == lang]


def console_lines() -> list[str]:
    lines = [line.strip() for body in blocks("console") for line in body.splitlines()]
    return [line for line in lines if line and not line.startswith("#")]


def command_words(line: str) -> list[str]:
    """The words of the first command of a shell line (before any pipe or comment)."""
    words = shlex.split(line, comments=True)
    return words[: words.index("|")] if "|" in words else words


def test_the_readme_has_examples() -> None:
    assert README.exists(), "README.md is missing"
    assert any(line.startswith(RUN) for line in console_lines())
    assert len(blocks("yaml")) == 1 and len(blocks("sql")) >= 1


def test_every_console_line_is_run_or_says_why_not() -> None:
    unaccounted = [line for line in console_lines() if not line.startswith((*RUN, *NOT_RUN))]
    assert unaccounted == [], "new README examples: run them in tests/e2e/test_readme.py"


def test_every_lookout_example_names_real_commands_and_options() -> None:
    """Parsed by the CLI itself (nothing runs): a renamed option fails here."""
    root = typer.main.get_command(app)
    for line in console_lines():
        words = command_words(line)
        if words[0] != "lookout":
            continue
        command, args, path = root, words[1:], ["lookout"]
        while hasattr(command, "commands") and args and args[0] in command.commands:
            command = command.commands[args[0]]
            path.append(args.pop(0))
        assert not hasattr(command, "commands"), f"{line!r} names no command"
        command.make_context(" ".join(path), list(args))


@pytest.fixture(scope="module")
def readme_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[tuple[str, int]]]:
    """Runs the README's local examples in order in one directory; returns it and, per line,
    the command and its exit status (the pipeline's, as a shell reports it)."""
    where = tmp_path_factory.mktemp("readme")
    shutil.copytree(README.parent / "examples", where / "examples")
    env = clean_env()
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    statuses: list[tuple[str, int]] = []
    for line in console_lines():
        if not line.startswith(RUN):
            continue
        command = line
        for said, run in SCALE:
            command = command.replace(said, run)
        done = subprocess.run(
            ["bash", "-c", command],
            cwd=where,
            env=env,
            capture_output=True,
            timeout=REPLAY_TIMEOUT,
            check=False,
        )
        output = (done.stdout + done.stderr).decode("utf-8", errors="replace")
        assert "Traceback" not in output, f"$ {command}\n{output[-3000:]}"
        (where / f"output-{len(statuses)}.txt").write_text(f"$ {command}\n{output}")
        statuses.append((command, done.returncode))
    return where, statuses


def test_the_scale_change_applies_to_the_readme_as_written() -> None:
    text = "\n".join(console_lines())
    for said, _ in SCALE:
        assert text.count(said) == 1, f"README no longer says {said!r}: update SCALE"


def test_the_local_examples_succeed(readme_run: tuple[Path, list[tuple[str, int]]]) -> None:
    where, statuses = readme_run
    ran = [c.split()[1] for c, _ in statuses]
    assert ran == ["simulate", "replay", "decode", "examples/file-replay.yaml", "config", "sql"]
    for index, (_, status) in enumerate(statuses):
        output = (where / f"output-{index}.txt").read_text()
        assert status == 0, output


def test_the_examples_leave_what_the_readme_promises(
    readme_run: tuple[Path, list[tuple[str, int]]],
) -> None:
    where, _ = readme_run
    for name in ("logs.ndjson", "lookout.duckdb", "alerts.jsonl", "report.html"):
        assert (where / name).stat().st_size > 0, f"{name} not written"
    alerts = [json.loads(line) for line in (where / "alerts.jsonl").read_text().splitlines()]
    assert any(a["detector"] == "safety" and a["status"] == "firing" for a in alerts), (
        "the README's safety_spike@40m paged nobody"
    )
    decoded = (where / "output-2.txt").read_text().splitlines()[1]
    assert json.loads(decoded)["request_id"], "`lookout decode … | head -1` printed no record"


def test_the_readme_sql_runs_on_the_replayed_file(
    readme_run: tuple[Path, list[tuple[str, int]]],
) -> None:
    """Each ```sql block, through `lookout sql` as the README says, returns rows."""
    where, _ = readme_run
    sql_output = (where / "output-5.txt").read_text()
    assert "row(s)" in sql_output and "safety" in sql_output, sql_output
    env = clean_env()
    for sql in blocks("sql"):
        done = subprocess.run(
            [str(Path(sys.executable).parent / "lookout"), "sql", "--format", "json", sql],
            cwd=where,
            env=env,
            capture_output=True,
            timeout=REPLAY_TIMEOUT,
            check=False,
        )
        assert done.returncode == 0, done.stderr.decode()
        rows = [json.loads(line) for line in done.stdout.splitlines()]
        assert rows, sql
        direct = query(where / "lookout.duckdb", sql.strip().rstrip(";"))
        assert len(rows) == len(direct), "lookout sql prints every row of the result"


def test_the_readme_configuration_passes_config_check(tmp_path: Path) -> None:
    """The ```yaml block under Configuration is what a reader copies: it must load as written."""
    (tmp_path / "readme.yaml").write_text(blocks("yaml")[0])
    done = subprocess.run(
        [str(Path(sys.executable).parent / "lookout"), "config", "check", "readme.yaml"],
        cwd=tmp_path,
        env=clean_env(),
        capture_output=True,
        timeout=REPLAY_TIMEOUT,
        check=False,
    )
    assert done.returncode == 0, (done.stdout + done.stderr).decode()
