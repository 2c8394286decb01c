"""The switch between cedf's two implementations of its kernels.

`cedf._kernels` (compiled) and `cedf.reference` (NumPy) hold the same functions
with the same signatures; every node calls them through `backend.kernels`, so
one assignment here moves the whole engine from one to the other.
"""
import os
import warnings

from . import reference


class Replan(Exception):
    """A compiled plan no longer fits its graph (new shapes, new nodes): run node by node and rebuild it."""


try:
    from . import _engine, _kernels
except ImportError as exc:  # a source checkout that was never built, a broken install
    _kernels = _engine = None
    _import_error = exc
    warnings.warn(
        f"cedf: the compiled kernels could not be imported ({exc}); "
        "running on the NumPy reference backend, which is much slower. "
        "Install cedf with `pip install .` to build them.",
        RuntimeWarning,
        stacklevel=2,
    )
else:
    _import_error = None

BACKENDS = ("cython", "numpy")

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


# CEDF_BACKEND=numpy asks for the reference from the start (the tests use it to
# run the whole suite on the reference on purpose).
if os.environ.get("CEDF_BACKEND"):
    set_backend(os.environ["CEDF_BACKEND"])
