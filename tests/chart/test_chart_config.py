"""The config file the chart writes is one Lookout accepts, and the pods carry exactly the
receivers' secrets, by reference, under the names the config file points at."""

from __future__ import annotations

import inspect
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from schemas.config import DuckDBSinkConfig, LookoutConfig
from tests.chart.conftest import (
    VALUES_FILES,
    Rendered,
    container,
    load_values,
    render,
    render_error,
)
from worker.sinks.duckdb_sink import DuckDBSink

LOOKOUT = Path(sys.executable).parent / "lookout"


def _accepts(snippet: dict[str, Any]) -> bool:
    try:
        LookoutConfig.model_validate(snippet)
    except ValidationError:
        return False
    return True


# Pieces built in parallel with the chart (CONTRACTS.md). Until they are merged, `lookout config
# check` refuses the config sections they add, so the values files that use them are expected to
# fail here; once merged, these probes turn true and the same tests must pass (strict xfail: a
# pass while the probe is false is reported, so a stale probe cannot hide).
HAS_RECEIVERS = _accepts(
    {"alerting": {"receivers": [{"name": "s", "kind": "slack", "webhook_url": {"env": "X"}}]}}
)
HAS_BIGQUERY_SINK = _accepts({"sink": {"kind": "bigquery", "project": "p", "dataset": "d"}})


def _missing_pieces(config: dict[str, Any]) -> list[str]:
    missing = []
    if config.get("alerting", {}).get("receivers") and not HAS_RECEIVERS:
        missing.append("alerting.receivers (the receivers piece)")
    if config.get("sink", {}).get("kind") == "bigquery" and not HAS_BIGQUERY_SINK:
        missing.append("sink.kind=bigquery (the BigQuery sink piece)")
    return missing


def config_maps(rendered: Rendered) -> dict[str, str]:
    return {c["metadata"]["name"]: c["data"]["lookout.yaml"] for c in rendered.of_kind("ConfigMap")}


def secret_env(deployment: dict[str, Any]) -> dict[str, tuple[str, str]]:
    """Env var name -> (Secret name, key) for every secretKeyRef of the pod."""
    refs = {}
    for var in container(deployment).get("env", []):
        ref = var.get("valueFrom", {}).get("secretKeyRef")
        if ref is not None:
            refs[var["name"]] = (ref["name"], ref["key"])
    return refs


#: the keys of a receiver in values.yaml that name a Secret and key
SECRET_REF_KEYS = ("secretRef", "hmacSecretRef", "urlSecretRef", "bearerTokenSecretRef")


def values_secret_refs(receiver: dict[str, Any]) -> set[tuple[str, str]]:
    """(Secret name, key) of every secret one receiver of values.yaml reads."""
    refs = [receiver[key] for key in SECRET_REF_KEYS if key in receiver]
    if "basicAuth" in receiver:
        refs.append(receiver["basicAuth"]["passwordSecretRef"])
    return {(ref["name"], ref["key"]) for ref in refs}


def config_env_refs(receiver: dict[str, Any]) -> set[str]:
    """Every `{env: NAME}` in one receiver of the rendered config, nested ones included
    (`basic_auth.password`)."""
    found = set()
    for value in receiver.values():
        if isinstance(value, dict):
            if "env" in value:
                found.add(value["env"])
            else:
                found |= config_env_refs(value)
    return found


def _cases() -> list[Any]:
    cases = []
    for name in VALUES_FILES:
        rendered = render(load_values(name))
        for deployment in rendered.workloads():
            role = deployment["metadata"]["name"].removeprefix("lookout-")
            text = config_maps(rendered)[f"lookout-{role}"]
            missing = _missing_pieces(yaml.safe_load(text))
            marks = [pytest.mark.xfail(reason=", ".join(missing), strict=True)] if missing else []
            cases.append(pytest.param(deployment, text, id=f"{name}-{role}", marks=marks))
    return cases


@pytest.mark.parametrize(("deployment", "text"), _cases())
def test_rendered_config_passes_lookout_config_check(
    deployment: dict[str, Any], text: str, tmp_path: Path
) -> None:
    """`lookout config check` on the ConfigMap, in the environment the pod would have: the
    secretKeyRef variables set (to stand-in values) and nothing else of Lookout's. The pod's
    volumes are not on this machine: `--elsewhere` makes their missing folders warnings."""
    path = tmp_path / "lookout.yaml"
    path.write_text(text)
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOOKOUT_")}
    stand_ins = {
        var: f"stand-in-{secret}-{key}" for var, (secret, key) in secret_env(deployment).items()
    }
    env.update(stand_ins)
    done = subprocess.run(
        [str(LOOKOUT), "config", "check", "--elsewhere", str(path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"{path}: ok" in done.stdout
    role = container(deployment)["args"][-1]
    assert f"role: {role}" in done.stdout
    for value in stand_ins.values():
        assert value not in done.stdout + done.stderr


@pytest.mark.parametrize("name", VALUES_FILES)
def test_secrets_referenced_are_exactly_the_receivers(name: str) -> None:
    values = load_values(name)
    rendered = render(values)
    expected = set()
    for receiver in values.get("receivers", []):
        expected |= values_secret_refs(receiver)
    maps = config_maps(rendered)
    for deployment in rendered.workloads():
        role = deployment["metadata"]["name"].removeprefix("lookout-")
        refs = secret_env(deployment)
        config = yaml.safe_load(maps[f"lookout-{role}"])
        receivers = config.get("alerting", {}).get("receivers", [])
        named = {env for r in receivers for env in config_env_refs(r)}
        if role == "ingest":
            # ingest never notifies: no receiver, no secret
            assert (refs, receivers) == ({}, [])
            continue
        assert set(refs.values()) == expected
        # every {env: NAME} in the config is a secretKeyRef variable of the pod, and vice versa
        assert named == set(refs)
        assert [r["name"] for r in receivers] == [r["name"] for r in values.get("receivers", [])]
        if receivers:
            # undelivered notifications wait on the data volume, not the read-only root
            mounts = {m["name"]: m["mountPath"] for m in container(deployment)["volumeMounts"]}
            outbox = Path(config["alerting"]["outbox_path"])
            assert outbox.parent == Path(mounts["data"])


def test_no_secret_value_is_inline_anywhere() -> None:
    """Receivers' secrets only by reference: nothing the chart renders holds a Secret's data,
    and the config names where each secret lives, never a URL or key."""
    rendered = render(load_values("full-values"))
    assert rendered.of_kind("Secret") == []
    for text in config_maps(rendered).values():
        config = yaml.safe_load(text)
        for receiver in config.get("alerting", {}).get("receivers", []):
            for field in ("webhook_url", "routing_key", "hmac_secret", "bearer_token"):
                if field in receiver:
                    assert set(receiver[field]) == {"env"}
            if "basic_auth" in receiver:
                assert set(receiver["basic_auth"]["password"]) == {"env"}
            url = receiver.get("url")
            if receiver["kind"] == "webhook" or isinstance(url, dict):
                assert set(url) == {"env"}


def test_worker_flushes_before_the_kubelet_kills_it() -> None:
    for name in VALUES_FILES:
        rendered = render(load_values(name))
        maps = config_maps(rendered)
        for deployment in rendered.workloads():
            role = deployment["metadata"]["name"].removeprefix("lookout-")
            grace = yaml.safe_load(maps[f"lookout-{role}"])["engine"]["grace_period_seconds"]
            pod = deployment["spec"]["template"]["spec"]
            assert 0 < grace < pod["terminationGracePeriodSeconds"]


def test_the_default_grace_outlasts_a_final_bigquery_checkpoint() -> None:
    """A final checkpoint writes up to 4 BigQuery tables per split role (8 in mode all) in turn,
    each retrying for writeTimeoutSeconds; with the 30 s grace the chart had, the kubelet killed
    a worker whose BigQuery was slow mid-write. Left empty, the grace covers that; DuckDB keeps
    30 s."""
    bigquery: dict[str, Any] = {"kind": "bigquery", "bigquery": {"project": "p", "dataset": "d"}}
    pubsub = {"kind": "pubsub", "pubsub": {"project": "p", "subscription": "s"}}
    cases: list[tuple[dict[str, Any], dict[str, int]]] = [
        ({}, {"all": 30}),
        ({"sink": bigquery}, {"all": 5 + 8 * 30}),
        ({"sink": bigquery, "mode": "split", "source": pubsub}, {"ingest": 125, "evaluate": 125}),
        ({"sink": bigquery, "terminationGracePeriodSeconds": 300}, {"all": 300}),
        # rounded up, never down: 5 + 8 x 30.9 = 252.2
        (
            {
                "sink": {
                    **bigquery,
                    "bigquery": {**bigquery["bigquery"], "writeTimeoutSeconds": 30.9},
                }
            },
            {"all": 253},
        ),
    ]
    for values, expected in cases:
        rendered = render(values)
        maps = config_maps(rendered)
        got = {}
        for deployment in rendered.workloads():
            role = deployment["metadata"]["name"].removeprefix("lookout-")
            got[role] = deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
            engine = yaml.safe_load(maps[f"lookout-{role}"])["engine"]
            assert engine["grace_period_seconds"] == got[role] - 5, values
        assert got == expected, values


def test_config_changes_roll_the_pods() -> None:
    before = render({}).workloads()[0]
    after = render({"config": {"engine": {"window_seconds": 120}}}).workloads()[0]
    key = "checksum/config"
    annotations = [d["spec"]["template"]["metadata"]["annotations"][key] for d in (before, after)]
    assert annotations[0] != annotations[1]


def test_the_bigquery_write_budget_is_a_chart_value() -> None:
    """`config.sink` is refused in favour of the chart's `sink:` values, so every sink option
    an operator may need must be one of them (the refusal's advice must be followable)."""
    for timeout, expected in ((None, 30), (120, 120)):
        bigquery: dict[str, Any] = {"project": "p", "dataset": "d"}
        if timeout is not None:
            bigquery["writeTimeoutSeconds"] = timeout
        # 8 tables x 120 s: the liveness limit must cover such a checkpoint (the chart checks)
        config = {"metrics": {"stall_seconds": 1000}}
        rendered = render({"sink": {"kind": "bigquery", "bigquery": bigquery}, "config": config})
        for text in config_maps(rendered).values():
            assert yaml.safe_load(text)["sink"]["write_timeout_seconds"] == expected


def test_a_duckdb_install_keeps_eight_days_of_windows_unless_told_otherwise() -> None:
    """The chart runs for months on a volume of fixed size: without a retention the DuckDB file
    grows until the volume is full and every checkpoint fails."""
    for retention, expected in (
        ({}, 8),
        ({"retentionDays": 30}, 30),
        ({"retentionDays": None}, None),
    ):
        rendered = render({"sink": {"duckdb": retention}})
        [text] = config_maps(rendered).values()
        sink = yaml.safe_load(text)["sink"]
        assert sink.get("retention_days") == expected
        parsed = LookoutConfig.model_validate(yaml.safe_load(text)).sink
        assert isinstance(parsed, DuckDBSinkConfig) and parsed.retention_days == expected
    assert "retentionDays" in render_error({"sink": {"duckdb": {"retentionDays": 0.5}}})
    notes = render({}).notes
    assert "keeps 8 days of windows" in notes
    assert "grows" in render({"sink": {"duckdb": {"retentionDays": None}}}).notes


def startup_budgets(values: dict[str, Any]) -> set[int]:
    """periodSeconds x failureThreshold of every Deployment's startup probe."""
    probes = [container(d)["startupProbe"] for d in render(values).workloads()]
    return {p["periodSeconds"] * p["failureThreshold"] for p in probes}


def test_the_startup_probe_outlasts_the_start_up_check_of_an_unreachable_bigquery() -> None:
    """With writeTimeoutSeconds 120 (full-values.yaml) the worker says `BigQuery did not answer
    ... check network access` after about 120 s, but the probe gave up at 120 s: the pod was
    restarted with "connection refused" in its events and nothing in its log."""
    assert startup_budgets({}) == {120}  # DuckDB: unchanged
    full = load_values("full-values")
    assert full["sink"]["bigquery"]["writeTimeoutSeconds"] == 120
    assert startup_budgets(full) == {150}  # 120 s + 30 s to start and say so
    slow = {**full, "probes": {"startup": {"periodSeconds": 10, "failureThreshold": 20}}}
    assert startup_budgets(slow) == {200}  # a larger one is kept
    short = {**full, "probes": {"startup": {"periodSeconds": 2, "failureThreshold": 60}}}
    said = render_error(short)
    assert "probes.startup" in said and "at least 75" in said


def test_a_chart_install_gives_duckdb_the_cache_lookout_was_measured_with() -> None:
    """DuckDB keeps what the sink wrote cached up to `memory_limit`: with 256MB a pod's memory
    rose with its file for a day (291 MB at 1M records, 429 MB at 9M); with 64MB it stayed at
    260-275 MB (README: Performance). The chart, the config file and a sink opened in code must
    not drift apart, and the limit must reach DuckDB."""
    rendered = render({})
    [text] = config_maps(rendered).values()
    assert yaml.safe_load(text)["sink"]["memory_limit"] == "64MB"
    assert DuckDBSinkConfig().memory_limit == "64MB"
    signature = inspect.signature(DuckDBSink)
    assert signature.parameters["memory_limit"].default == "64MB"
    sink = DuckDBSink(":memory:")
    try:
        [(limit,)] = sink.query("SELECT current_setting('memory_limit')")
    finally:
        sink.close()
    assert limit == "61.0 MiB"  # 64MB, as DuckDB prints it
