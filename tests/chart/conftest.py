"""Shared helpers for the chart and image tests: render `helm/lookout` as `helm template` would.

There is no cluster and no helm binary here: the chart is rendered through Helm's own Go SDK
(helm-python-sdk), which applies values.schema.json exactly as `helm install` does, and the
objects are then checked against the Kubernetes API schemas and the vendored CRD schemas.
"""

from __future__ import annotations

import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import helm_python
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "helm" / "lookout"
RELEASE = "lookout"
NAMESPACE = "monitoring-llm"
README_VALUES = "readme-my-values"
#: the values a user would install with: the defaults, each ci/*.yaml on top of them, and the
#: README's `my-values.yaml` example (so the README cannot show values the chart refuses)
VALUES_FILES = (
    "default",
    *sorted(p.stem for p in (CHART / "ci").glob("*.yaml")),
    README_VALUES,
)


@dataclass(frozen=True)
class Rendered:
    objects: list[dict[str, Any]]
    notes: str

    def of_kind(self, kind: str) -> list[dict[str, Any]]:
        return [o for o in self.objects if o["kind"] == kind]

    def workloads(self) -> list[dict[str, Any]]:
        """Every object that runs pods: ingest's Deployment, the one-pod StatefulSets."""
        return self.of_kind("Deployment") + self.of_kind("StatefulSet")

    def one(self, kind: str, name: str) -> dict[str, Any]:
        found = [o for o in self.of_kind(kind) if o["metadata"]["name"] == name]
        assert len(found) == 1, f"{kind}/{name}: {len(found)} rendered"
        return found[0]


def load_values(name: str) -> dict[str, Any]:
    if name == "default":
        return {}
    if name == README_VALUES:
        readme = (REPO / "README.md").read_text()
        after = readme[readme.index("in `my-values.yaml`") :]
        text = after[after.index("```text\n") + len("```text\n") : after.index("\n```\n")]
        loaded = yaml.safe_load(text)
    else:
        loaded = yaml.safe_load((CHART / "ci" / f"{name}.yaml").read_text())
    assert isinstance(loaded, dict)
    return loaded


def render(values: dict[str, Any]) -> Rendered:
    """The chart's manifests for these values (on top of values.yaml), as `helm template`."""
    chart = helm_python.Chart.load(str(CHART))
    manifests = chart.render(values, name=RELEASE, namespace=NAMESPACE)
    objects = [
        doc
        for path, text in sorted(manifests.items())
        if path.endswith((".yaml", ".yml"))
        for doc in yaml.safe_load_all(text)
        if doc
    ]
    notes = next((text for path, text in manifests.items() if path.endswith("NOTES.txt")), "")
    return Rendered(objects, notes)


def render_error(values: dict[str, Any]) -> str:
    """The message `helm install` would print for these values (the render must fail)."""
    with pytest.raises(helm_python.HelmError) as caught:
        render(values)
    return str(caught.value)


def require_tool(name: str) -> str:
    """A command-line tool's path; missing is a failure under CI=true, a skip elsewhere."""
    found = shutil.which(name) or shutil.which(name, path=str(Path(sys.executable).parent))
    if found is None:
        message = f"{name} is not installed (make tools installs it)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return found


def container(deployment: dict[str, Any]) -> dict[str, Any]:
    containers = deployment["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    result: dict[str, Any] = containers[0]
    return result
