"""Build of the compiled decoder (`schemas.decode._fastdecode`), request-id hash and key set
(`detectors._keyhash`), sorted-array walks (`detectors._sorted_walks`) and the incomplete beta
and gamma functions' loops (`detectors._special_loops`); everything else is pyproject.

The decoder is built by every ordinary install (`pip install .`, `make demo`, `make test`, the
image's builder). Without a C compiler or the Python headers the install stops with a message
that says what to install, instead of quietly leaving a decoder several times slower.
`LOOKOUT_PURE_PYTHON=1` installs without it on purpose (the decoder then warns once at run
time, and `make test` with CI=true fails on it).
"""

import os

from Cython.Build import cythonize
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext
from setuptools.errors import CCompilerError, CompileError, ExecError, LinkError, PlatformError

FAST_DECODE = Extension(
    "schemas.decode._fastdecode",
    ["schemas/decode/_fastdecode.pyx", "third_party/yyjson/yyjson.c"],
    include_dirs=["third_party/yyjson"],
    extra_compile_args=["-O2"],
)

KEY_HASH = Extension("detectors._keyhash", ["detectors/_keyhash.pyx"], extra_compile_args=["-O2"])

SORTED_WALKS = Extension(
    "detectors._sorted_walks", ["detectors/_sorted_walks.pyx"], extra_compile_args=["-O2"]
)

# no fused multiply-add: the loops must give the Python fallback's numbers bit for bit
SPECIAL_LOOPS = Extension(
    "detectors._special_loops",
    ["detectors/_special_loops.pyx"],
    extra_compile_args=["-O2", "-ffp-contract=off"],
)

NO_COMPILER = """
Lookout's compiled decoder (schemas/decode/_fastdecode.pyx) could not be built: {error}

It needs a C compiler and the Python headers, e.g. on Debian/Ubuntu:
    apt-get install gcc python3-dev
then install again. To install without it on purpose (decoding several times slower), set
LOOKOUT_PURE_PYTHON=1.
"""


class BuildDecoder(build_ext):
    """`build_ext` whose failure names the missing piece (a bare compiler error does not)."""

    def run(self) -> None:
        try:
            super().run()
        except (CCompilerError, CompileError, ExecError, LinkError, PlatformError) as e:
            raise SystemExit(NO_COMPILER.format(error=e)) from e

    def build_extension(self, ext: Extension) -> None:
        try:
            super().build_extension(ext)
        except (CCompilerError, CompileError, ExecError, LinkError, PlatformError) as e:
            raise SystemExit(NO_COMPILER.format(error=e)) from e


if os.environ.get("LOOKOUT_PURE_PYTHON") == "1":
    setup()
else:
    setup(
        ext_modules=cythonize(
            [FAST_DECODE, KEY_HASH, SORTED_WALKS, SPECIAL_LOOPS],
            compiler_directives={"language_level": "3"},
        ),
        cmdclass={"build_ext": BuildDecoder},
    )
