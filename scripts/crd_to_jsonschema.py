#!/usr/bin/env python3
"""Convert CustomResourceDefinitions' openAPIV3Schema into JSON Schema files the chart tests
validate rendered custom resources against (no cluster here to do it).

    .venv/bin/python scripts/crd_to_jsonschema.py            # rewrite the vendored schemas
    .venv/bin/python scripts/crd_to_jsonschema.py --check    # exit 1 if they are stale

Reads tests/fixtures/crd-schemas/crds/*.yaml (upstream CRDs, unchanged; see the README there)
and writes one `<kind>-<group>-<version>.json` per served version beside them. The conversion
follows what the API server enforces, as far as JSON Schema can say it:

- an object with `properties` rejects unknown fields (`additionalProperties: false`) unless it
  sets `x-kubernetes-preserve-unknown-fields` or has its own `additionalProperties`;
- `x-kubernetes-int-or-string` becomes `anyOf: [integer, string]`;
- `nullable: true` adds `null` to the type;
- a `pattern` with Go's inline flags (`(?i)`) is dropped (Python's validators reject it);
- CEL rules (`x-kubernetes-validations`) and other `x-kubernetes-*` markers are dropped: they are
  not JSON Schema. apiVersion and kind are pinned to the CRD's group/version and kind.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
CRD_DIR = ROOT / "tests" / "fixtures" / "crd-schemas" / "crds"
OUT_DIR = ROOT / "tests" / "fixtures" / "crd-schemas"
_INLINE_FLAGS = re.compile(r"\(\?[a-zA-Z]+\)")


def convert_node(node: Any) -> Any:
    """One openAPIV3Schema node (and everything under it) as JSON Schema."""
    if isinstance(node, list):
        return [convert_node(item) for item in node]
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key.startswith("x-kubernetes-") or key == "nullable":
            continue
        if key in ("properties", "patternProperties", "definitions"):
            out[key] = {name: convert_node(sub) for name, sub in value.items()}
        elif key == "pattern" and _INLINE_FLAGS.search(value):
            continue
        else:
            out[key] = convert_node(value)
    if node.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if node.get("nullable") and "type" in out:
        out["type"] = [out["type"], "null"]
    preserve = node.get("x-kubernetes-preserve-unknown-fields", False)
    if "properties" in out and "additionalProperties" not in out and not preserve:
        out["additionalProperties"] = False
    return out


def convert_crd(crd: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """File name -> JSON Schema, one per version the CRD serves."""
    group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
    schemas = {}
    for version in crd["spec"]["versions"]:
        if not version.get("served", True):
            continue
        schema = convert_node(version["schema"]["openAPIV3Schema"])
        schema["$schema"] = "http://json-schema.org/draft-07/schema#"
        schema["title"] = f"{kind} {group}/{version['name']}"
        props = schema.setdefault("properties", {})
        props["apiVersion"] = {"const": f"{group}/{version['name']}"}
        props["kind"] = {"const": kind}
        schema["required"] = sorted({*schema.get("required", []), "apiVersion", "kind"})
        name = f"{kind.lower()}-{group.split('.')[0]}-{version['name']}.json"
        schemas[name] = schema
    return schemas


def render_all(crd_dir: Path = CRD_DIR) -> dict[str, str]:
    rendered = {}
    for path in sorted(crd_dir.glob("*.yaml")):
        for name, schema in convert_crd(yaml.safe_load(path.read_text())).items():
            rendered[name] = json.dumps(schema, indent=1, sort_keys=True) + "\n"
    return rendered


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if a vendored file differs")
    args = parser.parse_args()
    stale = []
    for name, text in render_all().items():
        target = OUT_DIR / name
        if args.check:
            if not target.exists() or target.read_text() != text:
                stale.append(name)
        else:
            target.write_text(text)
            print(f"wrote {target.relative_to(ROOT)}")
    if stale:
        print(f"stale CRD schemas (run {Path(__file__).name}): {', '.join(stale)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
