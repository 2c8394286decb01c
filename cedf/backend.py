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


# CEDF_BACKEND=numpy asks for the reference from the start (the tests use it to
# run the whole suite on the reference on purpose).
if os.environ.get("CEDF_BACKEND"):
    set_backend(os.environ["CEDF_BACKEND"])
