"""`metrics.stall_seconds` must outlast an honest checkpoint, or the liveness probe kills pods
mid-write: `sink: {kind: bigquery, write_timeout_seconds: 900}` with `stall_seconds: 10` passed
`lookout config check`, and each replica would be restarted in its first slow checkpoint (its
messages redelivered to the next, which is killed the same way). The rule is refused in one
line naming both keys, their values and the rule; the defaults, the examples and the chart's
values (write timeout 120 s, stall 600 s, split roles) stay valid."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from schemas.config import LookoutConfig
from schemas.config_loading import ConfigError, load_config
from worker.cli.app import app

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _no_lookout_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [n for n in os.environ if n.upper().startswith("LOOKOUT_")]:
        monkeypatch.delenv(name)


def config_check(tmp_path: Path, text: str) -> tuple[int, str, list[str]]:
    path = tmp_path / "lookout.yaml"
    path.write_text(text)
    result = CliRunner().invoke(app, ["config", "check", str(path)], env={"COLUMNS": "200"})
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result.exit_code, result.stdout, result.stderr.splitlines()


def test_a_write_timeout_far_above_the_stall_limit_is_refused(tmp_path: Path) -> None:
    status, out, err = config_check(
        tmp_path,
        "sink: {kind: bigquery, project: p, write_timeout_seconds: 900}\n"
        "metrics: {stall_seconds: 10}\n",
    )
    assert status == 2
    assert "ok" not in out
    assert err == [
        f"{tmp_path / 'lookout.yaml'}: metrics.stall_seconds (10) must be at least "
        "engine.checkpoint_seconds + 8 x sink.write_timeout_seconds (5 + 8 x 900 = 7205): "
        "a checkpoint of role all writes up to 8 BigQuery tables in turn, each retrying for up "
        "to write_timeout_seconds, and /healthz fails (the liveness probe restarts the pod "
        "mid-checkpoint) once the main loop has not come round for stall_seconds"
    ]
    # without /healthz there is no probe to outlast
    status, out, _ = config_check(
        tmp_path,
        "sink: {kind: bigquery, project: p, write_timeout_seconds: 900}\n"
        "metrics: {enabled: false, stall_seconds: 10}\n",
    )
    assert status == 0 and "ok" in out


@pytest.mark.parametrize("role", ["ingest", "evaluate"])
def test_a_split_role_writes_four_tables_per_checkpoint(tmp_path: Path, role: str) -> None:
    sink = "sink: {kind: bigquery, project: p, write_timeout_seconds: 30}\n"
    engine = f"engine: {{role: {role}, checkpoint_seconds: 5}}\n"
    status, _, err = config_check(tmp_path, sink + engine + "metrics: {stall_seconds: 124}\n")
    assert status == 2
    assert len(err) == 1
    assert "metrics.stall_seconds (124) must be at least" in err[0]
    assert "(5 + 4 x 30 = 125)" in err[0] and f"role {role} writes up to 4" in err[0]
    status, out, _ = config_check(tmp_path, sink + engine + "metrics: {stall_seconds: 125}\n")
    assert status == 0 and "ok" in out
    # the defaults, and helm/lookout/ci/full-values.yaml (split roles, a 120 s write timeout
    # under the default 600 s stall limit), stay valid
    LookoutConfig.model_validate({"engine": {"role": role}})
    LookoutConfig.model_validate(
        {"engine": {"role": role}, "sink": {"kind": "bigquery", "project": "p"}}
    )
    chart = {"kind": "bigquery", "project": "p", "write_timeout_seconds": 120}
    LookoutConfig.model_validate({"engine": {"role": role}, "sink": chart})


def test_duckdb_needs_the_stall_limit_above_the_checkpoint_interval(tmp_path: Path) -> None:
    status, _, err = config_check(
        tmp_path, "engine: {checkpoint_seconds: 60}\nmetrics: {stall_seconds: 30}\n"
    )
    assert status == 2
    assert err == [
        f"{tmp_path / 'lookout.yaml'}: metrics.stall_seconds (30) must be at least "
        "engine.checkpoint_seconds + 5 s (60 + 5 = 65): an idle main loop comes round once per "
        "checkpoint interval (the evaluator waits that long between rounds), and a write takes "
        "seconds more, and /healthz fails (the liveness probe restarts the pod mid-checkpoint) "
        "once the main loop has not come round for stall_seconds"
    ]


@pytest.mark.parametrize("example", sorted((REPO / "examples").glob("*.yaml")), ids=str)
def test_every_example_stays_valid_and_the_rule_holds_for_it(example: Path, tmp_path: Path) -> None:
    load_config(example)
    data = yaml.safe_load(example.read_text())
    data["engine"] = {**data.get("engine", {}), "checkpoint_seconds": 30}
    data["metrics"] = {**data.get("metrics", {}), "stall_seconds": 10}
    (tmp_path / "contradictory.yaml").write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError) as caught:
        load_config(tmp_path / "contradictory.yaml")
    assert len(caught.value.problems) == 1
    assert caught.value.problems[0].startswith(
        "metrics.stall_seconds (10) must be at least engine.checkpoint_seconds + "
    )


def test_every_rule_across_sections_is_reported_in_one_run(tmp_path: Path) -> None:
    """A lease shorter than a window, a stall limit below a checkpoint and a route to an
    undeclared receiver: checked one at a time, the file took three runs of `config check` to
    fix; each is one line of the same run now."""
    status, out, err = config_check(
        tmp_path,
        "source: {kind: pubsub, project: p, subscription: s, max_lease_duration_seconds: 70}\n"
        "engine: {window_seconds: 60, checkpoint_seconds: 30}\n"
        "metrics: {stall_seconds: 10}\n"
        "alerting: {routes: [{receivers: [pager]}]}\n",
    )
    assert status == 2 and "ok" not in out
    where = f"{tmp_path / 'lookout.yaml'}: "
    assert len(err) == 3, err
    assert err[0].startswith(where + "source.max_lease_duration_seconds (70) must exceed")
    assert err[1].startswith(where + "metrics.stall_seconds (10) must be at least")
    assert err[2].startswith(where + "receivers not declared in alerting.receivers")
    assert "alerting.routes[0].receivers: 'pager'" in err[2]
