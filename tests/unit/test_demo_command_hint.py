"""The demo's closing hint names the `lookout` it was started by: `.venv/bin/lookout` from the
clone, the absolute path from anywhere else (an analyst was told `../../../work/main/.venv/
bin/lookout sql …`, a path relative to wherever they stood)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from worker.cli.demo import _this_command


def test_the_hint_is_relative_inside_the_clone_and_absolute_outside(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clone = tmp_path / "clone"
    exe = clone / ".venv" / "bin" / "lookout"
    exe.parent.mkdir(parents=True)
    exe.write_text("")
    monkeypatch.setenv("PATH", str(tmp_path / "nothing-here"))
    monkeypatch.setattr(sys, "argv", [str(exe)])
    monkeypatch.chdir(clone)
    assert _this_command() == ".venv/bin/lookout"
    elsewhere = tmp_path / "a" / "b"
    elsewhere.mkdir(parents=True)
    monkeypatch.chdir(elsewhere)
    assert _this_command() == str(exe.resolve())
