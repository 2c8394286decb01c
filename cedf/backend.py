"""The switch between cedf's two implementations of its kernels, and the BLAS they call.

`cedf._kernels` (compiled) and `cedf.reference` (NumPy) hold the same functions
with the same signatures; every node calls them through `backend.kernels`, so
one assignment here moves the whole engine from one to the other.

The compiled kernels' matrix products call NumPy's own BLAS when NumPy is the
usual wheel (an OpenBLAS with 64-bit integers whose functions are exported as
``scipy_sgemm_64_`` and so on), else SciPy's (`scipy.linalg.cython_blas`);
`set_blas` and the environment variable ``CEDF_BLAS`` choose, `get_blas` tells.
"""
import os
import warnings

from . import reference


class Replan(Exception):
    """A compiled plan no longer fits its graph (new shapes, new nodes): run node by node and rebuild it."""


def _unbuilt_source_folder():
    """This package's folder, when it is a source checkout's `cedf/` holding no compiled extension."""
    import importlib.machinery
    from pathlib import Path

    here = Path(__file__).resolve().parent
    if not (here.parent / "setup.py").exists() or not (here / "_kernels.pyx").exists():
        return None
    built = [p for suffix in importlib.machinery.EXTENSION_SUFFIXES for p in here.glob(f"_kernels*{suffix}")]
    return None if built else here


try:
    from . import _conv, _engine, _kernels
except ImportError as exc:  # a source checkout that was never built, a broken install
    _kernels = _engine = _conv = None
    _import_error = exc
    source = _unbuilt_source_folder()
    if source is not None:
        fix = (f"this cedf is the source folder {source}, which holds no built extension (Python looks in "
               f"the current folder first): to use an installed cedf, run Python from another folder; to "
               f"build the extensions into this one, pip install -e .")
    else:
        fix = f"the compiled kernels could not be imported ({exc}); reinstall cedf with `pip install .`"
    warnings.warn(f"cedf: {fix} (running on the NumPy reference backend meanwhile, which is much slower)",
                  RuntimeWarning, stacklevel=2)
else:
    _import_error = None

BACKENDS = ("cython", "numpy")
BLAS_LIBRARIES = ("numpy", "scipy")

#: The module whose functions the nodes call.
kernels = _kernels if _kernels is not None else reference


def set_backend(name):
    """Run the engine on the compiled kernels ("cython") or on the NumPy reference ("numpy")."""
    global kernels
    if name == "numpy":
        kernels = reference
    elif name == "cython":
        if _kernels is None:
            raise RuntimeError(f"cedf: the compiled backend is not available: {_import_error}")
        kernels = _kernels
    else:
        raise ValueError(f"cedf.set_backend: unknown backend {name!r}, expected one of {BACKENDS}")


def get_backend():
    """The name of the backend in use: "cython" or "numpy"."""
    return "cython" if kernels is _kernels else "numpy"


def set_num_threads(n):
    """Use at most `n` threads for the matrix products (BLAS), from now on; None lifts the limit.

    cedf's own loops run on the calling thread: with OpenMP beside OpenBLAS, the
    BLAS threads that spin after a product and the OpenMP team fought over the
    two cores here, and the large MLP's step got 40 % slower, not faster.
    """
    from threadpoolctl import threadpool_limits

    if n is not None and (not isinstance(n, int) or isinstance(n, bool) or n < 1):
        raise ValueError(f"cedf.set_num_threads: expected a positive integer or None, got {n!r}")
    global _limits
    if _limits is not None:
        _limits.restore_original_limits()
    _limits = None if n is None else threadpool_limits(limits=n, user_api="blas")


def get_num_threads():
    """The number of threads the matrix products may use (the smallest over the BLAS libraries loaded)."""
    from threadpoolctl import threadpool_info

    counts = [info["num_threads"] for info in threadpool_info() if info["user_api"] == "blas"]
    return min(counts) if counts else 1


_limits = None


def _numpy_blas_addresses():
    """The addresses of the functions cedf calls in NumPy's BLAS, or None and why not."""
    import ctypes

    try:
        from numpy._core import _multiarray_umath as core
    except ImportError:  # NumPy 1.x
        from numpy.core import _multiarray_umath as core
    names = ("sgemm", "dgemm", "sgemv", "dgemv", "saxpy", "daxpy")
    try:
        # The extension module's handle finds its BLAS too (dlsym searches what it links).
        lib = ctypes.CDLL(core.__file__)
        # The 64_ suffix is what makes the call safe: those functions take 64-bit integers.
        return {name: ctypes.cast(getattr(lib, f"scipy_{name}_64_"), ctypes.c_void_p).value for name in names}, None
    except (OSError, AttributeError) as exc:
        return None, f"NumPy's BLAS exports no scipy_sgemm_64_ and kin ({exc})"


def set_blas(name):
    """Make the compiled kernels call NumPy's BLAS ("numpy") or SciPy's ("scipy").

    Meant for the start of a program (or a test): a product that another thread
    is running when the BLAS changes finishes on the one it started with.
    """
    global _blas
    if name not in BLAS_LIBRARIES:
        raise ValueError(f"cedf.set_blas: unknown BLAS {name!r}, expected one of {BLAS_LIBRARIES}")
    if _kernels is None:
        raise RuntimeError(f"cedf: the compiled backend is not available: {_import_error}")
    if name == "numpy" and _numpy_blas is None:
        raise RuntimeError(f"cedf.set_blas: cannot call NumPy's BLAS: {_numpy_blas_error}")
    addresses = _numpy_blas if name == "numpy" else None
    for module in (_kernels, _engine, _conv):
        module._use_numpy_blas(addresses)
    _blas = name


def get_blas():
    """Whose BLAS the compiled kernels call: "numpy" or "scipy" (None without the compiled kernels)."""
    return _blas


_blas = None
_numpy_blas, _numpy_blas_error = _numpy_blas_addresses() if _kernels is not None else (None, "no compiled kernels")
if _kernels is not None:
    set_blas(os.environ.get("CEDF_BLAS") or ("numpy" if _numpy_blas is not None else "scipy"))


# CEDF_BACKEND=numpy asks for the reference from the start (the tests use it to
# run the whole suite on the reference on purpose).
if os.environ.get("CEDF_BACKEND"):
    set_backend(os.environ["CEDF_BACKEND"])
