"""Build of cedf's compiled kernels (the rest of the metadata is in pyproject.toml).

CEDF_CHECKED=1 builds the kernels with Cython's bounds and wraparound checks on,
so that an out-of-bounds access raises IndexError instead of touching memory:
the tests run once in such a build.
"""
import os
import sys

import numpy
from Cython.Build import cythonize
from setuptools import Extension, setup

checked = os.environ.get("CEDF_CHECKED", "0") == "1"

# -fno-trapping-math lets GCC and clang vectorise loops that clip before they
# exponentiate (sigmoid: 8x faster here); cedf never reads floating-point
# exception flags, so nothing observable changes. MSVC needs no such flag.
compile_args = [] if sys.platform == "win32" else ["-fno-trapping-math"]

common = dict(
    include_dirs=["csrc", numpy.get_include()],
    depends=["csrc/pointwise.h", "cedf/_blas.pxd", "cedf/_loops.pxd"],
    extra_compile_args=compile_args,
    # The NumPy C API of 1.x and 2.x alike (the engine reads array fields directly).
    define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
)

extensions = [
    # One function per kernel, callable from Python (tests, node-by-node runs).
    Extension("cedf._kernels", ["cedf/_kernels.pyx"], **common),
    # The compiled plan of a whole graph.
    Extension("cedf._engine", ["cedf/_engine.pyx"], **common),
]

setup(
    ext_modules=cythonize(
        extensions,
        compiler_directives={
            "language_level": 3,
            "boundscheck": checked,
            "wraparound": checked,
            "initializedcheck": checked,
            "cdivision": True,
        },
    ),
)
