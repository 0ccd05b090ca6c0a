"""`lookout config check` said ok for files `lookout run` then refused or silently changed:

- a DuckDB sink (or `alerts_out`, `report`) in a folder that does not exist: `run` failed to
  open the sink, and the alert file's folder was created behind the user's back;
- a key given twice in one mapping (`engine:` pasted twice): YAML kept the last one silently;
- a boolean for a number (`allowed_lateness_seconds: true`): pydantic made it 1.0.

Each is now one line naming the key (and for a duplicate both line numbers), exit status 2.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pydantic
import pytest
from typer.testing import CliRunner

from schemas.config import LookoutConfig
from schemas.config_loading import ConfigError, load_config
from worker.cli.app import app

REPO = Path(__file__).resolve().parents[2]


def config_check(tmp_path: Path, text: str, *options: str) -> tuple[int, str, str]:
    """Run `lookout config check` on `text` from `tmp_path`: (exit status, stdout, stderr)."""
    (tmp_path / "lookout.yaml").write_text(text)
    result = CliRunner().invoke(
        app, ["config", "check", *options, str(tmp_path / "lookout.yaml")], env={"COLUMNS": "200"}
    )
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result.exit_code, result.stdout, result.stderr


def problems(tmp_path: Path, text: str) -> list[str]:
    (tmp_path / "lookout.yaml").write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_config(tmp_path / "lookout.yaml")
    return caught.value.problems


# -- folders that do not exist -------------------------------------------------------------


def test_a_duckdb_sink_in_a_missing_folder_fails_the_check(tmp_path: Path) -> None:
    status, out, err = config_check(
        tmp_path, "sink: {kind: duckdb, path: /nonexistent/dir/x.duckdb}\n"
    )
    assert status == 2
    assert "ok" not in out
    assert err.splitlines() == [
        f"{tmp_path / 'lookout.yaml'}: sink.path /nonexistent/dir/x.duckdb: "
        "no such directory /nonexistent/dir"
    ]


def test_alerts_out_in_a_missing_folder_fails_the_check(tmp_path: Path) -> None:
    missing = tmp_path / "no" / "alerts.jsonl"
    status, _, err = config_check(tmp_path, f"alerts_out: {missing}\n")
    assert status == 2
    assert err.splitlines() == [
        f"{tmp_path / 'lookout.yaml'}: alerts_out {missing}: no such directory {missing.parent}"
    ]


def test_every_missing_folder_is_its_own_line(tmp_path: Path) -> None:
    text = f"sink: {{path: {tmp_path}/a/x.duckdb}}\nalerts_out: {tmp_path}/b/a.jsonl\n"
    status, _, err = config_check(tmp_path, text)
    assert status == 2
    assert [line.split(": ", 1)[1].split(" ", 1)[0] for line in err.splitlines()] == [
        "sink.path",
        "alerts_out",
    ]


def test_elsewhere_makes_a_missing_folder_a_warning(tmp_path: Path) -> None:
    """A pod's ConfigMap names its volume's folder, which the CI machine checking it lacks."""
    text = "sink: {path: /var/lib/no-such-lookout/x.duckdb}\n"
    status, out, err = config_check(tmp_path, text, "--elsewhere")
    assert status == 0
    assert out.startswith(f"{tmp_path / 'lookout.yaml'}: ok")
    assert err.startswith("warning: ") and "sink.path" in err


def test_folders_that_exist_pass(tmp_path: Path) -> None:
    text = f"sink: {{path: {tmp_path}/x.duckdb}}\nalerts_out: {tmp_path}/a.jsonl\n"
    status, out, err = config_check(tmp_path, text)
    assert (status, err) == (0, "")
    assert out.startswith(f"{tmp_path / 'lookout.yaml'}: ok")


def test_a_folder_nobody_may_write_to_fails_the_check_and_changes_nothing(tmp_path: Path) -> None:
    """`/sys` refuses a new file to every user, root included (permission bits would not tell
    root so). The check said ok, and `lookout run` then stopped on DuckDB's IO Error."""
    text = "sink: {path: /sys/lookout.duckdb}\nalerts_out: /sys/alerts.jsonl\n"
    status, out, err = config_check(tmp_path, text)
    assert status == 2
    assert "ok" not in out
    config = tmp_path / "lookout.yaml"
    # sysfs mounted read-write (here) refuses with EACCES, mounted read-only (Docker) EROFS
    why = "(Permission denied|Read-only file system)"
    sink, alerts = err.splitlines()
    assert re.fullmatch(
        f"{config}: sink.path /sys/lookout.duckdb: cannot be written here: {why}", sink
    )
    assert re.fullmatch(
        f"{config}: alerts_out /sys/alerts.jsonl: cannot be written here: {why}", alerts
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lookout.yaml"]  # no probe left


def test_a_sink_path_naming_a_file_that_is_not_duckdb_fails_the_check(tmp_path: Path) -> None:
    logs = tmp_path / "logs.ndjson"
    logs.write_bytes(b'{"request_id": "r1"}\n')
    status, _, err = config_check(tmp_path, f"sink: {{path: {logs}}}\n")
    assert status == 2
    assert err.splitlines() == [
        f"{tmp_path / 'lookout.yaml'}: sink.path {logs} is not a DuckDB database file; "
        "give a new path or a Lookout DuckDB file"
    ]
    assert logs.read_bytes() == b'{"request_id": "r1"}\n'


def test_a_sink_path_that_is_not_a_regular_file_fails_the_check(tmp_path: Path) -> None:
    """`/dev/null` passed, and DuckDB then failed with 'Could not fsync "/dev/null"'."""
    status, _, err = config_check(tmp_path, "sink: {path: /dev/null}\n")
    assert status == 2
    assert err.splitlines() == [
        f"{tmp_path / 'lookout.yaml'}: sink.path /dev/null is not a regular file"
    ]


def test_an_existing_duckdb_file_and_an_empty_one_pass(tmp_path: Path) -> None:
    import duckdb

    for name in ("lookout.duckdb", "empty.duckdb"):
        path = tmp_path / name
        if name == "empty.duckdb":
            path.touch()  # `replay` fills an empty file
        else:
            duckdb.connect(str(path)).close()
        before = path.stat()
        status, _, err = config_check(tmp_path, f"sink: {{path: {path}}}\n")
        assert (status, err) == (0, "")
        after = path.stat()
        assert (after.st_size, after.st_mtime_ns) == (before.st_size, before.st_mtime_ns)


def test_strict_makes_what_run_would_refuse_a_problem(tmp_path: Path) -> None:
    """`config check` said ok (a warning on its last line, after the configuration) and exit
    0 for a receiver secret that is not set, and `lookout run` then refused to start: a
    deploy gate on the exit status passed it (an SRE's trial)."""
    text = (
        "alerting:\n  receivers:\n"
        "    - {name: pd, kind: pagerduty, routing_key: {env: LOOKOUT_TEST_NOT_SET}}\n"
    )
    status, out, err = config_check(tmp_path, text)
    assert status == 0 and "warning: " in err
    status, out, err = config_check(tmp_path, text, "--strict")
    assert (status, out) == (2, "")
    assert err.splitlines() == [
        f"{tmp_path / 'lookout.yaml'}: "
        "receiver 'pd' routing_key (env LOOKOUT_TEST_NOT_SET): the variable is not set or "
        "empty (`lookout run` will not start without it)"
    ]
    status, _, err = config_check(tmp_path, text, "--strict", "--elsewhere")
    assert status == 2 and "not both" in err


# -- a key given twice ---------------------------------------------------------------------


def test_a_section_given_twice_is_named_with_both_lines(tmp_path: Path) -> None:
    text = (
        "engine:\n  window_seconds: 60\nsink:\n  path: x.duckdb\nengine:\n  checkpoint_seconds: 5\n"
    )
    (line,) = problems(tmp_path, text)
    assert "duplicate key 'engine'" in line
    assert re.search(r"\bline 5\b", line) and re.search(r"\bline 1\b", line)


def test_a_key_given_twice_inside_a_section_is_named_with_both_lines(tmp_path: Path) -> None:
    (line,) = problems(tmp_path, "engine:\n  window_seconds: 60\n  window_seconds: 30\n")
    assert "duplicate key 'window_seconds'" in line
    assert re.search(r"\bline 3\b", line) and re.search(r"\bline 2\b", line)


def test_a_key_given_twice_fails_config_check(tmp_path: Path) -> None:
    status, out, err = config_check(tmp_path, "engine: {}\nengine: {}\n")
    assert status == 2 and out == ""
    assert len(err.splitlines()) == 1 and "duplicate key 'engine'" in err


def test_a_key_that_overrides_a_merge_is_not_a_duplicate(tmp_path: Path) -> None:
    (tmp_path / "merge.yaml").write_text(
        "engine:\n  <<: {window_seconds: 60, checkpoint_seconds: 5}\n  window_seconds: 30\n"
    )
    config = load_config(tmp_path / "merge.yaml")
    assert (config.engine.window_seconds, config.engine.checkpoint_seconds) == (30, 5.0)


# -- booleans for numbers ------------------------------------------------------------------


def test_booleans_for_numbers_are_refused_one_line_each(tmp_path: Path) -> None:
    text = (
        "engine: {allowed_lateness_seconds: true, checkpoint_seconds: true}\n"
        "detectors: {safety: {min_calls: true}}\n"
    )
    assert problems(tmp_path, text) == [
        "engine.allowed_lateness_seconds: expected a number, not a boolean (got true)",
        "engine.checkpoint_seconds: expected a number, not a boolean (got true)",
        "detectors.safety.min_calls: expected a number, not a boolean (got true)",
    ]


def test_a_boolean_for_a_number_fails_config_check(tmp_path: Path) -> None:
    status, out, err = config_check(tmp_path, "engine: {allowed_lateness_seconds: true}\n")
    assert (status, out) == (2, "")
    assert err.splitlines() == [
        f"{tmp_path / 'lookout.yaml'}: engine.allowed_lateness_seconds: "
        "expected a number, not a boolean (got true)"
    ]


def test_a_boolean_for_a_number_is_refused_in_code_too() -> None:
    with pytest.raises(pydantic.ValidationError, match="expected a number, not a boolean"):
        LookoutConfig.model_validate({"engine": {"allowed_lateness_seconds": False}})


def test_booleans_for_booleans_and_numbers_for_numbers_still_load(tmp_path: Path) -> None:
    (tmp_path / "ok.yaml").write_text(
        "metrics: {enabled: false}\n"
        "engine: {allowed_lateness_seconds: 0, window_seconds: 1}\n"
        "alerting: {routes: [{receivers: [log], continue: true}]}\n"
    )
    config = load_config(tmp_path / "ok.yaml")
    assert config.metrics.enabled is False
    assert config.engine.allowed_lateness_seconds == 0.0
    assert config.alerting.routes[0].continue_ is True


def test_an_environment_number_is_not_a_boolean(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`LOOKOUT_…` values are strings: `1` stays a number, and overrides a file's boolean."""
    monkeypatch.setenv("LOOKOUT_ENGINE__ALLOWED_LATENESS_SECONDS", "1")
    (tmp_path / "env.yaml").write_text("engine: {allowed_lateness_seconds: true}\n")
    assert load_config(tmp_path / "env.yaml").engine.allowed_lateness_seconds == 1.0


@pytest.mark.parametrize(
    "example", sorted((REPO / "examples").glob("*.yaml")), ids=lambda p: p.name
)
def test_every_example_still_loads(example: Path) -> None:
    load_config(example)


def test_the_readme_configuration_still_loads(tmp_path: Path) -> None:
    readme = (REPO / "README.md").read_text()
    (block,) = re.findall(r"^```yaml\n(.*?)^```", readme, flags=re.MULTILINE | re.DOTALL)
    (tmp_path / "readme.yaml").write_text(block)
    load_config(tmp_path / "readme.yaml")


def test_a_file_source_that_is_not_there_is_a_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found by a newcomer: `config check` said ok, and `lookout run` then stopped on the
    missing input (a path relative to another folder)."""
    monkeypatch.chdir(tmp_path)
    code, _, err = config_check(tmp_path, "source: {kind: file, path: logs.ndjson}\n")
    assert code == 0, err
    assert "source.path logs.ndjson: no such file (read from the current folder" in err
    (tmp_path / "logs.ndjson").write_text("")
    code, _, err = config_check(tmp_path, "source: {kind: file, path: logs.ndjson}\n")
    assert code == 0 and "no such file" not in err, err
    # what run reads that is not a file: a named pipe (found in review)
    os.mkfifo(tmp_path / "logs.fifo")
    code, _, err = config_check(tmp_path, "source: {kind: file, path: logs.fifo}\n")
    assert code == 0 and "no such file" not in err, err


# -- an operator's trial: where a problem is, as the file says it ----------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "sink: {memory_limit: lots}\n",
            "sink.memory_limit: expected a size such as 256MB, 1GB or 512MiB, got 'lots'",
        ),
        (
            "source: {kind: pubsub, project: p, subscription: s, max_mesages: 5}\n",
            "source.max_mesages: unknown key for kind 'pubsub' (did you mean 'max_messages'?)",
        ),
        ("sink: {duckdb: {path: x}}\n", "sink.duckdb: unknown key for kind 'duckdb'"),
    ],
)
def test_a_problem_is_named_by_the_key_path_of_the_file(
    tmp_path: Path, text: str, expected: str
) -> None:
    """`sink.duckdb.memory_limit` named a key no file has: `duckdb` is the tag pydantic adds
    for the member of the `sink` union it checked."""
    assert problems(tmp_path, text) == [expected]


def test_a_yaml_error_says_where_what_it_broke_began(tmp_path: Path) -> None:
    """A quote left open on line 2 is found at the end of the file; both places are named."""
    (found,) = problems(tmp_path, 'sink:\n  path: "abc\nengine:\n  window_seconds: 60\n')
    assert found == (
        "not valid YAML at line 5, column 1: found unexpected end of stream "
        "(while scanning a quoted scalar at line 2, column 9)"
    )


def test_an_empty_file_is_warned_about(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A blank ConfigMap mount ran a worker on stdin with every default, and said nothing."""
    (tmp_path / "lookout.yaml").write_text("# nothing but a comment\n")
    assert load_config(tmp_path / "lookout.yaml") == load_config(None)
    assert "is empty (or only comments): every setting is its default or a LOOKOUT_" in caplog.text
