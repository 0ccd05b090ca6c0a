"""Every ordinary install builds the compiled decoder, or says why it cannot.

A decoder that silently falls back to pure Python is several times slower and nobody notices,
so: the image's builder is given what the build needs, `make`'s set-up rebuilds when the
sources change, and an install without a C compiler stops with a message naming the fix.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
#: what setup.py compiles from, beside the packages
BUILD_INPUTS = ("setup.py", "MANIFEST.in", "third_party/")


def test_the_image_builder_gets_what_the_decoder_is_built_from() -> None:
    text = re.sub(r"\\\n", " ", (ROOT / "Dockerfile").read_text())
    builder = text.split("\nFROM ")[1]
    copied = " ".join(
        line.split(None, 1)[1] for line in builder.splitlines() if line.startswith("COPY ")
    )
    for needed in (*BUILD_INPUTS, "schemas/"):
        assert needed in copied.split(), f"the image builder does not COPY {needed}"


def test_make_rebuilds_the_decoder_when_its_sources_change() -> None:
    makefile = (ROOT / "Makefile").read_text()
    stamp = next(line for line in makefile.splitlines() if line.startswith("$(STAMP):"))
    assert "setup.py" in stamp and "_fast*.pyx" in stamp and "_fast*.pxi" in stamp
    assert "pip install" in makefile and "-e ." in makefile


def test_an_install_without_a_c_compiler_stops_with_the_fix(tmp_path: Path) -> None:
    for name in ("pyproject.toml", "setup.py", "MANIFEST.in"):
        shutil.copy(ROOT / name, tmp_path / name)
    for package in ("schemas", "detectors", "worker", "alerts", "third_party"):
        shutil.copytree(
            ROOT / package,
            tmp_path / package,
            ignore=shutil.ignore_patterns("*.so", "_fastdecode.c", "__pycache__"),
        )
    env = {**os.environ, "CC": str(tmp_path / "no-such-compiler")}
    env.pop("LOOKOUT_PURE_PYTHON", None)
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", str(tmp_path / "out"), "."],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode != 0, "a wheel without the compiled decoder was built"
    output = done.stdout + done.stderr
    assert "compiled decoder" in output and "could not be built" in output, output[-3000:]
    assert "apt-get install gcc python3-dev" in output
    assert not list(tmp_path.glob("out/*.whl"))
