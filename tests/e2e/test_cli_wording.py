"""What the CLI says when an operator gets something wrong in the first hour, and how its logs
look: one line naming the real culprit, the exit status, and how long it took.

Each test runs the installed `lookout` as a user does (see conftest.py).
"""

from __future__ import annotations

import json
import socket
import subprocess
import time
from pathlib import Path

import orjson
import pytest

from tests.e2e.conftest import (
    SHORT_TIMEOUT,
    assert_no_traceback,
    clean_env,
    lookout,
    lookout_executable,
)

#: a one-shot command that only reads a small input must answer within this on a busy machine
FAST_SECONDS = 20.0


def timed(
    *args: str | Path, cwd: Path, env: dict[str, str] | None = None
) -> tuple[str, int, float]:
    started = time.monotonic()
    result = lookout(*args, cwd=cwd, env=env)
    took = time.monotonic() - started
    assert_no_traceback(result)
    return result.stderr.strip(), result.returncode, took


@pytest.mark.parametrize("command", ["replay", "decode"])
def test_a_directory_is_called_a_directory_the_same_way_by_replay_and_decode(
    workdir: Path, command: str
) -> None:
    (workdir / "logs").mkdir()
    stderr, status, took = timed(command, "logs", cwd=workdir)
    assert status == 2
    assert stderr == (
        f"lookout: {command}: logs is a directory; expected an NDJSON file (or - for stdin)"
    )
    assert took < FAST_SECONDS


@pytest.mark.parametrize("command", ["replay", "decode"])
def test_a_missing_file_is_worded_the_same_by_replay_and_decode(
    workdir: Path, command: str
) -> None:
    stderr, status, _ = timed(command, "nope.ndjson", cwd=workdir)
    where = f"(read from the current folder, {workdir})"
    assert (status, stderr) == (2, f"lookout: {command}: no such file: nope.ndjson {where}")


def test_bq_init_without_credentials_says_how_to_get_them(workdir: Path) -> None:
    """As `pubsub init` does: the fix, not only Google's DefaultCredentialsError."""
    env = {"HOME": str(workdir), "NO_GCE_CHECK": "True", "GOOGLE_APPLICATION_CREDENTIALS": ""}
    env["BIGQUERY_EMULATOR_HOST"] = ""  # the real service, which has no credentials here
    done = lookout("bq", "init", "--project", "p", cwd=workdir, env=env)
    assert done.returncode == 1, done.describe()
    assert done.stderr.startswith("lookout bq init: no Google credentials (")
    assert "run `gcloud auth application-default login` or set BIGQUERY_EMULATOR_HOST" in (
        done.stderr
    )


@pytest.mark.parametrize(
    ("option", "target", "says"),
    [
        ("--report", "no/dir/report.html", "--report no/dir/report.html: no such directory no/dir"),
        ("--alerts-out", "out", "--alerts-out out is a directory; expected a file path"),
        ("--dead-letter", "no/dead.ndjson", "--dead-letter no/dead.ndjson: no such directory no"),
    ],
)
def test_an_output_that_cannot_be_written_is_refused_before_the_replay(
    workdir: Path, option: str, target: str, says: str
) -> None:
    """Found at the end, the replay's work was done for nothing (a report), or its alerts were
    lost and it exited 0 (`--alerts-out` naming a directory)."""
    (workdir / "out").mkdir()
    logs = workdir / "logs.ndjson"
    logs.write_text(
        '{"request_id": "a", "timestamp": "2026-01-05T06:00:00Z", "model": "m", "latency_ms": 10}\n'
    )
    stderr, status, took = timed("replay", logs, "--db", "x.duckdb", option, target, cwd=workdir)
    assert (status, stderr) == (2, f"lookout: replay: {says}")
    assert not (workdir / "x.duckdb").exists(), "the replay ran before the output was checked"
    assert took < FAST_SECONDS


def test_a_bad_environment_override_is_blamed_on_the_variable_not_the_file(
    workdir: Path,
) -> None:
    config = workdir / "lookout.yaml"
    config.write_text("engine: {window_seconds: 60}\n")
    env = {"LOOKOUT_ENGINE__WINDOW_SECONDS": "abc-not-shown"}
    stderr, status, took = timed("config", "check", config, cwd=workdir, env=env)
    assert status == 2
    assert stderr.startswith(
        "environment LOOKOUT_ENGINE__WINDOW_SECONDS (engine.window_seconds): "
    ), stderr
    assert "lookout.yaml" not in stderr, "the file is fine; the variable is not"
    assert "abc-not-shown" not in stderr, "a variable's value is never echoed"
    assert took < FAST_SECONDS


def test_a_bad_value_in_the_file_is_still_blamed_on_the_file(workdir: Path) -> None:
    config = workdir / "lookout.yaml"
    config.write_text("engine: {window_seconds: abc}\n")
    stderr, status, _ = timed("config", "check", config, cwd=workdir)
    assert status == 2
    assert stderr.startswith(f"{config}: engine.window_seconds: "), stderr


def test_simulate_into_a_pipe_that_closes_early_exits_0_quietly(workdir: Path) -> None:
    started = time.monotonic()
    done = subprocess.run(
        f"'{lookout_executable()}' simulate --out - --hours 1 | head -2",
        shell=True,
        executable="/bin/bash",
        cwd=workdir,
        env={**clean_env(), "SHELLOPTS": "pipefail"},
        capture_output=True,
        timeout=SHORT_TIMEOUT,
        check=False,
    )
    took = time.monotonic() - started
    assert done.returncode == 0, done.stderr.decode()
    assert done.stderr == b"", "nothing to say when the reader has all it wanted"
    assert len(done.stdout.splitlines()) == 2
    assert took < FAST_SECONDS, "it stops at once, not after simulating the whole hour"


def test_simulate_can_hit_one_model(workdir: Path) -> None:
    out = workdir / "logs.ndjson"
    result = lookout(
        "simulate",
        "--out",
        out,
        "--hours",
        "0.2",
        "--rate",
        "600",
        "--incident",
        "safety_spike:text-bison@3m:6m",
        "--format",
        "native",
        cwd=workdir,
    )
    assert result.returncode == 0, result.describe()
    blocked: dict[str, list[int]] = {}
    for line in out.read_bytes().splitlines():
        record = orjson.loads(line)
        minute = int(record["timestamp"][14:16])
        if 4 <= minute < 8:  # inside the incident (the simulation starts on the hour)
            blocked.setdefault(record["model"], []).append(int(record["blocked"]))
    rates = {model: sum(flags) / len(flags) for model, flags in blocked.items()}
    assert rates["text-bison"] > 2 * max(rates["gemini-1.5-flash"], rates["gpt-4o-mini"]), rates


def test_simulate_names_the_models_when_one_is_unknown(workdir: Path) -> None:
    stderr, status, _ = timed(
        "simulate", "--out", "x.ndjson", "--incident", "safety_spike:gpt-5@3m", cwd=workdir
    )
    assert status == 2
    assert "'gpt-5', not simulated" in stderr and "text-bison" in stderr, stderr
    assert len(stderr.splitlines()) == 1


def test_simulate_no_text_leaves_prompts_and_responses_out(workdir: Path) -> None:
    sizes = {}
    for flag in ("--text", "--no-text"):
        out = workdir / f"{flag}.ndjson"
        args = ("--hours", "0.05", "--format", "native", "--seed", "3")
        result = lookout("simulate", "--out", out, *args, flag, cwd=workdir)
        assert result.returncode == 0, result.describe()
        records = [orjson.loads(line) for line in out.read_bytes().splitlines()]
        has_text = [r["response"] is not None for r in records]
        assert any(has_text) if flag == "--text" else not any(has_text)
        sizes[flag] = out.stat().st_size
    assert sizes["--no-text"] < 0.9 * sizes["--text"], sizes


def test_simulate_start_makes_the_traffic_that_follows_an_earlier_file(workdir: Path) -> None:
    """An SRE shifting timestamps with a script to simulate a later period: there was no
    `--start`. A time without an offset is UTC; one that is not a time is one line, exit 2."""
    args = ("--hours", "0.02", "--rate", "60", "--format", "native", "--no-text")
    for start, hour in (("2026-01-05T07:00Z", 7), ("2026-01-05T08:00", 8)):
        out = workdir / f"{hour}.ndjson"
        result = lookout("simulate", "--out", out, *args, "--start", start, cwd=workdir)
        assert result.returncode == 0, result.describe()
        stamps = [orjson.loads(line)["timestamp"] for line in out.read_bytes().splitlines()]
        assert min(stamps).startswith(f"2026-01-05T{hour:02d}:00:") and stamps[0].endswith("Z")
        assert max(stamps) < f"2026-01-05T{hour:02d}:02"
    stderr, status, _ = timed("simulate", "--out", "x.ndjson", "--start", "yesterday", cwd=workdir)
    assert (status, stderr.strip()) == (
        2,
        "lookout: simulate: --start 'yesterday' is not an ISO 8601 time such as 2026-01-05T07:00Z",
    )


def _run_once(workdir: Path, *options: str) -> tuple[str, int]:
    """`lookout [options] run` over a tiny file (it exits at the end of the file)."""
    logs = workdir / "logs.ndjson"
    if not logs.exists():
        made = lookout("simulate", "--out", logs, "--hours", "0.02", "--rate", "50", cwd=workdir)
        assert made.returncode == 0, made.describe()
    config = workdir / "lookout.yaml"
    config.write_text(
        f"source: {{kind: file, path: {logs}}}\n"
        f"sink: {{kind: duckdb, path: {workdir / 'lookout.duckdb'}}}\n"
        "metrics: {host: 127.0.0.1, port: 0}\n"
    )
    result = lookout(*options, "run", "--config", config, cwd=workdir, timeout=120)
    assert_no_traceback(result)
    return result.stderr, result.returncode


def test_run_logs_its_start_at_info_in_text_by_default(workdir: Path) -> None:
    stderr, status = _run_once(workdir)
    assert status == 0, stderr
    lines = [line for line in stderr.splitlines() if "serving /metrics" in line]
    assert len(lines) == 1, stderr
    assert " INFO lookout.serve: serving /metrics, /healthz and /readyz on 127.0.0.1:" in lines[0]
    assert int(lines[0].rsplit(":", 1)[1]) > 0, "the line ends with the port, as scripts read it"


def test_run_logs_json_lines_cloud_logging_reads(workdir: Path) -> None:
    stderr, status = _run_once(workdir, "--log-format", "json")
    assert status == 0, stderr
    entries = [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]
    assert entries, stderr
    for entry in entries:
        assert {"time", "severity", "logger", "message"} <= entry.keys(), entry
        assert entry["time"].endswith("Z")
    (start,) = [e for e in entries if e["message"].startswith("serving /metrics")]
    assert start["severity"] == "INFO" and start["logger"] == "lookout.serve"
    assert start["port"] > 0, "the port is a field of its own, to filter on"


def test_log_level_warning_silences_the_start_line(workdir: Path) -> None:
    stderr, status = _run_once(workdir, "--log-level", "warning")
    assert status == 0, stderr
    assert "serving /metrics" not in stderr


def test_one_shot_commands_stay_quiet_by_default(workdir: Path) -> None:
    (workdir / "empty.ndjson").write_bytes(b"")
    result = lookout("decode", "empty.ndjson", cwd=workdir)
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")


def test_an_unknown_log_format_is_one_line(workdir: Path) -> None:
    stderr, status, _ = timed("--log-format", "xml", "decode", "-", cwd=workdir)
    assert (status, stderr) == (2, "lookout: unknown log format 'xml'; expected text or json")


def test_logging_options_after_the_command_work_as_before_it(workdir: Path) -> None:
    """`lookout replay f --log-format json` was "No such option: --log-format (Possible
    options: --format)", which points at the wire format: the options of `lookout` itself now
    work after the command too."""
    stream = workdir / "one.ndjson"
    stream.write_text('{"request_id": "r1", "timestamp": "2026-01-05T06:00:00Z", "model": "m"}\n')
    done = lookout("replay", stream, "--db", "x.duckdb", "--log-format", "json", cwd=workdir)
    assert done.returncode == 0, done.describe()
    (line,) = done.stderr.strip().splitlines()
    assert json.loads(line)["logger"] == "lookout.replay"


def test_only_the_logging_options_move_and_nothing_after_a_double_dash() -> None:
    from worker.cli import global_options_first

    assert global_options_first(["sql", "SELECT 1", "--log-level=DEBUG", "--format", "csv"]) == [
        "--log-level=DEBUG", "sql", "SELECT 1", "--format", "csv",
    ]  # fmt: skip
    assert global_options_first(["replay", "--", "--log-format", "json"]) == [
        "replay", "--", "--log-format", "json",
    ]  # fmt: skip


def test_run_on_a_bigquery_that_does_not_answer_says_so_within_its_write_timeout(
    workdir: Path,
) -> None:
    """A BigQuery sink that cannot be reached (here a loopback port nothing listens on) was
    retried silently for the client's 10 minutes at start, and on Kubernetes the startup probe
    killed the pod after 2 without a word of why. Now `lookout run` gives up after
    sink.write_timeout_seconds with one line that says what to check."""
    with socket.socket() as probe:  # a free port, closed again: connections are refused
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    (workdir / "logs.ndjson").write_text("")
    (workdir / "lookout.yaml").write_text(
        "source: {kind: file, path: logs.ndjson}\n"
        "sink: {kind: bigquery, project: p, dataset: d, write_timeout_seconds: 3}\n"
        "metrics: {enabled: false}\n"
    )
    env = {"BIGQUERY_EMULATOR_HOST": f"127.0.0.1:{port}"}
    started = time.monotonic()
    done = lookout("run", "--config", "lookout.yaml", cwd=workdir, env=env, timeout=60)
    assert done.returncode == 1, done.describe()
    assert time.monotonic() - started < 45, done.describe()
    assert_no_traceback(done)
    assert "BigQuery did not answer for table p.d." in done.stderr, done.describe()
    assert "within 3 s (sink.write_timeout_seconds)" in done.stderr
    assert f"check network access to 127.0.0.1:{port} (BIGQUERY_EMULATOR_HOST)" in done.stderr
