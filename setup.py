"""Build of cedf's compiled kernels (the rest of the metadata is in pyproject.toml).

Two build-time switches make a checked build (CI runs its tests once in one):

CEDF_SANITIZE=address compiles and links both extensions with AddressSanitizer
(``-fsanitize=address -fno-omit-frame-pointer -g -O1``; GCC or clang, not
MSVC), so that a loop of `_loops.pxd` or `csrc/pointwise.h` that reads or
writes past a buffer aborts with a report instead of corrupting memory.
Those loops index raw pointers, which Cython's checks cannot see: ASan is the
check that covers them. The extensions then need the ASan runtime loaded
first, before Python's own libraries (.ci/run does this, and explains its options)::

    CEDF_SANITIZE=address pip install ".[test]"
    LD_PRELOAD="$(gcc -print-file-name=libasan.so)" ASAN_OPTIONS=detect_leaks=0 \\
        CEDF_EXPECT_SANITIZER=address pytest --capture=sys

`cedf._kernels.SANITIZED` tells whether the build is sanitized; with
CEDF_EXPECT_SANITIZER=address, tests/test_build.py fails unless it is and the
runtime is loaded. --capture=sys lets ASan's report through pytest.

CEDF_CHECKED=1 builds the kernels with Cython's bounds and wraparound checks on,
so that an out-of-bounds index of a memoryview (the checks in `_kernels.pyx`,
the buffers of `_engine.pyx`) raises IndexError instead of touching memory.
CEDF_SANITIZE=address implies it, unless CEDF_CHECKED=0 is set explicitly.

Each combination of switches builds in a directory of its own (build/asan-checked,
build/checked; the default build in build/ and cedf/*.c as always), so that
switching between them never reuses objects compiled with other flags
(setuptools and Cython look only at timestamps).
"""
import os
import sys

import numpy
from Cython.Build import cythonize
from setuptools import Extension, setup

sanitize = os.environ.get("CEDF_SANITIZE", "")
if sanitize not in ("", "address"):
    sys.exit(f"CEDF_SANITIZE={sanitize!r}: the only sanitizer supported is 'address'")
if sanitize and sys.platform == "win32":
    sys.exit("CEDF_SANITIZE=address: supported with GCC or clang only, not MSVC")
checked = os.environ.get("CEDF_CHECKED", "1" if sanitize else "0") == "1"

# -fno-trapping-math lets GCC and clang vectorise loops that clip before they
# exponentiate (sigmoid: 8x faster here); cedf never reads floating-point
# exception flags, so nothing observable changes. MSVC needs no such flag.
compile_args = [] if sys.platform == "win32" else ["-fno-trapping-math"]
link_args = []
if sanitize:
    # After Python's own CFLAGS (-O3), so -O1 wins: ASan's advice, still quick.
    compile_args += ["-fsanitize=address", "-fno-omit-frame-pointer", "-g", "-O1"]
    link_args += ["-fsanitize=address"]

variant = "-".join(name for name, on in (("asan", sanitize), ("checked", checked)) if on)
build_dir = os.path.join("build", variant) if variant else None

common = dict(
    include_dirs=["csrc", numpy.get_include()],
    depends=["csrc/pointwise.h", "csrc/build_info.h", "cedf/_blas.pxd", "cedf/_loops.pxd"],
    extra_compile_args=compile_args,
    extra_link_args=link_args,
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
        build_dir=build_dir and os.path.join(build_dir, "cython"),
        compiler_directives={
            "language_level": 3,
            "boundscheck": checked,
            "wraparound": checked,
            "initializedcheck": checked,
            "cdivision": True,
        },
    ),
    options={"build": {"build_base": build_dir}} if build_dir else {},
)
