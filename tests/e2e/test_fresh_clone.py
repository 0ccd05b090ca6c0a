"""The repository stands alone: a `git clone` into an empty directory, with nothing beside it,
collects the whole suite and passes an end-to-end test.

The clone holds only committed files (what a new user gets), so a fixture that was never added,
or a path that climbs out of the repository (into a shared folder beside it), fails here. The
clone runs with this venv's interpreter and `lookout` script but with PYTHONPATH pointing at the
clone, and the test checks that the clone's code, not this checkout's, is what gets imported.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.conftest import REPLAY_TIMEOUT, clean_env

ROOT = Path(__file__).resolve().parents[2]
#: the end-to-end test the clone runs: simulate, replay, decode, config check, sql, as the
#: README says, in the clone's own directory
E2E_TEST = "tests/e2e/test_readme.py"


@pytest.fixture(scope="module")
def clone(tmp_path_factory: pytest.TempPathFactory) -> Path:
    git = shutil.which("git")
    if git is None:
        pytest.fail("git is not installed", pytrace=False)
    if not (ROOT / ".git").exists():
        pytest.fail(f"{ROOT} is not a git checkout; this test clones it", pytrace=False)
    empty = tmp_path_factory.mktemp("fresh")
    target = empty / "lookout"
    done = subprocess.run(
        [git, "clone", "--quiet", "--no-hardlinks", str(ROOT), str(target)],
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode()
    assert sorted(p.name for p in empty.iterdir()) == ["lookout"], "nothing beside the clone"
    return target


def in_clone(
    clone: Path, *args: str, timeout: float = REPLAY_TIMEOUT
) -> subprocess.CompletedProcess[str]:
    env = clean_env({"PYTHONPATH": str(clone), "PYTHONDONTWRITEBYTECODE": "1"})
    env.pop("PYTEST_ADDOPTS", None)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return subprocess.run(
        [sys.executable, *args],
        cwd=clone,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def test_the_clone_imports_its_own_code(clone: Path) -> None:
    done = in_clone(clone, "-c", "import worker.cli, schemas, tests; print(worker.cli.__file__)")
    assert done.returncode == 0, done.stderr
    assert Path(done.stdout.strip()).is_relative_to(clone), done.stdout


def test_the_clone_collects_the_whole_suite(clone: Path) -> None:
    done = in_clone(clone, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    collected = [line for line in done.stdout.splitlines() if "::" in line]
    here = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=REPLAY_TIMEOUT,
        check=False,
    )
    assert len(collected) > 100
    # the clone has every committed test; uncommitted work in this checkout may add more
    assert len(collected) <= len([line for line in here.stdout.splitlines() if "::" in line])


def test_an_end_to_end_test_passes_in_the_clone(clone: Path) -> None:
    done = in_clone(clone, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", E2E_TEST)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert " passed" in done.stdout and "skipped" not in done.stdout


def test_no_tracked_file_names_a_path_outside_the_repository(clone: Path) -> None:
    outside = ("../" + "shared", "/work" + "/shared")
    done = subprocess.run(
        ["git", "grep", "-n", "-F", *(arg for p in outside for arg in ("-e", p))],
        cwd=clone,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1, f"paths outside the repository:\n{done.stdout}"
