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

CEDF_OPENMP=1 compiles and links the extensions with the compiler's OpenMP
flags, decided per platform and compiler as scikit-learn decides them: /openmp
for MSVC; -fopenmp for GCC and for LLVM's clang; for Apple's clang, which has
no -fopenmp of its own, ``-Xpreprocessor -fopenmp`` and ``-lomp`` from libomp
(Homebrew's, say, with its include and lib folders in CPPFLAGS and LDFLAGS).
A tiny OpenMP program is compiled, linked and run with those flags first; if
that fails, the build goes on without OpenMP and says so. Off by default:
cedf's loops run on the calling thread (see cedf/backend.py set_num_threads:
an OpenMP team next to OpenBLAS's threads made training slower here), so the
switch only prepares the build for loops that may one day use it. Whether a
build has it: `cedf._kernels.OPENMP`, or `cedf.show_config()`. No flag of any
switch is tied to the building machine's CPU (no -march=native): the wheels
run on any CPU of their platform.

Every build writes the fingerprint of the sources it was made from (sha256 of
cedf/*.py, *.pyx, *.pxd, csrc/*.h, setup.py and pyproject.toml, see
cedf/_sources.py) into the built package as cedf/_source_hash.py, in the build
directory only; tests/conftest.py stops a test session whose checkout differs
from the installed build's sources (a stale install).
"""
import importlib.util
import os
import subprocess
import sys
import tempfile
import textwrap

import numpy
from Cython.Build import cythonize
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext
from setuptools.command.build_py import build_py
from setuptools.errors import CompileError, LinkError

HERE = os.path.dirname(os.path.abspath(__file__))
sanitize = os.environ.get("CEDF_SANITIZE", "")
if sanitize not in ("", "address"):
    sys.exit(f"CEDF_SANITIZE={sanitize!r}: the only sanitizer supported is 'address'")
if sanitize and sys.platform == "win32":
    sys.exit("CEDF_SANITIZE=address: supported with GCC or clang only, not MSVC")
checked = os.environ.get("CEDF_CHECKED", "1" if sanitize else "0") == "1"
openmp = os.environ.get("CEDF_OPENMP", "0")
if openmp not in ("0", "1", ""):
    sys.exit(f"CEDF_OPENMP={openmp!r}: expected 1 (build with OpenMP when the compiler has it) or 0 (the default)")
openmp = openmp == "1"

# -fno-trapping-math lets GCC and clang vectorise loops that clip before they
# exponentiate (sigmoid: 8x faster here); cedf never reads floating-point
# exception flags, so nothing observable changes. -fno-math-errno lets them
# vectorise a square root (Adam's update, csrc/optim.h): cedf never reads errno.
# MSVC needs no such flags.
compile_args = [] if sys.platform == "win32" else ["-fno-trapping-math", "-fno-math-errno"]
link_args = []
if sanitize:
    # After Python's own CFLAGS (-O3), so -O1 wins: ASan's advice, still quick.
    compile_args += ["-fsanitize=address", "-fno-omit-frame-pointer", "-g", "-O1"]
    link_args += ["-fsanitize=address"]

variant = "-".join(name for name, on in (("asan", sanitize), ("checked", checked), ("openmp", openmp)) if on)
build_dir = os.path.join("build", variant) if variant else None

common = dict(
    include_dirs=["csrc", numpy.get_include()],
    depends=["csrc/pointwise.h", "csrc/conv.h", "csrc/transpose.h", "csrc/restrict.h", "csrc/optim.h", "csrc/labels.h", "csrc/build_info.h", "csrc/numpy_blas.h", "csrc/shared_sum.h", "csrc/denormals.h", "csrc/small_gemv.h", "cedf/_blas.pxd", "cedf/_loops.pxd", "cedf/_args.pxd", "cedf/_plan_op.pxd"],
    extra_compile_args=compile_args,
    extra_link_args=link_args,
    # The NumPy C API of 1.x and 2.x alike (the engine reads array fields directly).
    define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
)

# Compiled, linked and run with the candidate flags: _OPENMP must be defined
# (the flags really turned OpenMP on), omp.h found, the runtime linked and loaded.
OPENMP_TEST = textwrap.dedent("""\
    #include <omp.h>
    #include <stdio.h>
    #ifndef _OPENMP
    #error "_OPENMP is not defined: these flags do not enable OpenMP"
    #endif
    int main(void) {
        int threads = 0;
    #pragma omp parallel reduction(+ : threads)
        threads += 1;
        printf("%d\\n", threads);
        return threads >= 1 && threads <= omp_get_max_threads() ? 0 : 1;
    }
""")


def _is_apple_clang(compiler):
    try:
        out = subprocess.run([compiler, "--version"], capture_output=True, text=True, timeout=60).stdout
    except (OSError, subprocess.SubprocessError):
        return False
    return "Apple" in out and "clang" in out


def openmp_flags(compiler):
    """(compile flags, link flags) that turn OpenMP on with this distutils compiler, as scikit-learn picks them."""
    if compiler.compiler_type == "msvc":
        return ["/openmp"], []  # MSVC links its runtime (vcomp) by itself
    if sys.platform == "darwin" and _is_apple_clang(compiler.compiler_so[0]):
        # Apple's clang rejects -fopenmp; its preprocessor takes it, and libomp
        # supplies omp.h and the runtime (their folders from CPPFLAGS/LDFLAGS).
        return ["-Xpreprocessor", "-fopenmp"], ["-lomp"]
    return ["-fopenmp"], ["-fopenmp"]  # GCC, LLVM clang


def openmp_works(compiler, compile_flags, link_flags):
    """Whether a tiny OpenMP program compiles, links and runs with these flags."""
    with tempfile.TemporaryDirectory() as tmp:
        source = os.path.join(tmp, "cedf_openmp_test.c")
        with open(source, "w") as f:
            f.write(OPENMP_TEST)
        try:
            objects = compiler.compile([source], output_dir=tmp, extra_postargs=compile_flags)
            # LDFLAGS are not applied to executables by distutils; pass them as the build will.
            ldflags = os.environ.get("LDFLAGS", "").split()
            compiler.link_executable(objects, "cedf_openmp_test", output_dir=tmp,
                                     extra_preargs=ldflags, extra_postargs=link_flags)
        except (CompileError, LinkError):
            return False
        exe = os.path.join(tmp, "cedf_openmp_test" + (compiler.exe_extension or ""))
        try:
            run = subprocess.run([exe], capture_output=True, text=True, timeout=60)
        except OSError:
            return True  # built for another machine (cross-compiling): linking is the test we can do
        except subprocess.SubprocessError:
            return False
        return run.returncode == 0


class BuildExt(build_ext):
    """build_ext that adds OpenMP's flags once the compiler is known (CEDF_OPENMP=1)."""

    def build_extensions(self):
        if openmp:
            compile_flags, link_flags = openmp_flags(self.compiler)
            flags = " ".join(dict.fromkeys(compile_flags + link_flags))
            if openmp_works(self.compiler, compile_flags, link_flags):
                print(f"cedf: building with OpenMP ({flags})")
                for ext in self.extensions:
                    ext.extra_compile_args = ext.extra_compile_args + compile_flags
                    ext.extra_link_args = ext.extra_link_args + link_flags
            else:
                print(f"cedf: CEDF_OPENMP=1, but this compiler cannot build an OpenMP program with "
                      f"{flags}; building without OpenMP", file=sys.stderr)
        super().build_extensions()


def _sources_module():
    """cedf/_sources.py, loaded by its path: importing cedf itself needs a build."""
    spec = importlib.util.spec_from_file_location("_cedf_sources", os.path.join(HERE, "cedf", "_sources.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class BuildPy(build_py):
    """build_py that writes the fingerprint of the sources into the built package (cedf/_source_hash.py),
    in the build directory only; tests/conftest.py compares it with the checkout's (see cedf/_sources.py)."""

    def run(self):
        super().run()
        sources = _sources_module()
        target = os.path.join(self.build_lib, *sources.GENERATED.split("/"))
        os.makedirs(os.path.dirname(target), exist_ok=True)
        with open(target, "w", encoding="utf-8") as f:
            f.write("# Written by setup.py: the fingerprint of the sources of this build (cedf/_sources.py).\n")
            f.write(f"SOURCE_HASH = {sources.source_hash(HERE)!r}\n")

    def get_outputs(self, include_bytecode=True):
        # Listed, so that an install records the file and an uninstall removes it.
        generated = os.path.join(self.build_lib, *_sources_module().GENERATED.split("/"))
        return super().get_outputs(include_bytecode) + [generated]


extensions = [
    # One function per kernel, callable from Python (tests, node-by-node runs).
    Extension("cedf._kernels", ["cedf/_kernels.pyx"], **common),
    # The compiled plan of a whole graph.
    Extension("cedf._engine", ["cedf/_engine.pyx"], **common),
    # Convolution: im2col, GEMMs, col2im (cedf.conv's nodes).
    Extension("cedf._conv", ["cedf/_conv.pyx"], **common),
    # MaxPool and AvgPool (cedf/pooling.py): kernels and plan operations.
    Extension("cedf._pooling", ["cedf/_pooling.pyx"], **common),
    # BatchNorm, LayerNorm; Dropout (their kernels and plan operations).
    Extension("cedf._normalization", ["cedf/_normalization.pyx"], **common),
    Extension("cedf._dropout", ["cedf/_dropout.pyx"], **common),
    # The steps of an epoch of cedf.fit (cedf/training.py has the same loop in Python).
    Extension("cedf._fit", ["cedf/_fit.pyx"], **common),
    # cedf.distributed's per-step work: its allreduce among the ranks of one machine.
    Extension("cedf._allreduce", ["cedf/_allreduce.pyx"], **common),
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
    cmdclass={"build_ext": BuildExt, "build_py": BuildPy},
)
