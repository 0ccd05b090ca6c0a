"""The rooms of DESIGN.md hold: the engine never imports a concrete source, sink or the CLI,
and only `worker/cli/` wires sources and sinks to it. An import across a wall is a design
change, so it fails here rather than slipping in."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

#: folder → the project packages its modules may import
ALLOWED: dict[str, tuple[str, ...]] = {
    "schemas": ("schemas",),
    "detectors": ("schemas", "detectors"),
    "alerts": ("schemas", "alerts"),
    "worker": ("schemas", "detectors", "alerts", "worker"),
    "worker/sources": ("schemas", "detectors", "alerts", "worker"),
    "worker/sinks": ("schemas", "detectors", "alerts", "worker"),
}
SHELL = ("worker.sources", "worker.sinks", "worker.cli")


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def _room(path: Path) -> str:
    relative = path.relative_to(ROOT).parent.as_posix()
    if relative.startswith("worker/cli"):
        return "worker/cli"  # the wiring: may import every room
    return relative if relative in ALLOWED else relative.split("/")[0]


def test_each_room_imports_only_what_design_allows() -> None:
    ours = ("schemas", "detectors", "alerts", "worker")
    problems = []
    for folder in ours:
        for path in sorted((ROOT / folder).rglob("*.py")):
            room = _room(path)
            if room not in ALLOWED:
                continue  # worker/cli may import everything
            for name in _imports(path):
                top = name.split(".")[0]
                if top in ours and top not in ALLOWED[room]:
                    problems.append(f"{path.relative_to(ROOT)} imports {name}")
                if room == "worker" and name.startswith(SHELL):
                    problems.append(f"{path.relative_to(ROOT)} (engine) imports {name}")
                if room == "worker/sinks" and name.startswith(("worker.sources", "worker.cli")):
                    problems.append(f"{path.relative_to(ROOT)} imports {name}")
    assert problems == []


def test_cli_modules_do_not_import_each_other_in_a_circle() -> None:
    cli = ROOT / "worker" / "cli"
    graph = {
        f"worker.cli.{p.stem}": {n for n in _imports(p) if n.startswith("worker.cli.")}
        for p in cli.glob("*.py")
        if p.stem != "__init__"
    }

    def reaches(start: str, target: str, seen: set[str]) -> bool:
        for nxt in graph.get(start, ()):
            if nxt == target or (nxt not in seen and reaches(nxt, target, seen | {nxt})):
                return True
        return False

    circles = [m for m in graph if reaches(m, m, {m})]
    assert circles == []
