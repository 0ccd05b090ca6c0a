"""`lookout decode` on good and bad lines, and `--help` of every command.

The decode input holds one simulated record of every wire format the simulator writes, plus one
malformed record of every kind (see conftest), so each decoder's canonical output and each kind
of report are seen through the CLI.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import typer.main
from typer.testing import CliRunner

from tests.e2e.conftest import (
    MUTATIONS,
    SHORT_TIMEOUT,
    Result,
    Stream,
    assert_no_traceback,
    clean_env,
    corrupt,
    line_identity,
    lookout,
    lookout_executable,
    wire_format,
)
from tests.e2e.test_replay import HOSTILE_LINES, HostileFiles, make_hostile_files
from worker.cli import app

#: the canonical record, as README ("Input: prediction logs") documents it
CANONICAL_FIELDS = {
    "request_id",
    "timestamp",
    "model",
    "model_version",
    "endpoint",
    "tenant",
    "labels",
    "latency_ms",
    "time_to_first_token_ms",
    "input_tokens",
    "output_tokens",
    "blocked",
    "block_stage",
    "block_reason",
    "safety_scores",
    "finish_reason",
    "citation_count",
    "prompt",
    "response",
    "embedding",
    "error",
}
#: what `lookout simulate` writes (conftest.wire_format tells them apart)
FORMATS = ("native", "gemini", "palm", "openai", "azure_prompt_filter", "logentry", "otlp")
#: formats whose records carry an embedding and token counts (so every kind of bad record fits)
RICH_FORMATS = ("native", "gemini", "palm", "openai", "logentry")


def one_of_each_format(stream: Stream) -> list[bytes]:
    first: dict[str, bytes] = {}
    for line in stream.lines:
        first.setdefault(wire_format(orjson.loads(line)), line)
        if len(first) == len(FORMATS):
            break
    assert set(first) == set(FORMATS), f"the stream lacks formats {set(FORMATS) - set(first)}"
    return [first[f] for f in FORMATS]


@pytest.fixture(scope="module")
def decode_input(incident_stream: Stream, tmp_path_factory: pytest.TempPathFactory) -> Stream:
    """Good records of every format interleaved with bad records of every kind."""
    good = one_of_each_format(incident_stream)
    spare = [
        line
        for line in incident_stream.lines[:400]
        if line not in good and wire_format(orjson.loads(line)) in RICH_FORMATS
    ]
    lines: list[bytes] = []
    bad_at: list[int] = []
    for i, line in enumerate(good):
        lines.append(line)
        lines.append(spare[i])
        bad_at.append(len(lines))
    lines.append(spare[len(good)])  # the last line is bad too, with no newline after it
    bad_at.append(len(lines))
    lines, bad = corrupt(lines, bad_at)
    lines[-1] = lines[-1].rstrip(b"\n")
    assert set(bad.values()) == set(MUTATIONS)
    path = tmp_path_factory.mktemp("decode") / "mixed.ndjson"
    path.write_bytes(b"".join(lines))
    return Stream(path, tuple(lines), bad)


def check_decode_output(result: Result, stream: Stream, name: str) -> None:
    assert result.returncode == 1, result.describe()
    assert_no_traceback(result)

    records = [json.loads(line) for line in result.stdout.splitlines()]
    good = [i for i in stream.identities if i is not None]
    assert [(r["request_id"], r["model"]) for r in records] == good, "not the good records"
    for record in records:
        assert set(record) == CANONICAL_FIELDS
        assert record["timestamp"].endswith(("Z", "+00:00")), record["timestamp"]

    errors = result.stderr.splitlines()
    reported = [re.match(rf"^{re.escape(name)}: line (\d+): (.+)$", text) for text in errors]
    assert errors[-1] == f"{name}: {len(stream.bad)} bad record(s)"
    assert [int(m[1]) for m in reported[:-1] if m] == sorted(stream.bad)
    assert len(errors) == len(stream.bad) + 1, "stderr holds more than one line per bad record"


def test_decode_prints_canonical_records_and_reports_bad_lines(
    decode_input: Stream, tmp_path: Path
) -> None:
    result = lookout("decode", decode_input.path, cwd=tmp_path)
    check_decode_output(result, decode_input, str(decode_input.path))


def test_decode_reads_standard_input(decode_input: Stream, tmp_path: Path) -> None:
    result = lookout("decode", "-", cwd=tmp_path, stdin=decode_input.path.read_bytes())
    check_decode_output(result, decode_input, "-")


def test_decode_of_good_records_exits_0_and_keeps_what_each_format_carries(
    incident_stream: Stream, tmp_path: Path
) -> None:
    lines = one_of_each_format(incident_stream)
    result = lookout("decode", "-", cwd=tmp_path, stdin=b"".join(lines))
    assert (result.returncode, result.stderr) == (0, ""), result.describe()
    records = dict(zip(FORMATS, map(json.loads, result.stdout.splitlines()), strict=True))
    for fmt, line in zip(FORMATS, lines, strict=True):
        assert (records[fmt]["request_id"], records[fmt]["model"]) == line_identity(line)
    for fmt in RICH_FORMATS:
        assert records[fmt]["embedding"], f"{fmt}: embedding lost"
        assert records[fmt]["output_tokens"] is not None, f"{fmt}: output tokens lost"
    assert records["otlp"]["output_tokens"] is not None, "otlp: gen_ai.usage lost"
    filtered = records["azure_prompt_filter"]
    assert (filtered["blocked"], filtered["block_stage"]) == (True, "prompt"), filtered


def test_decode_of_a_missing_file_is_one_line_and_not_a_traceback(tmp_path: Path) -> None:
    result = lookout("decode", tmp_path / "nope.ndjson", cwd=tmp_path)
    assert result.returncode != 0
    assert_no_traceback(result)
    assert "nope.ndjson" in result.stderr and len(result.stderr.splitlines()) == 1


def test_decode_stops_quietly_when_its_reader_goes_away(tmp_path: Path) -> None:
    """`lookout decode big.ndjson | head -1`: the first record, then exit 0 and no noise."""
    record = b'{"timestamp": "2026-01-05T06:00:00Z", "model": "m", "latency_ms": 5}\n'
    path = tmp_path / "big.ndjson"
    path.write_bytes(record * 20_000)
    with subprocess.Popen(
        [lookout_executable(), "decode", str(path)],
        cwd=tmp_path,
        env=clean_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    ) as process:
        assert process.stdout is not None and process.stderr is not None
        first = process.stdout.readline()
        process.stdout.close()  # what `head -1` does after its line
        stderr = process.stderr.read()
        assert process.wait(timeout=SHORT_TIMEOUT) == 0, stderr.decode()
    assert orjson.loads(first)["model"] == "m"
    assert stderr == b""


def test_decode_with_an_unknown_format_is_one_line_not_one_per_record(tmp_path: Path) -> None:
    path = tmp_path / "logs.ndjson"
    path.write_bytes(b'{"timestamp": "2026-01-05T06:00:00Z", "model": "m"}\n' * 50)
    result = lookout("decode", "--format", "bogus", path, cwd=tmp_path)
    assert result.returncode == 2
    assert_no_traceback(result)
    assert result.stderr.splitlines() == [
        "lookout: decode: unknown --format 'bogus'; expected one of native, envelope, "
        "logentry, otlp, gemini, palm, openai"
    ]


# -- --help of every command ------------------------------------------------------------------


def command_tree() -> Iterator[tuple[tuple[str, ...], Any]]:
    """(path, click command) of `lookout` and every command and group under it."""

    def walk(command: Any, path: tuple[str, ...]) -> Iterator[tuple[tuple[str, ...], Any]]:
        yield path, command
        for name, sub in sorted(getattr(command, "commands", {}).items()):
            if not sub.hidden:
                yield from walk(sub, (*path, name))

    return walk(typer.main.get_command(app), ())


COMMANDS = list(command_tree())


def normalized(text: str) -> str:
    """Help text without box drawing and line wrapping, to look a sentence up in it."""
    return " ".join(re.sub(r"[│╭╮╰╯─]", " ", text).split())


def help_in_process(path: tuple[str, ...]) -> Result:
    """`lookout … --help` through click's runner: the same app, without a fresh interpreter per
    command (each costs seconds of imports on a busy machine). The real entry point is run as a
    subprocess by `test_help_through_the_installed_command` below."""
    runner = CliRunner()
    outcome = runner.invoke(app, [*path, "--help"], env={"COLUMNS": "200", "NO_COLOR": "1"})
    return Result((*path, "--help"), outcome.exit_code, outcome.stdout, outcome.stderr)


def test_every_command_is_listed() -> None:
    """A guard for the parametrisation below: the commands the README and the issue name."""
    paths = {" ".join(p) for p, _ in COMMANDS}
    assert {"demo", "replay", "simulate", "decode", "run", "config", "config check"} <= paths


@pytest.mark.parametrize("path", [p for p, _ in COMMANDS], ids=lambda p: " ".join(p) or "lookout")
def test_help_exits_0_and_explains(path: tuple[str, ...]) -> None:
    check_help(path, help_in_process(path))


@pytest.mark.parametrize("path", [(), ("config", "check")], ids=["lookout", "config check"])
def test_help_through_the_installed_command(path: tuple[str, ...], tmp_path: Path) -> None:
    check_help(path, lookout(*path, "--help", cwd=tmp_path))


def check_help(path: tuple[str, ...], result: Result) -> None:
    command = dict(COMMANDS)[path]
    assert result.returncode == 0, result.describe()
    assert result.stderr == ""
    text = normalized(result.stdout)
    assert f"Usage: {' '.join(('lookout', *path))}" in text
    docstring = (command.help or "").strip()
    assert len(docstring) >= 20, f"`lookout {' '.join(path)}` has no docstring to explain it"
    # the help is rendered as markdown: `code` shows without its backticks
    first_paragraph = normalized(docstring.split("\n\n")[0]).replace("`", "")
    assert first_paragraph in text, "the help does not show the docstring"
    for param in command.params:
        if getattr(param, "help", None) or param.name == "help":
            continue
        pytest.fail(f"`lookout {' '.join(path)}`: {param.name} has no help text")


@pytest.fixture(scope="module")
def hostile_files(tmp_path_factory: pytest.TempPathFactory) -> HostileFiles:
    return make_hostile_files(tmp_path_factory.mktemp("hostile"))


def test_decode_of_lines_that_break_parsers_prints_every_good_record(
    hostile_files: HostileFiles, tmp_path: Path
) -> None:
    """`lookout decode` used to print no record at all for a file holding one such line."""
    clean = lookout("decode", hostile_files.clean.path, cwd=tmp_path)
    assert clean.returncode == 0, clean.describe()
    result = lookout("decode", hostile_files.hostile, cwd=tmp_path)
    assert result.returncode == 1, result.describe()
    assert_no_traceback(result)
    assert result.stdout == clean.stdout  # every good record, in order, exactly once
    assert len(result.stdout.splitlines()) == hostile_files.clean.good_count
    reports = result.stderr.splitlines()
    assert reports[-1] == f"{hostile_files.hostile}: {len(HOSTILE_LINES)} bad record(s)"
    lines = {}
    for text in reports[:-1]:
        match = re.match(r"^(?P<file>\S+): line (?P<line>\d+): (?P<reason>.+)$", text)
        assert match and match["file"] == str(hostile_files.hostile), text
        lines[int(match["line"])] = match["reason"]
    assert sorted(lines) == sorted(HOSTILE_LINES)
    for number, (_, reason) in HOSTILE_LINES.items():
        assert lines[number].startswith(reason), (number, lines[number])
