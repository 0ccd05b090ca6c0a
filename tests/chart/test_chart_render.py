"""The chart renders with every values file, and every object it renders would be accepted by a
Kubernetes 1.30 API server: built-in kinds by the API's own schemas (strict: unknown fields are
errors), KEDA and Prometheus Operator kinds by the schemas converted from their CRDs."""

from __future__ import annotations

import json
import subprocess
import sys
from functools import cache
from typing import Any

import helm_python
import jsonschema
import kubernetes_validate
import pytest

from tests.chart.conftest import CHART, REPO, VALUES_FILES, Rendered, load_values, render

KUBERNETES_VERSION = "1.30"
CRD_SCHEMAS = REPO / "tests" / "fixtures" / "crd-schemas"
CUSTOM_GROUPS = ("keda.sh/", "monitoring.coreos.com/", "monitoring.googleapis.com/")


@cache
def crd_validator(api_version: str, kind: str) -> jsonschema.Draft7Validator:
    group, version = api_version.split("/")
    path = CRD_SCHEMAS / f"{kind.lower()}-{group.split('.')[0]}-{version}.json"
    assert path.exists(), f"no vendored CRD schema for {kind} {api_version}: {path.name}"
    return jsonschema.Draft7Validator(json.loads(path.read_text()))


def validate(obj: dict[str, Any]) -> list[str]:
    """Every reason the API server would refuse this object (empty: accepted)."""
    where = f"{obj['kind']}/{obj['metadata']['name']}"
    if obj["apiVersion"].startswith(CUSTOM_GROUPS):
        validator = crd_validator(obj["apiVersion"], obj["kind"])
        return [f"{where}: {e.json_path}: {e.message}" for e in validator.iter_errors(obj)]
    try:
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
    except kubernetes_validate.ValidationError as error:
        return [f"{where}: {error.message}"]
    return []


@pytest.fixture(scope="module", params=VALUES_FILES)
def rendered(request: pytest.FixtureRequest) -> Rendered:
    return render(load_values(request.param))


def test_every_rendered_object_validates_strictly(rendered: Rendered) -> None:
    assert rendered.objects
    problems = [p for obj in rendered.objects for p in validate(obj)]
    assert problems == []


def test_full_values_render_every_feature() -> None:
    """Split mode with KEDA, Prometheus Operator and every receiver: all of it is there."""
    kinds = sorted({o["kind"] for o in render(load_values("full-values")).objects})
    assert kinds == [
        "ConfigMap",
        "Deployment",
        "NetworkPolicy",
        "PersistentVolumeClaim",
        "PodDisruptionBudget",
        "PrometheusRule",
        "ScaledObject",
        "Service",
        "ServiceAccount",
        "ServiceMonitor",
        "StatefulSet",
        "TriggerAuthentication",
    ]


def test_the_validators_refuse_what_a_cluster_refuses() -> None:
    """A typo'd field in a built-in kind and in a custom resource is caught: the strict checks
    above are not vacuous."""
    full = render(load_values("full-values"))
    deployment = json.loads(json.dumps(full.workloads()[0]))
    deployment["spec"]["template"]["spec"]["containers"][0]["livenesProbe"] = {}
    assert validate(deployment)
    scaled = json.loads(json.dumps(full.of_kind("ScaledObject")[0]))
    scaled["spec"]["maxReplicas"] = 3
    assert any("maxReplicas" in p for p in validate(scaled))


def test_scaled_object_min_replicas_within_max() -> None:
    """ScaledObject's CEL rule, which JSON Schema cannot carry: min ≤ max replicas."""
    for name in VALUES_FILES:
        for scaled in render(load_values(name)).of_kind("ScaledObject"):
            spec = scaled["spec"]
            assert spec["minReplicaCount"] <= spec["maxReplicaCount"]


def test_chart_lints_clean() -> None:
    for name in VALUES_FILES:
        report = helm_python.lint(str(CHART), load_values(name), strict=True)
        problems = [m for m in report["messages"] if m["severity"] >= 2]
        assert (report["errors"], problems) == ([], []), name


def test_vendored_crd_schemas_match_their_crds() -> None:
    """The JSON Schemas are what scripts/crd_to_jsonschema.py makes of the vendored CRDs."""
    done = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "crd_to_jsonschema.py"), "--check"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    # KEDA's two kinds, the Prometheus Operator's two, Managed Service for Prometheus's three
    # (each served as v1 and v1alpha1)
    assert len(list(CRD_SCHEMAS.glob("*.json"))) == 10


def test_managed_prometheus_scrapes_and_evaluates_the_rules_without_an_operator() -> None:
    """GKE Autopilot runs no Prometheus Operator: a ServiceMonitor and a PrometheusRule are
    refused there (no such kinds). Managed Service for Prometheus scrapes a PodMonitoring,
    evaluates a Rules resource in the release's namespace, and reads Cloud Monitoring's
    metrics (the subscription backlog) only from a GlobalRules."""
    operator = render(load_values("all-pubsub-values") | {"prometheusRule": {"enabled": True}})
    managed = render(load_values("gke-autopilot-values"))
    assert not managed.of_kind("ServiceMonitor") and not managed.of_kind("PrometheusRule")
    (monitoring,) = managed.of_kind("PodMonitoring")
    (deployment,) = managed.workloads()
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert monitoring["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    ports = {
        p["name"]
        for c in deployment["spec"]["template"]["spec"]["containers"]
        for p in c.get("ports", [])
    }
    assert [e["port"] for e in monitoring["spec"]["endpoints"]] == [
        "metrics"
    ] and "metrics" in ports
    # the rules' job matcher is the PodMonitoring's name, as it is the Service's with an operator
    (service,) = operator.of_kind("Service")
    assert monitoring["metadata"]["name"] == service["metadata"]["name"]

    def alerts(groups: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
        return {r["alert"] + str(i): r for g in groups for i, r in enumerate(g["rules"])}

    (rule,) = operator.of_kind("PrometheusRule")
    (rules,) = managed.of_kind("Rules")
    (global_rules,) = managed.of_kind("GlobalRules")
    expected = alerts(rule["spec"]["groups"])
    backlog = {k: v for k, v in expected.items() if k.startswith("LookoutBacklogGrowing")}
    assert len(backlog) == 1
    assert alerts(rules["spec"]["groups"]) == {
        k: v for k, v in expected.items() if k not in backlog
    }
    [on_operator] = backlog.values()
    [on_managed] = [r for g in global_rules["spec"]["groups"] for r in g["rules"]]
    assert "stackdriver_pubsub_subscription_" in on_operator["expr"]
    assert (
        on_managed["expr"].count(
            "pubsub_googleapis_com:subscription_num_undelivered_messages"
            '{subscription_id="lookout", project_id="my-project"}'
        )
        == 2
    )
    assert (
        on_managed["for"] == on_operator["for"]
        and on_managed["annotations"] == on_operator["annotations"]
    )


def test_split_mode_runs_many_ingest_replicas_and_one_evaluator() -> None:
    full = render(load_values("full-values"))
    ingest = full.one("Deployment", "lookout-ingest")
    evaluate = full.one("StatefulSet", "lookout-evaluate")
    assert evaluate["spec"]["replicas"] == 1
    # a StatefulSet never runs a second pod while the first may still live on a lost node
    assert evaluate["spec"]["updateStrategy"] == {"type": "RollingUpdate"}
    # a pod that never gets ready must not block the rollout that would fix it
    assert evaluate["spec"]["podManagementPolicy"] == "Parallel"
    assert full.one("Service", evaluate["spec"]["serviceName"])
    assert full.of_kind("Deployment") == [ingest]
    # KEDA owns ingest's replica count; a fixed count would fight it on every upgrade
    assert "replicas" not in ingest["spec"]
    scaled = full.one("ScaledObject", "lookout-ingest")
    assert scaled["spec"]["scaleTargetRef"]["name"] == "lookout-ingest"
    trigger = scaled["spec"]["triggers"][0]
    assert trigger["type"] == "gcp-pubsub"
    assert trigger["metadata"]["subscriptionName"] == "projects/my-project/subscriptions/lookout"
    auth = full.one("TriggerAuthentication", trigger["authenticationRef"]["name"])
    assert auth["spec"] == {"podIdentity": {"provider": "gcp"}}
    assert full.of_kind("HorizontalPodAutoscaler") == []


def test_split_mode_without_keda_scales_ingest_on_cpu() -> None:
    split = render(load_values("split-hpa-values"))
    (hpa,) = split.of_kind("HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"]["name"] == "lookout-ingest"
    assert hpa["spec"]["metrics"][0]["resource"]["name"] == "cpu"
    assert split.of_kind("ScaledObject") == []


def test_workload_identity_and_no_key_files() -> None:
    full = render(load_values("full-values"))
    (account,) = full.of_kind("ServiceAccount")
    annotation = account["metadata"]["annotations"]["iam.gke.io/gcp-service-account"]
    assert annotation == "lookout@my-project.iam.gserviceaccount.com"
    for deployment in full.workloads():
        pod = deployment["spec"]["template"]["spec"]
        assert pod["serviceAccountName"] == account["metadata"]["name"]
        env = {e["name"] for e in pod["containers"][0].get("env", [])}
        assert "GOOGLE_APPLICATION_CREDENTIALS" not in env


def test_pods_are_locked_down() -> None:
    for name in VALUES_FILES:
        for deployment in render(load_values(name)).workloads():
            pod = deployment["spec"]["template"]["spec"]
            assert pod["securityContext"]["runAsNonRoot"] is True
            assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
            box = pod["containers"][0]["securityContext"]
            assert box["readOnlyRootFilesystem"] is True
            assert box["allowPrivilegeEscalation"] is False
            assert box["capabilities"] == {"drop": ["ALL"]}
            resources = pod["containers"][0]["resources"]
            assert resources["requests"]["cpu"] and resources["limits"]["memory"]
            writable = {m["mountPath"] for m in pod["containers"][0]["volumeMounts"]}
            assert {"/tmp", "/var/lib/lookout"} <= writable


def test_network_policy_allows_receivers_only_where_alerts_are_sent() -> None:
    full = render(load_values("full-values"))

    def egress_ports(name: str) -> set[int]:
        policy = full.one("NetworkPolicy", name)
        return {p["port"] for rule in policy["spec"]["egress"] for p in rule.get("ports", [])}

    assert egress_ports("lookout-ingest") == {53, 80, 443, 988}
    # the evaluator also reaches Alertmanager on the port of its configured URL
    assert egress_ports("lookout-evaluate") == {53, 80, 443, 988, 9093}
    default = render({})
    (policy,) = default.of_kind("NetworkPolicy")
    assert policy["spec"]["policyTypes"] == ["Ingress", "Egress"]


def test_every_role_has_a_disruption_budget() -> None:
    for name in VALUES_FILES:
        rendered = render(load_values(name))
        budgets = {p["metadata"]["name"] for p in rendered.of_kind("PodDisruptionBudget")}
        deployments = {d["metadata"]["name"] for d in rendered.workloads()}
        assert budgets == deployments


def test_notes_tell_how_to_check_the_install() -> None:
    notes = render({}).notes
    assert "port-forward statefulset/lookout-all 9464:9464" in notes
    assert "rollout status statefulset/lookout-all" in notes
    assert "/readyz" in notes
    assert 'source.kind is "file"' in notes
    # the default file source is not there: it said the worker reads it and is restarted
    assert "the chart puts no file there" in notes
    full = render(load_values("full-values")).notes
    assert "oncall-pagerduty (pagerduty)" in full
    assert "logs statefulset/lookout-evaluate" in full


def test_every_probe_setting_reaches_the_pod() -> None:
    """probes.startup.timeoutSeconds was accepted by the schema and never rendered."""
    probes = {name: {"timeoutSeconds": 7} for name in ("startup", "liveness", "readiness")}
    (deployment,) = render({"probes": probes}).workloads()
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    for name in probes:
        assert container[f"{name}Probe"]["timeoutSeconds"] == 7, name


def test_extra_volumes_reach_every_pod() -> None:
    """A dead-letter overflow folder, a retune token as a file: the chart had no way to mount
    either."""
    for deployment in render(load_values("full-values")).workloads():
        pod = deployment["spec"]["template"]["spec"]
        volumes = {v["name"]: v for v in pod["volumes"]}
        assert volumes["dead-letter-overflow"]["emptyDir"] == {"sizeLimit": "2Gi"}
        (container,) = pod["containers"]
        mounts = {m["name"]: m for m in container["volumeMounts"]}
        assert mounts["dead-letter-overflow"]["mountPath"] == "/var/lib/lookout-overflow"
        assert {"config", "data", "tmp"} <= set(volumes)


def test_split_mode_notes_check_the_evaluator_s_configuration_too() -> None:
    notes = render(load_values("full-values")).notes
    assert "exec deployment/lookout-ingest -- lookout config check" in notes
    assert "port-forward deployment/lookout-ingest" in notes
    assert "exec statefulset/lookout-evaluate -- lookout config check" in notes


def test_notes_warn_that_an_outbox_on_an_empty_dir_loses_undelivered_pages() -> None:
    slack = {"name": "s", "kind": "slack", "secretRef": {"name": "n", "key": "k"}}
    warned = render({"receivers": [slack]}).notes
    assert "Set all.persistence.enabled=true to keep the outbox" in warned
    kept = render({"receivers": [slack], "all": {"persistence": {"enabled": True}}}).notes
    assert "outbox" not in kept
    assert "outbox" not in render({}).notes  # no receivers: alerts go to the log


def test_notes_warn_that_a_retune_log_on_an_empty_dir_forgets_cooldowns() -> None:
    """The retune log (requests made, cooldowns) lives beside the outbox: on an emptyDir every
    upgrade forgot them, and the install said nothing of it."""
    action = {"name": "r", "kind": "pubsub", "project": "p", "topic": "t", "cooldown": "24h"}
    config = {"config": {"alerting": {"retune": {"actions": [action]}}}}
    warned = render(config).notes
    assert "retune log (requests made, each model's cooldown) is on an emptyDir" in warned
    assert "Set all.persistence.enabled=true to keep" in warned
    kept = render(config | {"all": {"persistence": {"enabled": True}}}).notes
    assert "retune log" not in kept
    assert "retune log" not in render({}).notes


def test_persistent_volume_holds_what_must_survive_a_restart() -> None:
    """The evaluator's alert outbox (and, in mode all, the DuckDB file) on a claimed volume."""
    full = render(load_values("full-values"))
    (claim,) = full.of_kind("PersistentVolumeClaim")
    evaluate = full.one("StatefulSet", "lookout-evaluate")
    volumes = {v["name"]: v for v in evaluate["spec"]["template"]["spec"]["volumes"]}
    assert volumes["data"]["persistentVolumeClaim"]["claimName"] == claim["metadata"]["name"]
    ingest = full.one("Deployment", "lookout-ingest")
    ingest_volumes = {v["name"]: v for v in ingest["spec"]["template"]["spec"]["volumes"]}
    assert ingest_volumes["data"] == {"name": "data", "emptyDir": {}}
    assert render({}).of_kind("PersistentVolumeClaim") == []


def test_a_long_release_name_still_gets_its_pod() -> None:
    """Found in review: a StatefulSet name over 52 characters gets no pod (its pods' label
    controller-revision-hash=<name>-<10-character hash> would pass 63). The name is cut to 52;
    the claim keeps the full name, so the release's data stays where it was."""
    rendered = render({"fullnameOverride": "a" * 60, "all": {"persistence": {"enabled": True}}})
    (workload,) = rendered.of_kind("StatefulSet")
    name = workload["metadata"]["name"]
    assert name == "a" * 52
    (claim,) = rendered.of_kind("PersistentVolumeClaim")
    volumes = {v["name"]: v for v in workload["spec"]["template"]["spec"]["volumes"]}
    assert volumes["data"]["persistentVolumeClaim"]["claimName"] == claim["metadata"]["name"]
    assert claim["metadata"]["name"] == "a" * 60 + "-all-data"
    assert f"port-forward statefulset/{name} 9464:9464" in rendered.notes
    assert f"logs statefulset/{name} -f" in rendered.notes
    split = render(load_values("full-values") | {"fullnameOverride": "b" * 60})
    assert [w["metadata"]["name"] for w in split.of_kind("StatefulSet")] == ["b" * 52]
    assert f"exec statefulset/{'b' * 52} -- lookout config check" in split.notes
    assert split.one("Deployment", "b" * 60 + "-ingest")  # a Deployment keeps the full name
