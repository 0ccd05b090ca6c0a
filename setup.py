"""Build of the compiled decoder (`schemas.decode._fastdecode`); everything else is pyproject.

The extension is optional: where it cannot be compiled, the install still succeeds and the
decoder runs in pure Python (it warns once; `make test` with CI=true fails on it).
"""

from Cython.Build import cythonize
from setuptools import Extension, setup

FAST_DECODE = Extension(
    "schemas.decode._fastdecode",
    ["schemas/decode/_fastdecode.pyx", "third_party/yyjson/yyjson.c"],
    include_dirs=["third_party/yyjson"],
    extra_compile_args=["-O2"],
    optional=True,
)

setup(ext_modules=cythonize([FAST_DECODE], compiler_directives={"language_level": "3"}))
